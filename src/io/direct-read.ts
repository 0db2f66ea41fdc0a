/**
 * Synchronous reads that bypass the kernel's page cache: `fs.readSync` on a descriptor of their
 * own opened with O_DIRECT, into aligned native memory (O_DIRECT needs 4 KiB-aligned buffers,
 * offsets and lengths, and JS memory is not reliably aligned).
 *
 * Why a reader of its own: the store's small reads go through the page cache (a mapping or a
 * buffered `pread`), and the page cache can keep what an O_DIRECT write replaced while the two
 * raced. A record that fails its check when read that way is read once more from here, where the
 * device decides (`Store.readSync`'s misses through store/sync-read.ts, and an attached Worker's
 * reads through workers/reader.ts). Where O_DIRECT is refused (tmpfs), the store's own writes are
 * buffered too, and so is this.
 *
 * The descriptor takes no lock: the store's lock is a flock on its owner's descriptor, which a
 * second open of the file neither needs nor disturbs.
 *
 * @module
 */
import fs from "node:fs";
import { errorFromErrno } from "../errors.ts";
import { alignDown, alignUp } from "../log/address.ts";
import type { NativeBuffer } from "./backend.ts";

const O_DIRECT = fs.constants.O_DIRECT ?? 0o40000;
/** Reads up to this size reuse one kept buffer; larger ones allocate and free their own. */
const KEPT_BUFFER_BYTES = 64 << 10;

/** Where a {@link DirectReader} gets and gives back its aligned buffers (a backend's, or libc's). */
export interface AlignedMemory {
  alloc(sizeBytes: number): NativeBuffer;
  free(buffer: NativeBuffer): void;
}

/** O_DIRECT positional reads of one file, opened on the first read. */
export class DirectReader {
  private readonly path: string;
  private readonly memory: AlignedMemory;
  private fd: number | undefined;
  private kept: NativeBuffer | undefined;

  constructor(path: string, memory: AlignedMemory) {
    this.path = path;
    this.memory = memory;
  }

  /**
   * A copy of `lengthBytes` at file offset `position`; shorter only where the file ends. The
   * caller verifies what it holds.
   */
  read(position: number, lengthBytes: number): Uint8Array {
    const alignedStart = alignDown(position);
    const alignedBytes = alignUp(position + lengthBytes) - alignedStart;
    const fd = this.open(); // node:fs opens with O_CLOEXEC (libuv always adds it)
    const scratch = alignedBytes <= KEPT_BUFFER_BYTES ? (this.kept ??= this.memory.alloc(KEPT_BUFFER_BYTES)) : this.memory.alloc(alignedBytes);
    try {
      let done = 0;
      while (done < alignedBytes) {
        const n = readAt(fd, scratch.bytes.subarray(done, alignedBytes), alignedStart + done);
        if (n === 0) break; // end of file: the caller's check fails on the short copy
        done += n;
      }
      return scratch.bytes.slice(position - alignedStart, Math.max(position - alignedStart, Math.min(done, position - alignedStart + lengthBytes)));
    } finally {
      if (scratch !== this.kept) this.memory.free(scratch);
    }
  }

  /** Close the descriptor and free the kept buffer. Safe to call twice; a later read opens again. */
  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    if (this.kept !== undefined) this.memory.free(this.kept);
    this.kept = undefined;
  }

  private open(): number {
    if (this.fd !== undefined) return this.fd;
    try {
      this.fd = fs.openSync(this.path, fs.constants.O_RDONLY | O_DIRECT);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EINVAL") throw asIoError(error);
      this.fd = fs.openSync(this.path, fs.constants.O_RDONLY);
    }
    return this.fd;
  }
}

/** `fs.readSync` at `position`, its failures as the store's typed errors. */
export function readAt(fd: number, into: Uint8Array, position: number): number {
  try {
    return fs.readSync(fd, into, 0, into.length, position);
  } catch (error) {
    throw asIoError(error);
  }
}

function asIoError(error: unknown): Error {
  const errno = (error as NodeJS.ErrnoException).errno;
  return typeof errno === "number" ? errorFromErrno(-Math.abs(errno), "synchronous read") : (error as Error);
}
