/**
 * A read-only memory mapping of a file (or block device), grown on demand: reads of bytes the
 * kernel's page cache holds become copies from memory, with no system call.
 *
 * Why: an attached Worker reads the store through the page cache (workers/reader.ts); with one
 * `pread` per value not in its own cache, `pread` was 72% of its CPU samples (20 000 values of
 * 16 B–3 KB, uniform random reads, 1.5× its cache), and a copy from a mapping made the same loop
 * 1.4–1.5× as fast (`bun bench/workers.ts`; lmdb reads through a mapping too).
 *
 * Safety: the mapping is `PROT_READ`, so nothing can write the store through it. Touching a page
 * past the file's end kills the process (SIGBUS), so {@link MappedFile.bytes} serves only ranges
 * inside the size it mapped, and callers ask only for bytes the file is known to hold (for the
 * store's readers: a pinned segment's records, which the log never truncates under a pin). The
 * mapping is replaced, never resized, when the file grew; the old one is unmapped at once (the
 * caller copies out before it asks again). Coherence with the owner's O_DIRECT writes is the
 * kernel's: a direct write invalidates the cached pages it overwrites, and unmaps them from every
 * mapping first, as it does for `pread`'s page cache.
 *
 * @module
 */
import fs from "node:fs";
import { readAt } from "./direct-read.ts";
import { blockDeviceBytes, mapFileReadOnly, unmapFile } from "./libc.ts";

/** A mapping is replaced at most this often when asked for bytes past it (a file that never grows is not re-stat'ed per read). */
const RESIZE_CHECK_MS = 1;

export class MappedFile {
  readonly #fd: number;
  #address = 0;
  #size = 0;
  #view: Uint8Array | undefined;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #disabled = false;

  /** Over `fd`, which stays the caller's (open for reading; closed by the caller after {@link close}). */
  constructor(fd: number) {
    this.#fd = fd;
  }

  /** Bytes mapped now. */
  get mappedBytes(): number {
    return this.#size;
  }

  /**
   * A view of `[position, position + length)` of the file, valid until the next call or
   * {@link close}; undefined when the range is past what could be mapped (read it another way).
   */
  bytes(position: number, length: number): Uint8Array | undefined {
    const end = position + length;
    if (end > this.#size && !this.#grow(end)) return undefined;
    return (this.#view as Uint8Array).subarray(position, end);
  }

  /**
   * Copy `out.length` bytes of the file at `position` into `out`: from the mapping, else with
   * `pread`s on the same descriptor (a range past what could be mapped, a file that cannot be).
   * @returns the bytes copied: fewer only where the file ends
   */
  readInto(position: number, out: Uint8Array): number {
    const mapped = this.bytes(position, out.length);
    if (mapped !== undefined) {
      out.set(mapped);
      return out.length;
    }
    let done = 0;
    while (done < out.length) {
      const got = readAt(this.#fd, out.subarray(done), position + done);
      if (got === 0) break;
      done += got;
    }
    return done;
  }

  /** Map the file again if it now holds `end` bytes. */
  #grow(end: number): boolean {
    if (this.#disabled) return false;
    const now = performance.now();
    if (now - this.#checkedAt < RESIZE_CHECK_MS) return false;
    this.#checkedAt = now;
    let size: number;
    try {
      const stat = fs.fstatSync(this.#fd);
      size = stat.isBlockDevice() ? blockDeviceBytes(this.#fd) : stat.size;
    } catch {
      size = -1;
    }
    if (size < end) return false;
    const mapped = mapFileReadOnly(this.#fd, size);
    if (typeof mapped === "number") {
      this.#disabled = true; // a filesystem or device that cannot be mapped: the caller reads
      return false;
    }
    this.#unmap();
    this.#address = mapped.address;
    this.#size = size;
    this.#view = mapped.bytes;
    return true;
  }

  #unmap(): void {
    if (this.#size === 0) return;
    this.#view = undefined;
    unmapFile(this.#address, this.#size);
    this.#size = 0;
  }

  /** Unmap (the views handed out must not be touched any more). */
  close(): void {
    this.#unmap();
    this.#disabled = true;
  }
}
