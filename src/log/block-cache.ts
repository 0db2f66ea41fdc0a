/**
 * The caching layer (LLAMA's): recently written and recently read blocks of the log, in memory.
 *
 * Why: the log's file is opened with O_DIRECT, so no kernel page cache stands behind it. lmdb and
 * sqlite read through the kernel's cache; without one of our own, reading an element that was
 * bulk-written a moment ago cost a 4 KiB O_DIRECT read per element (about 0.02× lmdb), and a miss
 * brought back one record where its neighbours were about to be asked for too. Here:
 * - every unit is copied in when its write completes (its flush buffer is freed right after), so
 *   reading what was just written never touches the disk while it fits;
 * - a miss reads the whole block around the address (clamped to its segment) and keeps it, so
 *   neighbours come from memory.
 *
 * Keys are logical log addresses. Within one open a logical address is written at most once (a
 * reused segment gets a new, higher sequence number, so its addresses are new), hence cached
 * bytes never go stale and nothing needs invalidating. What the cache returns is raw log bytes:
 * callers verify their records' checksums as for any read.
 *
 * Memory: one slab of `capacityBlocks × BLOCK_BYTES` native memory, allocated on first use and
 * freed explicitly at close (libc.ts `allocSlab`: 2 MiB-aligned, transparent huge pages asked
 * for, because every unit kept touched a fresh 4 KiB page at ~12 µs a fault on this VM; the
 * write completion of a serial commit went from ~20 to 4–12 µs); second-chance (CLOCK)
 * eviction per block. Each block tracks which of its 4 KiB pages hold bytes (a unit or a read may cover part of a block). Native,
 * not a JS ArrayBuffer: a 32 MiB live JS buffer raised the garbage collector's threshold with it,
 * and streaming 1 GiB through the store then peaked ~130 MiB higher in RSS than without the cache
 * (236 vs 140 MiB; `bun test/store/big-stream.ts … 1073741824`).
 *
 * @module
 */
import { ALIGNMENT_BYTES, type NativeBuffer } from "../io/backend.ts";

/** Where the slab comes from: aligned native memory, freed explicitly (the log passes libc's). */
export interface SlabAllocator {
  alloc(sizeBytes: number): NativeBuffer;
  free(buffer: NativeBuffer): void;
}

/** Bytes per cached block: a miss reads this much around the address. */
export const BLOCK_BYTES = 32 << 10;
/** Pages (of the 4 KiB alignment unit) per block: at most 32, so a page mask fits one u32. */
const PAGES_PER_BLOCK = BLOCK_BYTES / ALIGNMENT_BYTES;
/** Below this many blocks a cache is not worth keeping (and `0` disables it). */
export const MIN_CACHE_BLOCKS = 4;

const NO_SLOT = -1;

/** Counters of the block cache. */
export interface BlockCacheStats {
  /** Reads served wholly from the cache. */
  hits: number;
  /** Reads that went to the file. */
  misses: number;
  /** Bytes of blocks held. */
  bytes: number;
  /** Bytes the cache may hold. */
  capacityBytes: number;
}

/** A bounded cache of log blocks (see the module doc). */
export class BlockCache {
  readonly capacityBlocks: number;
  private readonly allocator: SlabAllocator;
  private native: NativeBuffer | undefined;
  private slab: Uint8Array | undefined;
  /** block number → slot. */
  private readonly slots = new Map<number, number>();
  /** slot → block number (NaN when empty). */
  private readonly blockOf: Float64Array;
  /** slot → mask of 4 KiB pages that hold bytes. */
  private readonly pageMask: Uint32Array;
  /** slot → referenced since the clock hand last passed. */
  private readonly referenced: Uint8Array;
  private hand = 0;
  private used = 0;
  hits = 0;
  misses = 0;

