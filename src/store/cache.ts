/**
 * A bounded cache of element bytes, by seid: the hot read path of `store.read()`.
 *
 * Layout (why: a JS `Map` of small `Uint8Array`s cost a hash of a boxed key plus two cache misses
 * per hit, one for the entry object and one for the value's own backing store, and the copy a
 * read hands out was a third; this was about two thirds of a warm read):
 * - an open-addressing table in one Uint32Array, five words a slot (seid halves; chunk + 1 with
 *   the referenced flag on top, 0 for an empty slot; offset; length), with linear probing and
 *   backward-shift deletion, maps a seid to where its bytes are. One array, so a probe touches
 *   one cache line: with a word array per field a hit cost about 800 ns at 1 M entries;
 * - the bytes sit in a few large *chunks* (slabs), written like a log: each value is appended
 *   behind a 16-byte header (seid halves, length) to the head chunk.
 *
 * Eviction is FIFO over chunks with a second chance (CLOCK at chunk granularity): when the head
 * needs room and every chunk is in use, the oldest chunk is compacted in place. Its entries that
 * were read since they were written (`referenced`) are kept, moved down, and lose the flag;
 * the others leave the table. Entries overwritten or invalidated since are dead bytes, dropped.
 *
 * Admission (values read from the log, {@link ElementCache.admit}): once the cache is full, a
 * value read for the first time is not cached; a second read of it soon after is. Why: CLOCK
 * alone let a scan (every value read once: `entries()`, a bulk read-back) push out a hot set that
 * fitted the cache: with a scan taking 3 reads in 4, Zipf(0.99) reads of a hot set of 30 k values
 * in a cache of 49 k hit 79 % without the filter and 97 % with it (this class driven by a trace in
 * a throwaway script). The price of filtering is that a value is cached on its second read, not
 * its first, so it filters only while it protects something: once the cache is full, and while
 * compactions find most live entries (≥ {@link FILTER_KEPT_SHARE}) read since they were written.
 * Filtering always cost 0.2–0.7 points of hit rate on pure Zipf(0.99) traces, and after a bulk
 * load filled the cache with values never read, 3.5 points in bench/store.ts (i) (every first
 * read of the load refused); with the condition, neither trace loses a point and the scan case
 * keeps its 97 %. A small bit set (the *doorkeeper*, TinyLFU's) remembers the seids missed once,
 * for about as many misses as the cache holds values, then starts over. Values written by
 * transactions are cached as before ({@link ElementCache.set}).
 *
 * Memory reads ({@link ElementCache.admitFromMemory}): a value read from memory the log holds
 * anyway (a flush buffer, the caching layer of log blocks) is copied in at its second read, not
 * its first; a doorkeeper of its own remembers first reads over a window of one seid per 128
 * bytes of the limit. Why: copying every first read in was most of what reading back a bulk
 * load cost — 200 k values just written, each read once, took 2.5 µs a read with the copy and
 * 1.4 µs without (`cacheBytes: 0`), lmdb 1.4–1.6 µs — and it kept the same bytes twice. A value
 * read again soon pays the copy then, and hits from there on. Reads from the file are admitted
 * as before: a second file read costs far more than the copy.
 *
 * Limits: the chunks together never exceed `limitBytes`; a value larger than half a chunk is
 * never cached, so one big read cannot flush everything else.
 *
 * @module
 */
import { seidHalves } from "./state/mapping.ts";

/** Bytes of the header in front of each cached value: seid lo, seid hi, length, unused. */
const ENTRY_HEADER_BYTES = 16;
/** Bytes of a tagged entry's tag, a float64 in front of its value ({@link ElementCache.getTagged}). */
const TAG_BYTES = 8;
/** Entries are aligned to this in a chunk (so headers and tags are aligned for the typed views). */
const ENTRY_ALIGN_BYTES = 8;
const MIN_CHUNK_BYTES = 64 << 10;
const MAX_CHUNK_BYTES = 4 << 20;
const INITIAL_SLOTS = 1024;
const MAX_LOAD = 0.7;
/** {@link ElementCache.admit} filters while compactions keep at least this share of live entries. */
const FILTER_KEPT_SHARE = 0.6;
/** Fewest seids a doorkeeper remembers before it starts over. */
const MIN_DOOR_SEIDS = 1024;
/**
 * The doorkeeper of reads from log memory remembers one seid per this many bytes of the cache's
 * limit (a window over a few times as many reads as the cache holds small values), at most
 * {@link MAX_MEMORY_DOOR_SEIDS} (8 bits each: 2 MiB).
 */
