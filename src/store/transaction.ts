/**
 * A transaction: the only way to write or delete. Operations are validated and copied when
 * called (the caller may reuse its buffers at once); they reach the log when the transaction
 * commits, or earlier in the background once they pass {@link SPILL_BYTES}, so a large
 * transaction does not hold all its bytes in memory. Nothing is visible to readers before commit.
 *
 * @module
 */
import { InvalidArgumentError, TransactionError } from "../errors.ts";
import type { LogStructuredStore } from "../log/log.ts";
import type { AppliedOp, WriteOp } from "./commit.ts";
import { RecordType } from "./format/records.ts";
import { readMultipart, readSingle } from "./read-path.ts";
import { checkSeid } from "./state/seids.ts";
import { createWriteStream } from "./streams.ts";
import { StagingPool } from "./staging.ts";
import { appendElement, appendRecord, partBytesFor, singleWriteOp, tryAppendRecord, tryAppendRun } from "./write-path.ts";

/** Buffered bytes past which a transaction starts writing its operations to the log. */
export const SPILL_BYTES = 4 << 20;

/**
 * Most bytes of written values one transaction hands to the cache. A bulk load that cached
 * everything it wrote would only evict what readers use (and pay a copy per write for it).
 */
export const CACHE_BUDGET_MAX_BYTES = 1 << 20;

/** Values a transaction accepts for an element. */
export type ElementValue = Uint8Array | ArrayBufferView | ArrayBuffer;

/**
 * A write of the transaction, pending and then appended: one object per write, which is also
 * what `tx.read` (read-your-writes) finds as the seid's newest write. The value is held only until
 * the write reaches the log (then `op` says where it is and reads go there), so a large
 * transaction keeps no more in memory for this than it did before. A write stream's entry has no
 * value: its bytes are in the log already.
 */
interface WriteEntry {
  readonly kind: "write";
  readonly seid: bigint;
  /** The bytes, while they are still in memory (pending, or kept for the cache). */
  value: Uint8Array | undefined;
  /** `value` is a staging pool's buffer (staging.ts): given back once appended, never cached. */
  readonly staged: boolean;
  /** Where the write is in the log, once appended. */
  op: WriteOp | undefined;
}
type PendingOp = WriteEntry | { readonly kind: "delete"; readonly seid: bigint };

/** What a transaction needs of the store to read (see {@link TransactionState}). */
export interface TransactionReads {
  /** The committed value of `seid` (the store's read path). */
  readCommitted(seid: bigint): Promise<Uint8Array | undefined>;
  /** The store's `maxReadBytes`. */
  maxReadBytes: number;
}

/** `value`'s bytes as a Uint8Array view (no copy), or throw `InvalidArgumentError`. */
function viewOf(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return new Uint8Array(value);
  const kind = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
  throw new InvalidArgumentError(`an element value must be a Uint8Array, another ArrayBufferView or an ArrayBuffer, got ${kind}`);
}

/** The body of a Delete record. */
const NO_BYTES = new Uint8Array(0);

/** Copy `value` into a fresh Uint8Array, or throw `InvalidArgumentError`. */
export function toBytes(value: unknown): Uint8Array {
  return viewOf(value).slice();
}

/** Handed to the function given to `store.transaction()`: the only way to write or delete. */
export interface Transaction {
  /** Sequence number of this transaction in the log. */
  readonly id: number;
  /** Create or replace the whole element `seid` with `value` (copied at once). */
  write(seid: bigint, value: ElementValue): void;
  /**
   * Write element `seid` as a stream: bytes go to the log as they arrive, in parts, never held
   * whole in memory. Close the stream before the transaction's function returns; the element
   * replaces any earlier version when the transaction commits. Aborting the stream (or throwing
   * from the transaction) leaves the earlier version in place.
   */
  writeStream(seid: bigint): WritableStream<Uint8Array>;
  /** Delete element `seid` (deleting a missing element is allowed and changes nothing). */
  delete(seid: bigint): void;
  /**
   * Read element `seid` as this transaction sees it: its own latest write or delete of `seid` if
   * it made one (a write stream counts once it is closed), else the committed value, as
   * `store.read` returns it. Bytes read back from the log are verified as every read is.
   * The value is the one at the time of the call; the result is a copy.
   */
  read(seid: bigint): Promise<Uint8Array | undefined>;
  /** Operations so far (writes and deletes). */
  readonly operationCount: number;
}

