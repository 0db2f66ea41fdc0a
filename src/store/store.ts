/**
 * Store: the persistent heap of serial elements keyed by seids, in one file (CEDA's Log
 * Structured Store) on the LLAMA log of `src/log`.
 *
 * - Writes and deletes happen only in transactions, applied one at a time in call order. A
 *   transaction's records go to the log, then its Commit record; its effects are applied to the
 *   mapping table at once (no await in between), so readers see all of it or none of it.
 * - With `durability: "sync"` the promise resolves once the Commit record is durable; commits
 *   that arrive while a flush is in flight share the next one (group commit).
 * - Reads need no transaction: mapping table → cache → flush buffers or file, every record
 *   verified.
 * - Checkpoints (map, SUT, seid spaces, segment table) bound recovery to the log since the last.
 *
 * @module
 */
import { LogStructuredStore } from "../log/lss.ts";
import type { IoKind } from "../io/backend.ts";
import { InvalidArgumentError, LssError, ReadOnlyError, StoreClosedError } from "../errors.ts";
import { ElementCache } from "./cache.ts";
import { encodeCheckpoint } from "./checkpoint.ts";
import { resolveOptions, type Durability, type ResolvedOptions, type StoreOptions } from "./config.ts";
import { MappingTable } from "./mapping.ts";
import { readMultipart, readSingle } from "./read-path.ts";
import { encodeAlloc, loadCheckpoint, Replayer, type RecoveryReport } from "./recovery.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType } from "./records.ts";
import { checkSeid, DEFAULT_SPACE, SeidSpaces } from "./seids.ts";
import { SegmentUtilisation } from "./sut.ts";
import { Cleaner, type CleanerStats } from "./cleaner.ts";
import { createReadStream, elementSegments, SegmentPins } from "./streams.ts";
import { Transaction } from "./transaction.ts";
import { appendRecord, applyCommitted, type Multipart, type StoreCore } from "./write-path.ts";

/** What `store.stats()` returns. */
export interface StoreStats {
  /** The I/O backend really in use. */
  io: IoKind;
  /** Why `io: "auto"` fell back to portable, if it did. */
  ioFallbackReason: string | undefined;
  /** Live elements. */
  elements: number;
  /** Bytes of live element values. */
  liveBytes: number;
  /** Bytes of live records in the log (values plus record headers). */
  liveRecordBytes: number;
  fileBytes: number;
  segmentSize: number;
  segmentsUsed: number;
  segmentsFree: number;
  cacheHits: number;
  cacheMisses: number;
  cacheBytes: number;
  commits: number;
  checkpoints: number;
  /** Bytes written to the log (flush units, 4 KiB rounded). */
  bytesWritten: number;
  /** Bytes of values users wrote. */
  userBytesWritten: number;
  /** bytesWritten ÷ userBytesWritten. */
  writeAmplification: number;
  /** fileBytes ÷ liveRecordBytes. */
  spaceAmplification: number;
  datasyncs: number;
  uncleanShutdowns: number;
  /** RAM the mapping table takes. */
  mappingTableBytes: number;
  /** What recovery did at open. */
  recovery: RecoveryReport;
  /** The cleaner's counters: segments cleaned, bytes relocated, time writers were throttled. */
  cleaner: CleanerStats;
  /** Segments given back by the cleaner, free after the next checkpoint. */
  segmentsPending: number;
  durability: Durability;
  readOnly: boolean;
}

/** Bytes of store fields kept in the root block's user area. */
const ROOT_USER_VERSION = 1;

/** A bloom-lss store. Open with {@link Store.open}. */
export class Store {
  /** Path of the store's file. */
  readonly path: string;
  private readonly options: ResolvedOptions;
  private readonly log: LogStructuredStore;
  private readonly core: StoreCore;
  private readonly spaces = new SeidSpaces();
  /** Segments read streams are reading: never released under them. */
  private readonly pins = new SegmentPins();
  private readonly recoveryReport: RecoveryReport;
  private lastTxId: number;
  private commitCount: number;
  private checkpointCount = 0;
  private userBytesWritten = 0;
  private turn: Promise<void> = Promise.resolve();
  private inFlight = new Set<Promise<unknown>>();
  private isOpen = true;
  private closing: Promise<void> | undefined;
  private flushTimer: ReturnType<typeof setInterval> | undefined;
  private lastCheckpointSeq: number;
  private checkpointQueued = false;
  private dirtySinceCheckpoint = false;
  /** Transactions called and not yet past their commit (for group commit's decision to wait). */
  private queuedTransactions = 0;
  private lastRelaxedFlushMs = 0;
  private readonly cleaner: Cleaner;

