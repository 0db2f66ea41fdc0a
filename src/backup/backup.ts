/**
 * The backup writer: `store.backup(target)`. The first backup into a target is **full** (a base
 * plus the log copied while it was taken), later ones are **increments** (the durable log since
 * the previous backup's end). docs/BACKUP.md has the whole design; in short:
 *
 * **The consistent point, without stalling writers.** Under the transaction turn, for the time
 * of one memcpy of the mapping table (the only O(n) step, ~24 bytes per element, into an array
 * allocated and faulted in before the turn: 0.07 ms for 60 k elements, 2.4 ms for a million), the writer
 * records `P` = the log's appended end and `T0` = the last transaction id (no transaction's
 * records straddle `P`: transactions and the cleaner append only while holding the turn), copies
 * the mapping table and the multipart part lists, and pins every live segment. The base is then
 * *exactly* the state at `T0`: every element is copied from where the map pointed at `P`, and the
 * pins keep those bytes from being reused while writers go on committing (what they write goes to
 * new log; the cleaner skips pinned segments), so the file grows at most by what is written
 * during the copy. Segments are unpinned as soon as the copy has read them.
 *
 * **Verified, compacting copy.** Only live records are copied. Segments dense in live records are
 * read whole (one sequential read per segment through the cleaner's pooled segment buffer, every
 * unit through the log's unit checker); sparse ones record by record. Every record is checked
 * (CRC, type, seid, part index) before it is written to the base, verbatim.
 *
 * **The log after the point.** Under the turn again (an instant), `E` = the appended end; after a
 * flush, the durable log `[P, E)` is copied into increments, so the full backup restores to any
 * transaction from `T0` to the last one committed before `E`.
 *
 * **Increments** are the durable log from the previous backup's end, read through the log's
 * durable tail and cut into objects of at most `maxIncrementBytes`. The writer holds the log
 * (a retention) only while it copies; between backups nothing is held (unlike Litestream's
 * long read lock). If the log since the last backup was already reused, the backup takes a new
 * full base into the same target and says so (`kind: "full"`, `reason`).
 *
 * **Commit point.** Objects first, each durable before the next step; the manifest last. A crash
 * at any moment leaves the previous manifest in force and some unreferenced objects.
 *
 * @module
 */
import { DEFAULT_RETAIN_LOG_BYTES, holdForNextIncrement } from "./holds.ts";
import { BackupChainError, InvalidArgumentError, LogTruncatedError, StoreClosedError } from "../errors.ts";
import type { LogRetention } from "../log/tail.ts";
import { UNIT_HEADER_BYTES, type LogPosition } from "../log/format.ts";
import type { CommitPath, StoreCore } from "../store/commit.ts";
import type { Part } from "../store/format/extents.ts";
import { decodeCommitTime, RecordType, scanRecords } from "../store/format/records.ts";
import type { SegmentPins } from "../store/pins.ts";
import { DEFAULT_CHUNK_BYTES } from "./base.ts";
import { copyBase, Pacer, type BaseResult } from "./base-copy.ts";
import { flattenParts, makeBasePlan, SegmentUses, type PlanHeader } from "./base-plan.ts";
import { copyBaseInWorker, WORKER_MIN_BYTES } from "./base-thread.ts";
import { ensureStoreId } from "./identity.ts";
import { LogObjectBuilder } from "./log-object.ts";
import {
  encodeManifest,
  incrementName,
  latestManifest,
  manifestName,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  MAX_SEQ,
  newBaseId,
  validateChain,
  type BackupManifest,
  type BaseEntry,
  type IncrementEntry,
} from "./manifest.ts";
import { openTarget, type BackupTarget, type OpenTargetOptions } from "./target.ts";

/** Progress of a backup, as `onProgress` receives it. */
export interface BackupProgress {
  /** `"base"` while live elements are copied, `"log"` while the log is. */
  readonly phase: "base" | "log";
  /** Bytes of this phase done. */
  readonly bytesDone: number;
  /** Bytes of this phase in all (known when the phase starts). */
  readonly bytesTotal: number;
}

