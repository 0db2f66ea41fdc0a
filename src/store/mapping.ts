/**
 * The mapping table: seid → location of the element's bytes in the log (the address of its data
 * record, or of its extents record when it has several parts) and its size.
 *
 * Compact by construction (the issue asks for ≤ 32 bytes of RAM per seid at 1 M seids): an
 * open-addressing hash table over typed arrays, 20 bytes a slot (seid as two u32, address as
 * f64, size as u32), linear probing with backward-shift deletion (no tombstones), load kept
 * ≤ 0.85 and growth by 1.5×, so a million seids take about 30 bytes each.
 *
 * Sizes ≥ 2^32 − 1 (elements of 4 GiB and more) live in a small side map.
 *
 * @module
 */

const EMPTY = 0;
const MAX_LOAD = 0.85;
const GROWTH = 1.5;
const INITIAL_CAPACITY = 1024;
/** Size value meaning "look in the big-size side map". */
const BIG_SIZE = 0xffffffff;

const split64 = new BigUint64Array(1);
const split32 = new Uint32Array(split64.buffer);

/** A location in the log. */
export interface Location {
  /** Log address of the element's data record, or its extents record if `multipart`. */
  address: number;
  sizeBytes: number;
  multipart: boolean;
}

/** seid → location, compact. */
export class MappingTable {
  private capacity = INITIAL_CAPACITY;
  private keysLo = new Uint32Array(INITIAL_CAPACITY);
  private keysHi = new Uint32Array(INITIAL_CAPACITY);
  /** Address, with the sign carrying "multipart" (addresses are ≥ 0; -(address + 1) when multipart). */
  private addresses = new Float64Array(INITIAL_CAPACITY);
  private sizes = new Uint32Array(INITIAL_CAPACITY);
  private readonly bigSizes = new Map<bigint, number>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Bytes of RAM the table's arrays take. */
  get memoryBytes(): number {
    return this.capacity * 20 + this.bigSizes.size * 64;
  }

  private slotOf(lo: number, hi: number): number {
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return Math.floor(((h >>> 0) * this.capacity) / 4294967296);
  }

  private find(lo: number, hi: number): number {
    let slot = this.slotOf(lo, hi);
    for (;;) {
      const keyLo = this.keysLo[slot] as number;
      const keyHi = this.keysHi[slot] as number;
      if (keyLo === lo && keyHi === hi) return slot;
      if (keyLo === EMPTY && keyHi === EMPTY) return -1 - slot;
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
    }
  }

  private locate(seid: bigint): number {
    split64[0] = seid;
    return this.find(split32[0] as number, split32[1] as number);
  }

  has(seid: bigint): boolean {
    return this.locate(seid) >= 0;
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
    const size = this.sizes[slot] as number;
    return size === BIG_SIZE ? (this.bigSizes.get(seid) as number) : size;
  }

  private at(slot: number, seid: bigint): Location {
    const stored = this.addresses[slot] as number;
    const size = this.sizes[slot] as number;
    return {
      address: stored < 0 ? -stored - 1 : stored,
      multipart: stored < 0,
      sizeBytes: size === BIG_SIZE ? (this.bigSizes.get(seid) as number) : size,
    };
  }

  /** Insert or replace; returns the previous location. */
  set(seid: bigint, location: Location): Location | undefined {
    if ((this.count + 1) > this.capacity * MAX_LOAD) this.grow();
    split64[0] = seid;
    const lo = split32[0] as number;
    const hi = split32[1] as number;
    if (lo === EMPTY && hi === EMPTY) throw new RangeError("seid 0 cannot be mapped");
    let slot = this.find(lo, hi);
    let previous: Location | undefined;
    if (slot >= 0) {
      previous = this.at(slot, seid);
      if (previous.sizeBytes >= BIG_SIZE) this.bigSizes.delete(seid);
    } else {
      slot = -1 - slot;
      this.keysLo[slot] = lo;
      this.keysHi[slot] = hi;
      this.count += 1;
    }
    this.addresses[slot] = location.multipart ? -location.address - 1 : location.address;
    if (location.sizeBytes >= BIG_SIZE) {
      this.sizes[slot] = BIG_SIZE;
      this.bigSizes.set(seid, location.sizeBytes);
    } else {
      this.sizes[slot] = location.sizeBytes;
    }
    return previous;
  }

