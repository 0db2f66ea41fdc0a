/**
 * Reads in an attached Worker, with no message to any other thread:
 *
 *   seid → shared mapping table (seqlock: a whole commit or none) → pin the segments (shared
 *   pins) → look again: still the same location? (else unpin and start over) → bytes from a flush
 *   buffer still in memory (through the ring's native pointers) or from the file (a read-only
 *   mapping of it, io/mapped-file.ts, else this Worker's own buffered descriptor: see
 *   {@link WorkerReader.open}) → every record verified (length, CRC, type, seid, part) → unpin.
 *
 * The common read — one part, at most 64 KiB, its segment pinned at the first try — is
 * synchronous ({@link WorkerReader.readNow}): into a scratch buffer, checked in place, one copy
 * out (docs/WORKERS.md has the figures). The rest of the path is written once, as steps that a
 * synchronous driver runs for `readSync` and an asynchronous one for `read` and streams.
 *
 * A record that fails its check is read again from the map; from the second try on with O_DIRECT
 * (io/direct-read.ts), because a page cached before an O_DIRECT write replaced the bytes beneath
 * it can outlive the write when the two raced, and re-reading that page would fail every time.
 *
 * Why the second look makes the pin safe: the cleaner gives a segment back only after a commit
 * moved every live element out of it, and only if no pin names it. A pin written before that
 * commit is seen by the cleaner; a pin written after it is caught by the second look, since the
 * location changed. So a segment is never reused under a Worker's read.
 *
 * Why bytes from a flush buffer are checked twice: the owner may write the buffer out and reuse
 * its slot while a Worker copies from it. The copy counts only if the slot held the same
 * incarnation (ring counter) before and after; otherwise the unit is on disk by then, and the
 * file read finds it.
 *
 * The Worker keeps its own small cache of values, each tagged with the log address it was read
 * from: a hit counts only if the shared table still maps the seid to that address (addresses are
 * never reused), so no invalidation message is ever needed.
 *
 * @module
 */
import fs from "node:fs";
import { CorruptionError, InvalidArgumentError } from "../errors.ts";
import { LogGeometry } from "../log/address.ts";
import { UNIT_HEADER_BYTES } from "../log/format.ts";
import { RingWriter, type RingDescriptor } from "../log/ring.ts";
import { ElementCache } from "../store/cache.ts";
import { decodeExtents, FLAG_EXTENTS_INDIRECT, FLAG_PART, type Part } from "../store/format/extents.ts";
import { RECORD_HEADER_BYTES, RecordType, verifyDataRecordIn, verifyRecord } from "../store/format/records.ts";
import { seidHalves } from "../store/state/mapping.ts";
import { checkFilled, checkPart, checkSingle, checkSpace, copyParts, seidsIn, type EntriesOptions } from "../store/read-path.ts";
import { partsByteStream } from "../store/streams.ts";
import { ownedBytes } from "../log/reader.ts";
import type { Location } from "../store/state/mapping.ts";
import { checkSeid } from "../store/state/seids.ts";
import type { StoreHandle } from "./handle.ts";
import { PIN_ENTRIES, SharedMapping, SharedPins, SharedSegments } from "./shared-state.ts";
import { DirectReader } from "../io/direct-read.ts";
import { allocAligned, freeAligned } from "../io/libc.ts";
import { MappedFile } from "../io/mapped-file.ts";

/** Attempts of one read before a persistent mismatch is reported as corruption. */
const READ_ATTEMPTS = 8;
/** Parts a Worker's read stream keeps in flight. */
const READ_AHEAD_PARTS = 4;
/** Reads up to this size are synchronous preads (see readBytes); larger ones go through the thread pool. */
const SYNC_READ_BYTES = 64 << 10;
/** Parts of a multipart element read at once (the thread pool overlaps them). */
const PARTS_AT_ONCE = 4;
/** How long `readSync` waits for a free entry of a full pin table (see {@link WorkerReader.pinSync}). */
const SYNC_PIN_WAIT_MS = 1000;