/** Options of `store.backup()`. */
export interface BackupOptions extends OpenTargetOptions {
  /** Called as the copy goes on (at most every chunk or unit window). */
  onProgress?: (progress: BackupProgress) => void;
  /** Take a new full backup even if the target holds a chain this one could continue. */
  full?: boolean;
  /** Bytes per base chunk object, 64 KiB..1 GiB. Default 16 MiB (memory: about three chunks). */
  chunkBytes?: number;
  /** Largest increment object, bytes, 64 KiB..1 GiB. Default 64 MiB (memory: about one). */
  maxIncrementBytes?: number;
  /**
   * Increments a chain may hold before a backup takes a new full base instead (so restores and
   * manifests stay bounded), 1..100 000. Default 1 000.
   */
  maxChainIncrements?: number;
  /**
   * After this backup, keep the log from where the target's chain ends, so the next backup into
   * the same target is an increment even if the cleaner would have reused that log: up to this
   * many bytes of log written since (the file may grow by as much), then the hold is let go and
   * the next backup is full. 0 keeps nothing. Default 64 MiB. In this process only.
   */
  retainLogBytes?: number;
  /**
   * Where a full backup's base copy runs: `"worker"`, a Worker thread of its own (it reads,
   * checks and hashes on another core while this thread goes on serving commits); `"caller"`,
   * this thread; `"auto"` (default), a Worker for bases of 8 MiB and more. A target given as a
   * `BackupTarget` object is always copied on this thread, and so is any base when a Worker cannot
   * start (the backup is the same either way). See src/backup/base-thread.ts.
   */
  copyIn?: "auto" | "worker" | "caller";
  /**
   * Read the store's file for a full backup's base no faster than this many bytes per second on
   * average (at least 64 KiB/s); unlimited by default. The base's reads and its target's writes
   * share the disk with the writers' commits: on the benchmark's machine a commit's p99 rose by
   * ~10 ms while full-speed backups ran, and by ~1–2 ms at 32 MiB/s (`bun bench/backup.ts`).
   */
  maxBytesPerSecond?: number;
  /**
   * Let the writers go first (default true): each read and write of a full backup's base copy
   * first waits, up to 1 ms, while a durable commit is on the device, and the copy's Worker runs at
   * the lowest CPU priority (`SCHED_IDLE`), so the copy takes the disk and the cores the writers
   * leave. Measured (`bun bench/backup.ts`, serial durable commits beside back-to-back backups of
   * 162 MiB): the commits' p99 rose by 0.68–0.92 ms with it against 3.4–3.8 ms without; the copy
   * ran at ~210 MiB/s beside the writers and ~12% slower than without it when nobody commits. On a
   * machine whose cores are all busy with other work the Worker gets almost no CPU: then `false`
   * copies at normal priority and full speed. See src/backup/base-thread.ts.
   */
  yieldToCommits?: boolean;
}