const MEMORY_DOOR_BYTES_PER_SEID = 128;
const MAX_MEMORY_DOOR_SEIDS = 1 << 21;

/** u32 words per table slot, and each field's word. */
const STRIDE = 5;
const KEY_LO = 0;
const KEY_HI = 1;
/** Chunk index + 1 (0: the slot is empty), with {@link REFERENCED} on top. */
const META = 2;
const OFFSET = 3;
const LENGTH = 4;
/** Read since it was written: kept by the next compaction of its chunk. */
const REFERENCED = 0x80000000;
const CHUNK_MASK = 0x7fffffff;


function alignUp(bytes: number): number {
  return (bytes + ENTRY_ALIGN_BYTES - 1) & ~(ENTRY_ALIGN_BYTES - 1);
}

/** A multiplicative hash of the two halves, to a slot of a power-of-two table. */
function slotOf(lo: number, hi: number, mask: number): number {
  return (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 0) & mask;
}

export class ElementCache {
  readonly limitBytes: number;
  /** Bytes of one chunk (0 when the cache is disabled). */
  readonly chunkBytes: number;
  hits = 0;
  misses = 0;

  private heldBytes = 0;
  private count = 0;
  private mask = INITIAL_SLOTS - 1;
  private table = new Uint32Array(INITIAL_SLOTS * STRIDE);

  private readonly chunks: Uint8Array[] = [];
  private readonly chunkWords: Uint32Array[] = [];
  /** The chunks as float64s: the tags of tagged entries ({@link getTagged}). */
  private readonly chunkFloats: Float64Array[] = [];
  private readonly maxChunks: number;
  /** Bytes written to each chunk (entries end there). */
  private readonly fills: number[] = [];
  /** The chunk being appended to. */
  private head = -1;
  /** Chunks in use, oldest first (the head is the newest). */
  private readonly order: number[] = [];
  /** Set once a chunk had to be compacted to make room: from then on {@link admit} may filter. */
  private full = false;
  /**
   * Share of the live entries recent compactions kept (they had been read since written), a
   * moving average: a high share means the cache holds a read-again set worth protecting.
   */
  private keptShare = 0;
  /** The doorkeeper of {@link admit}: seids missed once, made when the cache first fills. */
  private door: Doorkeeper | undefined;
  /** The doorkeeper of {@link admitFromMemory}: seids read once from log memory, made at its first use. */
  private memoryDoor: Doorkeeper | undefined;

  constructor(limitBytes: number) {
    this.limitBytes = limitBytes;
    const chunk = Math.min(MAX_CHUNK_BYTES, Math.max(MIN_CHUNK_BYTES, Math.floor(limitBytes / 16)));
    this.chunkBytes = Math.min(limitBytes, chunk) & ~(ENTRY_ALIGN_BYTES - 1);
    this.maxChunks = this.chunkBytes === 0 ? 0 : Math.floor(limitBytes / this.chunkBytes);
  }

  /** Bytes of values held (headers and dead bytes not counted). */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Values held. */
  get size(): number {
    return this.count;
  }

  /** A copy of the cached value of `seid`, or undefined. */
  get(seid: bigint): Uint8Array | undefined {
    const slot = this.find(seid);
    if (slot < 0) {
      this.misses += 1;
      return undefined;
    }
    this.hits += 1;
    const base = slot * STRIDE;
    const table = this.table;
    const meta = table[base + META] as number;
    table[base + META] = (meta | REFERENCED) >>> 0;
    const offset = table[base + OFFSET] as number;
    return (this.chunks[(meta & CHUNK_MASK) - 1] as Uint8Array).slice(offset, offset + (table[base + LENGTH] as number));
  }