/**
 * A read that lost a race (buffer reused, segment index stale), or whose record failed its check
 * (`failedCheck`: a race, a stale page, or damage): try again from the map.
 */
class Retry extends Error {
  constructor(
    message: string,
    readonly failedCheck = false,
  ) {
    super(message);
  }
}

/** {@link WorkerReader.readNow} could not answer at once: take the asynchronous path. */
export const SLOW: unique symbol = Symbol("slow");

/** The ring seen from a Worker: only to find bytes still in flush buffers. */
class ReaderRing extends RingWriter {
  view(slot: number): Uint8Array {
    return this.views[slot] as Uint8Array;
  }
}

/** Reads of one attached Worker (see the module doc). */
export class WorkerReader {
  private readonly id: number;
  private readonly mapping: SharedMapping;
  private readonly segments: SharedSegments;
  private readonly pins: SharedPins;
  private readonly ring: ReaderRing;
  private readonly geometry: LogGeometry;
  /** This Worker's own descriptor of the store's file. */
  private readonly fd: number;
  /** Reads on the thread pool not yet finished (close waits for them before closing `fd`). */
  private readonly reading = new Set<Promise<unknown>>();
  private readonly cache: ElementCache;
  private readonly maxReadBytes: number;
  /** The file mapped read-only: small reads are copies from it (io/mapped-file.ts). */
  private readonly mapped: MappedFile;
  /** Where {@link readNow} reads a record and checks it (no allocation), and its u32 view. */
  private readonly scratch = new Uint8Array(new ArrayBuffer(SYNC_READ_BYTES));
  private readonly scratchWords = new Uint32Array(this.scratch.buffer);
  /** O_DIRECT reads of records that failed their check through the page cache, opened on the first. */
  private direct: DirectReader | undefined;
  private readonly path: string;
  private openStreams = 0;
  private closed = false;
  cacheHits = 0;
  cacheMisses = 0;
  /** Reads that went on with O_DIRECT after a record failed its check through the page cache. */
  directRetries = 0;

  private constructor(id: number, handle: StoreHandle, fd: number, cacheBytes: number) {
    this.id = id;
    this.mapping = new SharedMapping(handle.mapping);
    this.segments = new SharedSegments(handle.segments);
    this.pins = new SharedPins(handle.pins);
    this.ring = new ReaderRing(handle.ring as RingDescriptor);
    this.geometry = new LogGeometry(handle.segmentSize);
    this.fd = fd;
    this.path = handle.path;
    this.mapped = new MappedFile(fd);
    this.cache = new ElementCache(cacheBytes);
    this.maxReadBytes = handle.maxReadBytes;
  }

  /** Open this Worker's own read-only descriptor of the store's file (never locked). */
  static async open(id: number, handle: StoreHandle, cacheBytes: number): Promise<WorkerReader> {
    // Buffered, not O_DIRECT: a Worker's cache is its own and small, so its misses are many;
    // through the kernel's page cache they cost what lmdb's and sqlite's reads cost (see
    // readBytes), and need no aligned native buffers. Coherent with the owner's O_DIRECT writes:
    // a direct write drops the cached pages of its range, a segment is never rewritten under a
    // pinned read, and every record read is verified (a mismatch is retried from the map, then
    // reported).
    return new WorkerReader(id, handle, fs.openSync(handle.path, "r"), cacheBytes);
  }

  get shared(): SharedMapping {
    return this.mapping;
  }

  // ───────────────────────────── elements ─────────────────────────────

  has(seid: bigint): boolean {
    return this.mapping.lookup(checkSeid(seid)).location !== undefined;
  }

  sizeOf(seid: bigint): number | undefined {
    return this.mapping.lookup(checkSeid(seid)).location?.sizeBytes;
  }