/** What a backup did. */
export interface BackupInfo {
  /** `"full"`: a new base (and the log copied meanwhile); `"incremental"`: increments only; `"unchanged"`: nothing new to copy. */
  readonly kind: "full" | "incremental" | "unchanged";
  /** Why a full backup was taken (first backup, log reclaimed, chain long, asked for). */
  readonly reason: string | undefined;
  /** The target, as given. */
  readonly target: string;
  /** The manifest this backup committed (the previous one when `"unchanged"`). */
  readonly manifest: string;
  /** Its sequence number. */
  readonly manifestSeq: number;
  /** The base the chain starts from. */
  readonly baseId: string;
  /** Sequence numbers of the increments this backup added (empty when none). */
  readonly increments: readonly number[];
  /** The first transaction this backup added (the base's for a full backup), or `null`. */
  readonly firstTransaction: number | null;
  /** The transaction the backup is consistent at: a restore without a point gives this state. */
  readonly transaction: number;
  /** Its commit time (ms since the epoch), or `null` when unknown. */
  readonly commitTime: number | null;
  /** Log position the next increment continues from. */
  readonly lsn: number;
  /** Bytes written to the target (objects and manifest). */
  readonly bytes: number;
  /** Objects written (manifest included). */
  readonly objects: number;
  /** Live elements copied into a base (0 for an increment). */
  readonly elements: number;
  /**
   * Where a full backup's base was copied: `"worker"` (a Worker thread of its own) or `"caller"`
   * (the store's thread; see {@link BackupOptions.copyIn}); `null` when no base was taken.
   */
  readonly copiedIn: "worker" | "caller" | null;
  /**
   * How long a full backup's base copy waited for the writers' durable commits to leave the
   * device, ms ({@link BackupOptions.yieldToCommits}); 0 for an increment.
   */
  readonly yieldedMs: number;
  /** How long the transaction turn was held, in total, ms. */
  readonly turnHeldMs: number;
  /** Wall time, ms. */
  readonly durationMs: number;
}

/** What the writer needs of a store (its internals; see `storeInternals`). */
export interface BackupHost {
  readonly core: StoreCore;
  readonly commits: CommitPath;
  readonly pins: SegmentPins;
}

/** Internal options (archiving passes what it knows). */
export interface BackupRunOptions extends BackupOptions {
  /** The target's newest manifest as this process last committed it (skips a listing and a read). */
  known?: BackupManifest;
  /**
   * A full backup's base only, without the log written meanwhile (a standby's seed: the log from
   * the base's point follows as the live tail, src/replication/seed.ts).
   */
  baseOnly?: boolean;
  /**
   * Called with the chain's new end once the backup committed, while the backup still holds the
   * log from there: a hold taken now (the next increment's) cannot find that log reused.
   */
  whileLogHeld?: (lsn: number) => void;
  /** The target as a string and its options, when it was opened from them (a base-copy Worker opens its own). */
  targetSpec?: { location: string; options: OpenTargetOptions };
}

/** Result of a run, with the committed manifest (for the archiver). */
export interface BackupRun {
  readonly info: BackupInfo;
  readonly manifest: BackupManifest | undefined;
}

const DEFAULT_MAX_INCREMENT_BYTES = 64 << 20;
const DEFAULT_MAX_CHAIN_INCREMENTS = 1_000;
/** Most bytes of log read per range read while copying (bounds memory). */
const LOG_WINDOW_BYTES = 8 << 20;

/** One backup at a time per store (also the archiver's): they would race on the target. */
const running = new WeakMap<StoreCore, Promise<unknown>>();

/** Run `fn` after any backup of this store in progress. */
export async function serialized<T>(core: StoreCore, fn: () => Promise<T>): Promise<T> {
  const previous = running.get(core) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(fn);
  running.set(core, run);
  try {
    return await run;
  } finally {
    if (running.get(core) === run) running.delete(core);
  }
}

/** Slowest rate limit accepted (a slower one is more likely a unit mistake than a wish). */
const MIN_RATE_BYTES_PER_SECOND = 64 << 10;

function checkLimit(value: number | undefined, name: string, fallback: number, min: number, max: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  return v;
}

/** A target a base-copy Worker can open again for itself: a string and its options (an object cannot cross). */
export function targetSpecOf(target: string | BackupTarget, options: OpenTargetOptions): BackupRunOptions["targetSpec"] {
  return typeof target === "string" ? { location: target, options: { directory: options.directory, s3: options.s3 } } : undefined;
}

