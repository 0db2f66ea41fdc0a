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
import { openLog, type LogStructuredStore } from "../log/log.ts";
import type { IoBackend, IoKind } from "../io/backend.ts";
import { InvalidArgumentError, NoSpaceError, ReadOnlyError, StoreClosedError, type ErrorCode } from "../errors.ts";
import { ElementCache } from "./cache.ts";
import { Checkpointer, loadCheckpoint } from "./checkpointer.ts";
import { Cleaner, type CleanerStats } from "./cleaner.ts";
import { CommitPath, type StoreCore } from "./commit.ts";
import { resolveOptions, type Durability, type ResolvedOptions, type StoreOptions } from "./config.ts";
import type { Multipart } from "./format/extents.ts";
import { SegmentPins } from "./pins.ts";
import { ReadPath, type EntriesOptions } from "./read-path.ts";
import { Replayer, type RecoveryReport } from "./replay.ts";
import { unitWorthCaching } from "./format/records.ts";
import { MappingTable } from "./state/mapping.ts";
import { DEFAULT_SPACE, SeidSpaces } from "./state/seids.ts";
import { SegmentUtilisation } from "./state/sut.ts";
import { SyncLogReader } from "./sync-read.ts";
import { TransactionState, type Transaction } from "./transaction.ts";
import { StagingPool } from "./staging.ts";
import { backupStore, type BackupInfo, type BackupOptions } from "../backup/backup.ts";
import { Archive, archiveStatsOf, stopArchiveOf, type ArchiveOptions, type ArchiveStats } from "../backup/archive.ts";
import type { RestoreInfo, RestoreOptions } from "../backup/restore.ts";
import type { VerifyOptions, VerifyReport } from "../backup/verify.ts";
import { AttachedStore, type AttachOptions } from "../workers/attached.ts";
import type { StoreHandle } from "../workers/handle.ts";
import { WorkerHost } from "../workers/host.ts";
import { primaryStatsOf, replicationAfterCommit, stopReplicationOf } from "../replication/registry.ts";
import type { PrimaryReplicationStats, ReplicationServer, ServeReplicationOptions } from "../replication/primary.ts";
import { checkLevel, type ReplicationLevel } from "../replication/sync-levels.ts";
import type { StandbyOptions, StandbyReplicationStats, StandbyStore } from "../replication/standby.ts";

/** Options of one transaction. */
export interface TransactionOptions {
  /**
   * How far replication must get before the promise resolves (docs/REPLICATION.md); default:
   * the level given to `serveReplication`. Ignored when the store serves no standbys.
   */
  replication?: ReplicationLevel;
}

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
  /** Bytes of the store's file; on a block device, the part of the device the store has used so far. */
  fileBytes: number;
  /** Size of the block device the store lives on; `undefined` for a regular file. */
  deviceBytes: number | undefined;
  segmentSize: number;
  segmentsUsed: number;
  segmentsFree: number;
  cacheHits: number;
  cacheMisses: number;
  /**
   * Reads whose record, read through the kernel's page cache, failed its check and was read
   * again from the disk (see LogReader.read); nonzero only if pages raced an O_DIRECT write.
   */
  pageCacheRetries: number;
  cacheBytes: number;
  /** The caching layer of log blocks: reads it served, reads that went to the file, bytes held. */
  blockCache: { hits: number; misses: number; bytes: number; capacityBytes: number };
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
  /** Writes are refused: the store was opened `readOnly`, or an I/O failure stopped it (reopen it). */
  readOnly: boolean;
  /**
   * New data is refused for lack of disk space (or `maxFileBytes`) now: transactions that write
   * get `NoSpaceError`, while deletes, `compact()` and checkpoints still work in the reserve kept
   * for them. Checked again at the next write, so it clears once space is freed.
   */
  outOfSpace: boolean;
  /** The full-disk reserve in whole segments, rounded up (see `reserveBytes`). */
  segmentsReserved: number;
  /**
   * Bytes of room kept allocated ahead of the log's tail for deletes, compaction and checkpoints
   * when the disk is full. It grows with the store (a checkpoint and a cleaning victim's live
   * records, and a share for deletes), so an empty store's file stays small.
   */
  reserveBytes: number;
  /**
   * The I/O failure that made the store read-only, else the last `NoSpaceError` it gave (kept
   * after space came back); `undefined` when neither happened since open.
   */
  lastError: { code: ErrorCode; message: string } | undefined;
  /** Continuous archiving (`store.archive()`): backlog, position shipped, failures; `undefined` when never started. */
  archive: ArchiveStats | undefined;
  /** Replication: a primary's standbys and sync levels, or a standby's lag; `undefined` when neither. */
  replication: PrimaryReplicationStats | StandbyReplicationStats | undefined;
}