  seids(space: number): bigint[] {
    checkSpace(space);
    return this.mapping.seids(space).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Seids `entries(options)` visits, ascending, taken at once (see `Store.entries`). */
  seidsIn(options: EntriesOptions): BigUint64Array {
    return seidsIn(options, (space) => this.mapping.seids(space));
  }

  /**
   * The element's committed bytes, or undefined, when that can be had at once (see
   * {@link readNow}); else {@link SLOW}.
   */
  readNow(seid: bigint): Uint8Array | undefined | typeof SLOW {
    checkSeid(seid);
    const { location } = this.mapping.lookup(seid);
    if (location === undefined) return undefined;
    if (location.multipart || location.sizeBytes > SYNC_READ_BYTES - RECORD_HEADER_BYTES || location.sizeBytes > this.maxReadBytes) return SLOW;
    const cached = this.cache.getTagged(seid, location.address);
    if (cached !== undefined) {
      this.cacheHits += 1;
      return cached;
    }
    const entry = this.pins.tryPin(this.id, this.geometry.seqOf(location.address));
    if (entry < 0) return SLOW;
    try {
      if (!sameLocation(this.mapping.lookup(seid).location, location)) return SLOW;
      const length = RECORD_HEADER_BYTES + location.sizeBytes;
      const record = this.scratch.subarray(0, length);
      if (!this.copyFromBuffers(location.address, record) && !this.fileInto(location.address, record)) return SLOW;
      const halves = seidHalves(seid);
      let flags: number;
      try {
        flags = verifyDataRecordIn(record, this.scratchWords, halves[0] as number, halves[1] as number);
      } catch {
        return SLOW; // a lost race or damage: the slow path tries again and tells which
      }
      if ((flags & FLAG_PART) !== 0) return SLOW;
      this.cacheMisses += 1;
      const value = record.slice(RECORD_HEADER_BYTES);
      if (length <= this.cache.chunkBytes / 4) this.cache.admitTagged(seid, location.address, value);
      return value;
    } finally {
      this.pins.unpin(entry);
    }
  }

  /**
   * The element's committed bytes, or undefined. Not an async function: a read answered at once
   * ({@link readNow}) costs one resolved promise, not an async frame and its promise as well.
   */
  read(seid: bigint): Promise<Uint8Array | undefined> {
    let now: Uint8Array | undefined | typeof SLOW;
    try {
      now = this.readNow(seid);
    } catch (error) {
      return Promise.reject(error);
    }
    return now === SLOW ? this.runAsync(this.element(seid)) : Promise.resolve(now);
  }

  /**
   * {@link read} without a promise: what {@link readNow} cannot answer is read synchronously too
   * (the same steps, {@link runSync}), blocking this thread for the disk reads it needs.
   */
  readSync(seid: bigint): Uint8Array | undefined {
    const now = this.readNow(seid);
    return now === SLOW ? this.runSync(this.element(seid)) : now;
  }

  /**
   * The element's committed bytes as a byte stream (a BYOB reader gets them copied into its own
   * buffer; store/streams.ts); its segments stay pinned until it ends.
   */
  readStream(seid: bigint): ReadableStream<Uint8Array> {
    checkSeid(seid);
    const { location } = this.mapping.lookup(seid);
    if (location === undefined) throw new InvalidArgumentError(`seid ${seid} has no element to stream`);
    let parts: readonly Part[] | undefined;
    let entries: number[] = [];
    this.openStreams += 1;
    const start = async () => {
      // Pin everything the version being streamed touches, once, for the stream's whole life.
      let direct = false;
      for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        const now = this.mapping.lookup(seid).location;
        if (now === undefined || !sameLocation(now, location)) throw new InvalidArgumentError(`seid ${seid} changed before its stream started`);
        const held = await this.pinAsync([this.geometry.seqOf(location.address)]);
        try {
          if (!sameLocation(this.mapping.lookup(seid).location, location)) throw new Retry("moved");
          parts = location.multipart ? await this.runAsync(this.partsOf(seid, location.address, held, direct)) : undefined;
          if (parts !== undefined) held.push(...(await this.pinAsync(parts.map((part) => this.geometry.seqOf(part.address)))));
          if (!sameLocation(this.mapping.lookup(seid).location, location)) throw new Retry("moved");
          entries = held;
          return;
        } catch (error) {
          for (const entry of held) this.pins.unpin(entry);
          if (!(error instanceof Retry)) throw error;
          if (error.failedCheck && !direct) {
            direct = true; // as in element(): the device decides from now on
            this.directRetries += 1;
          }
        }
      }
      throw new InvalidArgumentError(`seid ${seid} kept moving while its stream started`);
    };
    // Each part is read into a JS array of its own (readBytes): handed over as the caller's own.
    const partAt = (index: number, direct: boolean): Steps<Uint8Array> =>
      parts === undefined
        ? this.recordBody(seid, location.address, location.sizeBytes, undefined, direct)
        : this.recordBody(seid, (parts[index] as Part).address, (parts[index] as Part).bodyBytes, index, direct);
    // The parts are pinned for the stream's life, so a part that fails its check through the page
    // cache is read once more with O_DIRECT, and that read decides (see element()).
    const readPart = async (index: number): Promise<Uint8Array> => {
      try {
        return await this.runAsync(partAt(index, false));
      } catch (error) {
        if (!(error instanceof Retry) || !error.failedCheck) throw error;
        this.directRetries += 1;
        return await this.runAsync(partAt(index, true));
      }
    };
    return partsByteStream(
      seid,
      location.sizeBytes,
      {
        start,
        // A single-part element streams as one part.
        count: () => (parts === undefined ? 1 : parts.length),
        read: async (index) => ownedBytes(await readPart(index)),
        finish: () => {
          this.openStreams -= 1;
          for (const entry of entries) this.pins.unpin(entry);
          entries = [];
        },
        mapError: (error) => (error instanceof Retry ? new CorruptionError(`seid ${seid}: ${error.message}`) : error),
      },
      READ_AHEAD_PARTS,
    );
  }

