/**
 * Pre-writing fresh segments with zeros, so small durable commits pay a plain device flush.
 *
 * Why: the log grows its file with fallocate, which leaves *unwritten* extents. The first write
 * into one converts it to written, a metadata change, so the datasync that follows must commit
 * the filesystem journal as well as flush the device. Measured here (ext4, 4 KiB write + datasync
 * pairs): 2,800–3,900 pairs/s into fallocated space against 5,300–5,800/s into space written
 * before. Postgres zero-fills new WAL segments for the same reason.
 *
 * What it costs: one extra write of each fresh piece of the file (the file grows a piece of a
 * segment at a time, space.ts). Streamed or bulk writes fill whole units and sync rarely, so for
 * them the journal commits are few and the extra write would only halve the bandwidth of a
 * growing file; a piece is pre-written only while recent units have been small (an exponential
 * average of their fill under {@link PREWRITE_BELOW_FILL}). Segments the cleaner hands back were
 * written before and are never pre-written.
 *
 * Safety: a fresh piece reads as zeros before and after, so a pre-write dropped or torn by a
 * crash changes nothing. A unit write waits until every zero-fill overlapping its bytes has
 * completed, so zeros never land over log data; and the file is never cut under a zero-fill in
 * flight (space.ts), whose write would otherwise grow it again past the cut.
 *
 * On a block device the zeros are not an optimisation but the format: a device's new segment
 * holds whatever was there before (a filesystem, an earlier store), and a stale unit that
 * happened to fit the chain could pass for log. So there every segment the log takes for the
 * first time is zeroed ({@link SegmentPrewriter.zeroSegment}), whatever the units' fill, and the
 * zeros are made durable (a datasync) before anything may point at the segment: a unit that
 * names it as its successor, or a root block whose position names it, is not written before
 * then. Recovery follows those pointers, and so never lands in a segment that still holds
 * someone else's bytes, even if the device persisted the pointer first and a power cut took
 * what its cache held.
 *
 * @module
 */
import type { FileHandle, IoBackend, NativeBuffer } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";

/** Bytes per zero write (one shared, never-written-to buffer of zeros). */
export const PREWRITE_CHUNK_BYTES = 1 << 20;

/** Pre-write fresh segments while recent units average less than this fraction of a buffer. */
export const PREWRITE_BELOW_FILL = 0.5;

/** Weight of the newest unit in the average fill (an exponential moving average). */
const FILL_WEIGHT = 0.1;

/** One zero-fill in flight: a range of the file, in physical segment `index`. */
interface ZeroFill {
  readonly index: number;
  readonly startBytes: number;
  readonly endBytes: number;
  /** Zeros that must be there (a device's new segment), not only an optimisation. */
  readonly must: boolean;
  readonly done: Promise<void>;
}

/** Zero-fills fresh segments ahead of the log's writes (see the module comment). */
export class SegmentPrewriter {
  private readonly backend: IoBackend;
  private readonly queue: IoQueue;
  private readonly file: FileHandle;
  private zeros: NativeBuffer | undefined;
  /**
   * Zero-fills in flight. The file grows in pieces of a segment (space.ts), so one segment may
   * have several; a unit waits only for those overlapping its own bytes.
   */
  private readonly inFlight = new Set<ZeroFill>();
  /** Zeroings that had to happen and failed (rejected promises, already settled): see {@link readyFor}. */
  private readonly failedZeroing = new Map<number, Promise<void>>();
  /** Average unit fill as a fraction of the buffer; starts small so a new log pre-writes. */
  private averageFill = 0;
  /** Zero-fills completed so far (a statistic): whole segments, or the pieces a file grows by. */
  segmentsPrewritten = 0;

  constructor(backend: IoBackend, queue: IoQueue, file: FileHandle) {
    this.backend = backend;
    this.queue = queue;
    this.file = file;
  }

  /** Count one finalized unit's fill (`fillBytes` of `bufferBytes`). */
  noteUnit(fillBytes: number, bufferBytes: number): void {
    this.averageFill += FILL_WEIGHT * (fillBytes / bufferBytes - this.averageFill);
  }

  /** Whether recent units are small enough that pre-writing pays. */
  get wanted(): boolean {
    return this.averageFill < PREWRITE_BELOW_FILL;
  }

  /**
   * The file just grew by `[offsetBytes, +lengthBytes)`, a piece of physical segment `index`
   * that nothing has been written to: start writing zeros over it, if pre-writing pays now.
   */
  onFreshRange(index: number, offsetBytes: number, lengthBytes: number): void {
    if (!this.wanted) return;
    this.startZeros(index, offsetBytes, lengthBytes, false);
  }