/** `store.backup(target, options)`: open the target, back up, close the target. */
export async function backupStore(host: BackupHost, target: string | BackupTarget, options: BackupRunOptions = {}): Promise<BackupInfo> {
  const retainLogBytes = checkLimit(options.retainLogBytes, "retainLogBytes", DEFAULT_RETAIN_LOG_BYTES, 0, 2 ** 50);
  const opened = typeof target === "string" ? await openTarget(target, options) : target;
  try {
    const run = await serialized(host.core, () =>
      runBackup(host, opened, {
        ...options,
        targetSpec: targetSpecOf(target, options),
        whileLogHeld: (lsn) => holdForNextIncrement(host.core, opened.location, lsn, retainLogBytes),
      }),
    );
    return run.info;
  } finally {
    if (typeof target === "string") await opened.close();
  }
}

/** One backup into an open target (callers serialize; see {@link serialized}). */
export async function runBackup(host: BackupHost, target: BackupTarget, options: BackupRunOptions = {}): Promise<BackupRun> {
  const holder: { job?: Job } = {};
  try {
    const run = await backUp(host, target, options, holder);
    options.whileLogHeld?.(run.info.lsn);
    return run;
  } finally {
    holder.job?.tailHold?.release();
  }
}

async function backUp(host: BackupHost, target: BackupTarget, options: BackupRunOptions, holder: { job?: Job }): Promise<BackupRun> {
  const started = performance.now();
  if (options.copyIn !== undefined && !["auto", "worker", "caller"].includes(options.copyIn)) {
    throw new InvalidArgumentError(`copyIn must be "auto", "worker" or "caller", got ${JSON.stringify(options.copyIn)}`);
  }
  const limits = {
    chunkBytes: checkLimit(options.chunkBytes, "chunkBytes", DEFAULT_CHUNK_BYTES, 64 << 10, 1 << 30),
    maxIncrementBytes: checkLimit(options.maxIncrementBytes, "maxIncrementBytes", DEFAULT_MAX_INCREMENT_BYTES, 64 << 10, 1 << 30),
    maxChainIncrements: checkLimit(options.maxChainIncrements, "maxChainIncrements", DEFAULT_MAX_CHAIN_INCREMENTS, 1, 100_000),
    maxBytesPerSecond: options.maxBytesPerSecond,
    yieldToCommits: options.yieldToCommits ?? true,
  };
  if (typeof limits.yieldToCommits !== "boolean") {
    throw new InvalidArgumentError(`yieldToCommits must be true or false (or left out), got ${String(limits.yieldToCommits)}`);
  }
  if (limits.maxBytesPerSecond !== undefined && !(Number.isFinite(limits.maxBytesPerSecond) && limits.maxBytesPerSecond >= MIN_RATE_BYTES_PER_SECOND)) {
    throw new InvalidArgumentError(`maxBytesPerSecond must be a number of at least ${MIN_RATE_BYTES_PER_SECOND} (or left out), got ${String(limits.maxBytesPerSecond)}`);
  }
  const log = host.core.log;
  if (log.closed) throw new StoreClosedError("the store is closed");
  const clock = new TurnClock();
  const storeId = await clock.hold(host.commits, () => ensureStoreId(log));
  const latest = options.known ?? (await latestManifest(target))?.manifest;
  const job: Job = { host, target, options, limits, clock, storeId, started, stats: { bytes: 0, objects: 0 } };
  holder.job = job;
  if (latest === undefined) return fullBackup(job, undefined, "first backup into this target");
  if (latest.storeId !== storeId) {
    throw new InvalidArgumentError(
      `${target.location} holds backups of another store (id ${latest.storeId}, this store is ${storeId}): use another target`,
    );
  }
  validateChain(latest);
  if (options.full === true) return fullBackup(job, latest, "a full backup was asked for");
  if (latest.increments.length >= limits.maxChainIncrements) {
    return fullBackup(job, latest, `the chain holds ${latest.increments.length} increments (maxChainIncrements ${limits.maxChainIncrements})`);
  }
  try {
    return await incrementalBackup(job, latest);
  } catch (error) {
    if (error instanceof LogTruncatedError) {
      return fullBackup(job, latest, `the log since the last backup (from ${chainEnd(latest)}) was already reused: ${error.message}`);
    }
    throw error;
  }
}