  // ───────────────────────── the read's steps, written once ─────────────────────────
  //
  // What {@link readNow} cannot answer (a multipart element, a value over 64 KiB, a segment that
  // could not be pinned at once, a lost race) is written once, as generators that yield what they
  // need — log bytes, or pins — and run by one of two drivers: {@link runAsync} for `read()` and
  // streams, {@link runSync} for `readSync()`. Pins are released in the generators' `finally`,
  // which runs whichever way a read ends (a driver hands its failures back with `throw`).

  /** The element's committed bytes, or undefined: looked up, pinned, read, verified, retried. */
  private *element(seid: bigint): Steps<Uint8Array | undefined> {
    let direct = false;
    for (let attempt = 0; ; attempt++) {
      const { location } = this.mapping.lookup(seid);
      if (location === undefined) return undefined;
      if (location.sizeBytes > this.maxReadBytes) {
        throw new InvalidArgumentError(`seid ${seid} holds ${location.sizeBytes} bytes, over maxReadBytes ${this.maxReadBytes}: use readStream()`);
      }
      const cached = this.cache.getTagged(seid, location.address);
      if (cached !== undefined) {
        this.cacheHits += 1;
        return cached;
      }
      this.cacheMisses += 1;
      try {
        const value = yield* this.version(seid, location, direct);
        if (value === undefined) continue; // moved while we pinned: look again
        // As the owner's reads do: once full, a first read is only remembered (scan resistance).
        if (value.length <= this.cache.chunkBytes / 4) this.cache.admitTagged(seid, location.address, value);
        return value;
      } catch (error) {
        if (!(error instanceof Retry)) throw error;
        if (attempt >= READ_ATTEMPTS) throw new CorruptionError(`seid ${seid}: its record could not be read consistently (${error.message})`);
        // The page cache can keep what an O_DIRECT write replaced while the two raced (a segment
        // reused since this Worker last read it): from now on the device decides, as for the
        // owner's reads. A lost race (moved, not yet published) just looks again.
        if (error.failedCheck && !direct) {
          direct = true;
          this.directRetries += 1;
        }
      }
    }
  }