  constructor(capacityBytes: number, allocator: SlabAllocator) {
    this.allocator = allocator;
    if (!Number.isInteger(capacityBytes) || capacityBytes < 0) throw new RangeError(`block cache bytes must be a non-negative integer, got ${capacityBytes}`);
    const blocks = Math.floor(capacityBytes / BLOCK_BYTES);
    this.capacityBlocks = blocks < MIN_CACHE_BLOCKS ? 0 : blocks;
    this.blockOf = new Float64Array(this.capacityBlocks).fill(Number.NaN);
    this.pageMask = new Uint32Array(this.capacityBlocks);
    this.referenced = new Uint8Array(this.capacityBlocks);
  }

  get enabled(): boolean {
    return this.capacityBlocks > 0;
  }

  stats(): BlockCacheStats {
    return { hits: this.hits, misses: this.misses, bytes: this.used * BLOCK_BYTES, capacityBytes: this.capacityBlocks * BLOCK_BYTES };
  }

  /**
   * Copy `[address, +length)` out of the cache if every page it touches is held; else undefined
   * (counted as a miss only by {@link noteMiss}: a read served by a flush buffer is neither).
   */
  get(address: number, lengthBytes: number): Uint8Array | undefined {
    // Allocate only for a hit: a miss of a large range (a part of a big element) allocating and
    // zeroing its length first cost 12 % of reading 1 MiB values (bench/streams.ts).
    if (!this.holds(address, lengthBytes)) return undefined;
    const out = new Uint8Array(lengthBytes);
    this.copyHeld(address, lengthBytes, out);
    return out;
  }

  /** Whether every page of `[address, +lengthBytes)` is held (no copy, nothing counted). */
  holds(address: number, lengthBytes: number): boolean {
    if (this.slab === undefined || lengthBytes <= 0) return false;
    const end = address + lengthBytes;
    const first = Math.floor(address / BLOCK_BYTES);
    const last = Math.floor((end - 1) / BLOCK_BYTES);
    for (let block = first; block <= last; block++) {
      const blockStart = block * BLOCK_BYTES;
      if (this.slotHolding(block, Math.max(address, blockStart) - blockStart, Math.min(end, blockStart + BLOCK_BYTES) - blockStart) < 0) return false;
    }
    return true;
  }

  /**
   * Like {@link get}, into `into[0, lengthBytes)` (which must be that long): false, and `into`
   * untouched, unless every page the range touches is held. No allocation: the read path copies a
   * record into a scratch buffer, verifies it there and copies only the body out.
   */
  copyInto(address: number, lengthBytes: number, into: Uint8Array): boolean {
    const slab = this.slab;
    if (slab === undefined || lengthBytes <= 0) return false;
    const end = address + lengthBytes;
    const first = Math.floor(address / BLOCK_BYTES);
    const last = Math.floor((end - 1) / BLOCK_BYTES);
    if (first === last) {
      // The common case (a record inside one block): one lookup.
      const from = address - first * BLOCK_BYTES;
      const slot = this.slotHolding(first, from, from + lengthBytes);
      if (slot < 0) return false;
      this.referenced[slot] = 1;
      const base = slot * BLOCK_BYTES + from;
      into.set(slab.subarray(base, base + lengthBytes));
      this.hits += 1;
      return true;
    }
    // Check every block first: a partial copy is never handed out.
    if (!this.holds(address, lengthBytes)) return false;
    this.copyHeld(address, lengthBytes, into);
    return true;
  }

  /** Copy `[address, +lengthBytes)`, which {@link holds} said is all here, into `into`; a hit. */
  private copyHeld(address: number, lengthBytes: number, into: Uint8Array): void {
    const slab = this.slab as Uint8Array;
    const end = address + lengthBytes;
    const last = Math.floor((end - 1) / BLOCK_BYTES);
    for (let block = Math.floor(address / BLOCK_BYTES); block <= last; block++) {
      const slot = this.slots.get(block) as number;
      this.referenced[slot] = 1;
      const blockStart = block * BLOCK_BYTES;
      const from = Math.max(address, blockStart);
      const to = Math.min(end, blockStart + BLOCK_BYTES);
      const base = slot * BLOCK_BYTES + (from - blockStart);
      into.set(slab.subarray(base, base + (to - from)), from - address);
    }
    this.hits += 1;
  }