interface Job {
  readonly host: BackupHost;
  readonly target: BackupTarget;
  readonly options: BackupRunOptions;
  readonly limits: { chunkBytes: number; maxIncrementBytes: number; maxChainIncrements: number; maxBytesPerSecond: number | undefined; yieldToCommits: boolean };
  readonly clock: TurnClock;
  readonly storeId: string;
  readonly started: number;
  readonly stats: { bytes: number; objects: number };
  /** The log from the chain's new end, held by the copy that reached it until the backup is over. */
  tailHold?: LogRetention;
}

/** Time spent holding the transaction turn (reported, and what the benchmark's stall bound is about). */
class TurnClock {
  heldMs = 0;
  async hold<T>(commits: CommitPath, fn: () => T | Promise<T>): Promise<T> {
    return commits.exclusive(async () => {
      const t = performance.now();
      try {
        return await fn();
      } finally {
        this.heldMs += performance.now() - t;
      }
    });
  }
}

function chainEnd(manifest: BackupManifest): number {
  return manifest.increments.at(-1)?.toLsn ?? manifest.base.lsn;
}

function lastTransactionOf(manifest: BackupManifest): number {
  for (let i = manifest.increments.length - 1; i >= 0; i--) {
    const tx = manifest.increments[i]?.lastTransaction;
    if (tx !== null && tx !== undefined) return tx;
  }
  return manifest.base.transaction;
}

function lastCommitTimeOf(manifest: BackupManifest): number | null {
  for (let i = manifest.increments.length - 1; i >= 0; i--) {
    const inc = manifest.increments[i];
    if (inc !== undefined && inc.lastTransaction !== null) return inc.lastCommitTime;
  }
  return manifest.base.commitTime;
}

async function commit(job: Job, manifest: BackupManifest): Promise<string> {
  validateChain(manifest);
  const name = manifestName(manifest.seq);
  const bytes = encodeManifest(manifest);
  await job.target.commitManifest(name, bytes);
  job.stats.bytes += bytes.length;
  job.stats.objects += 1;
  return name;
}

// ─────────────────────────────────── full ───────────────────────────────────

