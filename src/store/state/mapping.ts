/**
 * The mapping table: seid → location of the element's bytes in the log (the address of its data
 * record, or of its extents record when it has several parts) and its size.
 *
 * Compact by construction (the issue asks for ≤ 32 bytes of RAM per seid at 1 M seids): an
 * open-addressing hash table in one Uint32Array, 20 bytes a slot (seid as two u32, address as
 * two u32 with the multipart flag in the top bit, size as u32), linear probing with
 * backward-shift deletion (no tombstones), load kept ≤ 0.85 and growth by 1.5×, so a million
 * seids take about 24 bytes each. One array, not one per field, so a lookup touches one or two
 * cache lines, not four (on this VM that measured within noise of four arrays, but never worse).
 *
 * Sizes ≥ 2^32 − 1 (elements of 4 GiB and more) live in a small side map.
 *
 * @module
 */

const EMPTY = 0;
const MAX_LOAD = 0.85;
const GROWTH = 1.5;
const INITIAL_CAPACITY = 1024;
/** Seids that differ only in their low RUN_BITS bits have neighbouring home slots (see slotOf). */
const RUN_BITS = 4;
const RUN_SLOTS = 1 << RUN_BITS;
/** Size value meaning "look in the big-size side map". */
const BIG_SIZE = 0xffffffff;

/** u32 words per slot, and each field's word. */
const STRIDE = 5;
const KEY_LO = 0;
const KEY_HI = 1;
const ADDRESS_LO = 2;
const ADDRESS_HI = 3;
const SIZE = 4;
/** Top bit of ADDRESS_HI: the element is multipart (addresses stay below 2^53, so it is free). */
const MULTIPART_BIT = 0x80000000;
const TWO_POW_32 = 4294967296;

const split64 = new BigUint64Array(1);
const split32 = new Uint32Array(split64.buffer);

/**
 * `seid`'s low and high 32-bit halves (`[0]`, `[1]`), as the table stores them: one shared pair,
 * valid until the next call (no allocation per lookup; the value cache and the read path split
 * seids the same way).
 */
export function seidHalves(seid: bigint): Uint32Array {
  split64[0] = seid;
  return split32;
}

/** The seid whose low and high 32-bit halves are `lo` and `hi` (as the table stores it). */
export function seidFromHalves(lo: number, hi: number): bigint {
  split32[0] = lo;
  split32[1] = hi;
  return split64[0] as bigint;
}

/** A location in the log. */
export interface Location {
  /** Log address of the element's data record, or its extents record if `multipart`. */
  address: number;
  sizeBytes: number;
  multipart: boolean;
}

/** A {@link MappingTable} as plain data (see {@link MappingTable.detach}). */
export interface MappingTransfer {
  readonly capacity: number;
  readonly count: number;
  readonly slots: Uint32Array<ArrayBuffer>;
  readonly bigSizes: Array<[bigint, number]>;
}

/** seid → location, compact. */
export class MappingTable {
  private capacity = INITIAL_CAPACITY;
  private slots = new Uint32Array(INITIAL_CAPACITY * STRIDE);
  private readonly bigSizes = new Map<bigint, number>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Bytes of RAM the table's arrays take. */
  get memoryBytes(): number {
    return this.capacity * STRIDE * 4 + this.bigSizes.size * 64;
  }

