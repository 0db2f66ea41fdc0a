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
 * **The full-disk reserve**: the layer above (the store: its cleaner sizes it) asks for a
 * number of free segments to be kept allocated in the file ({@link SegmentSpace.keepReserve}).
 * They are fallocated ahead of need, whenever the file can grow, so that using them needs no new
 * disk blocks. Each append says what it is for ({@link SpaceUse}): user writes may neither take
 * nor write into that reserve, deletes may use its delete share, and the store's upkeep
 * (relocations, checkpoints) all of it. A segment that cannot be had is a {@link NoSpaceError}
 * for the append that needed it, and changes nothing: the log stays writable, and the next
 * attempt grows the file again (the disk may have room by then).
 *
 * @module
 */
import type { FileHandle, IoBackend } from "../io/backend.ts";
import { NoSpaceError, ReadOnlyError } from "../errors.ts";
import { UNKNOWN_SEGMENT, type LogGeometry } from "./address.ts";
import type { LogPosition } from "./format.ts";
import type { SegmentPrewriter } from "./prewrite.ts";
import { SegmentTable, type SegmentTableState } from "./segments.ts";

/**
 * What an append is for, which decides how much of the full-disk reserve it may use: `write`
 * (user data: none of it), `delete` (a transaction that only deletes: the delete share), `upkeep`
 * (the cleaner's relocations, checkpoints: all of it).
 */
export type SpaceUse = "write" | "delete" | "upkeep";