async function fullBackup(job: Job, previous: BackupManifest | undefined, reason: string): Promise<BackupRun> {
  const { host, clock } = job;
  const { core, commits, pins } = host;
  const log = core.log;
  const seq = (previous?.seq ?? 0) + 1;
  if (seq > MAX_SEQ) throw new BackupChainError(`manifest sequence number ${seq} is past ${MAX_SEQ}`, { after: `manifest ${seq - 1}`, next: "(none)" });

  // 1. The consistent point (see the module doc).
  let point!: {
    lsn: number;
    transaction: number;
    commitTime: number | null;
    map: StoreCore["map"];
    parts: Map<bigint, { parts: Part[] }>;
    spaces: Array<[number, number]>;
    pinned: number[];
    liveRecordBytes: number;
  };
  const prepared = core.map.prepareClone();
  // The log written from the point on is held from the point (taken under the turn), so the
  // cleaner cannot reuse it while the base is copied: it goes into the first increments.
  let logHold: LogRetention | undefined;
  await clock.hold(commits, () => {
    if (job.options.baseOnly !== true) logHold = log.retain(log.appendedEnd);
    const pinned = log.liveSegmentSeqs();
    pins.pin(pinned);
    point = {
      lsn: log.appendedEnd,
      transaction: commits.lastTxId,
      commitTime: commits.lastCommitTime,
      map: core.map.clone(prepared),
      parts: new Map(core.parts),
      spaces: core.spaces.snapshot(),
      pinned,
      liveRecordBytes: core.sut.totalLiveBytes,
    };
  });
  // Pinned segments the copy still needs: each is unpinned as soon as the copy is done with it
  // (the plan counts its uses: see SegmentUses), the rest at the end whatever happens.
  const held = new Set(point.pinned);
  const release = (seqs: readonly number[]): void => {
    const done = seqs.filter((s) => held.delete(s));
    if (done.length > 0) pins.unpin(done);
  };
  const unpinAll = (): void => {
    pins.unpin([...held]);
    held.clear();
  };
  try {
    // Everything before P must be in the file before segments are read from it.
    await log.flush();

    // 2. The plan (base-plan.ts) and 3. the base: both in the backup Worker when it can
    // (base-thread.ts), else here.
    const header: PlanHeader = {
      baseId: newBaseId(point.transaction, point.lsn),
      chunkBytes: job.limits.chunkBytes,
      segmentSize: log.segmentSize,
      transaction: point.transaction,
      commitTime: point.commitTime,
      spaces: point.spaces,
    };
    const parts = flattenParts(point.parts);
    let total = point.liveRecordBytes;
    let done = 0;
    const progress = (bytes: number): void => {
      done += bytes;
      job.options.onProgress?.({ phase: "base", bytesDone: done, bytesTotal: total });
    };
    const copyIn = job.options.copyIn ?? "auto";
    const spec = job.options.targetSpec;
    let copied: BaseResult | undefined;
    const commitGate = job.limits.yieldToCommits ? log.commitGate : undefined;
    if (copyIn !== "caller" && spec !== undefined && (copyIn === "worker" || point.liveRecordBytes >= WORKER_MIN_BYTES)) {
      const indexes = new Map<number, number>();
      for (const s of point.pinned) {
        const index = log.segmentIndexOf(s);
        if (index === undefined) throw new Error(`segment ${s} is pinned but not live`);
        indexes.set(s, index);
      }
      copied = await copyBaseInWorker(
        {
          path: log.path,
          io: log.backend.kind === "io_uring" ? "uring" : "portable",
          segmentSize: log.segmentSize,
          indexes,
          target: spec.location,
          targetOptions: spec.options,
          background: job.limits.yieldToCommits,
        },
        () => ({ header, map: point.map.detach(), parts, pinned: point.pinned, maxBytesPerSecond: job.limits.maxBytesPerSecond, commitGate: commitGate?.shared }),
        { planned: (bytes) => (total = bytes), progress, release },
        () => log.closed,
      );
    }
    const copiedIn = copied === undefined ? "caller" : "worker";
    if (copied === undefined) {
      const plan = await makeBasePlan(header, point.map, parts, new Pacer());
      point.map.clear();
      total = plan.totalBytes;
      const uses = new SegmentUses(plan, point.pinned);
      release(uses.unused());
      copied = await copyBase(plan, log, job.target, { progress, release: (seqs) => release(uses.release(seqs)) }, { maxBytesPerSecond: job.limits.maxBytesPerSecond, commitGate });
    }
    job.stats.bytes += copied.storedBytes;
    job.stats.objects += copied.objects;
    unpinAll();
    const base: BaseEntry = {
      id: header.baseId,
      transaction: point.transaction,
      commitTime: point.commitTime === null ? null : Math.floor(point.commitTime),
      lsn: point.lsn,
      bytes: copied.bytes,
      chunks: copied.chunks,
    };

    // 4. The log written meanwhile, so the backup ends as late as it can.
    const tail = job.options.baseOnly === true ? { increments: [] } : await copyLogSince(job, point.lsn, 1, point.transaction, logHold);
    const manifest: BackupManifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      seq,
      createdAt: Date.now(),
      storeId: job.storeId,
      base,
      increments: tail.increments,
    };
    const name = await commit(job, manifest);
    const info: BackupInfo = {
      kind: "full",
      reason,
      target: job.target.location,
      manifest: name,
      manifestSeq: seq,
      baseId: header.baseId,
      increments: tail.increments.map((inc) => inc.seq),
      firstTransaction: point.transaction,
      transaction: lastTransactionOf(manifest),
      commitTime: lastCommitTimeOf(manifest),
      lsn: chainEnd(manifest),
      bytes: job.stats.bytes,
      objects: job.stats.objects,
      elements: copied.elements,
      copiedIn,
      yieldedMs: copied.yieldedMs,
      turnHeldMs: clock.heldMs,
      durationMs: performance.now() - job.started,
    };
    return { info, manifest };
  } finally {
    unpinAll();
    // Unless the log copy kept it as the chain end's hold (runBackup lets go of that).
    if (logHold !== job.tailHold) logHold?.release();
  }
}

