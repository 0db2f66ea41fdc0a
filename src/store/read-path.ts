/**
 * The read path, all of it: seid → cache → mapping table → pinned segments → flush buffers or
 * file → verified bytes → cache. Every record read back, from a flush buffer or from the file, is
 * checked (length, CRC, type, seid, part index) before any of its bytes are returned; a mismatch
 * is a `CorruptionError`, never wrong bytes.
 *
 * Reads take no turn: the mapping table changes only in one synchronous step per commit
 * (commit.ts), so a read sees all of a transaction or none of it. What a read is reading is
 * pinned (pins.ts), so a commit or the cleaner cannot let its segment be reused under it.
 *
 * @module
 */
import type { HeldBytes } from "../log/reader.ts";
import type { LogStructuredStore } from "../log/log.ts";
import { CorruptionError, InvalidArgumentError, LssError, StoreClosedError } from "../errors.ts";
import type { StoreCore } from "./commit.ts";
import { FLAG_PART, type Part } from "./format/extents.ts";
import { RECORD_HEADER_BYTES, RecordType, verifyDataRecordIn, verifyRecord } from "./format/records.ts";
import { elementSegments, type SegmentPins } from "./pins.ts";
import { seidHalves, type Location } from "./state/mapping.ts";
import { checkSeid, MAX_SEID } from "./state/seids.ts";
import { createReadStream } from "./streams.ts";
import type { SyncLogReader } from "./sync-read.ts";

/** Which elements `store.entries()` visits: one space, and/or a range of seids. */
export interface EntriesOptions {
  /** Only seids of this space (the seid's high 32 bits). Default: every space. */
  space?: number;
  /** Only seids ≥ `from`. */
  from?: bigint;
  /** Only seids ≤ `to`. */
  to?: bigint;
}

/** Element reads of one store. */
export class ReadPath {
  private readonly core: StoreCore;
  private readonly pins: SegmentPins;
  private readonly maxReadBytes: number;
  private readonly caching: boolean;
  /** Reads whose record failed its check as read through the page cache, then read again O_DIRECT. */
  pageCacheRetries = 0;

  constructor(core: StoreCore, pins: SegmentPins, options: { maxReadBytes: number; cacheBytes: number }) {
    this.core = core;
    this.pins = pins;
    this.maxReadBytes = options.maxReadBytes;
    this.caching = options.cacheBytes > 0;
  }

  /**
   * The element's bytes as last committed, or `undefined`. Not an async function: a hit in memory
   * (the value cache, a flush buffer, the caching layer of log blocks) is one resolved promise
   * (nested async frames cost two extra microtask ticks per read), and everything up to the file
   * read happens in this turn. Throws (synchronously) for a bad seid, and for a damaged record
   * found in memory (`CorruptionError`); `Store.read` turns both into a rejected promise.
   */
  read(seid: bigint): Promise<Uint8Array | undefined> {
    checkSeid(seid);
    const { core } = this;
    // The cache only holds committed values and is invalidated by every write and delete, so a
    // hit needs no mapping-table lookup.
    const hit = core.cache.get(seid); // a copy already
    if (hit !== undefined && hit.length <= this.maxReadBytes) return Promise.resolve(hit);
    const location = core.map.get(seid);
    if (location === undefined) return Promise.resolve(undefined);
    if (location.sizeBytes > this.maxReadBytes) return Promise.reject(this.tooLarge(seid, location));
    // The mapping lookup and the copy from memory happen in one turn: no commit or cleaner step
    // can come between them, so the record is the one the table points at and needs no pin.
    const fromMemory = location.multipart ? undefined : this.singleFromMemory(seid, location);
    return fromMemory !== undefined ? Promise.resolve(fromMemory) : this.readMiss(seid, location);
  }