/** Segments of the full-disk reserve (see the module comment). */
export interface SpaceReserve {
  /** Kept for upkeep: a checkpoint and a cleaning victim's live records. */
  readonly upkeep: number;
  /** Kept for transactions that only delete, on top of `upkeep`. */
  readonly deletes: number;
}

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
  private reserve: SpaceReserve = { upkeep: 0, deletes: 0 };
  /** Why the file could not grow the last time it tried (cleared when it grows). */
  private growthFailure: NoSpaceError | undefined;

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
   * unit named, or a newly taken one — and grow the file to hold both. Opening may use the whole
   * reserve: a store reopened on a full disk must still open, and delete and compact.
   */
  startAt(end: LogPosition, writable: boolean): void {
    this.currentSeq = this.geometry.seqOf(end.address);
    this.currentIndex = end.segmentIndex;
    this.table.assign(this.currentSeq, this.currentIndex);
    if (!writable) return;
    if (end.nextSegmentIndex === UNKNOWN_SEGMENT || end.nextSegmentIndex === end.segmentIndex) {
      this.nextIndex = this.take("upkeep");
    } else {
      this.nextIndex = end.nextSegmentIndex;
      this.table.claim(this.nextIndex);
      this.ensureFileHolds(this.nextIndex);
    }
    this.ensureFileHolds(this.currentIndex);
  }

  /**
   * The writer moves into segment `seq` (the next one): it gets the successor taken earlier, and a
   * new successor is taken now, for `use`. Throws (NoSpaceError…) with nothing changed when none
   * can be had.
   */
  enter(seq: number, use: SpaceUse): void {
    const index = this.nextIndex;
    const following = this.take(use);
    this.currentSeq = seq;
    this.currentIndex = index;
    this.nextIndex = following;
    this.table.assign(seq, index);
  }

  /**
   * A segment for `use`, as long as what `use` must leave free stays free: the lowest free one,
   * else (on a block device) the next one of the device. A regular file is grown first when free
   * segments are short of the whole reserve plus this one, so the reserve is only eaten into
   * when the disk (or `maxFileBytes`) is full.
   */
  private take(use: SpaceUse): number {
    if (!this.onDevice) this.grow(this.reserveSegments + 1);
    if (this.available <= this.floorFor(use)) throw this.noSpace(use);
    if (this.table.freeCount > 0) return this.table.takeFree();
    // A block device does not grow, and its new segments hold whatever was there before: each
    // is zeroed (durably) the first time the log takes it, before anything names it (prewrite.ts).
    const index = this.table.nextNewIndex;
    this.ensureFileHolds(index);
    this.table.addNew(index);
    this.prewriter.zeroSegment(index, this.geometry.segmentFileOffset(index), this.geometry.segmentSize);
    return this.table.takeFree();
  }

  /** A block device: its segments exist already, and it is never grown or truncated. */
  private get onDevice(): boolean {
    return this.file.deviceBytes !== undefined;
  }

  /**
   * Segments the writer may still take without new disk blocks: the free ones, plus on a block
   * device those it has not used yet (they are there; the reserve needs no allocating there).
   */
  private get available(): number {
    if (!this.onDevice) return this.table.freeCount;
    return this.table.freeCount + Math.max(0, this.geometry.segmentsIn(this.maxFileBytes, "whole") - this.table.fileSegments);
  }

  // ───────────────────────── the full-disk reserve ─────────────────────────

  /**
   * Keep `reserve` free segments allocated in the file for deletes and upkeep (see the module
   * comment). Allocates what is missing now if the file can grow; if it cannot, the reserve is
   * completed by the next growth that succeeds. Throws only for an I/O error other than no space.
   */
  keepReserve(reserve: SpaceReserve): void {
    if (!Number.isInteger(reserve.upkeep) || !Number.isInteger(reserve.deletes) || reserve.upkeep < 0 || reserve.deletes < 0) {
      throw new Error(`bad space reserve ${JSON.stringify(reserve)}`);
    }
    this.reserve = { upkeep: reserve.upkeep, deletes: reserve.deletes };
    if (!this.onDevice) this.grow(this.reserveSegments);
  }

  /** The reserve being kept, in segments. */
  get reserveSegments(): number {
    return this.reserve.upkeep + this.reserve.deletes;
  }

  /** Free segments an append for `use` must leave free. */
  private floorFor(use: SpaceUse): number {
    if (use === "upkeep") return 0;
    if (use === "delete") return this.reserve.upkeep;
    return this.reserveSegments;
  }

  /**
   * Throws NoSpaceError unless appends for `use` may go on. While free segments are below what
   * `use` must leave free (upkeep or deletes took from the reserve), its appends would fill the
   * segment the reserve is being spent in, so they are refused even when that segment has room.
   * Growing the file is tried first. Cheap when there is room.
   */
  assertRoomFor(use: SpaceUse): void {
    const floor = this.floorFor(use);
    if (this.available >= floor) return;
    if (!this.onDevice) this.grow(this.reserveSegments);
    if (this.available >= floor) return;
    throw this.noSpace(use);
  }

  /**
   * True when user writes cannot get another segment: no segment is left outside the reserve,
   * and the file could not grow the last time it tried (a block device cannot).
   */
  get outOfSpace(): boolean {
    return this.available <= this.floorFor("write") && (this.onDevice || this.growthFailure !== undefined);
  }

  private noSpace(use: SpaceUse): NoSpaceError {
    const why = this.onDevice ? `the ${this.maxFileBytes}-byte device is full` : (this.growthFailure?.message ?? "the file cannot grow");
    const what = use === "write" ? "new data" : use === "delete" ? "deletes" : "the store's upkeep";
    const keptFor = use === "write" ? "deletes, compaction and checkpoints" : "compaction and checkpoints";
    return new NoSpaceError(
      `no room for ${what}: ${this.available} free segments, ${this.floorFor(use)} kept for ${keptFor}; ${why}`,
    );
  }

  /**
   * Add new segments at the end of a regular file until `target` are free, each allocated whole. Stops
   * at the first that cannot be had for lack of space (remembered until a growth succeeds);
   * an I/O error of another kind is thrown.
   */
  private grow(target: number): void {
    while (this.table.freeCount < target) {
      const index = this.table.nextNewIndex;
      try {
        this.ensureFileHolds(index);
      } catch (error) {
        if (!(error instanceof NoSpaceError)) throw error;
        this.growthFailure = error;
        return;
      }
      this.table.addNew(index);
      this.growthFailure = undefined;
    }
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
      this.allocate(offsetBytes, geometry.segmentSize);
      if (segment >= firstWhole) this.prewriter.onFreshSegment(segment, offsetBytes, geometry.segmentSize);
    }
  }

  /**
   * fallocate `[offset, +length)`. On a full disk fallocate may allocate part of the range and
   * grow the file over it before it fails with ENOSPC: that part is cut off again, so the failed
   * attempt changes nothing (its blocks go back to the filesystem, and the file keeps whole segments).
   */
  private allocate(offsetBytes: number, lengthBytes: number): void {
    const before = this.backend.fileSizeBytes(this.file);
    try {
      this.backend.allocateSpace(this.file, offsetBytes, lengthBytes);
    } catch (error) {
      if (error instanceof NoSpaceError) {
        try {
          if (this.backend.fileSizeBytes(this.file) > before) this.backend.truncate(this.file, before);
        } catch {
          // Best effort: a partly allocated segment left past the end is allocated whole by the
          // next growth (it starts at the first segment the file does not hold whole).
        }
      }
      throw error;
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
    if (this.onDevice) return 0;
    let keep = Math.max(this.currentIndex, this.nextIndex, this.table.highestHeldIndex()) + 1;
    // The full-disk reserve stays allocated: every segment past the highest held one is free,
    // so keeping as many more as the reserve lacks below `keep` keeps it whole.
    keep = Math.min(this.table.fileSegments, keep + Math.max(0, this.reserveSegments - this.table.freeBelow(keep)));
    const before = this.backend.fileSizeBytes(this.file);
    const after = this.geometry.fileBytesFor(keep);
    if (after >= before) return 0;
    this.table.shrinkTo(keep);
    this.backend.truncate(this.file, after);
    return before - after;
  }
}
