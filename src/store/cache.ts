/**
 * A bounded LRU cache of element bytes, by seid. `cacheBytes` is a hard limit on the bytes of
 * values held; an element larger than a quarter of it is never cached, so one big read cannot
 * flush everything else. Map insertion order is the recency order.
 *
 * @module
 */

export class ElementCache {
  private readonly entries = new Map<bigint, Uint8Array>();
  private heldBytes = 0;
  readonly limitBytes: number;
  hits = 0;
  misses = 0;

  constructor(limitBytes: number) {
    this.limitBytes = limitBytes;
  }

  get bytes(): number {
    return this.heldBytes;
  }

  get(seid: bigint): Uint8Array | undefined {
    const value = this.entries.get(seid);
    if (value === undefined) {
      this.misses += 1;
      return undefined;
    }
    this.hits += 1;
    this.entries.delete(seid);
    this.entries.set(seid, value);
    return value;
  }

  set(seid: bigint, value: Uint8Array): void {
    this.invalidate(seid);
    if (value.length > this.limitBytes / 4) return;
    this.entries.set(seid, value);
    this.heldBytes += value.length;
    while (this.heldBytes > this.limitBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done === true) break;
      this.invalidate(oldest.value);
    }
  }

  invalidate(seid: bigint): void {
    const value = this.entries.get(seid);
    if (value === undefined) return;
    this.entries.delete(seid);
    this.heldBytes -= value.length;
  }

  clear(): void {
    this.entries.clear();
    this.heldBytes = 0;
  }
}