  /** {@link read} from the file, `location` as the table held it when the read began. */
  private async readMiss(seid: bigint, location: Location): Promise<Uint8Array | undefined> {
    const { core } = this;
    // Pin what the read touches: the cleaner may relocate the element meanwhile, and must not give
    // its old segments back (and a checkpoint then reuse them) under a read still in flight.
    const parts = this.partsOf(seid, location);
    const seqs = elementSegments(core.log, location, parts);
    this.pins.pin(seqs);
    let value: Uint8Array;
    try {
      try {
        value = parts === undefined ? await readSingle(core.log, seid, location) : await readMultipart(core.log, seid, location, parts);
      } catch (error) {
        // A small read may have come from the kernel's page cache (LogReader.read), which can
        // hold what an O_DIRECT write replaced while the two raced: the disk decides.
        if (!(error instanceof CorruptionError) || parts !== undefined || !core.log.pageCacheReads) throw error;
        this.pageCacheRetries += 1;
        value = await readSingle(core.log, seid, location, true);
      }
    } finally {
      this.pins.unpin(seqs);
    }
    // Cache only if the element was not replaced while we read it.
    const now = core.map.get(seid);
    if (now !== undefined && now.address === location.address && this.caching) core.cache.admit(seid, value); // copied into the cache (see ElementCache.admit)
    return value;
  }

  /**
   * A single-part element's body, verified, if its record is in memory (a flush buffer or the
   * caching layer); else undefined. The record is copied into a scratch buffer, checked there,
   * and only the body is copied out: one allocation, the value handed back. The value is offered
   * to the value cache too, which takes it on its second read (a later read is then a value-cache
   * hit, cheaper than this, and the value cache holds values densely where the block cache holds
   * whole blocks; a value read once from here is not worth the copy: ElementCache.admitFromMemory).
   */
  private singleFromMemory(seid: bigint, location: Location): Uint8Array | undefined {
    const recordBytes = RECORD_HEADER_BYTES + location.sizeBytes;
    if (recordBytes > MEMORY_SCRATCH_BYTES) return undefined; // large: read() copies it whole anyway
    if (!this.core.log.copyFromMemory(location.address, recordBytes, scratch)) return undefined;
    const halves = seidHalves(seid);
    const flags = verifyDataRecordIn(scratchOf(recordBytes), scratchWords, halves[0] as number, halves[1] as number);
    if ((flags & FLAG_PART) !== 0) throw new CorruptionError(`seid ${seid}: a part record where a whole element was expected`);
    const value = scratch.slice(RECORD_HEADER_BYTES, recordBytes);
    // Its bytes are in memory already: copied into the value cache only when read again soon.
    if (this.caching) this.core.cache.admitFromMemory(seid, value);
    return value;
  }

  private tooLarge(seid: bigint, location: Location): InvalidArgumentError {
    return new InvalidArgumentError(`seid ${seid} holds ${location.sizeBytes} bytes, over maxReadBytes ${this.maxReadBytes}: use readStream()`);
  }

  /**
   * The element's bytes as last committed, synchronously: from the cache, a flush buffer, the
   * caching layer of log blocks, or the file through `sync` (see sync-read.ts), every record
   * verified as in {@link read}.
   */
  readSync(seid: bigint, sync: SyncLogReader): Uint8Array | undefined {
    checkSeid(seid);
    const { core } = this;
    const hit = core.cache.get(seid);
    if (hit !== undefined && hit.length <= this.maxReadBytes) return hit;
    const location = core.map.get(seid);
    if (location === undefined) return undefined;
    if (location.sizeBytes > this.maxReadBytes) throw this.tooLarge(seid, location);
    if (!location.multipart) {
      const fromMemory = this.singleFromMemory(seid, location);
      if (fromMemory !== undefined) return fromMemory;
    }
    // No pins: nothing else runs until this returns.
    const parts = this.partsOf(seid, location);
    let value: Uint8Array;
    if (parts === undefined) {
      const lengthBytes = RECORD_HEADER_BYTES + location.sizeBytes;
      try {
        value = checkSingle(sync.read(location.address, lengthBytes), seid);
      } catch (error) {
        // As in readMiss: a read through the page cache may have raced an O_DIRECT write.
        if (!(error instanceof CorruptionError) || !core.log.pageCacheReads) throw error;
        this.pageCacheRetries += 1;
        value = checkSingle(sync.read(location.address, lengthBytes, true), seid);
      }
    } else {
      const bodies = parts.map((part, index) => checkPart(sync.read(part.address, RECORD_HEADER_BYTES + part.bodyBytes), seid, index));
      value = new Uint8Array(location.sizeBytes);
      checkFilled(seid, value, copyParts(seid, value, 0, bodies));
    }
    if (this.caching) core.cache.admit(seid, value);
    return value;
  }

