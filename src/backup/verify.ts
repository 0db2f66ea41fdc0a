/**
 * `Store.verifyBackup(source)`: everything a restore would check, without restoring. The newest
 * manifest (its checksum and shape), the chain (validateChain: no gap, no overlap, no
 * reordering), every object's size, crc32 and sha256 against the manifest, every base record's
 * CRC and the base's structure, every log unit through the log's own unit checker (checksums,
 * chain, epochs), every record in them, multipart elements put back together, and the
 * transactions and commit times each increment holds against what the manifest says.
 *
 * @module
 */
import { BackupCorruptionError } from "../errors.ts";
import { readBaseOf, readChain, readIncrement } from "./chain.ts";
import { LogicalReader } from "./logical.ts";
import { openTarget, type BackupTarget, type OpenTargetOptions } from "./target.ts";

/** Options of `Store.verifyBackup()`. */
export interface VerifyOptions extends OpenTargetOptions {
  /** Largest transaction (bytes of values) put together from the log at once. Default 1 GiB. */
  maxTransactionBytes?: number;
}

/** What `verifyBackup` checked. */
export interface VerifyReport {
  /** The target, as given. */
  readonly target: string;
  /** The manifest checked (the newest). */
  readonly manifest: string;
  readonly manifestSeq: number;
  /** Identity of the store backed up. */
  readonly storeId: string;
  /** The base: its id, the transaction it is consistent at, its commit time, chunks, bytes and elements. */
  readonly base: {
    readonly id: string;
    readonly transaction: number;
    readonly commitTime: number | null;
    readonly chunks: number;
    readonly bytes: number;
    readonly elements: number;
  };
  /** Increments checked. */
  readonly increments: number;
  /** Objects checked (chunks, increments and the manifest). */
  readonly objects: number;
  /** Bytes checked. */
  readonly bytes: number;
  /** Log units checked. */
  readonly units: number;
  /** Committed user transactions found in the increments. */
  readonly transactions: number;
  /** The range of transactions a restore can reach: from the base's to the last one. */
  readonly firstTransaction: number;
  readonly lastTransaction: number;
  /** Commit time of the first and last restorable points (ms since the epoch; `null` when unknown). */
  readonly firstCommitTime: number | null;
  readonly lastCommitTime: number | null;
  /** Wall time, ms. */
  readonly durationMs: number;
}

/** `Store.verifyBackup(source, options)`. */
export async function verifyBackup(source: string | BackupTarget, options: VerifyOptions = {}): Promise<VerifyReport> {
  const started = performance.now();
  const target = typeof source === "string" ? await openTarget(source, options) : source;
  try {
    const chain = await readChain(target);
    const { manifest } = chain;
    const base = manifest.base;
    let bytes = 0;
    let elements = 0;
    let ended = false;
    for await (const event of readBaseOf(target, base, (n) => (bytes += n))) {
      if (event.kind === "element" || event.kind === "multipart-end") elements += 1;
      if (event.kind === "end") {
        ended = true;
        if (event.transaction !== base.transaction) {
          throw new BackupCorruptionError(base.chunks.at(-1)?.name ?? base.id, `backup base ${base.id} ends at transaction ${event.transaction}, the manifest says ${base.transaction}`);
        }
      }
    }
    if (!ended) throw new BackupCorruptionError(base.id, `backup base ${base.id} has no trailer`);

    const reader = new LogicalReader(base.lsn, options.maxTransactionBytes);
    let minEpoch = 0;
    let units = 0;
    let transactions = 0;
    let lastTransaction = base.transaction;
    let lastCommitTime = base.commitTime;
    for (const inc of manifest.increments) {
      const read = await readIncrement(target, inc, minEpoch);
      bytes += read.bytes;
      let first: number | null = null;
      let last: number | null = null;
      let firstTime: number | null = null;
      let lastTime: number | null = null;
      for (const unit of read.units) {
        units += 1;
        minEpoch = unit.epoch;
        for (const event of reader.unit(unit)) {
          if (event.kind === "spaces") continue;
          const txId = event.kind === "commit" ? event.transaction.txId : event.txId;
          const time = event.kind === "commit" ? event.transaction.time : event.time;
          const manifestTime = Math.max(0, Math.floor(time ?? 0));
          if (first === null) {
            first = txId;
            firstTime = manifestTime;
          }
          last = txId;
          lastTime = manifestTime;
          if (event.kind === "commit") {
            transactions += 1;
            lastTransaction = txId;
            lastCommitTime = time;
          }
        }
      }
      if (first !== inc.firstTransaction || last !== inc.lastTransaction || firstTime !== inc.firstCommitTime || lastTime !== inc.lastCommitTime) {
        throw new BackupCorruptionError(
          inc.name,
          `backup increment ${inc.name} holds transactions ${first}..${last} (times ${firstTime}..${lastTime}), the manifest says ${inc.firstTransaction}..${inc.lastTransaction} (${inc.firstCommitTime}..${inc.lastCommitTime})`,
        );
      }
    }
    return {
      target: target.location,
      manifest: chain.name,
      manifestSeq: manifest.seq,
      storeId: manifest.storeId,
      base: { id: base.id, transaction: base.transaction, commitTime: base.commitTime, chunks: base.chunks.length, bytes: base.bytes, elements },
      increments: manifest.increments.length,
      objects: base.chunks.length + manifest.increments.length + 1,
      bytes,
      units,
      transactions,
      firstTransaction: base.transaction,
      lastTransaction,
      firstCommitTime: base.commitTime,
      lastCommitTime,
      durationMs: performance.now() - started,
    };
  } finally {
    if (typeof source === "string") await target.close();
  }
}