/**
 * The state behind a {@link Transaction}: what the store and the write streams need of it
 * (ending it, collecting its operations, tracking its streams). Not part of the public API: the
 * function given to `store.transaction()` sees it only as a `Transaction`.
 */
export class TransactionState implements Transaction {
  readonly id: number;
  private readonly log: LogStructuredStore;
  /** Bytes of written values the transaction may hand to the cache (a small share of it). */
  private cacheBudgetBytes: number;
  private pending: PendingOp[] = [];
  private pendingBytes = 0;
  private readonly applied: AppliedOp[] = [];
  private spilling: Promise<void> = Promise.resolve();
  /** Appends chained on {@link spilling} and not yet settled: while any is, new appends queue behind. */
  private appendsQueued = 0;
  private spillError: unknown;
  private active = true;
  private openStreams = 0;
  /** It wrote (or streamed) an element: it is not a transaction that only deletes. */
  private wrote = false;
  /**
   * This transaction's newest operation per seid (for {@link read}), built at the first read from
   * the batches below. Why not kept up to date from the start: a bigint-keyed Map.set cost ~0.9 µs
   * per write, a third of `tx.write` in a bulk load of 1 M × 100 B, and most transactions never
   * read their own writes.
   */
  private latest: Map<bigint, PendingOp> | undefined;
  /** The batches already taken from {@link pending} (spilled), in order, until {@link latest} is built. */
  private taken: PendingOp[][] = [];
  private readonly reads: TransactionReads;

  /** Where large values are copied (staging.ts); without it every value is copied fresh. */
  private readonly staging: StagingPool | undefined;

  constructor(id: number, log: LogStructuredStore, cacheBytes: number, reads: TransactionReads, staging?: StagingPool) {
    this.id = id;
    this.log = log;
    this.reads = reads;
    this.staging = staging;
    // A bulk transaction would only churn the cache (and pay for it on every write).
    this.cacheBudgetBytes = Math.min(Math.floor(cacheBytes / 8), CACHE_BUDGET_MAX_BYTES);
  }

  private assertActive(): void {
    if (!this.active) throw new TransactionError(`transaction ${this.id} has ended: it can no longer be used`);
  }

  /** Create or replace the whole element `seid` with `value`. */
  write(seid: bigint, value: ElementValue): void {
    this.assertActive();
    checkSeid(seid);
    const view = viewOf(value);
    const staged = this.staging !== undefined && StagingPool.stages(view.length);
    const bytes = staged ? (this.staging as StagingPool).copy(view) : view.slice();
    const entry: WriteEntry = { kind: "write", seid, value: bytes, staged, op: undefined };
    this.wrote = true;
    this.latest?.set(seid, entry);
    this.pending.push(entry);
    this.pendingBytes += bytes.length;
    if (this.pendingBytes >= SPILL_BYTES) this.spill();
  }

  /**
   * Write element `seid` as a stream: bytes go to the log as they arrive, in parts, never held
   * whole in memory. Close the stream before the transaction's function returns; the element
   * replaces any earlier version when the transaction commits. Aborting the stream (or throwing
   * from the transaction) leaves the earlier version in place.
   */
  writeStream(seid: bigint): WritableStream<Uint8Array> {
    this.assertActive();
    checkSeid(seid);
    return createWriteStream(this, this.log, seid);
  }

  /** Delete element `seid` (deleting a missing element is allowed and changes nothing). */
  delete(seid: bigint): void {
    this.assertActive();
    checkSeid(seid);
    const entry: PendingOp = { kind: "delete", seid };
    this.latest?.set(seid, entry);
    this.pending.push(entry);
  }