  /**
   * A copy of `seid`'s cached value if it was cached with this `tag` ({@link admitTagged}), else
   * undefined (a miss). Why tags: a Worker's cache cannot be told of commits, so its values are
   * tagged with the log address they were read from, and a hit counts only at the address the
   * shared table maps the seid to now (workers/reader.ts). The tag sits in front of the value in
   * the chunk, so a hit allocates only the copy it hands out. A cache holds tagged entries only
   * or untagged ones only ({@link get} would hand out a tagged entry's tag with its value).
   */
  getTagged(seid: bigint, tag: number): Uint8Array | undefined {
    const slot = this.find(seid);
    if (slot < 0) {
      this.misses += 1;
      return undefined;
    }
    const table = this.table;
    const base = slot * STRIDE;
    const length = table[base + LENGTH] as number;
    const meta = table[base + META] as number;
    const chunk = (meta & CHUNK_MASK) - 1;
    const offset = table[base + OFFSET] as number;
    if (length < TAG_BYTES || (this.chunkFloats[chunk] as Float64Array)[offset >>> 3] !== tag) {
      // Tags are log addresses, never reused: an entry of another one is stale for good.
      this.removeSlot(slot);
      this.misses += 1;
      return undefined;
    }
    this.hits += 1;
    table[base + META] = (meta | REFERENCED) >>> 0;
    return (this.chunks[chunk] as Uint8Array).slice(offset + TAG_BYTES, offset + length);
  }

  /**
   * {@link admit} with a tag for {@link getTagged}. Refused, it still drops an entry the seid has
   * (of another tag, so stale).
   */
  admitTagged(seid: bigint, tag: number, value: Uint8Array): boolean {
    if (this.full && this.keptShare >= FILTER_KEPT_SHARE && !this.missedBefore(seid)) {
      this.invalidate(seid);
      return false;
    }
    this.put(seid, value, tag);
    return true;
  }

  /** Cache a copy of `value` as `seid`'s bytes (replacing any earlier one). */
  set(seid: bigint, value: Uint8Array): void {
    this.put(seid, value, undefined);
  }

  /** {@link set}, the value preceded by `tag` (8 bytes) when there is one. */
  private put(seid: bigint, value: Uint8Array, tag: number | undefined): void {
    const tagBytes = tag === undefined ? 0 : TAG_BYTES;
    if (tagBytes + value.length > this.chunkBytes / 2 - ENTRY_HEADER_BYTES) {
      this.invalidate(seid);
      return;
    }
    const storedBytes = tagBytes + value.length;
    const entryBytes = alignUp(ENTRY_HEADER_BYTES + storedBytes);
    if (this.head < 0 || (this.fills[this.head] as number) + entryBytes > this.chunkBytes) this.advance(entryBytes);
    // A same-seid entry may have left the table while the oldest chunk was compacted: look up
    // only now, after any eviction.
    const halves = seidHalves(seid);
    const lo = halves[0] as number;
    const hi = halves[1] as number;
    let slot = this.probe(lo, hi);
    if (slot >= 0) {
      this.heldBytes -= this.table[slot * STRIDE + LENGTH] as number; // the old bytes are dead in their chunk
    } else {
      if (this.count + 1 > (this.mask + 1) * MAX_LOAD) {
        this.grow();
        slot = this.probe(lo, hi);
      }
      slot = -1 - slot;
      this.table[slot * STRIDE + KEY_LO] = lo;
      this.table[slot * STRIDE + KEY_HI] = hi;
      this.count += 1;
    }
    const at = this.fills[this.head] as number;
    const words = this.chunkWords[this.head] as Uint32Array;
    words[at >>> 2] = lo;
    words[(at >>> 2) + 1] = hi;
    words[(at >>> 2) + 2] = storedBytes;
    if (tag !== undefined) (this.chunkFloats[this.head] as Float64Array)[(at + ENTRY_HEADER_BYTES) >>> 3] = tag;
    (this.chunks[this.head] as Uint8Array).set(value, at + ENTRY_HEADER_BYTES + tagBytes);
    this.fills[this.head] = at + entryBytes;
    const base = slot * STRIDE;
    this.table[base + META] = this.head + 1; // not referenced yet
    this.table[base + OFFSET] = at + ENTRY_HEADER_BYTES;
    this.table[base + LENGTH] = storedBytes;
    this.heldBytes += storedBytes;
  }

  /**
   * Cache a copy of `value`, read from the log, as `seid`'s bytes, unless the cache is full and
   * this is the first time `seid` was missed lately (see the module doc): then only remember the
   * miss. Returns whether the value was cached.
   */
  admit(seid: bigint, value: Uint8Array): boolean {
    if (this.full && this.keptShare >= FILTER_KEPT_SHARE && !this.missedBefore(seid)) return false;
    this.set(seid, value);
    return true;
  }

