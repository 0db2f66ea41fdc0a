/**
 * Segment utilisation table: live bytes of committed, reachable records per log segment
 * (keyed by segment sequence number). Kept exact through writes, overwrites and deletes: each
 * record counts its padded size in the segment its address falls in, and leaves it when the
 * element it belongs to is replaced or deleted. The cleaner picks victims from it.
 *
 * @module
 */

/** seq → live bytes. */
export class SegmentUtilisation {
  private readonly live = new Map<number, number>();
  private totalBytes = 0;
  /** The log's address math (LogGeometry.seqOf): one home for it, not a second division here. */
  private readonly seqOf: (address: number) => number;

  constructor(seqOf: (address: number) => number) {
    this.seqOf = seqOf;
  }

  add(address: number, bytes: number): void {
    const seq = this.seqOf(address);
    this.live.set(seq, (this.live.get(seq) ?? 0) + bytes);
    this.totalBytes += bytes;
  }

  remove(address: number, bytes: number): void {
    const seq = this.seqOf(address);
    const left = (this.live.get(seq) ?? 0) - bytes;
    if (left < 0) throw new Error(`segment ${seq} live bytes would go negative (${left})`);
    if (left === 0) this.live.delete(seq);
    else this.live.set(seq, left);
    this.totalBytes -= bytes;
  }

  liveBytesOf(seq: number): number {
    return this.live.get(seq) ?? 0;
  }

  get totalLiveBytes(): number {
    return this.totalBytes;
  }

  /** Segments holding any live bytes. */
  get segmentCount(): number {
    return this.live.size;
  }

  entries(): Array<[number, number]> {
    return [...this.live.entries()];
  }

  restore(entries: ReadonlyArray<readonly [number, number]>): void {
    this.live.clear();
    this.totalBytes = 0;
    for (const [seq, bytes] of entries) {
      this.live.set(seq, bytes);
      this.totalBytes += bytes;
    }
  }
}
