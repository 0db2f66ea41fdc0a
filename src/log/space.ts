/**
 * The file's segments: which physical segment holds each sequence number (the {@link SegmentTable}),
 * the two segments the writer holds (the one it writes and the one after it), growing the file to
 * hold them, giving segments back, the reuse rule, and cutting free segments off the end.
 *
 * Why the writer's two segments live here and not in the rotation: each unit header names the
 * segment that follows its own, so the successor is taken (and the file grown for it) when the
 * writer *enters* a segment, not when it leaves it. Taking, growing and shrinking must agree on
 * which indices are held, so they are one object's state.
 *
 * @module
 */
import type { FileHandle, IoBackend } from "../io/backend.ts";
import { NoSpaceError, ReadOnlyError } from "../errors.ts";
import { UNKNOWN_SEGMENT, type LogGeometry } from "./address.ts";
import type { LogPosition } from "./format.ts";
import type { SegmentPrewriter } from "./prewrite.ts";
import { SegmentTable, type SegmentTableState } from "./segments.ts";

/** The segments of one log file. */
export class SegmentSpace {
  private readonly backend: IoBackend;
  private readonly file: FileHandle;
  private readonly geometry: LogGeometry;
  private readonly prewriter: SegmentPrewriter;
  private readonly maxFileBytes: number;
  private readonly table = new SegmentTable();
  /** Sequence number and physical index of the segment the writer is in, and the index of the next. */
  private currentSeq = 0;
  private currentIndex = 0;
  private nextIndex = 0;

  constructor(backend: IoBackend, file: FileHandle, geometry: LogGeometry, prewriter: SegmentPrewriter, maxFileBytes: number) {
    this.backend = backend;
    this.file = file;
    this.geometry = geometry;
    this.prewriter = prewriter;
    // A block device bounds the log by its own size: segments past its end do not exist.
    this.maxFileBytes = file.deviceBytes === undefined ? maxFileBytes : Math.min(maxFileBytes, file.deviceBytes);
  }

  /** Largest the file may grow to: `maxFileBytes`, or a block device's size when smaller. */
  get fileBytesLimit(): number {
    return this.maxFileBytes;
  }

  // ───────────────────────── the writer's segments ─────────────────────────

  /** Sequence number of the segment the log is writing. */
  get tailSeq(): number {
    return this.currentSeq;
  }

  /** Physical index of the segment the log is writing, and of the one that follows it. */
  get tailIndex(): number {
    return this.currentIndex;
  }

  get successorIndex(): number {
    return this.nextIndex;
  }

  /**
   * Recovery ended at `end`: hold its segment and (when writable) its successor — the one the last
   * unit named, or a newly taken one — and grow the file to hold both.
   */
  startAt(end: LogPosition, writable: boolean): void {
    this.currentSeq = this.geometry.seqOf(end.address);
    this.currentIndex = end.segmentIndex;
    this.table.assign(this.currentSeq, this.currentIndex);
    if (!writable) return;
    if (end.nextSegmentIndex === UNKNOWN_SEGMENT || end.nextSegmentIndex === end.segmentIndex) {
      this.nextIndex = this.take();
    } else {
      this.nextIndex = end.nextSegmentIndex;
      this.table.claim(this.nextIndex);
      this.ensureFileHolds(this.nextIndex);
    }
    this.ensureFileHolds(this.currentIndex);
  }

  /**
   * The writer moves into segment `seq` (the next one): it gets the successor taken earlier, and a
   * new successor is taken now. Throws (NoSpaceError…) with nothing changed when none can be had.
   */
  enter(seq: number): void {
    const index = this.nextIndex;
    const following = this.take();
    this.currentSeq = seq;
    this.currentIndex = index;
    this.nextIndex = following;
    this.table.assign(seq, index);
  }

  private take(): number {
    const fileSegments = this.table.fileSegments;
    const index = this.table.take();
    this.ensureFileHolds(index);
    // A block device does not grow, and its new segments hold whatever was there before: each
    // is zeroed (durably) the first time the log takes it, before anything names it (prewrite.ts).
    if (this.file.deviceBytes !== undefined && index >= fileSegments) {
      this.prewriter.zeroSegment(index, this.geometry.segmentFileOffset(index), this.geometry.segmentSize);
    }
    return index;
  }