/**
 * Longest a Worker's commit leaves its flush to the transactions queued behind it (see
 * `afterCommit`): they normally ask within a Worker round trip (~0.1 ms).
 */
const GROUP_COMMIT_FALLBACK_MS = 5;

/** Keys of the two internal seams (see {@link openStore}, {@link storeInternals}): not exported. */
const OPEN: unique symbol = Symbol("bloom-lss.open");
const INTERNALS: unique symbol = Symbol("bloom-lss.internals");

/** A bloom-lss store. Open with {@link Store.open}. */
export class Store {
  /** Path of the store's file. */
  readonly path: string;
  private readonly options: ResolvedOptions;
  private readonly log: LogStructuredStore;
  private readonly core: StoreCore;
  private readonly commits: CommitPath;
  private readonly reads: ReadPath;
  /** Reused buffers for large written values on their way to the log (staging.ts). */
  private readonly staging = new StagingPool();
  private readonly checkpointer: Checkpointer;
  private readonly cleaner: Cleaner;
  /** Segments reads and read streams are reading: never released under them. */
  private readonly pins: SegmentPins;
  private readonly recoveryReport: RecoveryReport;
  /** `readSync`'s own descriptor on the file, opened on its first cache miss. */
  private readonly syncReads: SyncLogReader;
  private inFlight = new Set<Promise<unknown>>();
  private isOpen = true;
  private closing: Promise<void> | undefined;
  private flushTimer: ReturnType<typeof setInterval> | undefined;
  private lastRelaxedFlushMs = 0;
  /** Serves attached Workers once {@link share} was called (src/workers/host.ts). */
  private host: WorkerHost | undefined;

  private constructor(init: {
    path: string;
    options: ResolvedOptions;
    core: StoreCore;
    commits: CommitPath;
    pins: SegmentPins;
    report: RecoveryReport;
  }) {
    const { options, core, commits, pins } = init;
    this.path = init.path;
    this.options = options;
    this.log = core.log;
    this.core = core;
    this.commits = commits;
    this.pins = pins;
    this.recoveryReport = init.report;
    this.reads = new ReadPath(core, pins, options);
    this.syncReads = new SyncLogReader(core.log, init.path);
    this.checkpointer = new Checkpointer(core, commits, pins, options.numSegmentsPerCheckpoint);
    this.cleaner = new Cleaner(
      {
        core,
        commits,
        pins,
        checkpointer: this.checkpointer,
        // The option, or a block device's size: the cleaner keeps the store inside either.
        maxFileBytes: core.log.maxFileBytes,
        isOpen: () => this.acceptsWork,
      },
      {
        cleanerUtilisationPercent: options.cleanerUtilisationPercent,
        cleanerLowWaterSegments: options.cleanerLowWaterSegments,
        cleanerHighWaterSegments: options.cleanerHighWaterSegments,
        cleanerSpaceAmplification: options.cleanerSpaceAmplification,
        autoClean: options.autoClean && !options.readOnly,
      },
    );
    if (options.durability === "relaxed" && !options.readOnly) {
      this.flushTimer = setInterval(() => this.log.requestFlush(), options.flushTimeMs);
      this.flushTimer.unref?.();
    }
  }

  /**
   * Open the store at `path`, creating it when missing (unless `create: false`), and recover it
   * after a crash. Throws `StoreLockedError` when a live opener holds it — another process, another
   * Worker of this process, or this thread; the message names it — `CorruptionError` when the file
   * is not a readable store, `IoUnavailableError` when `io: "uring"` cannot work. An opener that
   * died (SIGKILLed, or a Worker terminated without `close()`) holds nothing: opening right after
   * its death succeeds, once the kernel has finished the I/O it still had in flight.
   *
   * `path` may be a block device (a raw partition): the store then takes the whole device, its
   * size read from the device. A device that holds no store is made one only with
   * `format: true`; without it, and for anything else that is not a store or a new or empty
   * regular file (a directory, `/dev/null`, a `/proc` file), it throws `NotAStoreError` and
   * writes nothing. A device in use (mounted…) throws `DeviceBusyError`.
   */
  static async open(path: string, options: StoreOptions = {}): Promise<Store> {
    return openStore(path, options, undefined);
  }

