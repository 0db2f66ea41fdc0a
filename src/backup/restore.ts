/**
 * Point-in-time restore: `Store.restore(source, path, { transaction } | { time } | {})`.
 *
 * Builds a **new** store at `path` (a missing or empty file; anything else is refused) from the
 * newest manifest of `source` that holds the point asked for (an older manifest when the point is
 * before the newest base, since manifests and their objects stay until pruned): the base's elements first, written in large transactions, then
 * the increments replayed **logically** — each committed user transaction of the original read
 * back from the log (logical.ts) and committed again in the new store with the same operations,
 * the same transaction id (when the new store's ids allow it) and its original commit time, so a
 * restored store can itself be backed up and restored to a point in time. It stops right after
 * the requested transaction, or after the last commit at or before the requested time (the first
 * commit later than the time ends the replay), or at the end of the chain.
 *
 * Nothing of a broken backup is trusted: the chain is validated before a byte is restored
 * (`BackupChainError` naming the gap), every object is checked against the manifest's size and
 * checksums, every base record and every log unit against its own checksum
 * (`BackupCorruptionError` naming the object). A restore that fails removes what it wrote.
 *
 * The new store runs with relaxed durability while it is built and is checkpointed and closed at
 * the end: it is complete when `restore` resolves, and a crash before that leaves a file that
 * should be deleted (restore refuses to write over it).
 *
 * @module
 */
import fs from "node:fs/promises";
import { BackupCorruptionError, BackupPointError, InvalidArgumentError } from "../errors.ts";
import type { StoreOptions } from "../store/config.ts";
import { Store, storeInternals } from "../store/store.ts";
import { readBaseOf, readChain, readIncrement } from "./chain.ts";
import type { BaseEvent } from "./base.ts";
import { DEFAULT_MAX_TRANSACTION_BYTES, LogicalReader, type LogicalOp, type LogicalTransaction } from "./logical.ts";
import type { BackupManifest } from "./manifest.ts";
import { openTarget, type BackupTarget, type OpenTargetOptions } from "./target.ts";

/** Progress of a restore. */
export interface RestoreProgress {
  /** `"base"` while elements are written, `"log"` while increments are replayed. */
  readonly phase: "base" | "log";
  /** Bytes of backup objects read in this phase. */
  readonly bytesDone: number;
  /** Bytes of backup objects this phase may read. */
  readonly bytesTotal: number;
}

/** Options of `Store.restore()`. Give at most one of `transaction` and `time`. */
export interface RestoreOptions extends OpenTargetOptions {
  /** Stop right after this transaction (or the last one before it, if it is not a commit). */
  transaction?: number;
  /** Stop after the last commit at or before this time (a `Date` or ms since the epoch). */
  time?: Date | number;
  /** Options of the new store (its segment size, buffers, I/O…); `create`, `readOnly` and `durability` are the restore's. */
  store?: Omit<StoreOptions, "create" | "readOnly" | "durability">;
  /** Largest transaction (bytes of values) read from the log at once. Default 1 GiB. */
  maxTransactionBytes?: number;
  /** Called as objects are read. */
  onProgress?: (progress: RestoreProgress) => void;
}

/** What a restore did. */
export interface RestoreInfo {
  /** The new store's path. */
  readonly path: string;
  /** The manifest restored from. */
  readonly manifest: string;
  /** The last transaction of the original the new store holds (a user's or the cleaner's: the backup counts both). */
  readonly transaction: number;
  /** Its commit time, ms since the epoch (`null` when unknown). */
  readonly commitTime: number | null;
  /** Elements written from the base. */
  readonly baseElements: number;
  /** Transactions replayed from increments. */
  readonly transactionsReplayed: number;
  /** Increments read. */
  readonly increments: number;
  /** Bytes of backup objects read. */
  readonly bytesRead: number;
  /** Wall time, ms. */
  readonly durationMs: number;
}

/** Elements per base transaction, and its bytes: few, large commits for the bulk of a restore. */
const BASE_BATCH_ELEMENTS = 10_000;
const BASE_BATCH_BYTES = 8 << 20;

interface StopRule {
  readonly transaction: number | undefined;
  readonly time: number | undefined;
}