  /**
   * Grow the file to hold segment `index`, allocating every segment between the old end and it:
   * a segment skipped here would be a hole, and a write into a hole allocates, so its datasync
   * would commit the filesystem journal too (see prewrite.ts). Whole new segments are offered to
   * the pre-writer; one the old end cuts through is only allocated (it may hold log data).
   */
  private ensureFileHolds(index: number): void {
    const geometry = this.geometry;
    const needBytes = geometry.fileBytesFor(index + 1);
    if (needBytes > this.maxFileBytes) {
      const limit = this.file.deviceBytes === this.maxFileBytes ? `the ${this.maxFileBytes}-byte device` : `maxFileBytes ${this.maxFileBytes}`;
      throw new NoSpaceError(`the log needs ${needBytes} bytes of file, over ${limit}`);
    }
    const sizeBytes = this.backend.fileSizeBytes(this.file);
    if (sizeBytes >= needBytes) return;
    // The first segment the file does not hold whole (it may hold part of it), and the first it
    // holds none of.
    const firstPartial = geometry.segmentsIn(sizeBytes, "whole");
    const firstWhole = geometry.segmentsIn(sizeBytes, "started");
    for (let segment = firstPartial; segment <= index; segment++) {
      const offsetBytes = geometry.segmentFileOffset(segment);
      this.backend.allocateSpace(this.file, offsetBytes, geometry.segmentSize);
      if (segment >= firstWhole) this.prewriter.onFreshSegment(segment, offsetBytes, geometry.segmentSize);
    }
  }

  // ───────────────────────── the table ─────────────────────────

  /** Physical index of live segment `seq`, or undefined. */
  indexOf(seq: number): number | undefined {
    return this.table.indexOf(seq);
  }

  /** Physical index of `seq` while its bytes are still there (live or pending), or undefined. */
  heldIndexOf(seq: number): number | undefined {
    return this.table.heldIndexOf(seq);
  }

  /** Record segments a walk found (seq → index) as part of the log. */
  assignAll(segments: ReadonlyArray<readonly [number, number]>): void {
    for (const [seq, index] of segments) this.table.assign(seq, index);
  }

  /** Load a checkpoint's table, keeping the segments walks have found already. */
  restore(state: SegmentTableState): void {
    const assigned = this.table.liveSeqs().map((seq) => [seq, this.table.indexOf(seq) as number] as const);
    this.table.restore(state);
    this.assignAll(assigned);
  }

  snapshot(): SegmentTableState {
    return this.table.snapshot();
  }

  liveSeqs(): number[] {
    return this.table.liveSeqs();
  }

  get liveCount(): number {
    return this.table.liveCount;
  }

  get freeCount(): number {
    return this.table.freeCount;
  }

  get pendingCount(): number {
    return this.table.pendingCount;
  }

  get fileSegments(): number {
    return this.table.fileSegments;
  }

  // ───────────────────────── giving back ─────────────────────────

  /** Give `seq` back; it stays pending until the log up to `durableAt` is durable (and the rule allows). */
  release(seq: number, durableAt: number): void {
    this.table.release(seq, durableAt);
  }

  /**
   * Free the pending segments the reuse rule allows now: the log is durable up to `stableAddress`,
   * the newest checkpoint starts at `checkpointStart` (none: nothing is freed) and the durable
   * tail still needs the log from `retainedFrom` on.
   */
  promotePending(stableAddress: number, checkpointStart: number | undefined, retainedFrom: number): void {
    if (this.table.pendingCount === 0 || checkpointStart === undefined) return;
    const retainedFromSeq = Number.isFinite(retainedFrom) ? this.geometry.seqOf(retainedFrom) : Number.POSITIVE_INFINITY;
    this.table.promotePending(stableAddress, this.geometry.seqOf(checkpointStart), retainedFromSeq);
  }

  /**
   * Truncate free segments at the end of the file. Returns the bytes given back. Safe at any
   * time: only segments on the free list are cut, and nothing durable points into them.
   */
  shrinkFile(readOnly: boolean): number {
    if (readOnly) throw new ReadOnlyError("shrinkFile on a read-only log");
    // A block device is never truncated: its free segments stay free, for the log to reuse.
    if (this.file.deviceBytes !== undefined) return 0;
    const keep = Math.max(this.currentIndex, this.nextIndex, this.table.highestHeldIndex()) + 1;
    const before = this.backend.fileSizeBytes(this.file);
    const after = this.geometry.fileBytesFor(keep);
    if (after >= before) return 0;
    this.table.shrinkTo(keep);
    this.backend.truncate(this.file, after);
    return before - after;
  }
}
