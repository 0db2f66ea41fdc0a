/**
 * The one commit path. Every change to the store's state goes through here, whoever makes it:
 *
 * | caller | what it hands in |
 * |---|---|
 * | a user transaction (`store.transaction`) | ops whose records it appended under its id |
 * | the cleaner's relocation (a system transaction) | ops of records it moved, bytes unchanged |
 * | recovery's replay | ops of a transaction whose Commit record it read back intact |
 * | (next) a standby's apply, a Worker's transaction | the same two shapes: live or logged |
 *
 * It owns the three things a commit must get right together:
 * - **the turn**: transactions run one at a time, in the order they asked (FIFO); the cleaner and
 *   checkpoints take the same turn, so nothing interleaves with a transaction's records;
 * - **transaction ids and counts**: an id is consumed when handed out (records written under an
 *   id that then aborts must never be claimed by a later Commit), and every Commit record is
 *   counted the same way live and in replay, so `stats().commits` survives a restart;
 * - **the atomic point**: pending seid allocations (an Alloc record), then the Commit record,
 *   then the ops applied to the mapping table, the utilisation table and the cache in one
 *   synchronous step, so readers see all of a transaction or none of it.
 *
 * Before this module the protocol was written out three times (store, cleaner, replay).
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { TransactionError } from "../errors.ts";
import type { LogStructuredStore } from "../log/log.ts";
import type { ElementCache } from "./cache.ts";
import { encodeAlloc } from "./format/alloc.ts";
import { partRecordBytes, type Multipart } from "./format/extents.ts";
import { encodeCommitBody, FLAG_COMMIT_SYSTEM, paddedRecordBytes, RECORD_HEADER_BYTES, RecordType } from "./format/records.ts";
import type { Location, MappingTable } from "./state/mapping.ts";
import type { TransactionState } from "./transaction.ts";
import type { SeidSpaces } from "./state/seids.ts";
import type { SegmentUtilisation } from "./state/sut.ts";
import { appendRecord } from "./write-path.ts";

/** Commits with more operations than this make room in the mapping table up front. */
const RESERVE_FROM_OPS = 1024;

/** A committed operation, ready to apply (live) or read back from the log (replay). */
export type AppliedOp =
  | {
      kind: "write";
      seid: bigint;
      /** Address of the Data record (single part) or of the Extents record (multipart). */
      address: number;
      sizeBytes: number;
      /** Record bytes (padded) of a single-part element (0 for multipart: see `multipart.meta`). */
      recordBytes: number;
      multipart: Multipart | undefined;
      /** The value, when the writer still has it (for the cache). */
      value: Uint8Array | undefined;
      /** Moved by the cleaner, bytes unchanged: a cached copy stays valid. */
      moved?: true;
    }
  | { kind: "delete"; seid: bigint };

/** A committed write (of either shape). */
export type WriteOp = Extract<AppliedOp, { kind: "write" }>;

/** The store's state that commits change: what the write path, the read path and replay share. */
export interface StoreCore {
  readonly log: LogStructuredStore;
  readonly map: MappingTable;
  readonly sut: SegmentUtilisation;
  readonly cache: ElementCache;
  /** Parts of every multipart element (kept in memory: few, and each large). */
  readonly parts: Map<bigint, Multipart>;
  readonly spaces: SeidSpaces;
  liveValueBytes: number;
  /** Part and Extents entries of every multipart element (what their checkpoint entries cost). */
  multipartEntries: number;
  /**
   * Largest record (padded) of any element written since open or in the checkpoint it loaded: a
   * bound on what one relocation appends (the cleaner sizes the full-disk reserve with it).
   */
  largestRecordBytes: number;
  /** Set once the store is shared with Workers: sees every applied commit (src/workers). */
  observer?: CommitObserver;
}

/** A turn provider shared across threads (src/workers/turn.ts `OwnerTurns`). */
export interface SharedTurns {
  takeTurn(): { ready: Promise<void>; release: () => void };
}