  /** The version of the element at `location`, pinned while read; undefined if it moved meanwhile. */
  private *version(seid: bigint, location: Location, direct: boolean): Steps<Uint8Array | undefined> {
    const held = yield* pins([this.geometry.seqOf(location.address)]);
    try {
      if (!sameLocation(this.mapping.lookup(seid).location, location)) return undefined;
      if (!location.multipart) return yield* this.recordBody(seid, location.address, location.sizeBytes, undefined, direct);
      const parts = yield* this.partsOf(seid, location.address, held, direct);
      held.push(...(yield* pins(parts.map((part) => this.geometry.seqOf(part.address)))));
      if (!sameLocation(this.mapping.lookup(seid).location, location)) return undefined;
      const out = new Uint8Array(location.sizeBytes);
      let offset = 0;
      // A few parts at a time: the asynchronous driver reads them at once.
      for (let first = 0; first < parts.length; first += PARTS_AT_ONCE) {
        const batch = parts.slice(first, first + PARTS_AT_ONCE);
        const records = yield* bytes(batch.map((part) => [part.address, RECORD_HEADER_BYTES + part.bodyBytes] as const), direct);
        offset = copyParts(seid, out, offset, records.map((record, i) => checked(() => checkPart(record, seid, first + i))));
      }
      return checkFilled(seid, out, offset);
    } finally {
      for (const entry of held) this.pins.unpin(entry);
    }
  }

  /** The body of the Data record at `address` (part `index` of its element, or its whole value), verified. */
  private *recordBody(seid: bigint, address: number, bodyBytes: number, index: number | undefined, direct: boolean): Steps<Uint8Array> {
    const [record] = yield* bytes([[address, RECORD_HEADER_BYTES + bodyBytes]], direct);
    return checked(() => (index === undefined ? checkSingle(record as Uint8Array, seid) : checkPart(record as Uint8Array, seid, index)));
  }

  /** The part list of a multipart element, from its Extents record(s), every one verified. */
  private *partsOf(seid: bigint, address: number, held: number[], direct: boolean): Steps<Part[]> {
    const [head] = yield* bytes([[address, RECORD_HEADER_BYTES]], direct);
    const recordBytes = new DataView((head as Uint8Array).buffer, (head as Uint8Array).byteOffset, 4).getUint32(0, true);
    if (recordBytes < RECORD_HEADER_BYTES || recordBytes > this.ring.maxReservationBytes) throw new Retry(`record at ${address} claims ${recordBytes} bytes`, true);
    const [root] = yield* bytes([[address, recordBytes]], direct);
    const header = checked(() => verifyRecord(root as Uint8Array, { type: RecordType.Extents, seid }));
    const entries = decodeExtents((root as Uint8Array).subarray(RECORD_HEADER_BYTES));
    if ((header.flags & FLAG_EXTENTS_INDIRECT) === 0) return entries;
    held.push(...(yield* pins(entries.map((chunk) => this.geometry.seqOf(chunk.address)))));
    const chunks = yield* bytes(entries.map((chunk) => [chunk.address, RECORD_HEADER_BYTES + chunk.bodyBytes] as const), direct);
    return chunks.flatMap((record) => {
      checked(() => verifyRecord(record, { type: RecordType.Extents, seid }));
      return decodeExtents(record.subarray(RECORD_HEADER_BYTES));
    });
  }

  /** Run a read's steps to the end on this thread (readSync). */
  private runSync<T>(steps: Steps<T>): T {
    let next = steps.next();
    while (!next.done) {
      const need = next.value;
      let answer: Uint8Array[] | number[];
      try {
        answer = need.kind === "pins" ? this.pinSync(need.seqs) : need.ranges.map(([address, length]) => this.bytesSync(address, length, need.direct));
      } catch (error) {
        next = steps.throw(error);
        continue;
      }
      next = steps.next(answer);
    }
    return next.value;
  }

  /** Run a read's steps, waiting for what they need without blocking this thread (read, streams). */
  private async runAsync<T>(steps: Steps<T>): Promise<T> {
    let next = steps.next();
    while (!next.done) {
      const need = next.value;
      let answer: Uint8Array[] | number[];
      try {
        if (need.kind === "pins") answer = await this.pinAsync(need.seqs);
        else {
          // allSettled, not all: no step goes on (and unpins) while a read of it is in flight.
          const settled = await Promise.allSettled(need.ranges.map(([address, length]) => this.readBytes(address, length, need.direct)));
          const failed = settled.find((result) => result.status === "rejected");
          if (failed !== undefined) throw failed.reason;
          answer = settled.map((result) => (result as PromiseFulfilledResult<Uint8Array>).value);
        }
      } catch (error) {
        next = steps.throw(error);
        continue;
      }
      next = steps.next(answer);
    }
    return next.value;
  }

