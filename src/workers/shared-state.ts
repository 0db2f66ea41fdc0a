/**
 * What the owner publishes in shared memory so that reads in any Worker need no message:
 *
 * - {@link SharedMapping}: a copy of the mapping table (seid → address, size, multipart) in a
 *   growable SharedArrayBuffer, under a **seqlock**. The owner makes the sequence word odd before
 *   applying a commit and even after it (commit.ts calls the observer in the commit's one
 *   synchronous step), so a reader that saw the same even value before and after its lookup saw
 *   all of every transaction or none of it. A rehash happens inside the same odd window: the
 *   reader retries across it (and never follows a probe further than the capacity it read).
 * - {@link SharedSegments}: segment seq → physical index, republished (same seqlock) whenever the
 *   log's tail moves to a new segment, so a Worker can turn a log address into a file offset.
 * - {@link SharedPins}: segments Workers are reading. The owner's cleaner and checkpointer count
 *   them as pinned, so a segment is never given back under a Worker's read. Each pin names its
 *   attachment, so the owner drops a dead Worker's pins.
 * - {@link StatsBoard}: the owner's `stats()` as JSON, refreshed while Workers are attached.
 *
 * Why a copy of the mapping table rather than moving the table itself into shared memory: the
 * single-threaded store keeps its layout and speed untouched, and the copy costs memory only once
 * `share()` was called.
 *
 * @module
 */
import type { Location } from "../store/state/mapping.ts";

/** Largest shared mapping table: 2^27 slots (about 100 M seids at the load limit; 3 GiB of address space reserved, not memory — JSC refuses a 6 GiB reservation). */
export const MAX_SHARED_SLOTS = 1 << 27;
const STRIDE = 6;
const KEY_LO = 0;
const KEY_HI = 1;
const ADDRESS_LO = 2;
const ADDRESS_HI = 3;
const SIZE_LO = 4;
const SIZE_HI = 5;
const MULTIPART_BIT = 0x80000000;
const TWO_POW_32 = 4294967296;
const MAX_LOAD = 0.75;
const INITIAL_SLOTS = 1024;

/** Seqlock words (Int32): the sequence, the capacity in slots, the count. */
const SEQ = 0;
const CAPACITY = 1;
const COUNT = 2;

const split64 = new BigUint64Array(1);
const split32 = new Uint32Array(split64.buffer);

function slotOf(lo: number, hi: number, mask: number): number {
  let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) & mask;
}

/** The buffers of a {@link SharedMapping}: part of the store handle. */
export interface SharedMappingBuffers {
  readonly meta: SharedArrayBuffer;
  readonly slots: SharedArrayBuffer;
}

/** A seqlocked copy of the mapping table: the owner writes, Workers read. */
export class SharedMapping {
  readonly buffers: SharedMappingBuffers;
  private readonly meta: Int32Array;
  private readonly slotsBuffer: SharedArrayBuffer;
  /** Length-tracking view: follows the buffer as it grows. */
  private readonly slots: Uint32Array;

  constructor(buffers?: SharedMappingBuffers) {
    if (buffers === undefined) {
      const slots = new SharedArrayBuffer(INITIAL_SLOTS * STRIDE * 4, { maxByteLength: MAX_SHARED_SLOTS * STRIDE * 4 });
      buffers = { meta: new SharedArrayBuffer(16), slots };
      new Int32Array(buffers.meta)[CAPACITY] = INITIAL_SLOTS;
    }
    this.buffers = buffers;
    this.meta = new Int32Array(buffers.meta);
    this.slotsBuffer = buffers.slots;
    this.slots = new Uint32Array(buffers.slots);
  }

  get sequence(): number {
    return Atomics.load(this.meta, SEQ);
  }

  get size(): number {
    return Atomics.load(this.meta, COUNT);
  }

  get memoryBytes(): number {
    return this.slotsBuffer.byteLength;
  }

  // ───────────────────────────── owner (writer) ─────────────────────────────

  /** Owner: readers retry from here until {@link endWrite}. */
  beginWrite(): void {
    Atomics.add(this.meta, SEQ, 1);
  }

  /** Owner: the commit is whole; readers may use what they see. */
  endWrite(): void {
    Atomics.add(this.meta, SEQ, 1);
    Atomics.notify(this.meta, SEQ);
  }