function resolveStop(manifest: BackupManifest, options: RestoreOptions): StopRule {
  if (options.transaction !== undefined && options.time !== undefined) {
    throw new InvalidArgumentError("restore takes a transaction or a time, not both");
  }
  const base = manifest.base;
  if (options.transaction !== undefined) {
    const tx = options.transaction;
    if (!Number.isSafeInteger(tx) || tx < 0) throw new InvalidArgumentError(`transaction must be a non-negative integer, got ${String(tx)}`);
    if (tx < base.transaction) {
      throw new BackupPointError(`transaction ${tx} is before this backup's base (consistent at transaction ${base.transaction}): restore from an older backup`);
    }
    let last = base.transaction;
    for (const inc of manifest.increments) if (inc.lastTransaction !== null) last = inc.lastTransaction;
    if (tx > last) throw new BackupPointError(`transaction ${tx} is after the last one this backup holds (${last})`);
    return { transaction: tx, time: undefined };
  }
  if (options.time !== undefined) {
    const time = options.time instanceof Date ? options.time.getTime() : options.time;
    if (typeof time !== "number" || !Number.isFinite(time)) throw new InvalidArgumentError(`time must be a Date or ms since the epoch, got ${String(options.time)}`);
    if (base.commitTime !== null && time < base.commitTime) {
      throw new BackupPointError(
        `${new Date(time).toISOString()} is before this backup's base (its last commit was at ${new Date(base.commitTime).toISOString()})`,
      );
    }
    if (base.commitTime === null) {
      // The base's own time is unknown, but it precedes every commit of the increments: a time
      // at or after the first of those is surely after the base.
      const first = manifest.increments.find((inc) => inc.firstCommitTime !== null)?.firstCommitTime ?? null;
      if (first === null || time < first) {
        throw new BackupPointError(`the commit time of this backup's base is unknown: restore it by transaction (its base is at ${base.transaction})`);
      }
    }
    return { transaction: undefined, time };
  }
  return { transaction: undefined, time: undefined };
}

async function refuseExisting(path: string): Promise<void> {
  if (typeof path !== "string" || path.length === 0) throw new InvalidArgumentError("restore path must be a non-empty string");
  try {
    const stat = await fs.stat(path);
    if (!stat.isFile() || stat.size > 0) throw new InvalidArgumentError(`restore refuses to write over ${path}: it exists and is not an empty file`);
  } catch (error) {
    if ((error as { code?: unknown }).code !== "ENOENT") throw error;
  }
}

/** `Store.restore(source, path, options)`. */
export async function restoreBackup(source: string | BackupTarget, path: string, options: RestoreOptions = {}): Promise<RestoreInfo> {
  const started = performance.now();
  await refuseExisting(path);
  const target = typeof source === "string" ? await openTarget(source, options) : source;
  try {
    const chain = await readChain(target, (manifest) => {
      try {
        resolveStop(manifest, options);
        return true;
      } catch (error) {
        if (error instanceof BackupPointError) return false;
        throw error;
      }
    });
    const stop = resolveStop(chain.manifest, options);
    const existed = await fs.stat(path).then(() => true, () => false);
    const store = await Store.open(path, { ...options.store, create: true, durability: "relaxed" });
    try {
      const result = await rebuild(store, target, chain.manifest, stop, options);
      await store.close();
      return { path, manifest: chain.name, ...result, durationMs: performance.now() - started };
    } catch (error) {
      await store.close().catch(() => {});
      // Leave nothing half-built behind (an empty file the caller made stays, emptied).
      if (existed) await fs.truncate(path, 0).catch(() => {});
      else await fs.rm(path, { force: true }).catch(() => {});
      throw error;
    }
  } finally {
    if (typeof source === "string") await target.close();
  }
}