  private constructor(path: string, options: ResolvedOptions, log: LogStructuredStore, core: StoreCore, report: RecoveryReport) {
    this.path = path;
    this.options = options;
    this.log = log;
    this.core = core;
    this.recoveryReport = report;
    this.lastTxId = report.lastTxId;
    this.commitCount = report.commits;
    this.lastCheckpointSeq = log.segmentSeqOf(log.rootBlock.replayFrom.address);
    // Replayed log is folded into a checkpoint at close, so the next open replays less.
    this.dirtySinceCheckpoint = report.unitsReplayed > 0;
    this.cleaner = new Cleaner(
      {
        log,
        core,
        pins: this.pins,
        exclusive: (fn) => this.exclusive(fn),
        // Consumed at once, as a user transaction's id is: records appended under it and then
        // left without a Commit must never be claimed by the next transaction's Commit.
        nextTxId: () => ++this.lastTxId,
        commitSystem: () => {
          this.commitCount += 1; // replay counts every Commit record; so does the live store
          this.dirtySinceCheckpoint = true;
        },
        checkpointLocked: () => this.writeCheckpoint(),
        maxFileBytes: options.maxFileBytes,
        get isOpen() {
          return isOpen();
        },
      },
      {
        cleanerUtilisationPercent: options.cleanerUtilisationPercent,
        cleanerLowWaterSegments: options.cleanerLowWaterSegments,
        cleanerHighWaterSegments: options.cleanerHighWaterSegments,
        autoClean: options.autoClean && !options.readOnly,
      },
    );
    const isOpen = () => this.isOpen && this.closing === undefined && this.log.failedReason === undefined;
    if (options.durability === "relaxed" && !options.readOnly) {
      this.flushTimer = setInterval(() => this.log.requestFlush(), options.flushTimeMs);
      this.flushTimer.unref?.();
    }
  }

  /**
   * Open the store at `path`, creating it when missing (unless `create: false`), and recover it
   * after a crash. Throws `StoreLockedError` when another opener holds it, `CorruptionError`
   * when the file is not a readable store, `IoUnavailableError` when `io: "uring"` cannot work.
   */
  static async open(path: string, options: StoreOptions = {}): Promise<Store> {
    if (typeof path !== "string" || path.length === 0) throw new InvalidArgumentError("path must be a non-empty string");
    const resolved = resolveOptions(options);
    const log = await LogStructuredStore.open(path, {
      writeMode: resolved.writeMode,
      bufferSize: resolved.bufferSize,
      ringSize: resolved.ringSize,
      segmentSize: resolved.segmentSize,
      io: resolved.io,
      backend: resolved.backend,
      create: resolved.create,
      readOnly: resolved.readOnly,
      maxFileBytes: resolved.maxFileBytes,
      deferRecovery: true,
    });
    try {
      const started = performance.now();
      const core: StoreCore = {
        log,
        map: new MappingTable(),
        sut: new SegmentUtilisation(log.segmentSize),
        cache: new ElementCache(resolved.cacheBytes),
        parts: new Map<bigint, Multipart>(),
        liveValueBytes: 0,
      };
      const store = await Store.recover(path, resolved, log, core);
      store.recoveryReport.durationMs = performance.now() - started;
      return store;
    } catch (error) {
      await log.close().catch(() => {});
      throw error;
    }
  }

  private static async recover(path: string, options: ResolvedOptions, log: LogStructuredStore, core: StoreCore): Promise<Store> {
    const spaces = new SeidSpaces();
    const checkpoint = await loadCheckpoint(core, spaces);
    const replayer = new Replayer(core, spaces, checkpoint?.lastTxId ?? 0, checkpoint?.commits ?? 0);
    const walked = await log.recover(undefined, replayer.visit);
    replayer.finish();
    const report: RecoveryReport = {
      checkpointLoaded: checkpoint !== undefined,
      unitsReplayed: walked.units,
      bytesReplayed: walked.bytes,
      transactionsReplayed: replayer.transactionsReplayed,
      transactionsDiscarded: replayer.transactionsDiscarded,
      lastTxId: replayer.lastTxId,
      commits: replayer.commits,
      durationMs: 0,
    };
    const store = new Store(path, options, log, core, report);
    store.spaces.apply(spaces.snapshot());
    return store;
  }

