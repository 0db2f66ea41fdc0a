/**
 * Segments of the one file: which physical segment holds each segment sequence number of the log,
 * and the allocator of free segments.
 *
 * Reuse rule (the FASTER lesson): a segment given back by the cleaner is only *pending*. It joins
 * the free list ({@link SegmentTable.promotePending}) once nothing recovery or a reader of the
 * durable tail could read points into it:
 * - everything the log holds up to the moment it was given back is durable (so the relocations
 *   that emptied it survive a crash),
 * - it lies wholly before the newest checkpoint's start, which both root copies name. Recovery
 *   reads the checkpoint and the log after it, never a segment before it; a checkpoint entry that
 *   still points into the segment is replaced when the relocation is replayed, and
 * - it lies wholly before the tail's low-water mark: the oldest log address a durable-tail reader
 *   or a retention handle still needs (see tail.ts). A pending segment stays readable there.
 *
 * Between checkpoints the allocator hands out segments in a deterministic order (lowest free index
 * first, then new segments at the end of the file), and each unit header names the segment that
 * follows its own, so recovery can walk the log.
 *
 * @module
 */
import { InvalidArgumentError } from "../errors.ts";

/** Largest segment count a file may have (u32 indices in unit headers). */
export const MAX_SEGMENTS = 0x7fffffff;

/** Serializable allocator state, part of every checkpoint. */
export interface SegmentTableState {
  /** seq → physical index for every segment that still holds log. */
  live: Array<[number, number]>;
  /** Free physical indices (includes those pending at checkpoint time: the checkpoint frees them). */
  free: number[];
  /** Segments the file has room for. */
  fileSegments: number;
}

/** The seq → index map and the free-segment allocator. */
export class SegmentTable {
  private readonly bySeq = new Map<number, number>();
  /** Reverse of bySeq: index → seq. */
  private readonly byIndex = new Map<number, number>();
  private free: number[] = [];
  /** Pending index → [seq it held, log address that must be durable first]. */
  private readonly pending = new Map<number, { seq: number; durableAt: number }>();
  /** Number of segment slots in the file so far. */
  fileSegments = 0;

  /** Physical index of segment `seq`, or undefined when it is not part of the log. */
  indexOf(seq: number): number | undefined {
    return this.bySeq.get(seq);
  }

  /**
   * Physical index of segment `seq` while its bytes are still there: live, or given back but still
   * pending (not yet free, so not yet reused). Undefined once it may have been overwritten.
   */
  heldIndexOf(seq: number): number | undefined {
    const live = this.bySeq.get(seq);
    if (live !== undefined) return live;
    for (const [index, entry] of this.pending) if (entry.seq === seq) return index;
    return undefined;
  }

  /**
   * Record that `seq` lives at `index`. If an older seq still claims the same index, that claim is
   * stale: recovery restored it from a checkpoint, but the segment was emptied and reused after
   * that checkpoint (the relocations that emptied it are replayed from the log), so it is dropped.
   */
  assign(seq: number, index: number): void {
    const existing = this.bySeq.get(seq);
    if (existing !== undefined && existing !== index) {
      throw new Error(`segment seq ${seq} assigned twice (${existing}, ${index})`);
    }
    const holder = this.byIndex.get(index);
    if (holder !== undefined && holder !== seq) {
      if (holder > seq) throw new Error(`segment index ${index} held by seq ${holder}, newer than seq ${seq}`);
      this.bySeq.delete(holder);
    }
    this.bySeq.set(seq, index);
    this.byIndex.set(index, seq);
    this.removeFree(index);
    this.pending.delete(index);
    if (index >= this.fileSegments) this.fileSegments = index + 1;
  }

  /** Take the lowest free index; the caller checked that there is one ({@link freeCount}). */
  takeFree(): number {
    const index = this.free.shift();
    if (index === undefined) throw new Error("takeFree() with no free segment");
    // Invariant (cheap, kept on): a free segment is held by no live seq.
    if (this.byIndex.has(index)) throw new Error(`free segment ${index} is still held by seq ${this.byIndex.get(index)}`);
    return index;
  }

  /** Index the next segment added at the end of the file gets. */
  get nextNewIndex(): number {
    if (this.fileSegments >= MAX_SEGMENTS) throw new InvalidArgumentError(`the file already has ${MAX_SEGMENTS} segments`);
    return this.fileSegments;
  }

  /**
   * Take segment {@link nextNewIndex} for the writer at once (not via the free list): a slot at
   * the end of the file that the file does not hold yet (space.ts grows it when it is written).
   */
  takeNew(): number {
    const index = this.nextNewIndex;
    this.fileSegments += 1;
    return index;
  }

  /** A segment the writer took but never wrote to goes back to the free list. */
  giveBack(index: number): void {
    if (this.byIndex.has(index) || this.pending.has(index)) throw new Error(`segment ${index} given back while it holds log`);
    if (index >= this.fileSegments) this.fileSegments = index + 1;
    this.insertFree(index);
  }