async function rebuild(
  store: Store,
  target: BackupTarget,
  manifest: BackupManifest,
  stop: StopRule,
  options: RestoreOptions,
): Promise<Omit<RestoreInfo, "path" | "manifest" | "durationMs">> {
  const { core, commits } = storeInternals(store);
  const base = manifest.base;
  let bytesRead = 0;
  const progress = (phase: "base" | "log", n: number, total: number): void => {
    bytesRead += n;
    options.onProgress?.({ phase, bytesDone: phase === "base" ? bytesRead : bytesRead - base.bytes, bytesTotal: total });
  };

  // 1. The base, in large transactions; a multipart element streamed in a transaction of its own.
  // Elements are written as they arrive, inside the open transaction: their bytes are views of the
  // base's stream, valid until the next event, and tx.write copies them once (batched first, they
  // had to be copied out of the stream and then again by tx.write).
  let baseElements = 0;
  let ended = false;
  const events = readBaseOf(target, base, (n) => progress("base", n, base.bytes));
  /** An event pulled by an element transaction that is not an element: the outer loop's next. */
  let held: BaseEvent | undefined;
  const nextEvent = async (): Promise<BaseEvent | undefined> => {
    if (held !== undefined) {
      const event = held;
      held = undefined;
      return event;
    }
    const next = await events.next();
    return next.done ? undefined : next.value;
  };
  for (;;) {
    const event = await nextEvent();
    if (event === undefined) break;
    switch (event.kind) {
      case "spaces":
        core.spaces.apply(event.entries);
        break;
      case "element":
        await store.transaction(async (tx) => {
          let count = 0;
          let bytes = 0;
          for (let e: BaseEvent | undefined = event; e !== undefined; e = await nextEvent()) {
            if (e.kind !== "element") {
              held = e;
              return;
            }
            tx.write(e.seid, e.value);
            baseElements += 1;
            count += 1;
            bytes += e.value.length;
            if (count >= BASE_BATCH_ELEMENTS || bytes >= BASE_BATCH_BYTES) return;
          }
        });
        break;
      case "part": {
        const seid = event.seid;
        await store.transaction(async (tx) => {
          const writer = tx.writeStream(seid).getWriter();
          await writer.write(event.body);
          for (;;) {
            const more = await events.next();
            if (more.done) throw new BackupCorruptionError(base.chunks.at(-1)?.name ?? base.id, `backup base ${base.id} ends inside seid ${seid}`);
            if (more.value.kind === "part") {
              await writer.write(more.value.body);
              continue;
            }
            if (more.value.kind !== "multipart-end") throw new Error(`base reader handed out ${more.value.kind} inside seid ${seid}`);
            break;
          }
          await writer.close();
        });
        baseElements += 1;
        break;
      }
      case "multipart-end":
        throw new Error("base reader handed out a multipart end without parts");
      case "end":
        if (event.transaction !== base.transaction) {
          throw new BackupCorruptionError(base.chunks.at(-1)?.name ?? base.id, `backup base ${base.id} ends at transaction ${event.transaction}, the manifest says ${base.transaction}`);
        }
        ended = true;
        break;
    }
  }
  if (!ended) throw new BackupCorruptionError(base.id, `backup base ${base.id} has no trailer`);

  // 2. The increments, replayed logically up to the stop point.
  if (commits.lastTxId < base.transaction) commits.lastTxId = base.transaction;
  let last = { transaction: base.transaction, commitTime: base.commitTime };
  let replayed = 0;
  let increments = 0;
  const logTotal = manifest.increments.reduce((sum, inc) => sum + inc.size, 0);
  const reader = new LogicalReader(base.lsn, options.maxTransactionBytes ?? DEFAULT_MAX_TRANSACTION_BYTES);
  const stopsBefore = (txId: number, time: number | null): boolean =>
    (stop.transaction !== undefined && txId > stop.transaction) || (stop.time !== undefined && time !== null && time > stop.time);
  let minEpoch = 0;
  try {
    chain: for (const inc of manifest.increments) {
      if (stop.transaction !== undefined && last.transaction >= stop.transaction) break;
      const { units, bytes } = await readIncrement(target, inc, minEpoch);
      increments += 1;
      progress("log", bytes, logTotal);
      for (const unit of units) {
        minEpoch = unit.epoch;
        for (const event of reader.unit(unit)) {
          if (event.kind === "spaces") {
            core.spaces.apply(event.entries);
            continue;
          }
          if (event.kind === "system-commit") {
            // The cleaner's: nothing to apply, but the restored state is as of it too.
            if (stopsBefore(event.txId, event.time)) break chain;
            last = { transaction: event.txId, commitTime: event.time };
            continue;
          }
          const tx = event.transaction;
          if (stopsBefore(tx.txId, tx.time)) break chain;
          await apply(store, tx);
          replayed += 1;
          last = { transaction: tx.txId, commitTime: tx.time };
        }
      }
    }
  } finally {
    commits.clock = Date.now;
  }
  commits.dirty = true;
  return { transaction: last.transaction, commitTime: last.commitTime, baseElements, transactionsReplayed: replayed, increments, bytesRead };
}

/** Commit one transaction of the original in the new store, with its id and time. */
async function apply(store: Store, tx: LogicalTransaction): Promise<void> {
  const { commits } = storeInternals(store);
  // The next id handed out is the original's, unless the new store already used it (base batches).
  if (commits.lastTxId < tx.txId - 1) commits.lastTxId = tx.txId - 1;
  const time = tx.time;
  commits.clock = time === null ? Date.now : () => time;
  const ops: readonly LogicalOp[] = tx.ops;
  await store.transaction((t) => {
    for (const op of ops) {
      if (op.kind === "write") t.write(op.seid, op.value);
      else t.delete(op.seid);
    }
  });
}