// ─────────────────────────────────── the log ───────────────────────────────────

async function incrementalBackup(job: Job, previous: BackupManifest): Promise<BackupRun> {
  const from = chainEnd(previous);
  const nextSeq = (previous.increments.at(-1)?.seq ?? 0) + 1;
  const appended = job.host.core.log.appendedEnd;
  if (appended < from) {
    throw new InvalidArgumentError(
      `${job.target.location}: its chain ends at log position ${from}, past this store's log end ${appended} (a different store, or a copy of this one)`,
    );
  }
  const copied = await copyLogSince(job, from, nextSeq, lastTransactionOf(previous));
  if (copied.increments.length === 0) {
    const info: BackupInfo = {
      kind: "unchanged",
      reason: undefined,
      target: job.target.location,
      manifest: manifestName(previous.seq),
      manifestSeq: previous.seq,
      baseId: previous.base.id,
      increments: [],
      firstTransaction: null,
      transaction: lastTransactionOf(previous),
      commitTime: lastCommitTimeOf(previous),
      lsn: from,
      bytes: 0,
      objects: 0,
      elements: 0,
      copiedIn: null,
      yieldedMs: 0,
      turnHeldMs: job.clock.heldMs,
      durationMs: performance.now() - job.started,
    };
    return { info, manifest: previous };
  }
  const manifest: BackupManifest = {
    ...previous,
    seq: previous.seq + 1,
    createdAt: Date.now(),
    increments: [...previous.increments, ...copied.increments],
  };
  const name = await commit(job, manifest);
  const info: BackupInfo = {
    kind: "incremental",
    reason: undefined,
    target: job.target.location,
    manifest: name,
    manifestSeq: manifest.seq,
    baseId: manifest.base.id,
    increments: copied.increments.map((inc) => inc.seq),
    firstTransaction: copied.increments.find((inc) => inc.firstTransaction !== null)?.firstTransaction ?? null,
    transaction: lastTransactionOf(manifest),
    commitTime: lastCommitTimeOf(manifest),
    lsn: chainEnd(manifest),
    bytes: job.stats.bytes,
    objects: job.stats.objects,
    elements: 0,
    copiedIn: null,
    yieldedMs: 0,
    turnHeldMs: job.clock.heldMs,
    durationMs: performance.now() - job.started,
  };
  return { info, manifest };
}

/**
 * Copy the durable log from `from` to the log's end as of now into increments numbered from
 * `firstSeq`. Holds the log from `from` while it copies (a retention); on success the hold, then
 * at the chain's new end, goes to `job.tailHold` for runBackup to let go of.
 *
 * @throws LogTruncatedError when part of that log was already reused
 */