  /**
   * Cache a copy of `value`, which was read from memory the log holds anyway (a flush buffer or
   * the caching layer of log blocks), only if `seid` was read from there lately too: its first
   * read is only remembered (see the module doc, "Memory reads"). Returns whether it was cached.
   */
  admitFromMemory(seid: bigint, value: Uint8Array): boolean {
    if (this.chunkBytes === 0) return false;
    this.memoryDoor ??= new Doorkeeper(Math.min(MAX_MEMORY_DOOR_SEIDS, Math.max(MIN_DOOR_SEIDS, this.count, Math.floor(this.limitBytes / MEMORY_DOOR_BYTES_PER_SEID))));
    if (!this.memoryDoor.seenBefore(seid)) return false;
    this.set(seid, value);
    return true;
  }

  /** Forget `seid`'s cached value, if any (its bytes become dead in their chunk). */
  invalidate(seid: bigint): void {
    if (this.count === 0) return;
    const slot = this.find(seid);
    if (slot >= 0) this.removeSlot(slot);
  }

  clear(): void {
    this.table.fill(0);
    this.count = 0;
    this.heldBytes = 0;
    this.head = -1;
    this.fills.length = 0;
    this.order.length = 0;
    this.chunks.length = 0;
    this.chunkWords.length = 0;
    this.chunkFloats.length = 0;
    this.full = false;
    this.door = undefined;
    this.memoryDoor = undefined;
  }

  /** True if `seid` was missed since the doorkeeper last started over; else remember it. */
  private missedBefore(seid: bigint): boolean {
    // About as many misses remembered as the cache holds values (see the module doc).
    this.door ??= new Doorkeeper(Math.max(MIN_DOOR_SEIDS, this.count));
    return this.door.seenBefore(seid);
  }

  // ───────────────────────────── the table ─────────────────────────────

  private find(seid: bigint): number {
    const halves = seidHalves(seid);
    return this.probe(halves[0] as number, halves[1] as number);
  }

  /** The slot holding (lo, hi), or -1 - (the empty slot where it would go). */
  private probe(lo: number, hi: number): number {
    const mask = this.mask;
    const table = this.table;
    let slot = slotOf(lo, hi, mask);
    for (;;) {
      const base = slot * STRIDE;
      if (table[base + META] === 0) return -1 - slot;
      if (table[base + KEY_LO] === lo && table[base + KEY_HI] === hi) return slot;
      slot = (slot + 1) & mask;
    }
  }

  /** Remove the entry in `slot`, shifting later entries of its probe run back (no tombstones). */
  private removeSlot(slot: number): void {
    const table = this.table;
    this.heldBytes -= table[slot * STRIDE + LENGTH] as number;
    this.count -= 1;
    const mask = this.mask;
    let hole = slot;
    let next = (slot + 1) & mask;
    while (table[next * STRIDE + META] !== 0) {
      const home = slotOf(table[next * STRIDE + KEY_LO] as number, table[next * STRIDE + KEY_HI] as number, mask);
      // Move `next` into the hole unless its home lies cyclically in (hole, next].
      const stays = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (!stays) {
        table.copyWithin(hole * STRIDE, next * STRIDE, next * STRIDE + STRIDE);
        hole = next;
      }
      next = (next + 1) & mask;
    }
    table.fill(0, hole * STRIDE, hole * STRIDE + STRIDE);
  }

  private grow(): void {
    const old = this.table;
    const slots = (this.mask + 1) * 2;
    this.mask = slots - 1;
    this.table = new Uint32Array(slots * STRIDE);
    const table = this.table;
    // Word by word: a subarray and a set() per entry cost more than the probe (a third of a
    // read that promoted a value into a growing cache, bench/store.ts (g)).
    for (let from = 0; from < old.length; from += STRIDE) {
      if (old[from + META] === 0) continue;
      const to = (-1 - this.probe(old[from + KEY_LO] as number, old[from + KEY_HI] as number)) * STRIDE;
      table[to + KEY_LO] = old[from + KEY_LO] as number;
      table[to + KEY_HI] = old[from + KEY_HI] as number;
      table[to + META] = old[from + META] as number;
      table[to + OFFSET] = old[from + OFFSET] as number;
      table[to + LENGTH] = old[from + LENGTH] as number;
    }
  }

  // ───────────────────────────── the chunks ─────────────────────────────