/**
 * Sees every applied commit, in the same synchronous step (src/workers publishes the mapping
 * table to Workers through it): `begin`, one `set`/`delete` per op, `end`.
 */
export interface CommitObserver {
  begin(): void;
  set(seid: bigint, location: Location): void;
  delete(seid: bigint): void;
  end(): void;
}

/**
 * A transaction's callback, as the async context it runs in sees it: `inCallback` is true from
 * the moment the callback is called until the promise it returned settles. The transaction holds
 * the turn for all of that time.
 */
interface TurnHolder {
  readonly txId: number;
  inCallback: boolean;
}

/** Who made a live commit: users' bytes count toward write amplification, the cleaner's do not. */
export type CommitKind = "user" | "system";

/** Counters of the commit path, kept across restarts through checkpoints and replay. */
export interface CommitCounters {
  /** Highest transaction id handed out or seen in the log. */
  lastTxId: number;
  /** Commit records written or replayed since the store was created. */
  commits: number;
}

/** The one path through which transactions take effect (see the module doc). */
export class CommitPath {
  private readonly core: StoreCore;
  private turn: Promise<void> = Promise.resolve();
  /**
   * The cross-thread turn, once the store is shared with Workers (src/workers/turn.ts): from then
   * on every turn is a ticket of that lock, so the owner's transactions queue with the Workers'.
   */
  private sharedTurns: SharedTurns | undefined;
  /** Marks the async context of a running transaction callback (see {@link runCallback}). */
  private readonly holders = new AsyncLocalStorage<TurnHolder>();
  /** `[0]`: the last transaction id; a SharedArrayBuffer cell once shared (Workers read it in their turn). */
  private txIdCell: Float64Array<ArrayBufferLike> = new Float64Array(1);
  /** Commit records written or replayed (live and replay count alike). */
  commits: number;
  /** Bytes of values users committed in this process. */
  userBytesWritten = 0;
  /** Something changed since the last checkpoint (a commit, a replayed unit, a seid allocation). */
  dirty = false;
  /** Transactions that asked for the turn and have not committed yet (group commit reads it). */
  queued = 0;
  /**
   * Commit time of the newest commit written or replayed in this process, ms since the epoch;
   * `null` when unknown (none since open, or only version-1 Commit records). Backup names its
   * consistent point by it.
   */
  lastCommitTime: number | null = null;
  /**
   * Where commit times come from. Restore sets it to replay a backed-up transaction with its
   * original time, so a restored store can itself be restored to a point in time.
   */
  clock: () => number = Date.now;

  constructor(core: StoreCore, start: CommitCounters) {
    this.core = core;
    this.lastTxId = start.lastTxId;
    this.commits = start.commits;
  }

  /** Highest transaction id handed out or seen in the log: the next one is above it. */
  get lastTxId(): number {
    return this.txIdCell[0] as number;
  }

  set lastTxId(value: number) {
    this.txIdCell[0] = value;
  }

  /**
   * Share the turn with Workers: from now on turns are tickets of `turns`, and the last
   * transaction id lives in `txIdCell` (a turn holder in any thread takes the next id from it).
   * Turns taken before this call still run first: the first ticket is held until they are done.
   */
  shareTurns(turns: SharedTurns, txIdCell: Float64Array): void {
    if (this.sharedTurns !== undefined) return;
    txIdCell[0] = this.lastTxId;
    this.txIdCell = txIdCell;
    const legacy = this.turn;
    this.sharedTurns = turns;
    const first = turns.takeTurn();
    void first.ready.then(() => legacy).then(first.release);
  }

  // ───────────────────────────── the turn ─────────────────────────────

  /** The store stopped serving Workers (closing): turns are this thread's own again. */
  unshareTurns(): void {
    if (this.sharedTurns === undefined) return;
    const last = this.lastTxId;
    this.sharedTurns = undefined;
    this.txIdCell = new Float64Array([last]);
    this.turn = Promise.resolve();
  }

