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
 * - anything else is read with O_DIRECT like the backends' reads (so it sees exactly what their
 *   O_DIRECT writes put on the device, never a stale page-cache copy), through a descriptor of
 *   its own into the backend's aligned memory (io/direct-read.ts).
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
import { LogGeometry } from "../log/address.ts";
import type { LogStructuredStore } from "../log/log.ts";
import { InvalidArgumentError } from "../errors.ts";
import { DirectReader } from "../io/direct-read.ts";
import { MappedFile } from "../io/mapped-file.ts";

/** Reads up to this size go through the page cache (see {@link SyncLogReader.read}). */
const BUFFERED_READ_BYTES = 64 << 10;

/** Synchronous positional reads of one store's log. */
export class SyncLogReader {
  private readonly log: LogStructuredStore;
  private readonly geometry: LogGeometry;
  /** Larger reads, and small ones read again when their record failed its check. */
  private readonly direct: DirectReader;
  /** The log's buffered descriptor mapped read-only. */
  private mapped: MappedFile | undefined;
  /** Reads that went through the page cache (for tests). */
  bufferedReads = 0;
  /** seq → physical segment index, copied from the log's segment table on a miss. */
  private indexOfSeq = new Map<number, number>();

  constructor(log: LogStructuredStore, path: string) {
    this.log = log;
    this.direct = new DirectReader(path, log.backend);
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
    const buffered = direct || lengthBytes > BUFFERED_READ_BYTES ? undefined : this.log.pageCacheDescriptor();
    if (buffered !== undefined) {
      // A copy from the mapping of the same descriptor, no system call (io/mapped-file.ts), else
      // `pread`. The log opens its buffered descriptor once and keeps it until it closes.
      this.mapped ??= new MappedFile(buffered);
      const out = new Uint8Array(lengthBytes);
      const done = this.mapped.readInto(physical, out);
      this.bufferedReads += 1;
      // Short at the end of the file: the checksum check fails, and the caller reads again directly.
      return done === lengthBytes ? out : out.subarray(0, done);
    }
    return this.direct.read(physical, lengthBytes);
  }

  /** Unmap, close the direct descriptor and free its buffer (at store close). */
  close(): void {
    this.mapped?.close();
    this.mapped = undefined;
    this.direct.close();
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
}