  /** Owner, inside a write: insert or replace. */
  set(seid: bigint, location: Location): void {
    const capacity = this.meta[CAPACITY] as number;
    if ((this.meta[COUNT] as number) + 1 > capacity * MAX_LOAD) this.grow(capacity * 2);
    split64[0] = seid;
    const lo = split32[0] as number;
    const hi = split32[1] as number;
    let slot = this.probe(lo, hi);
    if (slot < 0) {
      slot = -1 - slot;
      this.meta[COUNT] = (this.meta[COUNT] as number) + 1;
    }
    this.store(slot, lo, hi, location.address, location.sizeBytes, location.multipart);
  }

  /** Owner, inside a write: remove (backward-shift deletion, no tombstones). */
  delete(seid: bigint): void {
    split64[0] = seid;
    let slot = this.probe(split32[0] as number, split32[1] as number);
    if (slot < 0) return;
    const slots = this.slots;
    const mask = (this.meta[CAPACITY] as number) - 1;
    let hole = slot;
    for (;;) {
      slot = (slot + 1) & mask;
      const lo = slots[slot * STRIDE + KEY_LO] as number;
      const hi = slots[slot * STRIDE + KEY_HI] as number;
      if (lo === 0 && hi === 0) break;
      const home = slotOf(lo, hi, mask);
      if (((slot - home) & mask) >= ((slot - hole) & mask)) {
        slots.copyWithin(hole * STRIDE, slot * STRIDE, slot * STRIDE + STRIDE);
        hole = slot;
      }
    }
    slots.fill(0, hole * STRIDE, hole * STRIDE + STRIDE);
    this.meta[COUNT] = (this.meta[COUNT] as number) - 1;
  }

  private store(slot: number, lo: number, hi: number, address: number, sizeBytes: number, multipart: boolean): void {
    const base = slot * STRIDE;
    const slots = this.slots;
    slots[base + KEY_LO] = lo;
    slots[base + KEY_HI] = hi;
    slots[base + ADDRESS_LO] = address >>> 0;
    const high = Math.floor(address / TWO_POW_32);
    slots[base + ADDRESS_HI] = multipart ? (high | MULTIPART_BIT) >>> 0 : high;
    slots[base + SIZE_LO] = sizeBytes >>> 0;
    slots[base + SIZE_HI] = Math.floor(sizeBytes / TWO_POW_32);
  }

  private probe(lo: number, hi: number): number {
    const slots = this.slots;
    const mask = (this.meta[CAPACITY] as number) - 1;
    let slot = slotOf(lo, hi, mask);
    for (;;) {
      const base = slot * STRIDE;
      const keyLo = slots[base + KEY_LO] as number;
      const keyHi = slots[base + KEY_HI] as number;
      if (keyLo === lo && keyHi === hi) return slot;
      if (keyLo === 0 && keyHi === 0) return -1 - slot;
      slot = (slot + 1) & mask;
    }
  }

  /** Rehash in place, inside the odd window: readers retry across it. */
  private grow(capacity: number): void {
    if (capacity > MAX_SHARED_SLOTS) throw new RangeError(`the shared mapping table is limited to ${MAX_SHARED_SLOTS} slots`);
    const old = this.slots.slice();
    this.slotsBuffer.grow(capacity * STRIDE * 4);
    this.slots.fill(0);
    this.meta[CAPACITY] = capacity;
    for (let base = 0; base < old.length; base += STRIDE) {
      const lo = old[base + KEY_LO] as number;
      const hi = old[base + KEY_HI] as number;
      if (lo === 0 && hi === 0) continue;
      const slot = -1 - this.probe(lo, hi);
      this.slots.set(old.subarray(base, base + STRIDE), slot * STRIDE);
    }
  }

  // ───────────────────────────── any thread (reader) ─────────────────────────────

  /**
   * The location of `seid` as of one whole commit, with the sequence it was read at (give it to
   * {@link unchangedSince} to check nothing moved since). Waits (synchronously, bounded steps)
   * while the owner is inside a commit.
   */
  lookup(seid: bigint): { location: Location | undefined; sequence: number } {
    split64[0] = seid;
    const lo = split32[0] as number;
    const hi = split32[1] as number;
    for (;;) {
      const before = Atomics.load(this.meta, SEQ);
      if ((before & 1) !== 0) {
        // The owner is applying a commit (or rehashing): a short wait, then look again.
        Atomics.wait(this.meta, SEQ, before, 5);
        continue;
      }
      const location = this.readSlot(lo, hi);
      if (Atomics.load(this.meta, SEQ) === before) return { location, sequence: before };
    }
  }

  /** True if no commit was applied since `sequence` (a reader's pin is then known to be in time). */
  unchangedSince(sequence: number): boolean {
    return Atomics.load(this.meta, SEQ) === sequence;
  }