  /**
   * Wait for the turn (FIFO: callers get it in the order they called) and return the function
   * that passes it on. The caller must call it exactly once, also when it fails.
   */
  takeTurn(): { ready: Promise<void>; release: () => void } {
    // Waiting for the turn from inside a running callback can only wait forever (the callback
    // holds the turn until it settles): refused here, for every path that takes the turn. The
    // public calls also check first, by name, before any side effect (close() marks the store
    // closing); this catches the paths they do not name (an archive's ship, a standby's seed).
    this.refuseInsideCallback("waiting for the transaction turn");
    if (this.sharedTurns !== undefined) return this.sharedTurns.takeTurn();
    const previous = this.turn;
    let release!: () => void;
    this.turn = new Promise<void>((resolve) => (release = resolve));
    return { ready: previous, release };
  }

  /** Run `fn` holding the turn: no transaction runs meanwhile. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const { ready, release } = this.takeTurn();
    await ready;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /**
   * Run a transaction's callback (it holds the turn) marked in its async context, so that a store
   * call it makes that would wait for the turn is refused ({@link refuseInsideCallback}) instead
   * of waiting forever: the turn is passed on only after the callback's promise settles, and
   * that promise would be waiting for the call.
   *
   * Why an `AsyncLocalStorage` and not a flag ("a callback is running"): a caller in another
   * async task (a request handler, a timer started before the transaction) must keep simply
   * waiting its turn in FIFO order; only calls made from the callback's own async context
   * (directly, or from promises, timers and stream callbacks it started) are the misuse.
   *
   * What it cannot tell: a call made inside the callback and not awaited is refused too (at the
   * call, an awaited call and a forgotten one look the same); and a callback that awaits another
   * task, started outside it, which itself waits for the turn, still waits forever (that task's
   * context says nothing of the callback).
   */
  runCallback<T>(txId: number, callback: () => T | Promise<T>): T | Promise<T> {
    // Its cost, measured on the shared 2-core test VM, one process per build: serial durable
    // commits (bench/commit-path.ts) keep 1 submit, 2 ops and 1 wake-up per commit, and their CPU
    // time (700–900 µs a commit there) moves less than its run-to-run spread; serial relaxed
    // one-write transactions took 24.0 µs of CPU each against 23.1 µs before (medians of
    // 9 × 100 000; minima 20.4 against 21.2), so at most ≈1 µs: the async context that promises
    // made inside the callback carry. `run()` and `getStore()` themselves cost ≈0.1 µs.
    const holder: TurnHolder = { txId, inCallback: true };
    let result: T | Promise<T>;
    try {
      result = this.holders.run(holder, callback);
    } catch (error) {
      holder.inCallback = false;
      throw error;
    }
    // A synchronous callback's value is handed back as it is: no promise, no ticks.
    if (!isThenable(result)) {
      holder.inCallback = false;
      return result;
    }
    return callbackSettled(result, holder);
  }

  /**
   * Throw `TransactionError` when called from inside the callback of a transaction of this store
   * that still runs (see {@link runCallback}): `what` (e.g. `"store.flush()"`) would wait for the
   * turn that transaction holds until its callback returns, so it would never return. Callers
   * anywhere else are let through: they wait their turn.
   */
  refuseInsideCallback(what: string): void {
    const holder = this.holders.getStore();
    if (holder === undefined || !holder.inCallback) return;
    throw new TransactionError(
      `${what} inside the callback of transaction ${holder.txId} would wait for that transaction, which waits for the callback: ` +
        `call it after the transaction's promise resolves`,
    );
  }

  /**
   * Run `fn` outside any transaction callback's context: for what is started from a callback but
   * serves others later (a server whose handlers keep the context they were started in).
   */
  outsideCallbacks<T>(fn: () => T): T {
    return this.holders.exit(fn);
  }

  /** Resolves once every turn taken so far has been passed on. */
  get idle(): Promise<void> {
    if (this.sharedTurns !== undefined) return this.exclusive(async () => {});
    return this.turn;
  }

  // ───────────────────────────── live commits ─────────────────────────────