  /**
   * Zero segment `index` now, whatever the units' fill: a block device's segment taken for the
   * first time (see the module comment). Units naming it wait through {@link readyFor}.
   */
  zeroSegment(index: number, offsetBytes: number, segmentBytes: number): void {
    this.failedZeroing.delete(index);
    this.startZeros(index, offsetBytes, segmentBytes, true);
  }

  private startZeros(index: number, offsetBytes: number, lengthBytes: number, must: boolean): void {
    if (this.zeros === undefined) {
      // Zeroed here, not trusted to be: the portable backend's posix_memalign memory may hold a
      // freed flush buffer's bytes, and those are valid units (of another log) if written out.
      this.zeros = this.backend.alloc(PREWRITE_CHUNK_BYTES);
      this.zeros.bytes.fill(0);
    }
    const zeros = this.zeros;
    const writes: Array<Promise<void>> = [];
    for (let at = 0; at < lengthBytes; at += PREWRITE_CHUNK_BYTES) {
      const chunkBytes = Math.min(PREWRITE_CHUNK_BYTES, lengthBytes - at);
      writes.push(this.queue.write(this.file, zeros, 0, chunkBytes, offsetBytes + at));
    }
    // Zeros that must be there are made durable before anything may point at them: a device may
    // persist a later write (a unit naming this segment, a root block) before an earlier one it
    // holds only in its cache, and recovery would then follow a durable pointer into stale bytes.
    const done = Promise.all(writes)
      .then(() => (must ? this.queue.datasync(this.file) : undefined))
      .then(() => {
        this.segmentsPrewritten += 1;
      });
    const fill: ZeroFill = { index, startBytes: offsetBytes, endBytes: offsetBytes + lengthBytes, must, done };
    this.inFlight.add(fill);
    // Settled either way; a failure reaches the log through the unit write that waits on it.
    // A zeroing that had to happen and failed is remembered: the units that must wait for it
    // fail with it (and the log turns read-only) rather than point into a segment not zeroed.
    done.then(
      () => void this.inFlight.delete(fill),
      () => {
        this.inFlight.delete(fill);
        if (must) this.failedZeroing.set(index, done);
      },
    );
  }

  /**
   * Resolves once a unit in segment `index` at file bytes `[startBytes, endBytes)` that names
   * `nextIndex` as its successor may be written: no zero-fill overlapping those bytes is in
   * flight, and `nextIndex` is not being zeroed by {@link zeroSegment} (an optional pre-write of
   * the successor is not waited for). A zeroing that must happen resolves only once its zeros
   * are durable.
   */
  readyFor(index: number, nextIndex: number, startBytes: number, endBytes: number): Promise<void> | undefined {
    const waits: Array<Promise<void>> = [];
    const failedOwn = this.failedZeroing.get(index);
    if (failedOwn !== undefined) waits.push(failedOwn);
    const failedNext = this.failedZeroing.get(nextIndex);
    if (failedNext !== undefined) waits.push(failedNext);
    for (const fill of this.inFlight) {
      const own = fill.index === index && fill.startBytes < endBytes && startBytes < fill.endBytes;
      if (own || (fill.must && fill.index === nextIndex)) waits.push(fill.done);
    }
    if (waits.length === 0) return undefined;
    return waits.length === 1 ? waits[0] : Promise.all(waits).then(() => {});
  }

  /** Whether a zero-fill in flight overlaps file bytes `[startBytes, endBytes)`. */
  overlaps(startBytes: number, endBytes: number): boolean {
    for (const fill of this.inFlight) if (fill.startBytes < endBytes && startBytes < fill.endBytes) return true;
    return false;
  }

  /**
   * Resolves once none of `indices` is still being zeroed because it must be (rejects when such a
   * zeroing failed): a root block that names a segment is written only after that (log.ts).
   */
  zeroed(indices: readonly number[]): Promise<void> | undefined {
    const waits: Array<Promise<void>> = [];
    for (const index of indices) {
      const failed = this.failedZeroing.get(index);
      if (failed !== undefined) waits.push(failed);
      for (const fill of this.inFlight) if (fill.must && fill.index === index) waits.push(fill.done);
    }
    return waits.length === 0 ? undefined : Promise.all(waits).then(() => {});
  }

  /** Whether a pre-write has not settled yet. */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /** Free the zero buffer (once not {@link busy}). */
  free(): void {
    if (this.inFlight.size > 0) throw new Error(`freeing the pre-writer with ${this.inFlight.size} zero-fills in flight`);
    if (this.zeros !== undefined) this.backend.free(this.zeros);
    this.zeros = undefined;
  }
}