  /** Free indices, ascending (a view: do not change it). */
  get freeIndices(): readonly number[] {
    return this.free;
  }

  /**
   * After recovery: every index of the file that is neither live, pending, free nor one of
   * `held` (the writer's two) joins the free list. Such an index was taken for the writer
   * after the checkpoint and never reached by the durable log (so nothing durable points into
   * it). Returns how many were found.
   */
  reconcile(held: readonly number[]): number {
    let count = 0;
    const freeSet = new Set(this.free);
    for (let index = 0; index < this.fileSegments; index++) {
      if (this.byIndex.has(index) || this.pending.has(index) || freeSet.has(index) || held.includes(index)) continue;
      this.insertFree(index);
      count += 1;
    }
    return count;
  }

  /** Segment {@link nextNewIndex}, now held by the file, joins the free list. */
  addNew(index: number): void {
    if (index !== this.fileSegments) throw new Error(`new segment ${index} is not the next one (${this.fileSegments})`);
    this.fileSegments += 1;
    this.insertFree(index);
  }

  /**
   * Mark `index` taken (recovery: the log's walk names it as the segment after the tail). At run
   * time it was free when the log reserved it, so an older seq still claiming it in a restored
   * checkpoint table is stale, and is dropped now, before the cleaner could give it back again.
   */
  claim(index: number): void {
    const holder = this.byIndex.get(index);
    if (holder !== undefined) {
      this.bySeq.delete(holder);
      this.byIndex.delete(index);
    }
    this.removeFree(index);
    this.pending.delete(index);
    if (index >= this.fileSegments) this.fileSegments = index + 1;
  }

  /** The cleaner gives `seq` back once the log up to `durableAt` is durable (see the rule above). */
  release(seq: number, durableAt: number): void {
    const index = this.bySeq.get(seq);
    if (index === undefined) throw new Error(`release of segment seq ${seq} that is not live`);
    this.bySeq.delete(seq);
    this.byIndex.delete(index);
    this.pending.set(index, { seq, durableAt });
  }

  /**
   * Free the pending segments that the rule allows: returns how many. `retainedFromSeq` is the
   * tail's low-water mark: no segment at or after it is freed (Infinity when nobody retains).
   */
  promotePending(stableAddress: number, checkpointStartSeq: number, retainedFromSeq = Number.POSITIVE_INFINITY): number {
    let count = 0;
    for (const [index, entry] of this.pending) {
      if (entry.seq >= checkpointStartSeq || entry.seq >= retainedFromSeq || entry.durableAt > stableAddress) continue;
      this.pending.delete(index);
      this.insertFree(index);
      count += 1;
    }
    return count;
  }

  get liveCount(): number {
    return this.bySeq.size;
  }

  get freeCount(): number {
    return this.free.length;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Live sequence numbers, ascending. */
  liveSeqs(): number[] {
    return [...this.bySeq.keys()].sort((a, b) => a - b);
  }

  /** State for a checkpoint; pending segments count as free, since that checkpoint frees them. */
  snapshot(): SegmentTableState {
    const free = [...this.free, ...this.pending.keys()].sort((a, b) => a - b);
    return { live: [...this.bySeq.entries()], free, fileSegments: this.fileSegments };
  }

  /** Load a checkpoint's state. */
  restore(state: SegmentTableState): void {
    this.bySeq.clear();
    this.byIndex.clear();
    for (const [seq, index] of state.live) {
      this.bySeq.set(seq, index);
      this.byIndex.set(index, seq);
    }
    this.free = [...state.free].sort((a, b) => a - b);
    this.pending.clear();
    this.fileSegments = state.fileSegments;
  }

  /** Highest index that is live or pending (−1 if none). */
  highestHeldIndex(): number {
    let highest = -1;
    for (const index of this.bySeq.values()) highest = Math.max(highest, index);
    for (const index of this.pending.keys()) highest = Math.max(highest, index);
    return highest;
  }

  /** Free indices below `segments`. */
  freeBelow(segments: number): number {
    let count = 0;
    for (const index of this.free) if (index < segments) count += 1;
    return count;
  }

  /** Drop free indices at or above `segments` (after the file was truncated to that many). */
  shrinkTo(segments: number): void {
    if (this.highestHeldIndex() >= segments) throw new Error(`shrink to ${segments} segments would cut a held one`);
    this.free = this.free.filter((index) => index < segments);
    this.fileSegments = segments;
  }

  private removeFree(index: number): void {
    const at = this.free.indexOf(index);
    if (at >= 0) this.free.splice(at, 1);
  }

  private insertFree(index: number): void {
    let lo = 0;
    let hi = this.free.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.free[mid] as number) < index) lo = mid + 1;
      else hi = mid;
    }
    if (this.free[lo] !== index) this.free.splice(lo, 0, index);
  }
}