  /**
   * A new transaction id, consumed at once: records appended under it and then left without a
   * Commit (an abort, a crash) must never be claimed by a later transaction's Commit.
   */
  nextTxId(): number {
    this.lastTxId += 1;
    return this.lastTxId;
  }

  /**
   * Append the seid allocations made since the last Alloc record, if any. The turn is held.
   * Returns whether a record was appended: at once when a flush buffer had room (no promise).
   */
  appendAllocations(): boolean | Promise<boolean> {
    const alloc = this.core.spaces.takeDirty();
    if (alloc === undefined) return false;
    // Not in the log (no space, say): the next Alloc record must still carry these counters, or
    // a seid handed out now could be handed out again after a crash.
    const keepDirty = (error: unknown): never => {
      this.core.spaces.apply(alloc, true);
      throw error;
    };
    let appended: number | Promise<number>;
    try {
      appended = appendRecord(this.core.log, RecordType.Alloc, 0, 0n, alloc.length, encodeAlloc(alloc));
    } catch (error) {
      return keepDirty(error);
    }
    return typeof appended === "number" ? true : appended.then(() => true, keepDirty);
  }

  /**
   * Append what user transaction `tx` still holds and commit it (the turn is held). A
   * transaction that only deletes appends as a delete (src/log/space.ts): it may use the delete
   * share of the full-disk reserve, so that a store that ran out of space can still be emptied.
   */
  async commitTransaction(tx: TransactionState): Promise<number | undefined> {
    const commit = async (): Promise<number | undefined> => {
      const finished = tx.finish();
      return this.commitLive(tx.id, Array.isArray(finished) ? finished : await finished, "user");
    };
    try {
      return await (tx.onlyDeletes ? this.core.log.withSpaceUse("delete", commit) : commit());
    } finally {
      // Committed (its records are now in the state the full-disk reserve is sized for) or not
      // (they are garbage): the log stops counting them as pending (src/log/space.ts).
      this.core.log.writesSettled();
    }
  }

  /**
   * Commit transaction `txId`, whose records are in the log already: pending allocations, the
   * Commit record, then `ops` applied at once. The turn is held. Returns the address just past
   * the Commit record (durable once `stableAddress` passes it), or `undefined` when there was
   * nothing to commit (no ops and no allocations: no record is written).
   */
  async commitLive(txId: number, ops: readonly AppliedOp[], kind: CommitKind): Promise<number | undefined> {
    const allocating = kind === "user" ? this.appendAllocations() : false;
    const allocated = typeof allocating === "boolean" ? allocating : await allocating;
    if (ops.length === 0 && !allocated) return undefined;
    const time = this.clock();
    const flags = kind === "system" ? FLAG_COMMIT_SYSTEM : 0;
    const appended = appendRecord(this.core.log, RecordType.Commit, txId, 0n, ops.length, encodeCommitBody(time), flags);
    const address = typeof appended === "number" ? appended : await appended;
    // No await from here to the end: readers see all of the transaction or none of it.
    applyOps(this.core, ops);
    this.commits += 1;
    this.lastCommitTime = time;
    this.dirty = true;
    if (kind === "user") for (const op of ops) if (op.kind === "write") this.userBytesWritten += op.sizeBytes;
    return address + RECORD_HEADER_BYTES;
  }

  // ───────────────────────────── logged commits ─────────────────────────────

  /** A transaction id seen in the log (committed or not) is used up. */
  noteLoggedTxId(txId: number): void {
    if (txId > this.lastTxId) this.lastTxId = txId;
  }

  /**
   * Apply a transaction read back from the log at its intact Commit record (replay, a standby).
   * `time` is its commit time (`null` when the record carries none: a version-1 file).
   */
  applyLogged(txId: number, ops: readonly AppliedOp[], time: number | null = null): void {
    this.noteLoggedTxId(txId);
    applyOps(this.core, ops);
    this.commits += 1;
    this.dirty = true;
    if (time !== null) this.lastCommitTime = time;
  }

  /** Apply an Alloc record read back from the log. */
  applyLoggedAllocations(entries: ReadonlyArray<readonly [number, number]>): void {
    this.core.spaces.apply(entries);
  }
}