  /** @internal Used by {@link openStore}; not part of the API. */
  static async [OPEN](path: string, options: StoreOptions, backend: IoBackend | undefined): Promise<Store> {
    if (typeof path !== "string" || path.length === 0) throw new InvalidArgumentError("path must be a non-empty string");
    const resolved = resolveOptions(options);
    const log = await openLog(path, {
      writeMode: resolved.writeMode,
      bufferSize: resolved.bufferSize,
      ringSize: resolved.ringSize,
      segmentSize: resolved.segmentSize,
      io: resolved.io,
      create: resolved.create,
      readOnly: resolved.readOnly,
      format: resolved.format,
      maxFileBytes: resolved.maxFileBytes,
      commitWaitBlockUs: resolved.commitWaitBlockUs,
      blockCacheBytes: resolved.blockCacheBytes,
      cacheAdmission: unitWorthCaching,
      deferRecovery: true,
    }, backend);
    try {
      const started = performance.now();
      const map = new MappingTable();
      const core: StoreCore = {
        log,
        map,
        sut: new SegmentUtilisation((address) => log.segmentSeqOf(address)),
        cache: new ElementCache(resolved.cacheBytes),
        parts: new Map<bigint, Multipart>(),
        spaces: new SeidSpaces((space, low) => map.hasHalves(space, low)),
        liveValueBytes: 0,
        multipartEntries: 0,
        largestRecordBytes: 0,
      };
      // Recovery: the checkpoint, then the log after it replayed through the one commit path.
      const checkpoint = await loadCheckpoint(core);
      const commits = new CommitPath(core, { lastTxId: checkpoint?.lastTxId ?? 0, commits: checkpoint?.commits ?? 0 });
      const replayer = new Replayer(commits);
      const walked = await log.recover(undefined, replayer.visit);
      replayer.finish();
      // Replayed log is folded into a checkpoint at close, so the next open replays less.
      commits.dirty = walked.units > 0;
      const report: RecoveryReport = {
        checkpointLoaded: checkpoint !== undefined,
        unitsReplayed: walked.units,
        bytesReplayed: walked.bytes,
        transactionsReplayed: replayer.transactionsReplayed,
        transactionsDiscarded: replayer.transactionsDiscarded,
        lastTxId: commits.lastTxId,
        commits: commits.commits,
        durationMs: performance.now() - started,
      };
      const store = new Store({ path, options: resolved, core, commits, pins: new SegmentPins(), report });
      // Allocated now, while the disk may have room: later, when it is full, using it needs none.
      store.keepSpaceReserve();
      return store;
    } catch (error) {
      await log.close().catch(() => {});
      throw error;
    }
  }

  /** The I/O backend really in use. */
  get io(): IoKind {
    return this.log.backend.kind;
  }

  /** True once `close()` has started. */
  get closed(): boolean {
    return !this.isOpen;
  }

  /** Open, not closing and not failed: background work may start. */
  private get acceptsWork(): boolean {
    return this.isOpen && this.closing === undefined && this.log.failedReason === undefined;
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
    this.commits.dirty = true;
    return this.core.spaces.createSpace();
  }

  /**
   * A seid never handed out before in `space` (default 1) that holds no element; never `0n`.
   * Seids written without being allocated (chosen by hand) are stepped over.
   */
  allocateSeid(space: number = DEFAULT_SPACE): bigint {
    this.assertWritable();
    this.commits.dirty = true;
    return this.core.spaces.allocate(space);
  }

  // ───────────────────────────── transactions ─────────────────────────────