  /** Pin each distinct seq; waits (never errors) while the shared pin table is full. */
  private async pinAsync(seqs: readonly number[]): Promise<number[]> {
    const distinct = [...new Set(seqs)];
    const entries: number[] = [];
    while (!this.pinRest(distinct, entries)) await Bun.sleep(1);
    return entries;
  }

  /**
   * Pin each distinct seq, sleeping this thread while the table is full, for at most
   * {@link SYNC_PIN_WAIT_MS}: the pins may be this thread's own (its open read streams), which no
   * amount of sleeping frees.
   */
  private pinSync(seqs: readonly number[]): number[] {
    const distinct = [...new Set(seqs)];
    const entries: number[] = [];
    const deadline = performance.now() + SYNC_PIN_WAIT_MS;
    while (!this.pinRest(distinct, entries)) {
      if (performance.now() > deadline) {
        for (const entry of entries) this.pins.unpin(entry);
        throw new InvalidArgumentError(
          `readSync could not pin segment ${distinct[entries.length]} within ${SYNC_PIN_WAIT_MS} ms: all ${PIN_ENTRIES} pins of the store are held (${this.openStreams} read stream(s) open in this Worker); use read(), which waits, or end some streams`,
        );
      }
      Bun.sleepSync(1);
    }
    return entries;
  }

  /** Pin `seqs` from the first without an entry in `entries` on: false when the table is full. */
  private pinRest(seqs: readonly number[], entries: number[]): boolean {
    while (entries.length < seqs.length) {
      const entry = this.pins.tryPin(this.id, seqs[entries.length] as number);
      if (entry < 0) return false;
      entries.push(entry);
    }
    return true;
  }

  // ───────────────────────────── log bytes ─────────────────────────────

  /** `length` log bytes at `address`, synchronously: from a flush buffer while there, else from the file. */
  private bytesSync(address: number, length: number, direct: boolean): Uint8Array {
    // One array: the copy from a flush buffer is tried into the one the file read fills after.
    const out = new Uint8Array(length);
    if (this.copyFromBuffers(address, out)) return out;
    const physical = this.physicalOrRetry(address);
    if (direct) return this.directAt(address, physical, length);
    if (this.mapped.readInto(physical, out) !== length) throw new Retry(`log bytes at ${address} are past the end of the file`);
    return out;
  }

  /** `length` log bytes at `address`: from a flush buffer while there, else from the file. */
  private async readBytes(address: number, length: number, direct: boolean): Promise<Uint8Array> {
    // Up to SYNC_READ_BYTES synchronous (bytesSync): from the page cache a few µs, where a read
    // through the thread pool cost ~35 µs of hops (20 000 values of 16 B–3 KB, 2× a Worker's
    // cache: 23 k reads/s through the pool, BENCH_WORKERS_PARTS=peers bun bench/workers.ts). A
    // page the kernel must fetch holds this Worker's event loop for one disk read, as lmdb's do;
    // so does a direct read (only ever a record that failed its check: rare).
    if (direct || length <= SYNC_READ_BYTES) return this.bytesSync(address, length, direct);
    const out = new Uint8Array(length);
    if (this.copyFromBuffers(address, out)) return out;
    const physical = this.physicalOrRetry(address);
    let done = 0;
    while (done < length) {
      const got = await this.readOnPool(out, done, physical + done);
      if (got === 0) throw new Retry(`log bytes at ${address} are past the end of the file`);
      done += got;
    }
    return out;
  }

  /** Where log `address` is in the file, by the published segment index; undefined when its segment is not published. */
  private physicalOf(address: number): number | undefined {
    const index = this.segments.indexOf(this.geometry.seqOf(address));
    return index === undefined ? undefined : this.geometry.physicalOffset(index, address);
  }