  /** The slot of `block` if it holds every page of `[from, to)` within the block; else -1. */
  private slotHolding(block: number, from: number, to: number): number {
    const slot = this.slots.get(block);
    if (slot === undefined) return -1;
    const need = pageRange(from, to);
    return ((this.pageMask[slot] as number) & need) >>> 0 === need ? slot : -1;
  }

  /** Count a read that had to go to the file. */
  noteMiss(): void {
    this.misses += 1;
  }

  /**
   * Keep `bytes`, which are the log's bytes from `address` on. `address` and the length are
   * 4 KiB aligned (units are written whole, reads are aligned), so whole pages are stored.
   */
  put(address: number, bytes: Uint8Array): void {
    if (!this.enabled || bytes.length === 0) return;
    if (address % ALIGNMENT_BYTES !== 0 || bytes.length % ALIGNMENT_BYTES !== 0) {
      throw new RangeError(`block cache put of [${address}, +${bytes.length}) is not 4 KiB aligned`);
    }
    if (this.slab === undefined) {
      this.native = this.allocator.alloc(this.capacityBlocks * BLOCK_BYTES);
      this.slab = this.native.bytes;
    }
    const end = address + bytes.length;
    for (let block = Math.floor(address / BLOCK_BYTES); block * BLOCK_BYTES < end; block++) {
      const blockStart = block * BLOCK_BYTES;
      const from = Math.max(address, blockStart);
      const to = Math.min(end, blockStart + BLOCK_BYTES);
      let slot = this.slots.get(block);
      if (slot === undefined) {
        slot = this.evictOne();
        this.slots.set(block, slot);
        this.blockOf[slot] = block;
        this.pageMask[slot] = 0;
        this.used += 1;
      }
      this.slab.set(bytes.subarray(from - address, to - address), slot * BLOCK_BYTES + (from - blockStart));
      this.pageMask[slot] = ((this.pageMask[slot] as number) | pageRange(from - blockStart, to - blockStart)) >>> 0;
      this.referenced[slot] = 1;
    }
  }

  /** A free slot: an empty one, or the first unreferenced one the clock hand finds. */
  private evictOne(): number {
    if (this.used < this.capacityBlocks) {
      // Empty slots are handed out in order before any eviction.
      for (;;) {
        const slot = this.hand;
        this.hand = (this.hand + 1) % this.capacityBlocks;
        if (Number.isNaN(this.blockOf[slot] as number)) return slot;
      }
    }
    for (;;) {
      const slot = this.hand;
      this.hand = (this.hand + 1) % this.capacityBlocks;
      if (this.referenced[slot] === 1) {
        this.referenced[slot] = 0;
        continue;
      }
      this.slots.delete(this.blockOf[slot] as number);
      this.blockOf[slot] = Number.NaN;
      this.pageMask[slot] = 0;
      this.used -= 1;
      return slot;
    }
  }

  /** Drop everything and free the slab (at close, once no read or write uses the cache). */
  clear(): void {
    if (this.native !== undefined) this.allocator.free(this.native);
    this.native = undefined;
    this.slab = undefined;
    this.slots.clear();
    this.blockOf.fill(Number.NaN);
    this.pageMask.fill(0);
    this.referenced.fill(0);
    this.used = 0;
    this.hand = 0;
  }
}

/** Mask of the 4 KiB pages that `[from, to)` (offsets inside one block) touches. */
function pageRange(from: number, to: number): number {
  const firstPage = Math.floor(from / ALIGNMENT_BYTES);
  const lastPage = Math.floor((to - 1) / ALIGNMENT_BYTES);
  const count = lastPage - firstPage + 1;
  const bits = count >= 32 ? 0xffffffff : (1 << count) - 1;
  return (bits << firstPage) >>> 0;
}

// The page mask is one u32.
if (PAGES_PER_BLOCK > 32) throw new Error("BLOCK_BYTES holds more than 32 pages");
