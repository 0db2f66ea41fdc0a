/**
 * A bounded cache of element bytes, by seid. `cacheBytes` is a hard limit on the bytes of values
 * held; an element larger than a quarter of it is never cached, so one big read cannot flush
 * everything else.
 *
 * Eviction is CLOCK (second chance) over Map insertion order: a hit only sets a flag, so the hot
 * read path does one Map lookup and no reordering; eviction gives flagged entries one more round.
 *
 * Keys: a seid below 2^53 is keyed by its Number, which the engine hashes several times faster
 * than a BigInt (the profile of a 1 M-write bulk load had a third of its time in BigInt-keyed
 * Map lookups); larger seids keep their BigInt. The two kinds never collide: a Map compares a
 * number and a bigint as different keys.
 *
 * @module
 */

/** The Map key of `seid`: its Number when exact, else the BigInt itself. */
function keyOf(seid: bigint): number | bigint {
  // One conversion and a number compare: past 2^53 the Number rounds to at least 2^53.
  const key = Number(seid);
  return key <= Number.MAX_SAFE_INTEGER ? key : seid;
}

interface Entry {
  value: Uint8Array;
  referenced: boolean;
}

export class ElementCache {
  private readonly entries = new Map<number | bigint, Entry>();
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
    const entry = this.entries.get(keyOf(seid));
    if (entry === undefined) {
      this.misses += 1;
      return undefined;
    }
    this.hits += 1;
    entry.referenced = true;
    return entry.value;
  }

  set(seid: bigint, value: Uint8Array): void {
    if (value.length > this.limitBytes / 4) {
      this.invalidate(seid);
      return;
    }
    const key = keyOf(seid);
    const entry = this.entries.get(key);
    if (entry === undefined) {
      this.entries.set(key, { value, referenced: false });
      this.heldBytes += value.length;
    } else {
      // Replaced in place: one lookup, and the new value starts without a second chance.
      this.heldBytes += value.length - entry.value.length;
      entry.value = value;
      entry.referenced = false;
    }
    this.evict();
  }

  private evict(): void {
    // Each pass either evicts or clears a flag, so this ends within two rounds of the entries.
    while (this.heldBytes > this.limitBytes) {
      const oldest = this.entries.entries().next();
      if (oldest.done === true) break;
      const [key, entry] = oldest.value;
      this.entries.delete(key);
      if (entry.referenced) {
        entry.referenced = false;
        this.entries.set(key, entry);
      } else {
        this.heldBytes -= entry.value.length;
      }
    }
  }

  invalidate(seid: bigint): void {
    if (this.entries.size === 0) return;
    const key = keyOf(seid);
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.heldBytes -= entry.value.length;
  }

  clear(): void {
    this.entries.clear();
    this.heldBytes = 0;
  }
}