  /** Remove; returns the location it had. */
  delete(seid: bigint): Location | undefined {
    let slot = this.locate(seid);
    if (slot < 0) return undefined;
    const previous = this.at(slot, seid);
    this.bigSizes.delete(seid);
    // Backward-shift deletion: pull later members of the probe run into the hole.
    let hole = slot;
    for (;;) {
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
      const lo = this.keysLo[slot] as number;
      const hi = this.keysHi[slot] as number;
      if (lo === EMPTY && hi === EMPTY) break;
      const home = this.slotOf(lo, hi);
      const distanceFromHome = (slot - home + this.capacity) % this.capacity;
      const distanceToHole = (slot - hole + this.capacity) % this.capacity;
      if (distanceFromHome >= distanceToHole) {
        this.keysLo[hole] = lo;
        this.keysHi[hole] = hi;
        this.addresses[hole] = this.addresses[slot] as number;
        this.sizes[hole] = this.sizes[slot] as number;
        hole = slot;
      }
    }
    this.keysLo[hole] = EMPTY;
    this.keysHi[hole] = EMPTY;
    this.count -= 1;
    return previous;
  }

  /** Every (seid, location), in table order. */
  *entries(): Generator<[bigint, Location]> {
    for (let slot = 0; slot < this.capacity; slot++) {
      const lo = this.keysLo[slot] as number;
      const hi = this.keysHi[slot] as number;
      if (lo === EMPTY && hi === EMPTY) continue;
      split32[0] = lo;
      split32[1] = hi;
      const seid = split64[0] as bigint;
      yield [seid, this.at(slot, seid)];
    }
  }

  /** Seids whose high half is `space`. */
  *seidsOfSpace(space: number): Generator<bigint> {
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.keysHi[slot] !== space) continue;
      const lo = this.keysLo[slot] as number;
      if (lo === EMPTY && space === 0) continue;
      split32[0] = lo;
      split32[1] = space;
      yield split64[0] as bigint;
    }
  }

  /**
   * Make room for `count` entries at once (checkpoint load): inserting many keys that arrive in
   * hash order into a small table that grows would pile them into one long probe run.
   */
  reserve(count: number): void {
    const capacity = Math.ceil(count / MAX_LOAD) + 1;
    if (capacity <= this.capacity) return;
    this.growTo(capacity);
  }

  clear(): void {
    this.capacity = INITIAL_CAPACITY;
    this.keysLo = new Uint32Array(INITIAL_CAPACITY);
    this.keysHi = new Uint32Array(INITIAL_CAPACITY);
    this.addresses = new Float64Array(INITIAL_CAPACITY);
    this.sizes = new Uint32Array(INITIAL_CAPACITY);
    this.bigSizes.clear();
    this.count = 0;
  }

  private grow(): void {
    this.growTo(Math.ceil(this.capacity * GROWTH));
  }

  private growTo(capacity: number): void {
    const oldLo = this.keysLo;
    const oldHi = this.keysHi;
    const oldAddresses = this.addresses;
    const oldSizes = this.sizes;
    const oldCapacity = this.capacity;
    this.capacity = capacity;
    this.keysLo = new Uint32Array(this.capacity);
    this.keysHi = new Uint32Array(this.capacity);
    this.addresses = new Float64Array(this.capacity);
    this.sizes = new Uint32Array(this.capacity);
    for (let slot = 0; slot < oldCapacity; slot++) {
      const lo = oldLo[slot] as number;
      const hi = oldHi[slot] as number;
      if (lo === EMPTY && hi === EMPTY) continue;
      let target = this.find(lo, hi);
      target = -1 - target;
      this.keysLo[target] = lo;
      this.keysHi[target] = hi;
      this.addresses[target] = oldAddresses[slot] as number;
      this.sizes[target] = oldSizes[slot] as number;
    }
  }
}