/** Count a multipart element that joined `core.parts` (its entries, its largest record). */
export function noteMultipart(core: StoreCore, multipart: Multipart): void {
  core.multipartEntries += multipart.parts.length + multipart.meta.length;
  for (const part of multipart.parts) core.largestRecordBytes = Math.max(core.largestRecordBytes, partRecordBytes(part));
  for (const record of multipart.meta) core.largestRecordBytes = Math.max(core.largestRecordBytes, record.recordBytes);
}

/** Take an element's records out of the utilisation table (it was replaced or deleted). */
function forget(core: StoreCore, seid: bigint, previous: Location | undefined): void {
  if (previous === undefined) return;
  core.liveValueBytes -= previous.sizeBytes;
  if (previous.multipart) {
    const multipart = core.parts.get(seid);
    if (multipart === undefined) throw new Error(`seid ${seid} is multipart but its parts are unknown`);
    for (const part of multipart.parts) core.sut.remove(part.address, partRecordBytes(part));
    for (const record of multipart.meta) core.sut.remove(record.address, record.recordBytes);
    core.parts.delete(seid);
    core.multipartEntries -= multipart.parts.length + multipart.meta.length;
  } else {
    core.sut.remove(previous.address, paddedRecordBytes(RECORD_HEADER_BYTES + previous.sizeBytes));
  }
}

/** Apply committed operations, in order, all at once (no await: readers see all or none). */
function applyOps(core: StoreCore, ops: readonly AppliedOp[]): void {
  // A large commit makes room for its writes at once: growing step by step under a bulk load of
  // 1 M new seids cost a fifth of it in rehashes (~1.0 M writes/s with this, ~0.8 M without).
  // Writes that replace a seid count too, so the table may grow one step early; reserve() grows
  // geometrically, so repeated large commits do not rehash each time.
  if (ops.length > RESERVE_FROM_OPS) core.map.reserve(core.map.size + ops.length);
  const observer = core.observer;
  if (observer !== undefined) {
    observer.begin();
    try {
      applyEach(core, ops, observer);
    } finally {
      observer.end();
    }
    return;
  }
  applyEach(core, ops, undefined);
}

function applyEach(core: StoreCore, ops: readonly AppliedOp[], observer: CommitObserver | undefined): void {
  for (const op of ops) {
    // One mapping-table lookup per operation: set and delete hand back the location they replace.
    if (op.kind === "delete") {
      forget(core, op.seid, core.map.delete(op.seid));
      core.cache.invalidate(op.seid);
      observer?.delete(op.seid);
      continue;
    }
    forget(core, op.seid, core.map.put(op.seid, op.address, op.sizeBytes, op.multipart !== undefined));
    observer?.set(op.seid, { address: op.address, sizeBytes: op.sizeBytes, multipart: op.multipart !== undefined });
    if (op.multipart !== undefined) {
      for (const part of op.multipart.parts) core.sut.add(part.address, partRecordBytes(part));
      for (const record of op.multipart.meta) core.sut.add(record.address, record.recordBytes);
      core.parts.set(op.seid, op.multipart);
      noteMultipart(core, op.multipart);
    } else {
      core.sut.add(op.address, op.recordBytes);
      if (op.recordBytes > core.largestRecordBytes) core.largestRecordBytes = op.recordBytes;
    }
    core.liveValueBytes += op.sizeBytes;
    if (op.value !== undefined) core.cache.set(op.seid, op.value);
    else if (op.moved !== true) core.cache.invalidate(op.seid);
  }
}

/** An asynchronous callback's result; its holder leaves the callback once it settles. */
async function callbackSettled<T>(result: PromiseLike<T>, holder: TurnHolder): Promise<T> {
  try {
    return await result;
  } finally {
    holder.inCallback = false;
  }
}

/** Whether `value` is a promise or another thenable (`await` would adopt it). */
function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return (typeof value === "object" || typeof value === "function") && value !== null && typeof (value as { then?: unknown }).then === "function";
}