  /** A racy read, validated by the caller's seqlock check; never loops past the capacity. */
  private readSlot(lo: number, hi: number): Location | undefined {
    const capacity = Atomics.load(this.meta, CAPACITY);
    const slots = this.slots;
    if (capacity * STRIDE > slots.length) return undefined; // mid-grow: the seqlock check fails
    const mask = capacity - 1;
    let slot = slotOf(lo, hi, mask);
    for (let probes = 0; probes < capacity; probes++) {
      const base = slot * STRIDE;
      const keyLo = slots[base + KEY_LO] as number;
      const keyHi = slots[base + KEY_HI] as number;
      if (keyLo === lo && keyHi === hi) {
        const high = slots[base + ADDRESS_HI] as number;
        return {
          address: (high & ~MULTIPART_BIT) * TWO_POW_32 + (slots[base + ADDRESS_LO] as number),
          multipart: (high & MULTIPART_BIT) !== 0,
          sizeBytes: (slots[base + SIZE_HI] as number) * TWO_POW_32 + (slots[base + SIZE_LO] as number),
        };
      }
      if (keyLo === 0 && keyHi === 0) return undefined;
      slot = (slot + 1) & mask;
    }
    return undefined;
  }

  /** Seids whose high half is `space`, or every seid when `space` is undefined (one consistent snapshot). */
  seids(space?: number): bigint[] {
    for (;;) {
      const before = Atomics.load(this.meta, SEQ);
      if ((before & 1) !== 0) {
        Atomics.wait(this.meta, SEQ, before, 5);
        continue;
      }
      const capacity = Atomics.load(this.meta, CAPACITY);
      const out: bigint[] = [];
      const slots = this.slots;
      for (let slot = 0; slot < capacity && slot * STRIDE < slots.length; slot++) {
        const hi = slots[slot * STRIDE + KEY_HI] as number;
        if (space !== undefined && hi !== space) continue;
        const lo = slots[slot * STRIDE + KEY_LO] as number;
        if (lo === 0 && hi === 0) continue;
        out.push((BigInt(hi) << 32n) | BigInt(lo));
      }
      if (Atomics.load(this.meta, SEQ) === before) return out;
    }
  }
}

/** Segment seq → physical index, published whole under a seqlock (Int32: SEQ, COUNT, pairs). */
export class SharedSegments {
  readonly shared: SharedArrayBuffer;
  private readonly words: Int32Array;
  /** Owner: what was last published (tail seq and live count), to republish only on change. */
  private lastTail = -1;
  private lastCount = -1;

  constructor(shared?: SharedArrayBuffer) {
    this.shared = shared ?? new SharedArrayBuffer(8 + 64 * 8, { maxByteLength: 8 + (1 << 26) * 8 });
    this.words = new Int32Array(this.shared);
  }

  /** Owner: publish the live segments when the tail or the live count moved since the last time. */
  publishIfChanged(tailSeq: number, liveCount: number, pairs: () => ReadonlyArray<readonly [number, number]>): void {
    if (tailSeq === this.lastTail && liveCount === this.lastCount) return;
    this.publish(pairs());
    this.lastTail = tailSeq;
    this.lastCount = liveCount;
  }

  /** Owner: publish `pairs` ([seq, index]) whole. Seqs above 2^31 − 1 are refused (explicit limit). */
  publish(pairs: ReadonlyArray<readonly [number, number]>): void {
    const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
    const needed = 8 + sorted.length * 8;
    if (needed > this.shared.byteLength) this.shared.grow(Math.min(this.shared.maxByteLength, Math.max(needed, this.shared.byteLength * 2)));
    Atomics.add(this.words, 0, 1);
    this.words[1] = sorted.length;
    sorted.forEach(([seq, index], i) => {
      if (seq > 0x7fffffff) throw new RangeError(`segment seq ${seq} is past what Workers can address (2^31 - 1)`);
      this.words[2 + i * 2] = seq;
      this.words[3 + i * 2] = index;
    });
    Atomics.add(this.words, 0, 1);
  }

  /** Physical index of segment `seq`, or undefined when it is not live (as last published). */
  indexOf(seq: number): number | undefined {
    for (;;) {
      const before = Atomics.load(this.words, 0);
      if ((before & 1) !== 0) {
        Atomics.wait(this.words, 0, before, 1);
        continue;
      }
      const count = Math.min(this.words[1] as number, (this.words.length - 2) >> 1);
      let lo = 0;
      let hi = count;
      let found: number | undefined;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const at = this.words[2 + mid * 2] as number;
        if (at === seq) {
          found = this.words[3 + mid * 2] as number;
          break;
        }
        if (at < seq) lo = mid + 1;
        else hi = mid;
      }
      if (Atomics.load(this.words, 0) === before) return found;
    }
  }
}

