/**
 * Pins: segments that a read in flight (a `read()` or a `readStream()`) is reading. The cleaner
 * never gives a pinned segment back, and a checkpoint never releases one, so an overwrite, a
 * delete or a relocation cannot let the segment be reused under the reader: the version being
 * read stays readable until the read ends.
 *
 * @module
 */
import type { LogStructuredStore } from "../log/log.ts";
import type { Part } from "./format/extents.ts";
import type { Location } from "./state/mapping.ts";

/** Counts of readers per segment seq: pinned segments are not released. */
export class SegmentPins {
  private readonly counts = new Map<number, number>();
  /** Pins held in other threads (src/workers: Workers' reads): which of the seqs given are pinned there. */
  external: ((seqs: readonly number[]) => Set<number>) | undefined;

  pin(seqs: Iterable<number>): void {
    for (const seq of seqs) this.counts.set(seq, (this.counts.get(seq) ?? 0) + 1);
  }

  unpin(seqs: Iterable<number>): void {
    for (const seq of seqs) {
      const left = (this.counts.get(seq) ?? 0) - 1;
      if (left <= 0) this.counts.delete(seq);
      else this.counts.set(seq, left);
    }
  }

  isPinned(seq: number): boolean {
    return this.counts.has(seq) || (this.external !== undefined && this.external([seq]).size > 0);
  }

  /** Which of `seqs` are pinned, here or in another thread (one look at the other threads' pins). */
  pinnedAmong(seqs: readonly number[]): Set<number> {
    const pinned = new Set<number>();
    if (seqs.length === 0) return pinned;
    for (const seq of seqs) if (this.counts.has(seq)) pinned.add(seq);
    if (this.external !== undefined) for (const seq of this.external(seqs)) pinned.add(seq);
    return pinned;
  }
}

/** The segments an element's bytes lie in (what a reader pins). */
export function elementSegments(log: LogStructuredStore, location: Location, parts: readonly Part[] | undefined): number[] {
  if (parts === undefined) return [log.segmentSeqOf(location.address)];
  return [...new Set(parts.map((part) => log.segmentSeqOf(part.address)))];
}