  /**
   * Home slot of a seid: its run of {@link RUN_SLOTS} neighbours (the seids that differ in the low
   * bits only) is hashed to a random run of slots, and inside it each keeps its place. Seids come
   * from `allocateSeid` in order, so a bulk load fills the table run after run, a few cache lines
   * at a time, where a hash of the whole seid sent every insert to a random cache line (26.7 % of
   * a 1 M-write bulk load's CPU profile was this table's `put`; measured in docs/ARCHITECTURE.md).
   * Seids spread at random hash like before; seids that share their low bits only fill one slot
   * of each run they land in, and probe on through it, as a bucket would.
   */
  private slotOf(lo: number, hi: number): number {
    let h = Math.imul((lo >>> RUN_BITS) ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return Math.floor(((h >>> 0) * (this.capacity / RUN_SLOTS)) / 4294967296) * RUN_SLOTS + (lo & (RUN_SLOTS - 1));
  }

  private find(lo: number, hi: number): number {
    const slots = this.slots;
    let slot = this.slotOf(lo, hi);
    for (;;) {
      const base = slot * STRIDE;
      const keyLo = slots[base + KEY_LO] as number;
      const keyHi = slots[base + KEY_HI] as number;
      if (keyLo === lo && keyHi === hi) return slot;
      if (keyLo === EMPTY && keyHi === EMPTY) return -1 - slot;
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
    }
  }

  private locate(seid: bigint): number {
    const halves = seidHalves(seid);
    return this.find(halves[0] as number, halves[1] as number);
  }

  has(seid: bigint): boolean {
    return this.locate(seid) >= 0;
  }

  /**
   * `has` of the seid whose high half is `space` and low half `low`, without making a bigint:
   * the seid allocator steps over live seids with it (a bigint per step made that 4× slower).
   */
  hasHalves(space: number, low: number): boolean {
    return this.find(low >>> 0, space >>> 0) >= 0;
  }

  get(seid: bigint): Location | undefined {
    const slot = this.locate(seid);
    if (slot < 0) return undefined;
    return this.at(slot, seid);
  }

  /** Size of the element, without allocating a Location. */
  sizeOf(seid: bigint): number | undefined {
    const slot = this.locate(seid);
    if (slot < 0) return undefined;
    const size = this.slots[slot * STRIDE + SIZE] as number;
    return size === BIG_SIZE ? (this.bigSizes.get(seid) as number) : size;
  }

  private at(slot: number, seid: bigint): Location {
    const base = slot * STRIDE;
    const high = this.slots[base + ADDRESS_HI] as number;
    const size = this.slots[base + SIZE] as number;
    return {
      address: (high & ~MULTIPART_BIT) * TWO_POW_32 + (this.slots[base + ADDRESS_LO] as number),
      multipart: (high & MULTIPART_BIT) !== 0,
      sizeBytes: size === BIG_SIZE ? (this.bigSizes.get(seid) as number) : size,
    };
  }

  /** Insert or replace; returns the previous location. */
  set(seid: bigint, location: Location): Location | undefined {
    return this.put(seid, location.address, location.sizeBytes, location.multipart);
  }

  /**
   * {@link set} from the location's fields, without a Location object: the commit path applies a
   * bulk load's million writes through it.
   */
  put(seid: bigint, address: number, sizeBytes: number, multipart: boolean): Location | undefined {
    if (this.count + 1 > this.capacity * MAX_LOAD) this.grow();
    if (!(address >= 0 && address <= Number.MAX_SAFE_INTEGER) || !Number.isInteger(address)) {
      throw new RangeError(`log address ${address} cannot be mapped`);
    }
    split64[0] = seid;
    const lo = split32[0] as number;
    const hi = split32[1] as number;
    if (lo === EMPTY && hi === EMPTY) throw new RangeError("seid 0 cannot be mapped");
    let slot = this.find(lo, hi);
    let previous: Location | undefined;
    const slots = this.slots;
    if (slot >= 0) {
      previous = this.at(slot, seid);
      if (previous.sizeBytes >= BIG_SIZE) this.bigSizes.delete(seid);
    } else {
      slot = -1 - slot;
      slots[slot * STRIDE + KEY_LO] = lo;
      slots[slot * STRIDE + KEY_HI] = hi;
      this.count += 1;
    }
    const base = slot * STRIDE;
    const high = Math.floor(address / TWO_POW_32);
    slots[base + ADDRESS_LO] = address >>> 0;
    slots[base + ADDRESS_HI] = multipart ? (high | MULTIPART_BIT) >>> 0 : high;
    if (sizeBytes >= BIG_SIZE) {
      slots[base + SIZE] = BIG_SIZE;
      this.bigSizes.set(seid, sizeBytes);
    } else {
      slots[base + SIZE] = sizeBytes;
    }
    return previous;
  }

  /** Remove; returns the location it had. */
  delete(seid: bigint): Location | undefined {
    let slot = this.locate(seid);
    if (slot < 0) return undefined;
    const previous = this.at(slot, seid);
    this.bigSizes.delete(seid);
    const slots = this.slots;
    // Backward-shift deletion: pull later members of the probe run into the hole.
    let hole = slot;
    for (;;) {
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
      const lo = slots[slot * STRIDE + KEY_LO] as number;
      const hi = slots[slot * STRIDE + KEY_HI] as number;
      if (lo === EMPTY && hi === EMPTY) break;
      const home = this.slotOf(lo, hi);
      const distanceFromHome = (slot - home + this.capacity) % this.capacity;
      const distanceToHole = (slot - hole + this.capacity) % this.capacity;
      if (distanceFromHome >= distanceToHole) {
        slots.copyWithin(hole * STRIDE, slot * STRIDE, slot * STRIDE + STRIDE);
        hole = slot;
      }
    }
    slots.fill(0, hole * STRIDE, hole * STRIDE + STRIDE);
    this.count -= 1;
    return previous;
  }

  /** Every (seid, location), in table order. */
  *entries(): Generator<[bigint, Location]> {
    for (let slot = 0; slot < this.capacity; slot++) {
      const lo = this.slots[slot * STRIDE + KEY_LO] as number;
      const hi = this.slots[slot * STRIDE + KEY_HI] as number;
      if (lo === EMPTY && hi === EMPTY) continue;
      const seid = seidFromHalves(lo, hi);
      yield [seid, this.at(slot, seid)];
    }
  }

  /** Every seid, in table order. */
  *keys(): Generator<bigint> {
    for (let slot = 0; slot < this.capacity; slot++) {
      const lo = this.slots[slot * STRIDE + KEY_LO] as number;
      const hi = this.slots[slot * STRIDE + KEY_HI] as number;
      if (lo === EMPTY && hi === EMPTY) continue;
      yield seidFromHalves(lo, hi);
    }
  }

  /** Seids whose high half is `space`. */
  *seidsOfSpace(space: number): Generator<bigint> {
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.slots[slot * STRIDE + KEY_HI] !== space) continue;
      const lo = this.slots[slot * STRIDE + KEY_LO] as number;
      if (lo === EMPTY && space === 0) continue;
      yield seidFromHalves(lo, space);
    }
  }

  /**
   * Make room for `count` entries at once (checkpoint load): inserting many keys that arrive in
   * hash order into a small table that grows would pile them into one long probe run.
   */
  reserve(count: number): void {
    const capacity = Math.ceil(count / MAX_LOAD) + 1;
    if (capacity <= this.capacity) return;
    // At least the usual growth step: callers reserve again and again for a little more each time
    // (every large commit does), and growing to exactly the need each time rehashed the whole
    // table per commit (replaying 1 M seids written in commits of 10 k went from 1.1 s to 6 s).
    this.growTo(Math.max(capacity, Math.ceil(this.capacity * GROWTH)));
  }

  clear(): void {
    this.capacity = INITIAL_CAPACITY;
    this.slots = new Uint32Array(INITIAL_CAPACITY * STRIDE);
    this.bigSizes.clear();
    this.count = 0;
  }

  /**
   * A copy of the table as it is now: one memcpy of its slot array (about 24 bytes per seid),
   * so a backup can take the store's exact state at its consistent point while holding the
   * transaction turn only for the copy, then walk the copy while commits change the original.
   */
  clone(prepared?: Uint32Array<ArrayBuffer>): MappingTable {
    const copy = new MappingTable();
    copy.capacity = this.capacity;
    if (prepared !== undefined && prepared.length === this.slots.length) {
      prepared.set(this.slots);
      copy.slots = prepared;
    } else {
      copy.slots = new Uint32Array(this.slots.length);
      copy.slots.set(this.slots);
    }
    for (const [seid, size] of this.bigSizes) copy.bigSizes.set(seid, size);
    copy.count = this.count;
    return copy;
  }

  /**
   * The table as plain data that `postMessage` can carry, its slot array in the transfer list
   * (no copy): how a backup hands its clone of the map to the Worker that plans and copies the
   * base. The table is empty afterwards (its array went with the message).
   */
  detach(): MappingTransfer {
    const transfer: MappingTransfer = { capacity: this.capacity, count: this.count, slots: this.slots, bigSizes: [...this.bigSizes] };
    this.clear();
    return transfer;
  }

  /** A table from what {@link detach} gave. */
  static attach(transfer: MappingTransfer): MappingTable {
    if (transfer.slots.length !== transfer.capacity * STRIDE || transfer.capacity % RUN_SLOTS !== 0) throw new RangeError(`mapping transfer: ${transfer.slots.length} words for ${transfer.capacity} slots`);
    const table = new MappingTable();
    table.capacity = transfer.capacity;
    table.count = transfer.count;
    table.slots = transfer.slots;
    for (const [seid, size] of transfer.bigSizes) table.bigSizes.set(seid, size);
    return table;
  }

  /** Slots in the table (entries and empty ones): the range {@link forEachLocation} walks. */
  get slotCount(): number {
    return this.capacity;
  }

  /**
   * Visit every entry in slots `[fromSlot, toSlot)` without allocating per entry (a backup's plan
   * walks a million of them, in ranges so the store's thread can yield between them): the seid
   * as its two 32-bit halves, then its location's fields.
   */
  forEachLocation(
    visit: (seidLo: number, seidHi: number, address: number, sizeBytes: number, multipart: boolean) => void,
    fromSlot = 0,
    toSlot = this.capacity,
  ): void {
    const slots = this.slots;
    const end = Math.min(toSlot, this.capacity) * STRIDE;
    for (let base = Math.max(0, fromSlot) * STRIDE; base < end; base += STRIDE) {
      const lo = slots[base + KEY_LO] as number;
      const hi = slots[base + KEY_HI] as number;
      if (lo === EMPTY && hi === EMPTY) continue;
      const high = slots[base + ADDRESS_HI] as number;
      let size = slots[base + SIZE] as number;
      if (size === BIG_SIZE) {
        size = this.bigSizes.get(seidFromHalves(lo, hi)) as number;
      }
      visit(lo, hi, (high & ~MULTIPART_BIT) * TWO_POW_32 + (slots[base + ADDRESS_LO] as number), size, (high & MULTIPART_BIT) !== 0);
    }
  }

  /**
   * An array for {@link clone} to copy into, made ahead (outside the transaction turn) and written
   * once so its pages are faulted in: a fresh 24 MB array (a million seids) took 4 ms to clone at
   * best and 94 ms at the median, nearly all of it page faults; into a prepared one it is the
   * memcpy alone. Useless (and ignored) if the table grows before the clone.
   */
  prepareClone(): Uint32Array<ArrayBuffer> {
    const prepared = new Uint32Array(this.slots.length);
    prepared.fill(1);
    return prepared;
  }

  private grow(): void {
    this.growTo(Math.ceil(this.capacity * GROWTH));
  }

  /** Rehash into `capacity` slots (rounded up to whole runs). */
  private growTo(capacity: number): void {
    const old = this.slots;
    const oldCapacity = this.capacity;
    this.capacity = Math.ceil(capacity / RUN_SLOTS) * RUN_SLOTS;
    const slots = new Uint32Array(this.capacity * STRIDE);
    this.slots = slots;
    for (let slot = 0; slot < oldCapacity; slot++) {
      const base = slot * STRIDE;
      const lo = old[base + KEY_LO] as number;
      const hi = old[base + KEY_HI] as number;
      if (lo === EMPTY && hi === EMPTY) continue;
      const to = (-1 - this.find(lo, hi)) * STRIDE;
      // Word by word: a subarray per entry made a million objects per growth.
      slots[to + KEY_LO] = lo;
      slots[to + KEY_HI] = hi;
      slots[to + ADDRESS_LO] = old[base + ADDRESS_LO] as number;
      slots[to + ADDRESS_HI] = old[base + ADDRESS_HI] as number;
      slots[to + SIZE] = old[base + SIZE] as number;
    }
  }
}