  /**
   * Run `fn` as a transaction. Transactions run one at a time, in call order. If `fn` throws,
   * nothing is applied and the promise rejects with its error. Otherwise everything it wrote
   * becomes visible at once, and the promise resolves with `fn`'s result once the commit is
   * durable (`durability: "sync"`) or applied (`"relaxed"`).
   *
   * Inside `fn`, a call of this store that waits for the transaction turn — `transaction()`,
   * `flush()`, `checkpoint()`, `compact()`, `close()`, `backup()`, `serveReplication()`, and the
   * archive's `stop()` and the replication server's `close()` — would wait for this
   * transaction, which waits for `fn`: it throws `TransactionError` at once instead
   * (awaited, the rejection ends `fn` like any error, and nothing is applied unless `fn` catches
   * it). Reads work as usual. The same calls from anywhere else wait their turn.
   */
  transaction<T>(fn: (tx: Transaction) => T | Promise<T>, options: TransactionOptions = {}): Promise<T> {
    try {
      this.assertWritable();
      if (this.closing !== undefined) throw new StoreClosedError(`the store ${this.path} is closing`);
      if (typeof fn !== "function") throw new InvalidArgumentError("transaction() takes a function");
      // Checked before anything runs: a bad level found after the commit would reject a
      // transaction that did commit.
      if (options.replication !== undefined) checkLevel(options.replication, "replication");
      this.commits.refuseInsideCallback("store.transaction()");
    } catch (error) {
      return Promise.reject(error);
    }
    const turn = this.commits.takeTurn();
    this.commits.queued += 1;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.commits.queued -= 1;
      turn.release();
    };
    const run = this.runTransaction(turn.ready, release, fn, options.replication);
    this.inFlight.add(run);
    const untrack = () => this.inFlight.delete(run);
    run.then(untrack, untrack);
    return run;
  }

  private async runTransaction<T>(
    ready: Promise<void>,
    release: () => void,
    fn: (tx: Transaction) => T | Promise<T>,
    replication: ReplicationLevel | undefined,
  ): Promise<T> {
    let commitEnd: number | undefined;
    let result: T;
    await ready;
    try {
      this.assertWritable();
      const throttled = this.cleaner.throttleIfNeeded();
      if (throttled !== undefined) await throttled;
      // The id is consumed even if the transaction aborts: its records may be in the log already.
      const tx = new TransactionState(this.commits.nextTxId(), this.log, this.options.cacheBytes, {
        readCommitted: (seid) => this.reads.read(seid),
        maxReadBytes: this.options.maxReadBytes,
      }, this.staging);
      try {
        // A promise only when the callback returned a thenable (runCallback settles it).
        const returned = this.commits.runCallback(tx.id, () => fn(tx));
        result = returned instanceof Promise ? await returned : returned;
      } catch (error) {
        await tx.abandon();
        throw error;
      }
      commitEnd = await this.commits.commitTransaction(tx);
    } finally {
      release();
    }
    if (commitEnd !== undefined) {
      await this.afterCommit(commitEnd, this.commits.queued > 0 || (this.host?.queuedTickets ?? 0) > 0);
      // A standby's confirmation, as the transaction's replication level asks (src/replication).
      const replicated = replicationAfterCommit(this.core, commitEnd, replication);
      if (replicated !== undefined) await replicated;
    }
    return result;
  }

  /**
   * After a commit (of this thread's transaction or an attached Worker's): wait for what the
   * durability setting promises, then let checkpoints and the cleaner run. `othersQueued`: more
   * transactions wait for the turn, so the flush waits for them to join it (group commit).
   * `deferFlush` (a Worker's commit with Workers queued behind it): do not ask for the flush at
   * all — the last queued commit will — except through a fallback timer, in case that
   * transaction aborts or its Worker dies.
   */
  private async afterCommit(commitEnd: number, othersQueued: boolean, deferFlush = false): Promise<void> {
    if (this.options.durability === "sync") {
      // Seal at once when no other transaction is queued behind this one; otherwise let the
      // queued ones join the same flush (group commit).
      if (deferFlush) {
        const fallback = setTimeout(() => this.log.requestFlush(true), GROUP_COMMIT_FALLBACK_MS);
        fallback.unref?.();
        await this.log.waitDurable(commitEnd).finally(() => clearTimeout(fallback));
      } else {
        // Wait first, then seal: a unit sealed while somebody waits for it gets its datasync
        // linked to its write (one device round trip; see flusher.ts dispatchWrite).
        const durable = this.log.waitDurable(commitEnd);
        this.log.requestFlush(!othersQueued);
        await durable;
      }
    } else if (performance.now() - this.lastRelaxedFlushMs >= this.options.flushTimeMs) {
      // A tight loop of relaxed commits may never give the flush timer a turn: flush from here too.
      this.lastRelaxedFlushMs = performance.now();
      this.log.requestFlush();
    }
    this.checkpointer.maybeCheckpoint(this.acceptsWork);
    this.cleaner.nudge();
    this.keepSpaceReserveAfterCommit();
  }

  /**
   * Keep the log's full-disk reserve at the size the cleaner computes (it grows with the store:
   * a checkpoint and a cleaning victim's live records; see Cleaner.fullDiskReserve), growing the
   * file for it while it can. Cheap when the file has room.
   */
  private keepSpaceReserve(): void {
    if (this.options.readOnly || this.log.failedReason !== undefined) return;
    this.log.keepSpaceReserve((pending) => this.cleaner.fullDiskReserve(pending));
  }

  /**
   * {@link keepSpaceReserve} after a commit, whose transaction is committed (and durable, with
   * `sync`): its promise must not reject now — a caller told it failed would retry it or report a
   * loss that did not happen (the power-cut torture found one: an fallocate cut here rejected a
   * transaction the next open had). An I/O error has failed the log already (spaceStep), so the
   * next operation reports it; a disk without room is tried again by the next commit.
   */
  private keepSpaceReserveAfterCommit(): void {
    try {
      this.keepSpaceReserve();
    } catch {
      // See above: reported by what comes next, not by this committed transaction.
    }
  }

  // ───────────────────────────── reads ─────────────────────────────

  /** The element's bytes as last committed, or `undefined` if there is none. */
  read(seid: bigint): Promise<Uint8Array | undefined> {
    // Not an async function (see ReadPath.read): errors become a rejected promise here.
    try {
      this.assertOpen();
      return this.reads.read(seid);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The element's bytes as last committed, or `undefined` if there is none, without a promise.
   *
   * A cache hit is a copy from memory. A miss reads the record synchronously: from a flush buffer
   * if it is still in memory; a small one (≤ 64 KiB) as a copy from the kernel's page cache
   * through a read-only mapping of the file, blocking the thread for one disk read (about 0.1 ms
   * on an SSD) when the page is not there; a larger one with O_DIRECT (store/sync-read.ts). Every
   * byte is verified as `read()` verifies it (a small record that fails its check is read again
   * with O_DIRECT), and the value goes to the cache. Use `read()` where you can await: it does
   * not block the thread.
   * @throws InvalidArgumentError when the element is larger than `maxReadBytes`.
   */
  readSync(seid: bigint): Uint8Array | undefined {
    this.assertOpen();
    return this.reads.readSync(seid, this.syncReads);
  }

  /**
   * Every element, or those of one space or seid range, as `[seid, bytes]` in ascending seid
   * order, read lazily: one value in memory at a time, each verified. The seids are taken when
   * iteration starts (8 bytes each); an element deleted before it is reached is skipped, and each
   * value is the one committed when it is reached. Elements over `maxReadBytes` throw
   * `InvalidArgumentError`: list those with `seids()` and `sizeOf()` and use `readStream()`.
   *
   * ```ts
   * for await (const [seid, bytes] of store.entries({ space })) console.log(seid, bytes.length);
   * ```
   */
  async *entries(options: EntriesOptions = {}): AsyncGenerator<[bigint, Uint8Array], void, undefined> {
    this.assertOpen();
    const seids = this.reads.seidsIn(options);
    for (const seid of seids) {
      this.assertOpen();
      const value = await this.reads.read(seid);
      if (value !== undefined) yield [seid, value];
    }
  }

  /** Every seid space that exists, ascending: 0 (fixed seids such as `ROOT_SEID`), 1 (`allocateSeid()`'s default) and each one `createSeidSpace()` handed out. */
  spaces(): number[] {
    this.assertOpen();
    return this.core.spaces.spaces();
  }

  /**
   * The element's committed bytes as a stream, read ahead with bounded memory, every part
   * verified (`CorruptionError` otherwise). The version being read stays readable even if it is
   * overwritten or deleted meanwhile. `InvalidArgumentError` if there is no such element.
   */
  readStream(seid: bigint): ReadableStream<Uint8Array> {
    this.assertOpen();
    return this.reads.readStream(seid);
  }

  /** True if the element exists (as last committed). */
  has(seid: bigint): boolean {
    this.assertOpen();
    return this.reads.has(seid);
  }

  /** The element's size in bytes, or `undefined` if there is none. */
  sizeOf(seid: bigint): number | undefined {
    this.assertOpen();
    return this.reads.sizeOf(seid);
  }

  /** Seids present in `space` (default 1), ascending. */
  seids(space: number = DEFAULT_SPACE): bigint[] {
    this.assertOpen();
    return this.reads.seids(space);
  }

  // ───────────────────────────── durability ─────────────────────────────

  /** Resolve once everything committed so far is durable (pending seid allocations included). */
  async flush(): Promise<void> {
    this.assertOpen();
    if (this.options.readOnly) return;
    this.commits.refuseInsideCallback("store.flush()");
    // The Alloc record is bookkeeping as small as a delete: it may use the delete reserve.
    await this.commits.exclusive(() => this.log.withSpaceUse("delete", async () => this.commits.appendAllocations()));
    await this.log.flush();
  }

  /**
   * Write a checkpoint of the mapping table, the segment utilisation table, the seid spaces and
   * the segment table, then point the root block at it. Recovery starts from the newest one.
   */
  async checkpoint(): Promise<void> {
    this.assertWritable();
    this.commits.refuseInsideCallback("store.checkpoint()");
    await this.commits.exclusive(() => this.checkpointer.writeLocked());
  }

  /**
   * Clean now: relocate the live data of every segment below `cleanerUtilisationPercent` (or
   * `utilisationPercent`), checkpoint so the emptied segments are free, and with `shrink: true`
   * move the log's tail to the lowest free segments and truncate the free segments at the end
   * of the file (not on a block device, which keeps its size: there `shrink` adds nothing).
   * Resolves with what it did.
   */
  async compact(options: { shrink?: boolean; utilisationPercent?: number } = {}): Promise<{ segmentsCleaned: number; bytesFreed: number }> {
    this.assertWritable();
    this.commits.refuseInsideCallback("store.compact()");
    const threshold = options.utilisationPercent ?? this.options.cleanerUtilisationPercent;
    if (!Number.isInteger(threshold) || threshold < 1 || threshold > 100) {
      throw new InvalidArgumentError(`utilisationPercent must be an integer in [1, 100], got ${threshold}`);
    }
    const result = await this.cleaner.compact(threshold, false);
    if (options.shrink !== true || this.log.deviceBytes !== undefined) return result;
    // Move the tail down to low free segments (each move followed by a checkpoint, so the log
    // never skips a whole segment), free what the old tail held, then cut the file's end.
    for (let step = 0; step < 2; step++) {
      await this.commits.exclusive(() =>
        this.log.withSpaceUse("upkeep", async () => {
          await this.log.advanceSegment();
          await this.checkpointer.writeLocked();
        }),
      );
    }
    const again = await this.cleaner.compact(threshold, true);
    return { segmentsCleaned: result.segmentsCleaned + again.segmentsCleaned, bytesFreed: again.bytesFreed };
  }

  // ───────────────────────────── backup (src/backup) ─────────────────────────────

  /**
   * Back up to `target`, a directory or `"s3://bucket/prefix"` (S3 credentials from
   * `options.s3` or the environment). The first backup into a target is full, later ones are
   * increments of the log since the previous one. Writers go on committing throughout: the
   * transaction turn is held only to take the consistent point. See docs/BACKUP.md.
   *
   * @throws InvalidArgumentError when the target holds another store's backups
   * @throws BackupTargetError when the target fails (after bounded retries)
   */
  async backup(target: string, options: BackupOptions = {}): Promise<BackupInfo> {
    this.assertOpen();
    // It takes the turn for its consistent point.
    this.commits.refuseInsideCallback("store.backup()");
    return backupStore(this[INTERNALS](), target, options);
  }

  /**
   * Ship the durable log to `target` continuously, at least every `options.intervalMs` (default
   * 1 s), until the returned archive is stopped or the store closes. Progress and backlog are in
   * `stats().archive`.
   */
  async archive(target: string, options: ArchiveOptions = {}): Promise<Archive> {
    this.assertOpen();
    return Archive.start(this[INTERNALS](), target, options);
  }

  /**
   * Build a new store at `path` (a missing or empty file) from the backup in `source`, up to
   * `options.transaction`, or the last commit at or before `options.time`, or the backup's end.
   *
   * @throws BackupChainError when the chain has a gap (named)
   * @throws BackupCorruptionError when an object is damaged (named)
   * @throws BackupPointError when the point is outside what the backup holds
   */
  static async restore(source: string, path: string, options: RestoreOptions = {}): Promise<RestoreInfo> {
    // Loaded on use: restore needs the Store class, and the store need not load restore.
    const { restoreBackup } = await import("../backup/restore.ts");
    return restoreBackup(source, path, options);
  }

  /** Check every checksum of the backup in `source` and its chain, without restoring; reports what it checked. */
  static async verifyBackup(source: string, options: VerifyOptions = {}): Promise<VerifyReport> {
    const { verifyBackup } = await import("../backup/verify.ts");
    return verifyBackup(source, options);
  }

  // ───────────────────────────── replication (src/replication) ─────────────────────────────

  /**
   * Serve standbys (docs/REPLICATION.md): listen on `options.port` (on 127.0.0.1 unless
   * `options.host`) or the Unix socket `options.unix`, authenticate each standby with the
   * pre-shared `options.secret`, seed new ones and ship the durable log to each. Closed with the
   * returned server or the store.
   *
   * @throws AuthenticationError when the secret is missing or too short
   */
  async serveReplication(options: ServeReplicationOptions): Promise<ReplicationServer> {
    this.assertWritable();
    // It takes the turn to record the store's identity.
    this.commits.refuseInsideCallback("store.serveReplication()");
    // Loaded on use: a store that never replicates does not carry the code (registry.ts).
    const { ReplicationServer } = await import("../replication/primary.ts");
    // Acknowledgements and requests from standbys arrive while commits are in flight.
    this.servesStandbys = true;
    this.refreshCommitWaitBlocking();
    return ReplicationServer.start(this[INTERNALS](), options);
  }

  /**
   * Open (creating if missing) a standby of the primary `options.primary` at `path`: it seeds
   * itself when new, follows the primary's log, serves reads of a committed prefix, refuses
   * writes until `promote()`. Resolves once connected (or, when the primary is unreachable, at
   * once: it keeps trying and serves what it has).
   *
   * @throws AuthenticationError when the primary refuses the secret or serves another store
   * @throws FencedError when the primary is of an older epoch than this standby has seen
   */
  static async openStandby(path: string, options: StandbyOptions): Promise<StandbyStore> {
    const { StandbyStore } = await import("../replication/standby.ts");
    return StandbyStore.open(path, options);
  }

  // ───────────────────────────── Workers ─────────────────────────────

  /**
   * A handle that `worker.postMessage(handle)` carries (plain data and SharedArrayBuffers, no
   * transfer list); `await Store.attach(handle)` in a Worker of this process gives the same API
   * on this store. From the first call on, transactions of every thread share one FIFO turn and
   * one commit path (docs/WORKERS.md). This thread stays the store's owner: it must keep its event
   * loop running while Workers use the store, and its `close()` waits for them to close.
   */
  share(): StoreHandle {
    this.assertOpen();
    if (this.closing !== undefined) throw new StoreClosedError(`the store ${this.path} is closing`);
    // Built outside any transaction callback's context: its socket handlers keep the context the
    // server was started in, and a Worker's flush() must not pass for a call made inside the
    // callback that happened to call share() first (it waits its turn like any other caller).
    this.host ??= this.commits.outsideCallbacks(() => new WorkerHost({
      path: this.path,
      core: this.core,
      commits: this.commits,
      cacheBytes: this.options.cacheBytes,
      staging: this.staging,
      maxReadBytes: this.options.maxReadBytes,
      durability: this.options.durability,
      readOnly: this.options.readOnly,
      io: this.io,
      readCommitted: (seid) => this.reads.read(seid),
      assertWritable: () => this.assertWritable(),
      throttle: () => this.cleaner.throttle(),
      afterCommit: (commitEnd, othersQueued, deferFlush) => this.afterCommit(commitEnd, othersQueued, deferFlush),
      replicated: (commitEnd, level) => replicationAfterCommit(this.core, commitEnd, level),
      flush: () => this.flush(),
      checkpoint: () => this.checkpoint(),
      compact: (options) => this.compact(options),
      backup: (target, options) => this.backup(target, options),
      stats: () => this.stats(),
      lastDetached: () => this.lastWorkerDetached?.(),
      attachedChanged: (count) => {
        // Workers' commits arrive as messages to this thread while commits are in flight.
        this.workersAttached = count;
        this.refreshCommitWaitBlocking();
      },
    }));
    if (this.pins.external === undefined) {
      const host = this.host;
      this.pins.external = (seqs) => host.pinnedAmong(seqs);
    }
    return this.host.handle(this.log.ringDescriptor, this.log.segmentSize);
  }

  /**
   * In a Worker: attach to the store whose {@link share} handle this is. The result has the
   * `Store` API (transactions FIFO with every thread's, reads without messages); its `close()`
   * detaches only this Worker.
   */
  static attach(handle: StoreHandle, options?: AttachOptions): Promise<AttachedStore> {
    return AttachedStore.attach(handle, options);
  }

  /** Set while `close()` waits for attached Workers to detach. */
  private lastWorkerDetached: (() => void) | undefined;
  /** Workers attached now, and whether standbys are served: both need this thread mid-commit. */
  private workersAttached = 0;
  private servesStandbys = false;

  /** A lone commit blocks the thread (`commitWaitBlockUs`) only while no Worker or standby needs it. */
  private refreshCommitWaitBlocking(): void {
    if (this.core.log.closed) return;
    this.core.log.commitWaitBlockUs = this.workersAttached > 0 || this.servesStandbys ? 0 : this.options.commitWaitBlockUs;
  }

  // ───────────────────────────── stats and close ─────────────────────────────

  /** A plain-object snapshot of the store's counters. */
  stats(): StoreStats {
    this.assertOpen();
    const logStats = this.log.stats();
    const liveRecordBytes = this.core.sut.totalLiveBytes;
    const userBytesWritten = this.commits.userBytesWritten;
    return {
      io: this.io,
      ioFallbackReason: this.log.backend.fallbackReason,
      elements: this.core.map.size,
      liveBytes: this.core.liveValueBytes,
      liveRecordBytes,
      fileBytes: logStats.fileBytes,
      deviceBytes: logStats.deviceBytes,
      segmentSize: this.log.segmentSize,
      segmentsUsed: logStats.segmentsLive,
      segmentsFree: logStats.segmentsFree,
      cacheHits: this.core.cache.hits,
      cacheMisses: this.core.cache.misses,
      pageCacheRetries: this.reads.pageCacheRetries,
      cacheBytes: this.core.cache.bytes,
      blockCache: logStats.blockCache,
      commits: this.commits.commits,
      checkpoints: this.checkpointer.count,
      bytesWritten: logStats.bytesWritten,
      userBytesWritten,
      writeAmplification: userBytesWritten === 0 ? 0 : logStats.bytesWritten / userBytesWritten,
      spaceAmplification: liveRecordBytes === 0 ? 0 : logStats.fileBytes / liveRecordBytes,
      datasyncs: logStats.datasyncs,
      uncleanShutdowns: this.log.rootBlock.uncleanShutdowns,
      mappingTableBytes: this.core.map.memoryBytes,
      recovery: { ...this.recoveryReport },
      cleaner: { ...this.cleaner.counters },
      segmentsPending: logStats.segmentsPending,
      durability: this.options.durability,
      readOnly: this.options.readOnly || this.log.failedReason !== undefined,
      outOfSpace: logStats.outOfSpace,
      segmentsReserved: logStats.segmentsReserved,
      reserveBytes: logStats.reserveBytes,
      lastError: lastErrorOf(this.log.failedReason ?? this.log.lastNoSpaceError),
      archive: archiveStatsOf(this.core),
      replication: primaryStatsOf(this.core),
    };
  }

  /**
   * Wait for transactions in flight, write a checkpoint, flush, and release the file. Safe to
   * call twice. After it, every method throws `StoreClosedError`.
   *
   * Once the store was {@link share}d, this is the owner's close: new transactions of this thread
   * are refused at once, and the store really closes when the last attached Worker has closed
   * (or died) — the last holder's close closes the store. `detachWorkers: true` closes now: the
   * Workers' calls then fail with `StoreClosedError`.
   */
  close(options: { detachWorkers?: boolean } = {}): Promise<void> {
    try {
      // First, also when a close is already under way: it waits for this transaction too.
      this.commits.refuseInsideCallback("store.close()");
    } catch (error) {
      return Promise.reject(error);
    }
    this.closing ??= this.closeOnce(options.detachWorkers === true);
    return this.closing;
  }

  private async closeOnce(detachWorkers: boolean): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    const host = this.host;
    if (host !== undefined) {
      // The closing rule: the last holder's close() closes the store. Workers still attached
      // keep it open (this thread keeps serving them) until they close or die.
      await new Promise<void>((resolve) => {
        this.lastWorkerDetached = resolve;
        host.ownerClosing(detachWorkers);
      });
      await Promise.allSettled([...this.inFlight]);
    }
    if (this.flushTimer !== undefined) clearInterval(this.flushTimer);
    // The archiver ships what is durable one last time before the store goes.
    await stopArchiveOf(this.core).catch(() => {});
    await stopReplicationOf(this.core).catch(() => {});
    await this.cleaner.idle();
    await this.commits.idle;
    // Every turn of the shared lock has been passed on: the lock closes, turns are this thread's again.
    host?.stop();
    let error: unknown;
    try {
      if (!this.options.readOnly && this.log.failedReason === undefined && this.commits.dirty) {
        await this.checkpointer.writeLocked();
      }
    } catch (caught) {
      // The checkpoint only shortens the next open's replay: without room for it the log still
      // holds everything (the log's close says so if it cannot make that durable).
      if (!(caught instanceof NoSpaceError)) error = caught;
    }
    this.isOpen = false;
    try {
      this.syncReads.close(); // before the log: its buffer is the backend's memory
    } catch (caught) {
      error ??= caught;
    }
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

  /** @internal Used by {@link storeInternals}; not part of the API. */
  [INTERNALS](): StoreInternals {
    return { core: this.core, commits: this.commits, pins: this.pins, syncReads: this.syncReads };
  }
}

/** The `code` and message of an error, for `stats().lastError`. */
function lastErrorOf(error: { code: ErrorCode; message: string } | undefined): StoreStats["lastError"] {
  return error === undefined ? undefined : { code: error.code, message: error.message };
}

/** What the test harness (testing/invariants.ts) and tools inside the package may look at. */
export interface StoreInternals {
  readonly core: StoreCore;
  readonly commits: CommitPath;
  readonly pins: SegmentPins;
  /** The file reads behind `readSync` (sync-read.ts). */
  readonly syncReads: SyncLogReader;
}

/**
 * Open a store, on `backend` when given (the test harness passes fault-injecting backends). Not
 * exported from the package: injecting a backend is a test seam, not an option users set.
 */
export function openStore(path: string, options: StoreOptions, backend: IoBackend | undefined): Promise<Store> {
  return Store[OPEN](path, options, backend);
}

/** The store's internal state (not exported from the package). */
export function storeInternals(store: Store): StoreInternals {
  return store[INTERNALS]();
}