/** Concurrent pins across all Workers at most; a reader past it waits for a free one (no error). */
export const PIN_ENTRIES = 16384;
/** Entries between two attachments' first choices (~4 KiB of the table apart). */
const PIN_REGION_ENTRIES = 341;
/** A pin entry being filled in (its seq words are not valid yet). */
const PIN_FILLING = -2;

/** Segments Workers are reading: entries [state, seqLo, seqHi]; state = attachment id when held. */
export class SharedPins {
  readonly shared: SharedArrayBuffer;
  private readonly words: Int32Array;
  /**
   * Where this thread looks for a free entry first: its last entry (free again once unpinned), in
   * a region of the table of its own (by attachment id). Why: every thread starting at entry 0 and
   * moving on after each pin had two reading Workers pinning in the same cache lines, each pin a
   * compare-and-swap on a line the other core had just written.
   */
  private hint = -1;

  constructor(shared?: SharedArrayBuffer) {
    this.shared = shared ?? new SharedArrayBuffer(PIN_ENTRIES * 3 * 4);
    this.words = new Int32Array(this.shared);
  }

  /** Pin `seq` for attachment `id`: an entry index to unpin with, or -1 when the table is full. */
  tryPin(id: number, seq: number): number {
    if (this.hint < 0) this.hint = (Math.abs(id) * PIN_REGION_ENTRIES) % PIN_ENTRIES;
    for (let i = 0; i < PIN_ENTRIES; i++) {
      const entry = (this.hint + i) % PIN_ENTRIES;
      if (Atomics.compareExchange(this.words, entry * 3, 0, PIN_FILLING) !== 0) continue;
      Atomics.store(this.words, entry * 3 + 1, seq >>> 0);
      Atomics.store(this.words, entry * 3 + 2, Math.floor(seq / TWO_POW_32));
      Atomics.store(this.words, entry * 3, id);
      this.hint = entry;
      return entry;
    }
    return -1;
  }

  unpin(entry: number): void {
    Atomics.store(this.words, entry * 3, 0);
  }

  /** Owner: which of `seqs` some Worker has pinned (one pass over the table). */
  pinnedAmong(seqs: readonly number[]): Set<number> {
    const pinned = new Set<number>();
    if (seqs.length === 0) return pinned;
    const wanted = new Set(seqs);
    for (let entry = 0; entry < PIN_ENTRIES; entry++) {
      if (Atomics.load(this.words, entry * 3) <= 0) continue;
      const seq = Atomics.load(this.words, entry * 3 + 2) * TWO_POW_32 + (Atomics.load(this.words, entry * 3 + 1) >>> 0);
      if (wanted.has(seq)) pinned.add(seq);
    }
    return pinned;
  }

  /** Owner: drop every pin of attachment `id` (it died). Returns how many. */
  dropAll(id: number): number {
    let dropped = 0;
    for (let entry = 0; entry < PIN_ENTRIES; entry++) {
      if (Atomics.compareExchange(this.words, entry * 3, id, 0) === id) dropped += 1;
    }
    return dropped;
  }
}

/** The owner's stats as JSON in shared memory (seqlocked), for `stats()` in Workers. */
export class StatsBoard {
  static readonly BYTES = 64 << 10;
  readonly shared: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(shared?: SharedArrayBuffer) {
    this.shared = shared ?? new SharedArrayBuffer(StatsBoard.BYTES);
    this.words = new Int32Array(this.shared, 0, 2);
    this.bytes = new Uint8Array(this.shared, 8);
  }

  /** Owner: publish `json` (cut to fit: explicit limit of 64 KiB). */
  publish(json: string): void {
    const encoded = new TextEncoder().encode(json);
    if (encoded.length > this.bytes.length) return;
    Atomics.add(this.words, 0, 1);
    this.bytes.set(encoded);
    this.words[1] = encoded.length;
    Atomics.add(this.words, 0, 1);
  }

  /** The last published JSON ("" before the first). */
  read(): string {
    for (;;) {
      const before = Atomics.load(this.words, 0);
      if ((before & 1) !== 0) continue;
      const length = this.words[1] as number;
      const text = new TextDecoder().decode(this.bytes.slice(0, Math.min(length, this.bytes.length)));
      if (Atomics.load(this.words, 0) === before) return text;
    }
  }
}