  /** Read `seid` as this transaction sees it (see {@link Transaction.read}). */
  async read(seid: bigint): Promise<Uint8Array | undefined> {
    this.assertActive();
    checkSeid(seid);
    const latest = this.latestOf(seid);
    if (latest === undefined) return this.reads.readCommitted(seid);
    if (latest.kind === "delete") return undefined;
    if (latest.value !== undefined) return latest.value.slice();
    // On its way to the log (a spill or a closing stream): wait until it is there.
    if (latest.op === undefined) await this.spilling;
    if (this.spillError !== undefined) throw this.spillError;
    const op = latest.op;
    if (op === undefined) throw new TransactionError(`transaction ${this.id}: its write of seid ${seid} never reached the log`);
    if (op.value !== undefined) return op.value.slice();
    if (op.sizeBytes > this.reads.maxReadBytes) {
      throw new InvalidArgumentError(`seid ${seid} holds ${op.sizeBytes} bytes, over maxReadBytes ${this.reads.maxReadBytes}`);
    }
    // Uncommitted records cannot be reclaimed under this read: the cleaner and checkpoints wait
    // for the transaction turn, which this transaction holds.
    const location = { address: op.address, sizeBytes: op.sizeBytes, multipart: op.multipart !== undefined };
    return op.multipart === undefined
      ? readSingle(this.log, seid, location)
      : readMultipart(this.log, seid, location, op.multipart.parts);
  }

  /** The newest operation on `seid`, if any (builds {@link latest} on first use). */
  private latestOf(seid: bigint): PendingOp | undefined {
    if (this.latest === undefined) {
      const latest = new Map<bigint, PendingOp>();
      for (const batch of this.taken) for (const op of batch) latest.set(op.seid, op);
      for (const op of this.pending) latest.set(op.seid, op);
      this.taken = [];
      this.latest = latest;
    }
    return this.latest.get(seid);
  }

  /** Operations so far (writes and deletes). */
  get operationCount(): number {
    return this.applied.length + this.pending.length;
  }

  /** A stream of this transaction opened / closed. */
  trackStream(delta: 1 | -1): void {
    if (delta > 0) this.wrote = true;
    this.openStreams += delta;
  }

  /**
   * It only deletes (or does nothing): its commit may use the delete share of the full-disk
   * reserve (src/log/space.ts), so that a full store can always be emptied.
   */
  get onlyDeletes(): boolean {
    return !this.wrote;
  }

  /** False once the transaction has ended. */
  get isActive(): boolean {
    return this.active;
  }

  /** Append the write of `seid` produced elsewhere (a stream) after what is pending, in order. */
  enqueueApplied(seid: bigint, producer: () => Promise<WriteOp>): Promise<void> {
    const batch = this.takePending();
    // Registered now, in call order: a later tx.write of the same seid must win over it.
    const latest: WriteEntry = { kind: "write", seid, value: undefined, staged: false, op: undefined };
    this.wrote = true;
    if (this.latest !== undefined) this.latest.set(seid, latest);
    else this.taken.push([latest]);
    this.appendsQueued += 1;
    const run = this.spilling.then(async () => {
      await this.appendBatch(batch, 0);
      const op = await producer();
      latest.op = op;
      this.applied.push(op);
    });
    this.spilling = run
      .catch((error: unknown) => {
        this.spillError ??= error;
      })
      .then(() => {
        this.appendsQueued -= 1;
      });
    return run;
  }

  private takePending(): PendingOp[] {
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    // Kept for the read-your-writes map until it is built (one push per batch, not per write).
    if (this.latest === undefined && batch.length > 0) this.taken.push(batch);
    return batch;
  }

  private spill(): void {
    this.queueAppends(this.takePending(), 0);
  }

  /** Append `batch[from..]` after every append already queued, in the background. */
  private queueAppends(batch: PendingOp[], from: number): void {
    this.appendsQueued += 1;
    this.spilling = this.spilling
      .then(() => this.appendBatch(batch, from))
      .catch((error: unknown) => {
        this.spillError ??= error;
      })
      .then(() => {
        this.appendsQueued -= 1;
      });
  }

  private async appendBatch(batch: PendingOp[], from: number): Promise<void> {
    if (this.spillError !== undefined) return;
    for (let i = from; i < batch.length; ) {
      const ready = this.appendReady(batch, i);
      if (ready > 0) {
        i += ready;
        continue;
      }
      const op = batch[i++] as PendingOp;
      // No room in a flush buffer right now, or a value of several parts: wait for room.
      if (op.kind === "delete") {
        await appendRecord(this.log, RecordType.Delete, this.id, op.seid, 0, NO_BYTES);
        this.applied.push({ kind: "delete", seid: op.seid });
      } else {
        const value = op.value as Uint8Array; // a pending write holds its bytes
        const keep = this.mayKeep(op, value);
        this.noteAppended(op, value, await appendElement(this.log, this.id, op.seid, value, keep), keep);
      }
    }
  }