  /** {@link physicalOf}, a lost race ({@link Retry}) when the segment is not published. */
  private physicalOrRetry(address: number): number {
    const physical = this.physicalOf(address);
    if (physical === undefined) throw new Retry(`segment ${this.geometry.seqOf(address)} is not in the published segment index`);
    return physical;
  }

  /** `length` bytes at `physical` with O_DIRECT (io/direct-read.ts), all of them or a {@link Retry}. */
  private directAt(address: number, physical: number, length: number): Uint8Array {
    this.direct ??= new DirectReader(this.path, { alloc: allocAligned, free: freeAligned });
    const out = this.direct.read(physical, length);
    if (out.length !== length) throw new Retry(`log bytes at ${address} are past the end of the file`);
    return out;
  }

  /** One pread into `out[offset..]` on the thread pool, tracked so close() waits for it. */
  private async readOnPool(out: Uint8Array, offset: number, position: number): Promise<number> {
    const read = new Promise<number>((resolve, reject) =>
      fs.read(this.fd, out, offset, out.length - offset, position, (error, got) => (error ? reject(error) : resolve(got))),
    );
    this.reading.add(read);
    try {
      return await read;
    } finally {
      this.reading.delete(read);
    }
  }

  /**
   * Copy `out.length` log bytes at `address` from a flush buffer into `out`: true if one held them
   * and was not reused meanwhile.
   */
  private copyFromBuffers(address: number, out: Uint8Array): boolean {
    const length = out.length;
    for (const buffer of this.ring.slots) {
      if (buffer.isFree) continue;
      const incarnation = buffer.counter;
      const start = address - buffer.baseAddress;
      if (start < UNIT_HEADER_BYTES || start + length > UNIT_HEADER_BYTES + buffer.finalFillBytes) continue;
      if (start + length > this.ring.bufferSize) continue;
      out.set(this.ring.view(buffer.slot).subarray(start, start + length));
      return !buffer.isFree && buffer.counter === incarnation; // written out meanwhile: the file has it
    }
    return false;
  }

  /**
   * All of `out` from the log at `address`, synchronously: a copy from the mapping, else
   * `pread`s; false if the segment is not published or the file came short.
   */
  private fileInto(address: number, out: Uint8Array): boolean {
    const physical = this.physicalOf(address);
    return physical !== undefined && this.mapped.readInto(physical, out) === out.length;
  }

  /** Close the descriptor once no read uses it (a descriptor number closed under a read may be reused). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.reading.size > 0) await Promise.allSettled([...this.reading]);
    this.mapped.close();
    this.direct?.close();
    fs.closeSync(this.fd);
    this.cache.clear();
  }
}

function sameLocation(a: Location | undefined, b: Location): boolean {
  return a !== undefined && a.address === b.address && a.sizeBytes === b.sizeBytes && a.multipart === b.multipart;
}

/** `check()`'s result; a record that fails it is first taken for a lost race or a stale page (retried), then corruption. */
function checked<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    throw new Retry(error instanceof Error ? error.message : String(error), true);
  }
}

/** What a step of a read asks its driver for: log bytes (several ranges at once), or pins. */
type Need =
  | { readonly kind: "bytes"; readonly ranges: ReadonlyArray<readonly [address: number, length: number]>; readonly direct: boolean }
  | { readonly kind: "pins"; readonly seqs: readonly number[] };

/** A read written once as steps (see the section "the read's steps" of {@link WorkerReader}). */
type Steps<T> = Generator<Need, T, unknown>;

/** The bytes of each range, from the driver (with O_DIRECT if `direct` and not in a flush buffer). */
function* bytes(ranges: ReadonlyArray<readonly [address: number, length: number]>, direct: boolean): Steps<Uint8Array[]> {
  return (yield { kind: "bytes", ranges, direct }) as Uint8Array[];
}

/** Pin entries for each distinct seq, from the driver (the caller unpins them). */
function* pins(seqs: readonly number[]): Steps<number[]> {
  return (yield { kind: "pins", seqs }) as number[];
}