  /** Make the head a chunk with room for `entryBytes`: a new chunk, or the oldest compacted. */
  private advance(entryBytes: number): void {
    if (this.chunks.length < this.maxChunks) {
      const chunk = new Uint8Array(this.chunkBytes);
      this.chunks.push(chunk);
      this.chunkWords.push(new Uint32Array(chunk.buffer));
      this.chunkFloats.push(new Float64Array(chunk.buffer));
      this.fills.push(0);
      this.head = this.chunks.length - 1;
      this.order.push(this.head);
      return;
    }
    this.full = true;
    // Every chunk is in use. Each compaction clears the flags of what it keeps, so within two
    // rounds of the chunks one has room (an entry is at most half a chunk).
    for (let round = 0; round < 2 * this.maxChunks + 1; round++) {
      const oldest = this.order.shift() as number;
      this.head = oldest;
      this.fills[oldest] = this.compact(oldest);
      this.order.push(oldest);
      if ((this.fills[oldest] as number) + entryBytes <= this.chunkBytes) return;
    }
    throw new Error(`cache chunk compaction found no room for ${entryBytes} bytes (chunks of ${this.chunkBytes})`);
  }

  /**
   * Compact chunk `index` in place: live, referenced entries move down (and lose the flag), live
   * unreferenced ones leave the table, dead ones are dropped. Returns the new fill.
   */
  private compact(index: number): number {
    const chunk = this.chunks[index] as Uint8Array;
    const words = this.chunkWords[index] as Uint32Array;
    const end = this.fills[index] as number;
    let read = 0;
    let write = 0;
    let kept = 0;
    let liveEntries = 0;
    while (read < end) {
      const lo = words[read >>> 2] as number;
      const hi = words[(read >>> 2) + 1] as number;
      const length = words[(read >>> 2) + 2] as number;
      const entryBytes = alignUp(ENTRY_HEADER_BYTES + length);
      const slot = this.probe(lo, hi);
      const base = slot * STRIDE;
      const meta = slot >= 0 ? (this.table[base + META] as number) : 0;
      const live = slot >= 0 && (meta & CHUNK_MASK) === index + 1 && this.table[base + OFFSET] === read + ENTRY_HEADER_BYTES;
      if (live && (meta & REFERENCED) !== 0) {
        if (write !== read) chunk.copyWithin(write, read, read + entryBytes);
        this.table[base + OFFSET] = write + ENTRY_HEADER_BYTES;
        this.table[base + META] = index + 1; // the second chance is used up
        write += entryBytes;
        kept += 1;
      } else if (live) {
        this.removeSlot(slot);
      }
      read += entryBytes;
      if (live) liveEntries += 1;
    }
    if (liveEntries > 0) this.keptShare = 0.5 * this.keptShare + 0.5 * (kept / liveEntries);
    return write;
  }
}

/**
 * TinyLFU's doorkeeper: a bit set remembering seids seen once (two bits each, ~8 bits per seid
 * remembered: a false "seen before" for ~5 % of first sightings), started over after `limit`
 * seids were added, so that seids seen once long ago are as good as new.
 */
class Doorkeeper {
  private readonly bits: Uint32Array;
  private readonly mask: number;
  private readonly limit: number;
  private added = 0;

  constructor(limit: number) {
    this.limit = limit;
    let bits = 1 << 15;
    while (bits < limit * 8) bits *= 2;
    this.bits = new Uint32Array(bits >>> 5);
    this.mask = bits - 1;
  }

  /** True if `seid` was seen since the last start-over; else remember it and return false. */
  seenBefore(seid: bigint): boolean {
    const halves = seidHalves(seid);
    const lo = halves[0] as number;
    const hi = halves[1] as number;
    const a = (Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> 0) & this.mask;
    const b = (Math.imul(hi ^ Math.imul(lo, 0xc2b2ae35), 0x27d4eb2f) >>> 0) & this.mask;
    const bits = this.bits;
    const bitA = 1 << (a & 31);
    const bitB = 1 << (b & 31);
    if (((bits[a >>> 5] as number) & bitA) !== 0 && ((bits[b >>> 5] as number) & bitB) !== 0) return true;
    if (this.added >= this.limit) {
      bits.fill(0);
      this.added = 0;
    }
    bits[a >>> 5] = ((bits[a >>> 5] as number) | bitA) >>> 0;
    bits[b >>> 5] = ((bits[b >>> 5] as number) | bitB) >>> 0;
    this.added += 1;
    return false;
  }
}