async function copyLogSince(job: Job, from: number, firstSeq: number, watermark: number, held?: LogRetention): Promise<{ increments: IncrementEntry[] }> {
  const { host, clock } = job;
  const log = host.core.log;
  const retention = held ?? log.retain(from);
  try {
    // The end: everything committed before this instant.
    const appended = await clock.hold(host.commits, () => log.appendedEnd);
    if (appended <= from) {
      job.tailHold = retention;
      return { increments: [] };
    }
    await log.flush();
    // The flush made every unit holding a record before `appended` durable. `appended` itself may
    // lie just inside an empty open unit (past its header), which is not durable: stop there.
    const end = Math.min(appended, log.stableAddress);
    const segmentSize = log.segmentSize;
    const increments: IncrementEntry[] = [];
    let builder = new LogObjectBuilder(from);
    let info = emptyTxInfo();
    let cursor: LogPosition | number = Math.floor(from / segmentSize) * segmentSize;
    let cursorAddress = cursor;
    let seq = firstSeq;
    let done = 0;
    let last = watermark;
    const ship = async (): Promise<void> => {
      if (builder.unitCount === 0) return;
      if (seq > MAX_SEQ) throw new BackupChainError(`increment sequence number ${seq} is past ${MAX_SEQ}`, { after: `increment ${seq - 1}`, next: "(none)" });
      const bytes = builder.finish();
      const fields = { seq, fromLsn: builder.fromLsn, toLsn: builder.toLsn, ...info };
      const name = incrementName(fields);
      const put = await job.target.put(name, bytes);
      job.stats.bytes += put.size;
      job.stats.objects += 1;
      increments.push({ ...put, ...fields });
      seq += 1;
      retention.advance(builder.toLsn);
      builder = new LogObjectBuilder(builder.toLsn);
      info = emptyTxInfo();
    };
    while (cursorAddress < end) {
      const segmentEnd = (Math.floor(cursorAddress / segmentSize) + 1) * segmentSize;
      const windowEnd = Math.min(end, segmentEnd, cursorAddress + LOG_WINDOW_BYTES);
      const units = await log.readRange(cursor, windowEnd);
      if (units.length === 0) {
        // Nothing more in this segment (the writer moved on to the next one), or nothing more at all.
        cursor = cursorAddress = segmentEnd;
        continue;
      }
      for (const unit of units) {
        if (unit.endAddress <= from) continue;
        if (builder.unitCount > 0 && builder.bytes + UNIT_HEADER_BYTES + unit.payload.length > job.limits.maxIncrementBytes) await ship();
        builder.add(unit);
        last = addCommits(info, unit.address, unit.payload, builder.fromLsn, last);
        // The first unit may start before `from` (it holds it): count only the log after `from`.
        done += Math.min(unit.endAddress, end) - Math.max(unit.address, from);
        job.options.onProgress?.({ phase: "log", bytesDone: done, bytesTotal: end - from });
      }
      const tail = units.at(-1) as (typeof units)[number];
      cursor = tail.position;
      cursorAddress = tail.position.address;
    }
    await ship();
    // Held on at the chain's end until the backup is over (see runBackup's whileLogHeld).
    job.tailHold = retention;
    return { increments };
  } finally {
    if (job.tailHold !== retention) retention.release();
  }
}

interface TxInfo {
  firstTransaction: number | null;
  lastTransaction: number | null;
  firstCommitTime: number | null;
  lastCommitTime: number | null;
}

function emptyTxInfo(): TxInfo {
  return { firstTransaction: null, lastTransaction: null, firstCommitTime: null, lastCommitTime: null };
}

/**
 * Note the Commit records of a unit (at or after `fromLsn`) in `info`. A version-1 Commit
 * record has no time: it is written as 0 (unknown) so the manifest stays well formed.
 * Returns the highest transaction seen.
 */
export function addCommits(info: TxInfo, unitAddress: number, payload: Uint8Array, fromLsn: number, watermark: number): number {
  const base = unitAddress + UNIT_HEADER_BYTES;
  let last = watermark;
  for (const record of scanRecords(payload)) {
    if (base + record.offset < fromLsn || record.header.type !== RecordType.Commit) continue;
    const tx = record.header.txId;
    if (tx <= last) continue; // cannot happen in a valid log; the chain check would refuse it
    const time = Math.max(0, Math.floor(decodeCommitTime(record.body) ?? 0));
    if (info.firstTransaction === null) {
      info.firstTransaction = tx;
      info.firstCommitTime = time;
    }
    info.lastTransaction = tx;
    info.lastCommitTime = time;
    last = tx;
  }
  return last;
}