  /** The I/O backend really in use. */
  get io(): IoKind {
    return this.log.backend.kind;
  }

  /** True once `close()` has started. */
  get closed(): boolean {
    return !this.isOpen;
  }

  private assertOpen(): void {
    if (!this.isOpen) throw new StoreClosedError(`the store ${this.path} is closed`);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.options.readOnly) throw new ReadOnlyError(`the store ${this.path} is open read-only`);
    const failure = this.log.failedReason;
    if (failure !== undefined) throw new ReadOnlyError(`the store is read-only after an I/O failure (reopen it): ${failure.message}`);
  }

  // ───────────────────────────── seids ─────────────────────────────

  /** A new seid space: a high half never handed out before (never 0). */
  createSeidSpace(): number {
    this.assertWritable();
    this.dirtySinceCheckpoint = true;
    return this.spaces.createSpace();
  }

  /** A seid never handed out before in `space` (default 1); never `0n`. */
  allocateSeid(space: number = DEFAULT_SPACE): bigint {
    this.assertWritable();
    this.dirtySinceCheckpoint = true;
    return this.spaces.allocate(space);
  }

  // ───────────────────────────── transactions ─────────────────────────────

  /**
   * Run `fn` as a transaction. Transactions run one at a time, in call order. If `fn` throws,
   * nothing is applied and the promise rejects with its error. Otherwise everything it wrote
   * becomes visible at once, and the promise resolves with `fn`'s result once the commit is
   * durable (`durability: "sync"`) or applied (`"relaxed"`).
   */
  transaction<T>(fn: (tx: Transaction) => T | Promise<T>): Promise<T> {
    try {
      this.assertWritable();
      if (this.closing !== undefined) throw new StoreClosedError(`the store ${this.path} is closing`);
      if (typeof fn !== "function") throw new InvalidArgumentError("transaction() takes a function");
    } catch (error) {
      return Promise.reject(error);
    }
    const previous = this.turn;
    let endTurn!: () => void;
    this.turn = new Promise<void>((resolve) => (endTurn = resolve));
    this.queuedTransactions += 1;
    const run = this.runTransaction(previous, () => {
      this.queuedTransactions -= 1;
      endTurn();
    }, fn);
    this.inFlight.add(run);
    const untrack = () => this.inFlight.delete(run);
    run.then(untrack, untrack);
    return run;
  }

  private async runTransaction<T>(previous: Promise<void>, endTurn: () => void, fn: (tx: Transaction) => T | Promise<T>): Promise<T> {
    let commitEnd: number | undefined;
    let result: T;
    await previous;
    try {
      this.assertWritable();
      await this.cleaner.throttle();
      const tx = new Transaction(this.lastTxId + 1, this.log, this.options.cacheBytes);
      this.lastTxId = tx.id; // consumed even if it aborts: its records may be in the log already
      try {
        result = await fn(tx);
      } catch (error) {
        await tx.abandon();
        throw error;
      }
      const ops = await tx.finish();
      commitEnd = await this.commit(tx.id, ops.length);
      applyCommitted(this.core, ops);
      this.lastTxId = tx.id;
      this.commitCount += 1;
      this.dirtySinceCheckpoint = true;
      for (const op of ops) if (op.kind === "write") this.userBytesWritten += op.sizeBytes;
    } finally {
      endTurn();
    }
    if (commitEnd !== undefined) {
      if (this.options.durability === "sync") {
        // Seal at once when no other transaction is queued behind this one; otherwise let the
        // queued ones join the same flush (group commit).
        this.log.requestFlush(this.queuedTransactions === 0);
        await this.log.waitDurable(commitEnd);
      } else if (performance.now() - this.lastRelaxedFlushMs >= this.options.flushTimeMs) {
        // A tight loop of relaxed commits may never give the flush timer a turn: flush from here too.
        this.lastRelaxedFlushMs = performance.now();
        this.log.requestFlush();
      }
      this.maybeCheckpoint();
      this.cleaner.nudge();
    }
    return result;
  }

  /** Append pending seid allocations and the Commit record; returns the address after it. */
  private async commit(txId: number, opCount: number): Promise<number | undefined> {
    const alloc = this.spaces.takeDirty();
    if (opCount === 0 && alloc === undefined) return undefined;
    if (alloc !== undefined) await appendRecord(this.log, RecordType.Alloc, 0, 0n, alloc.length, encodeAlloc(alloc));
    const address = await appendRecord(this.log, RecordType.Commit, txId, 0n, opCount, new Uint8Array(0));
    return address + RECORD_HEADER_BYTES;
  }

  private maybeCheckpoint(): void {
    if (this.checkpointQueued || !this.isOpen || this.closing !== undefined) return;
    const seq = this.log.segmentSeqOf(this.log.sealedEnd);
    if (seq - this.lastCheckpointSeq < this.options.numSegmentsPerCheckpoint) return;
    this.checkpointQueued = true;
    this.checkpoint()
      .catch(() => {
        // A failed background checkpoint leaves the previous one in force; the log's failure
        // (if that was the cause) already made the store read-only.
      })
      .finally(() => {
        this.checkpointQueued = false;
      });
  }

  // ───────────────────────────── reads ─────────────────────────────

  /** The element's bytes as last committed, or `undefined` if there is none. */
  async read(seid: bigint): Promise<Uint8Array | undefined> {
    this.assertOpen();
    checkSeid(seid);
    // The cache only holds committed values and is invalidated by every write and delete, so a
    // hit needs no mapping-table lookup.
    const hit = this.core.cache.get(seid);
    if (hit !== undefined && hit.length <= this.options.maxReadBytes) return hit; // a copy already
    const location = this.core.map.get(seid);
    if (location === undefined) return undefined;
    if (location.sizeBytes > this.options.maxReadBytes) {
      throw new InvalidArgumentError(
        `seid ${seid} holds ${location.sizeBytes} bytes, over maxReadBytes ${this.options.maxReadBytes}: use readStream()`,
      );
    }
    let value: Uint8Array;
    // Pin what the read touches: the cleaner may relocate the element meanwhile, and must not give
    // its old segments back (and a checkpoint then reuse them) under a read still in flight.
    const multipart = location.multipart ? this.core.parts.get(seid) : undefined;
    if (location.multipart && multipart === undefined) throw new LssError("LSS_INTERNAL", `seid ${seid} is multipart but has no part list`);
    const seqs = elementSegments(this.log, location, multipart?.parts);
    this.pins.pin(seqs);
    try {
      value = multipart === undefined ? await readSingle(this.log, seid, location) : await readMultipart(this.log, seid, location, multipart.parts);
    } finally {
      this.pins.unpin(seqs);
    }
    // Cache only if the element was not replaced while we read it.
    const now = this.core.map.get(seid);
    if (now !== undefined && now.address === location.address && this.options.cacheBytes > 0) this.core.cache.set(seid, value); // copied into the cache
    return value;
  }

  /**
   * The element's committed bytes as a stream, read ahead with bounded memory, every part
   * verified (`CorruptionError` otherwise). The version being read stays readable even if it is
   * overwritten or deleted meanwhile. `InvalidArgumentError` if there is no such element.
   */
  readStream(seid: bigint): ReadableStream<Uint8Array> {
    this.assertOpen();
    checkSeid(seid);
    const location = this.core.map.get(seid);
    if (location === undefined) throw new InvalidArgumentError(`seid ${seid} has no element to stream`);
    const parts = location.multipart ? this.core.parts.get(seid)?.parts : undefined;
    if (location.multipart && parts === undefined) throw new LssError("LSS_INTERNAL", `seid ${seid} is multipart but has no part list`);
    return createReadStream(this.log, this.pins, seid, location, parts);
  }

  /** True if the element exists (as last committed). */
  has(seid: bigint): boolean {
    this.assertOpen();
    return this.core.map.has(checkSeid(seid));
  }

  /** The element's size in bytes, or `undefined` if there is none. */
  sizeOf(seid: bigint): number | undefined {
    this.assertOpen();
    return this.core.map.sizeOf(checkSeid(seid));
  }

  /** Seids present in `space` (default 1), ascending. */
  seids(space: number = DEFAULT_SPACE): bigint[] {
    this.assertOpen();
    if (!Number.isInteger(space) || space < 0 || space > 0xffffffff) {
      throw new InvalidArgumentError(`space must be an integer in [0, 4294967295], got ${space}`);
    }
    return [...this.core.map.seidsOfSpace(space)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  // ───────────────────────────── durability ─────────────────────────────

  /** Resolve once everything committed so far is durable (pending seid allocations included). */
  async flush(): Promise<void> {
    this.assertOpen();
    if (this.options.readOnly) return;
    await this.exclusive(async () => {
      const alloc = this.spaces.takeDirty();
      if (alloc !== undefined) await appendRecord(this.log, RecordType.Alloc, 0, 0n, alloc.length, encodeAlloc(alloc));
    });
    await this.log.flush();
  }

  /** Run `fn` in the transaction order, with no transaction running. */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.turn;
    let endTurn!: () => void;
    this.turn = new Promise<void>((resolve) => (endTurn = resolve));
    await previous;
    try {
      return await fn();
    } finally {
      endTurn();
    }
  }

  /**
   * Write a checkpoint of the mapping table, the segment utilisation table, the seid spaces and
   * the segment table, then point the root block at it. Recovery starts from the newest one.
   */
  async checkpoint(): Promise<void> {
    this.assertWritable();
    await this.exclusive(() => this.writeCheckpoint());
  }

  private async writeCheckpoint(): Promise<void> {
    const log = this.log;
    const alloc = this.spaces.takeDirty();
    if (alloc !== undefined) await appendRecord(log, RecordType.Alloc, 0, 0n, alloc.length, encodeAlloc(alloc));
    await log.flush();
    const start = log.tailPosition();
    const blob = encodeCheckpoint({
      lastTxId: this.lastTxId,
      commits: this.commitCount,
      spaces: this.spaces.snapshot(),
      sut: this.core.sut.entries(),
      segments: log.segmentState(),
      map: this.core.map.entries(),
      mapEntries: this.core.map.size,
      parts: this.core.parts,
    });
    const chunkBytes = log.maxReservationBytes - RECORD_HEADER_BYTES;
    for (let offset = 0, index = 0; offset < blob.length || index === 0; offset += chunkBytes, index++) {
      await appendRecord(log, RecordType.Checkpoint, 0, 0n, index, blob.subarray(offset, Math.min(blob.length, offset + chunkBytes)));
    }
    await log.flush();
    const endAddress = log.sealedEnd;
    const replayFrom = log.tailPosition();
    await log.writeRoot({ checkpoint: { start, endAddress }, replayFrom, user: rootUserBytes() });
    this.checkpointCount += 1;
    this.dirtySinceCheckpoint = false;
    this.lastCheckpointSeq = log.segmentSeqOf(replayFrom.address);
    this.releaseEmptySegments(log.segmentSeqOf(start.address));
  }

  /**
   * Segments wholly before the newest checkpoint that hold no live record can be reused: after
   * the next root write neither root copy can lead recovery into them (see SegmentTable).
   */
  private releaseEmptySegments(checkpointSeq: number): void {
    for (const seq of this.log.liveSegmentSeqs()) {
      if (seq >= checkpointSeq) break;
      if (this.core.sut.liveBytesOf(seq) === 0 && !this.pins.isPinned(seq)) this.log.releaseSegment(seq);
    }
  }

  /**
   * Clean now: relocate the live data of every segment below `cleanerUtilisationPercent` (or
   * `utilisationPercent`), checkpoint so the emptied segments are free, and with `shrink: true`
   * move the log's tail to the lowest free segments and truncate the free segments at the end
   * of the file. Resolves with what it did.
   */
  async compact(options: { shrink?: boolean; utilisationPercent?: number } = {}): Promise<{ segmentsCleaned: number; bytesFreed: number }> {
    this.assertWritable();
    const threshold = options.utilisationPercent ?? this.options.cleanerUtilisationPercent;
    if (!Number.isInteger(threshold) || threshold < 1 || threshold > 100) {
      throw new InvalidArgumentError(`utilisationPercent must be an integer in [1, 100], got ${threshold}`);
    }
    const result = await this.cleaner.compact(threshold, false);
    if (options.shrink !== true) return result;
    // Move the tail down to low free segments (each move followed by a checkpoint, so the log
    // never skips a whole segment), free what the old tail held, then cut the file's end.
    for (let step = 0; step < 2; step++) {
      await this.exclusive(async () => {
        await this.log.advanceSegment();
        await this.writeCheckpoint();
      });
    }
    const again = await this.cleaner.compact(threshold, true);
    return { segmentsCleaned: result.segmentsCleaned + again.segmentsCleaned, bytesFreed: again.bytesFreed };
  }

  /**
   * Check the store's in-memory invariants (for tests and torture runs): the segment utilisation
   * table equals what the mapping table implies, and every location lies in a live segment.
   * Returns the problems found (empty when all hold).
   */
  checkInvariants(): string[] {
    const problems: string[] = [];
    const expected = new Map<number, number>();
    const count = (address: number, bytes: number, what: string) => {
      const seq = this.log.segmentSeqOf(address);
      if (!this.log.isLiveSegment(seq)) problems.push(`${what} at ${address} lies in segment ${seq}, which is not live`);
      expected.set(seq, (expected.get(seq) ?? 0) + bytes);
    };
    for (const [seid, location] of this.core.map.entries()) {
      if (!location.multipart) {
        count(location.address, paddedRecordBytes(RECORD_HEADER_BYTES + location.sizeBytes), `seid ${seid}`);
        continue;
      }
      const multipart = this.core.parts.get(seid);
      if (multipart === undefined) {
        problems.push(`seid ${seid} is multipart without a part list`);
        continue;
      }
      for (const part of multipart.parts) count(part.address, paddedRecordBytes(RECORD_HEADER_BYTES + part.bodyBytes), `seid ${seid} part`);
      for (const record of multipart.meta) count(record.address, record.recordBytes, `seid ${seid} extents`);
    }
    const actual = new Map(this.core.sut.entries());
    for (const seq of new Set([...expected.keys(), ...actual.keys()])) {
      if ((expected.get(seq) ?? 0) !== (actual.get(seq) ?? 0)) {
        problems.push(`segment ${seq}: utilisation table says ${actual.get(seq) ?? 0} live bytes, the mapping table implies ${expected.get(seq) ?? 0}`);
      }
    }
    return problems;
  }

  // ───────────────────────────── stats and close ─────────────────────────────

  /** A plain-object snapshot of the store's counters. */
  stats(): StoreStats {
    const logStats = this.log.stats();
    const liveRecordBytes = this.core.sut.totalLiveBytes;
    return {
      io: this.io,
      ioFallbackReason: this.log.backend.fallbackReason,
      elements: this.core.map.size,
      liveBytes: this.core.liveValueBytes,
      liveRecordBytes,
      fileBytes: logStats.fileBytes,
      segmentSize: this.log.segmentSize,
      segmentsUsed: logStats.segmentsLive,
      segmentsFree: logStats.segmentsFree,
      cacheHits: this.core.cache.hits,
      cacheMisses: this.core.cache.misses,
      cacheBytes: this.core.cache.bytes,
      commits: this.commitCount,
      checkpoints: this.checkpointCount,
      bytesWritten: logStats.bytesWritten,
      userBytesWritten: this.userBytesWritten,
      writeAmplification: this.userBytesWritten === 0 ? 0 : logStats.bytesWritten / this.userBytesWritten,
      spaceAmplification: liveRecordBytes === 0 ? 0 : logStats.fileBytes / liveRecordBytes,
      datasyncs: logStats.datasyncs,
      uncleanShutdowns: this.log.rootBlock.uncleanShutdowns,
      mappingTableBytes: this.core.map.memoryBytes,
      recovery: { ...this.recoveryReport },
      cleaner: { ...this.cleaner.counters },
      segmentsPending: logStats.segmentsPending,
      durability: this.options.durability,
      readOnly: this.options.readOnly,
    };
  }

  /**
   * Wait for transactions in flight, write a checkpoint, flush, and release the file. Safe to
   * call twice. After it, every method throws `StoreClosedError`.
   */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    if (this.flushTimer !== undefined) clearInterval(this.flushTimer);
    await Promise.allSettled([...this.inFlight]);
    await this.cleaner.idle();
    await this.turn;
    let error: unknown;
    try {
      if (!this.options.readOnly && this.log.failedReason === undefined && this.dirtySinceCheckpoint) {
        await this.writeCheckpoint();
      }
    } catch (caught) {
      error = caught;
    }
    this.isOpen = false;
    try {
      await this.log.close();
    } catch (caught) {
      error ??= caught;
    }
    this.core.cache.clear();
    if (error !== undefined) throw error;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function rootUserBytes(): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setUint32(0, ROOT_USER_VERSION, true);
  return bytes;
}