  /** Seids `entries()` visits, ascending: 8 bytes each, taken at once. */
  seidsIn(options: EntriesOptions): BigUint64Array {
    return seidsIn(options, (space) => (space !== undefined ? this.core.map.seidsOfSpace(space) : this.core.map.keys()));
  }

  /** The element's committed bytes as a stream (see `Store.readStream`). */
  readStream(seid: bigint): ReadableStream<Uint8Array> {
    checkSeid(seid);
    const location = this.core.map.get(seid);
    if (location === undefined) throw new InvalidArgumentError(`seid ${seid} has no element to stream`);
    return createReadStream(this.core.log, this.pins, seid, location, this.partsOf(seid, location));
  }

  /** True if the element exists (as last committed). */
  has(seid: bigint): boolean {
    return this.core.map.has(checkSeid(seid));
  }

  /** The element's size in bytes, or `undefined` if there is none. */
  sizeOf(seid: bigint): number | undefined {
    return this.core.map.sizeOf(checkSeid(seid));
  }

  /** Seids present in `space`, ascending. */
  seids(space: number): bigint[] {
    checkSpace(space);
    return [...this.core.map.seidsOfSpace(space)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** The part list of a multipart element; undefined for a single-part one. */
  private partsOf(seid: bigint, location: Location): readonly Part[] | undefined {
    if (!location.multipart) return undefined;
    const multipart = this.core.parts.get(seid);
    if (multipart === undefined) throw new LssError("LSS_INTERNAL", `seid ${seid} is multipart but has no part list`);
    return multipart.parts;
  }
}

/**
 * Where {@link ReadPath} verifies a record read from memory (records up to 64 KiB, what the
 * caching layer keeps): one buffer per thread, used only within one synchronous step.
 */
const MEMORY_SCRATCH_BYTES = 64 << 10;
const scratch = new Uint8Array(MEMORY_SCRATCH_BYTES);
const scratchWords = new Uint32Array(scratch.buffer);
/** The last view of the scratch's first bytes handed out: values of one size reuse it. */
let scratchView = scratch.subarray(0, 0);
function scratchOf(lengthBytes: number): Uint8Array {
  if (scratchView.length !== lengthBytes) scratchView = scratch.subarray(0, lengthBytes);
  return scratchView;
}

/**
 * The seids `entries(options)` visits, ascending, from `listed(space)`: the seids of one space, or
 * of every space when `space` is undefined (the owner's mapping table, or a Worker's shared one).
 */
export function seidsIn(options: EntriesOptions, listed: (space: number | undefined) => Iterable<bigint>): BigUint64Array {
  const { space, from = 1n, to = MAX_SEID } = options;
  if (space !== undefined) checkSpace(space);
  if (typeof from !== "bigint" || typeof to !== "bigint") throw new InvalidArgumentError("from and to must be bigints");
  const out: bigint[] = [];
  for (const seid of listed(space)) if (seid >= from && seid <= to) out.push(seid);
  return BigUint64Array.from(out).sort();
}

export function checkSpace(space: number): void {
  if (!Number.isInteger(space) || space < 0 || space > 0xffffffff) {
    throw new InvalidArgumentError(`space must be an integer in [0, 4294967295], got ${space}`);
  }
}

/** Verify a single-part element's Data record; returns its body. */
export function checkSingle(record: Uint8Array, seid: bigint): Uint8Array {
  const header = verifyRecord(record, { type: RecordType.Data, seid });
  if ((header.flags & FLAG_PART) !== 0) throw new CorruptionError(`seid ${seid}: a part record where a whole element was expected`);
  return record.subarray(RECORD_HEADER_BYTES);
}

/** Verify part `index` of a multipart element; returns its body. */
export function checkPart(record: Uint8Array, seid: bigint, index: number): Uint8Array {
  const header = verifyRecord(record, { type: RecordType.Data, seid });
  if ((header.flags & FLAG_PART) === 0 || header.aux !== index) {
    throw new CorruptionError(`seid ${seid}: part ${index} record is not the part expected (aux ${header.aux})`);
  }
  return record.subarray(RECORD_HEADER_BYTES);
}

/** Copy part bodies, in order, into `out` at `offset`; returns the offset after them. */
export function copyParts(seid: bigint, out: Uint8Array, offset: number, bodies: readonly Uint8Array[]): number {
  for (const body of bodies) {
    if (offset + body.length > out.length) throw new CorruptionError(`seid ${seid}: parts add up to more than its size`);
    out.set(body, offset);
    offset += body.length;
  }
  return offset;
}

/** The parts copied must fill the element exactly. */
export function checkFilled(seid: bigint, out: Uint8Array, offset: number): Uint8Array {
  if (offset !== out.length) throw new CorruptionError(`seid ${seid}: parts add up to ${offset} bytes, expected ${out.length}`);
  return out;
}

/** Read and verify a single-part element's Data record; returns its body. */
export async function readSingle(log: LogStructuredStore, seid: bigint, location: Location, direct = false): Promise<Uint8Array> {
  return checkSingle(await log.read(location.address, RECORD_HEADER_BYTES + location.sizeBytes, direct), seid);
}

/**
 * Read and verify part `index`, its body left in the log's native read buffer (see
 * `LogStructuredStore.readHeld`): `bytes` is the body; release the hold once it is copied out.
 */
export async function readPartHeld(log: LogStructuredStore, seid: bigint, part: Part, index: number): Promise<HeldBytes> {
  const held = await log.readHeld(part.address, RECORD_HEADER_BYTES + part.bodyBytes);
  try {
    const body = checkPart(held.bytes, seid, index);
    return { bytes: body, copied: held.copied, get live() { return held.live; }, release: () => held.release() };
  } catch (error) {
    held.release();
    throw error;
  }
}

/**
 * Read a whole multipart element into one buffer, verifying every part. Each part is copied
 * straight from the log's native read buffer into the result (held reads): no JS array per part.
 */
export async function readMultipart(log: LogStructuredStore, seid: bigint, location: Location, parts: readonly Part[]): Promise<Uint8Array> {
  return assembleParts(seid, location.sizeBytes, parts, (part, index) => readPartHeld(log, seid, part, index));
}

/**
 * Read every part with `readOne` (a few at once: the backend overlaps them) into one buffer of
 * `sizeBytes`, checking the parts add up to it; held bodies are released once copied. Shared with
 * a Worker's reads (src/workers).
 */
export async function assembleParts(
  seid: bigint,
  sizeBytes: number,
  parts: readonly Part[],
  readOne: (part: Part, index: number) => Promise<HeldBytes>,
): Promise<Uint8Array> {
  const out = new Uint8Array(sizeBytes);
  let offset = 0;
  // Read a few parts at once: the backend overlaps them.
  const window = 4;
  for (let first = 0; first < parts.length; first += window) {
    const batch = parts.slice(first, first + window);
    // allSettled, not all: when one part fails its checksum the others are still being read, and
    // the caller must not unpin their segments (or close the store) under reads in flight.
    const settled = await Promise.allSettled(batch.map((part, i) => readOne(part, first + i)));
    const bodies = settled.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    try {
      const failed = settled.find((result) => result.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      // Closed while the parts were read: their buffers are freed, not to be touched.
      if (bodies.some((body) => !body.live)) throw new StoreClosedError(`store closed while seid ${seid} was being read`);
      offset = copyParts(seid, out, offset, bodies.map((body) => body.bytes));
    } finally {
      for (const body of bodies) body.release();
    }
  }
  return checkFilled(seid, out, offset);
}
