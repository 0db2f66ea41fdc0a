/**
 * Synchronous reads of the log, for `store.readSync` on a cache miss.
 *
 * The log's own reads are asynchronous (io_uring or the portable backend's queue), so a read that
 * must return in the same turn of the event loop goes around them:
 * - bytes still in a flush buffer are copied from it (the log's `readFromBuffers`, synchronous);
 * - a small read (up to 64 KiB) goes through the kernel's page cache on the log's buffered
 *   descriptor (the one its own small reads use; see {@link SyncLogReader.read}), as a copy from
 *   a read-only mapping of it (io/mapped-file.ts; a `pread` where it cannot map); its caller
 *   verifies the record and, if it fails, reads it again directly;
 * - anything else is read with `fs.readSync` from the store's file through a file descriptor of
 *   its own, opened with O_DIRECT like the backends' (so it sees exactly what their O_DIRECT
 *   writes put on the device, never a stale page-cache copy), into aligned native memory from the
 *   backend (O_DIRECT needs 4 KiB-aligned buffers, and JS memory is not reliably aligned).
 *   Where O_DIRECT is refused (tmpfs), the backends use buffered I/O too, and so does this.
 *
 * The second descriptor takes no lock: the store's lock is a flock on the backend's descriptor,
 * which a second open of the file neither needs nor disturbs.
 *
 * Which physical segment holds a sequence number is the log's segment table; it is copied here
 * on a miss and kept, because a sequence number never moves while it lives (a reused segment gets
 * a new one). Nothing can reuse a segment in the middle of a synchronous read: the whole read runs
 * in one turn of the event loop, and the mapping table only points into live segments.
 *
 * This blocks the thread for the duration of the disk read (about 0.1 ms on an SSD): it is for
 * callers that cannot await, not a faster `read`.
 *
 * @module
 */
import fs from "node:fs";
import type { NativeBuffer } from "../io/backend.ts";
import { alignDown, alignUp, LogGeometry } from "../log/address.ts";
import type { LogStructuredStore } from "../log/log.ts";
import { errorFromErrno, InvalidArgumentError } from "../errors.ts";
import { MappedFile } from "../io/mapped-file.ts";

const O_DIRECT = fs.constants.O_DIRECT ?? 0o40000;
/** Reads up to this size reuse one kept buffer; larger ones allocate and free their own. */
const KEPT_BUFFER_BYTES = 64 << 10;

/** Synchronous positional reads of one store's log. */
export class SyncLogReader {
  private readonly log: LogStructuredStore;
  private readonly path: string;
  private readonly geometry: LogGeometry;
  private fd: number | undefined;
  private buffer: NativeBuffer | undefined;
  /** The log's buffered descriptor mapped read-only. */
  private mapped: MappedFile | undefined;
  /** Reads that went through the page cache (for tests). */
  bufferedReads = 0;
  /** seq → physical segment index, copied from the log's segment table on a miss. */
  private indexOfSeq = new Map<number, number>();

  constructor(log: LogStructuredStore, path: string) {
    this.log = log;
    this.path = path;
    this.geometry = new LogGeometry(log.segmentSize);
  }

  /**
   * `lengthBytes` at log `address`, unverified (the caller checks its record's checksum). A small
   * read goes through the kernel's page cache (a buffered descriptor) unless `direct`: a caller
   * whose record fails its check so read reads it again with `direct` (the page cache can keep
   * what an O_DIRECT write replaced while the two raced; the disk decides), as the log's own
   * reads do (LogReader.read).
   *
   * Why through the page cache: this read blocks the thread either way, and an O_DIRECT read
   * costs a device round trip every time, where a buffered one costs that once and a copy
   * (~4 µs for a few KiB on this VM) every later time, as an lmdb read does.
   */
  read(address: number, lengthBytes: number, direct = false): Uint8Array {
    const fromMemory = this.log.readFromBuffers(address, lengthBytes);
    if (fromMemory !== undefined) return fromMemory;
    const seq = this.geometry.seqOf(address);
    if (address + lengthBytes > this.geometry.segmentStart(seq + 1) || !this.log.isLiveSegment(seq)) {
      throw new InvalidArgumentError(`log range [${address}, +${lengthBytes}) is not in a live segment`);
    }
    const physical = this.geometry.physicalOffset(this.segmentIndex(seq), address);
    const buffered = direct || lengthBytes > KEPT_BUFFER_BYTES ? undefined : this.log.pageCacheDescriptor();
    if (buffered !== undefined) {
      // A copy from the mapping of the same descriptor: no system call (io/mapped-file.ts).
      // The log opens its buffered descriptor once and keeps it until it closes.
      this.mapped ??= new MappedFile(buffered);
      const view = this.mapped.bytes(physical, lengthBytes);
      if (view !== undefined) {
        this.bufferedReads += 1;
        return view.slice();
      }
      const out = new Uint8Array(lengthBytes);
      let done = 0;
      while (done < lengthBytes) {
        const n = readAt(buffered, out.subarray(done), physical + done);
        if (n === 0) break; // end of file: the checksum check fails, and the caller reads again directly
        done += n;
      }
      this.bufferedReads += 1;
      return done === lengthBytes ? out : out.subarray(0, done);
    }
    const alignedStart = alignDown(physical);
    const alignedBytes = alignUp(physical + lengthBytes) - alignedStart;
    const fd = this.open(); // node:fs opens with O_CLOEXEC (libuv always adds it)
    const scratch = alignedBytes <= KEPT_BUFFER_BYTES ? (this.buffer ??= this.log.backend.alloc(KEPT_BUFFER_BYTES)) : this.log.backend.alloc(alignedBytes);
    try {
      let done = 0;
      while (done < alignedBytes) {
        const n = readAt(fd, scratch.bytes.subarray(done, alignedBytes), alignedStart + done);
        if (n === 0) break; // end of file: the checksum check below the caller fails
        done += n;
      }
      return scratch.bytes.slice(physical - alignedStart, Math.min(done, physical - alignedStart + lengthBytes));
    } finally {
      if (scratch !== this.buffer) this.log.backend.free(scratch);
    }
  }

  /** Close the descriptor and free the buffer (at store close). */
  close(): void {
    this.mapped?.close();
    this.mapped = undefined;
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    if (this.buffer !== undefined) this.log.backend.free(this.buffer);
    this.buffer = undefined;
  }

  private segmentIndex(seq: number): number {
    let index = this.indexOfSeq.get(seq);
    if (index === undefined) {
      // Rebuilt whole: entries of segments given back since are dropped with it.
      this.indexOfSeq = new Map(this.log.segmentState().live);
      index = this.indexOfSeq.get(seq);
      if (index === undefined) throw new InvalidArgumentError(`segment ${seq} is not live`);
    }
    return index;
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
function readAt(fd: number, into: Uint8Array, position: number): number {
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