  /**
   * Append `batch[from]`, and the ops after it that fit the open flush buffer with it
   * (write-path.ts `tryAppendRun`), if a flush buffer has room right now: how many were
   * appended; 0 when `batch[from]` must take the waiting path.
   */
  private appendReady(batch: readonly PendingOp[], from: number): number {
    const run = tryAppendRun(this.log, this.id, batch, from, this.appendedAt);
    if (run > 0) return run;
    return this.appendNow(batch[from] as PendingOp) ? 1 : 0;
  }

  /** `op`'s record is in the log at `address` (alone, or in a run). */
  private readonly appendedAt = (op: PendingOp, address: number): void => {
    if (op.kind === "delete") {
      this.applied.push({ kind: "delete", seid: op.seid });
      return;
    }
    const value = op.value as Uint8Array; // a pending write holds its bytes
    const keep = this.mayKeep(op, value);
    this.noteAppended(op, value, singleWriteOp(op.seid, address, value, keep ? value : undefined), keep);
  };

  /**
   * Append `op` if a flush buffer has room for it right now (a single-part element or a delete):
   * true; else false, and nothing was appended.
   */
  private appendNow(op: PendingOp): boolean {
    const isDelete = op.kind === "delete";
    const body = isDelete ? NO_BYTES : (op.value as Uint8Array); // a pending write holds its bytes
    if (body.length > partBytesFor(this.log)) return false; // parts: the waiting path
    const address = tryAppendRecord(this.log, isDelete ? RecordType.Delete : RecordType.Data, this.id, op.seid, 0, body);
    if (address === undefined) return false;
    this.appendedAt(op, address);
    return true;
  }

  /** Whether the cache may keep `value` (taken from the budget once appended: {@link noteAppended}). */
  private mayKeep(op: WriteEntry, value: Uint8Array): boolean {
    // A staged value's buffer goes back to the pool: the cache must not keep it.
    return !op.staged && value.length <= this.cacheBudgetBytes;
  }

  private noteAppended(op: WriteEntry, value: Uint8Array, applied: WriteOp, kept: boolean): void {
    if (kept) this.cacheBudgetBytes -= value.length;
    this.applied.push(applied);
    // From now on tx.read finds it in the log; the bytes are kept only if the cache keeps them.
    op.op = applied;
    op.value = applied.value;
    if (op.staged) (this.staging as StagingPool).giveBack(value);
  }

  /** End the transaction: no more calls. */
  end(): void {
    this.active = false;
    this.latest = undefined;
    this.taken = [];
  }

  /**
   * End an aborted transaction, and wait until its background appends (spills) have
   * stopped: the next transaction's records must not interleave with them in the log.
   */
  async abandon(): Promise<void> {
    this.end();
    await this.spilling;
    // Writes never appended: their staged buffers go back (a spill that failed part way keeps
    // its batch's, left to the garbage collector).
    for (const op of this.pending) {
      if (op.kind === "write" && op.staged && op.value !== undefined) {
        (this.staging as StagingPool).giveBack(op.value);
        op.value = undefined;
      }
    }
    this.pending = [];
  }

  /**
   * Write everything still pending to the log and return the operations to apply, in
   * order. Fails (and nothing is applied) if a stream is still open or a background append failed.
   */
  finish(): AppliedOp[] | Promise<AppliedOp[]> {
    this.end();
    if (this.openStreams > 0) return this.finishWithOpenStreams();
    const batch = this.takePending();
    let from = 0;
    // Nothing queued (the common small transaction): append now, in this turn, while there is
    // room; the promise ticks of a queued append were a sixth of a relaxed one-write commit.
    if (this.appendsQueued === 0 && this.spillError === undefined) {
      while (from < batch.length) {
        const appended = this.appendReady(batch, from);
        if (appended === 0) break;
        from += appended;
      }
      if (from === batch.length) return this.applied;
    }
    this.queueAppends(batch, from);
    return this.finishQueued();
  }

  private async finishQueued(): Promise<AppliedOp[]> {
    await this.spilling;
    if (this.spillError !== undefined) throw this.spillError;
    return this.applied;
  }

  private async finishWithOpenStreams(): Promise<AppliedOp[]> {
    await this.spilling;
    throw new TransactionError(`transaction ${this.id} ended with ${this.openStreams} write stream(s) still open: close them before returning`);
  }
}
