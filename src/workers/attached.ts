/**
 * A store attached in a Worker: `await Store.attach(handle)` gives the Store API on the store the
 * owner thread opened.
 *
 * - **Transactions**: `transaction(fn)` takes a ticket of the shared turn at once (so the order is
 *   the order of the calls, across all threads), waits for it with `Atomics.waitAsync` (this
 *   Worker's event loop keeps running), then runs `fn` here. What `fn` writes is validated and
 *   copied at once and shipped to the owner in batches (a write stream's bytes as they arrive,
 *   with backpressure); at the end a Commit frame asks the owner to commit it through the one
 *   commit path. The promise resolves when the owner says so: once durable with
 *   `durability: "sync"`. If `fn` throws, an Abort frame drops everything it shipped.
 * - **Reads** never send a message (reader.ts).
 * - **Seids**: `allocateSeid()` is synchronous, so each Worker holds a lease of
 *   {@link SEID_LEASE} seids per space, refilled in the background when half is used.
 * - **close()** detaches this Worker only (the owner's store stays open for the others).
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { rebuildError, type DescribedError } from "../error-wire.ts";
import type { Socket } from "bun";
import { InvalidArgumentError, ReadOnlyError, StoreClosedError, TransactionError } from "../errors.ts";
import type { ElementValue, Transaction } from "../store/transaction.ts";
import { toBytes } from "../store/transaction.ts";
import { checkSeid, DEFAULT_SPACE, MAX_SPACE } from "../store/state/seids.ts";
import { isStoreHandle, type StoreHandle } from "./handle.ts";
import { levelCode, SEID_LEASE } from "./host.ts";
import { checkLevel, type ReplicationLevel } from "../replication/sync-levels.ts";
import type { TransactionOptions } from "../store/store.ts";
import { WorkerReader } from "./reader.ts";
import type { IoKind } from "../io/backend.ts";
import type { EntriesOptions } from "../store/read-path.ts";
import { StatsBoard } from "./shared-state.ts";
import { CLAIMS, TurnLock } from "./turn.ts";
import type { BackupInfo, BackupOptions, BackupProgress } from "../backup/backup.ts";
import { Frame, FrameBuilder, FrameReader, FrameSender, FrameSplitter, OP_DELETE, OP_WRITE } from "./wire.ts";

/** Bytes of small operations batched into one frame before it is sent. */
const OPS_BATCH_BYTES = 1 << 20;
/** Values larger than this travel as a stream (frames stay bounded). */
const STREAM_VALUE_BYTES = 16 << 20;
/** Bytes of one stream frame. */
const STREAM_CHUNK_BYTES = 4 << 20;
/** A write stream waits while more than this is queued for the socket. */
const BACKLOG_BYTES = 8 << 20;
/** Longest wait for the owner to welcome a new attachment. */
const ATTACH_TIMEOUT_MS = 10_000;

/** Options of `Store.attach`. */
export interface AttachOptions {
  /** Bytes of values this Worker caches (default: a quarter of the store's `cacheBytes`, at most 32 MiB). */
  cacheBytes?: number;
}

interface Lease {
  next: number;
  end: number;
  refilling: boolean;
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** Bytes of its own written values a Worker's transaction keeps for `tx.read` (its bytes also go to the owner). */
const READ_BACK_MAX_BYTES = 64 << 20;

type LatestWorkerOp = { kind: "write"; value: Uint8Array } | { kind: "delete" } | { kind: "unreadable"; why: string };

/** The transaction handed to `fn` in a Worker: the same {@link Transaction} interface. */
class WorkerTransaction implements Transaction {
  readonly id: number;
  private readonly store: AttachedStore;
  private batch: FrameBuilder;
  private ops = 0;
  private nextStream = 1;
  /** This transaction's newest operation per seid, for {@link read} (bounded: see READ_BACK_MAX_BYTES). */
  private readonly latest = new Map<bigint, LatestWorkerOp>();
  private keptBytes = 0;
  openStreams = 0;
  active = true;

  constructor(id: number, store: AttachedStore) {
    this.id = id;
    this.store = store;
    this.batch = this.newBatch();
  }

  private newBatch(): FrameBuilder {
    return new FrameBuilder(Frame.Ops, 4096).f64(this.id);
  }

  private assertActive(): void {
    if (!this.active) throw new TransactionError(`transaction ${this.id} has ended: it can no longer be used`);
  }

  write(seid: bigint, value: ElementValue): void {
    this.assertActive();
    checkSeid(seid);
    const bytes = toBytes(value);
    this.ops += 1;
    this.remember(seid, bytes);
    if (bytes.length > STREAM_VALUE_BYTES) {
      // A large value goes as a stream: the same element results (parts + Extents), frames stay bounded.
      this.sendBatch();
      const stream = this.nextStream++;
      this.store.send(new FrameBuilder(Frame.StreamOpen).f64(this.id).u32(stream).u64(seid).finish());
      for (let offset = 0; offset < bytes.length; offset += STREAM_CHUNK_BYTES) {
        const chunk = bytes.subarray(offset, Math.min(bytes.length, offset + STREAM_CHUNK_BYTES));
        this.store.send(new FrameBuilder(Frame.StreamData, chunk.length + 32).f64(this.id).u32(stream).raw(chunk).finish());
      }
      this.store.send(new FrameBuilder(Frame.StreamEnd).f64(this.id).u32(stream).u8(0).finish());
      return;
    }
    this.batch.u8(OP_WRITE).u64(seid).blob(bytes);
    if (this.batch.bytes >= OPS_BATCH_BYTES) this.sendBatch();
  }

  delete(seid: bigint): void {
    this.assertActive();
    checkSeid(seid);
    this.ops += 1;
    this.forgetKept(seid);
    this.latest.set(seid, { kind: "delete" });
    this.batch.u8(OP_DELETE).u64(seid);
    if (this.batch.bytes >= OPS_BATCH_BYTES) this.sendBatch();
  }

  writeStream(seid: bigint): WritableStream<Uint8Array> {
    this.assertActive();
    checkSeid(seid);
    this.sendBatch();
    const stream = this.nextStream++;
    this.ops += 1;
    this.forgetKept(seid);
    this.latest.set(seid, { kind: "unreadable", why: "was written as a stream" });
    this.openStreams += 1;
    this.store.send(new FrameBuilder(Frame.StreamOpen).f64(this.id).u32(stream).u64(seid).finish());
    let open = true;
    const end = (aborted: boolean) => {
      if (!open) return;
      open = false;
      this.openStreams -= 1;
      this.store.send(new FrameBuilder(Frame.StreamEnd).f64(this.id).u32(stream).u8(aborted ? 1 : 0).finish());
    };
    return new WritableStream<Uint8Array>({
      write: async (chunk) => {
        if (!this.active) throw new TransactionError(`transaction ${this.id} has ended: its write stream can no longer be written`);
        if (!(chunk instanceof Uint8Array)) throw new TypeError("writeStream() takes Uint8Array chunks");
        for (let offset = 0; offset < chunk.length; offset += STREAM_CHUNK_BYTES) {
          const part = chunk.subarray(offset, Math.min(chunk.length, offset + STREAM_CHUNK_BYTES));
          this.store.send(new FrameBuilder(Frame.StreamData, part.length + 32).f64(this.id).u32(stream).raw(part).finish());
          await this.store.backpressure();
        }
      },
      close: () => {
        if (!this.active) throw new TransactionError(`transaction ${this.id} ended before its write stream was closed`);
        end(false);
      },
      abort: () => end(true),
    });
  }

  /**
   * Read-your-writes: this transaction's own newest write or delete of `seid`, else the committed
   * value. Values are kept in this Worker for it up to {@link READ_BACK_MAX_BYTES} in all; an
   * element written as a stream, or past that budget, gets a `TransactionError` (its bytes went to
   * the owner thread, and reading them back from there is not built yet): read it after commit.
   */
  async read(seid: bigint): Promise<Uint8Array | undefined> {
    this.assertActive();
    checkSeid(seid);
    const latest = this.latest.get(seid);
    if (latest === undefined) return this.store.read(seid);
    if (latest.kind === "delete") return undefined;
    if (latest.kind === "write") return latest.value.slice();
    throw new TransactionError(`transaction ${this.id}: seid ${seid} ${latest.why} in this Worker's transaction; read it after the commit`);
  }

  private remember(seid: bigint, bytes: Uint8Array): void {
    this.forgetKept(seid);
    if (this.keptBytes + bytes.length > READ_BACK_MAX_BYTES) {
      this.latest.set(seid, { kind: "unreadable", why: `was written past the ${READ_BACK_MAX_BYTES}-byte read-back budget` });
      return;
    }
    this.keptBytes += bytes.length;
    this.latest.set(seid, { kind: "write", value: bytes });
  }

  private forgetKept(seid: bigint): void {
    const previous = this.latest.get(seid);
    if (previous?.kind === "write") this.keptBytes -= previous.value.length;
  }

  get operationCount(): number {
    return this.ops;
  }

  /** Send what is batched (before a stream frame, and at commit: order is kept on the wire). */
  sendBatch(): void {
    if (this.batch.bytes <= 13) return; // header + txId only
    this.store.send(this.batch.finish());
    this.batch = this.newBatch();
  }
}

/** A store attached in a Worker (see the module doc). Same API as `Store`. */
export class AttachedStore {
  /** Path of the store's file. */
  readonly path: string;
  /** This attachment's id (the owner thread is 1). */
  readonly attachmentId: number;
  private readonly handle: StoreHandle;
  /** The owner's seid space count (handle.spaces). */
  private readonly spaceCount: Int32Array;
  private readonly lock: TurnLock;
  private readonly reader: WorkerReader;
  private readonly board: StatsBoard;
  private readonly socket: Socket<undefined>;
  private readonly sender: FrameSender;
  private readonly committing = new Map<number, Pending>();
  private readonly requests = new Map<number, Pending>();
  /** A backup request's onProgress, by request id, while it runs. */
  private readonly progress = new Map<number, (progress: BackupProgress) => void>();
  private readonly leases = new Map<number, Lease>();
  private readonly spacesPool: number[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly context = new AsyncLocalStorage<WorkerTransaction>();
  private nextRequest = 1;
  private ownerGone = false;
  private closing: Promise<void> | undefined;
  private isOpen = true;

  private constructor(init: { handle: StoreHandle; id: number; reader: WorkerReader; socket: Socket<undefined>; sender: FrameSender }) {
    this.handle = init.handle;
    this.spaceCount = new Int32Array(init.handle.spaces);
    this.path = init.handle.path;
    this.attachmentId = init.id;
    this.lock = new TurnLock(init.handle.turn);
    this.reader = init.reader;
    this.board = new StatsBoard(init.handle.stats);
    this.socket = init.socket;
    this.sender = init.sender;
  }

  /** Attach to the store `handle` names (from `store.share()` in the owner thread). */
  static async attach(handle: unknown, options: AttachOptions = {}): Promise<AttachedStore> {
    if (!isStoreHandle(handle)) throw new InvalidArgumentError("Store.attach() takes the handle store.share() returned");
    const cacheBytes = options.cacheBytes ?? Math.min(Math.floor(handle.cacheBytes / 4), 32 << 20);
    if (!Number.isInteger(cacheBytes) || cacheBytes < 0) throw new InvalidArgumentError(`cacheBytes must be a non-negative integer, got ${cacheBytes}`);
    let store: AttachedStore | undefined;
    const splitter = new FrameSplitter();
    let welcome!: (value: { id: number; lease: { space: number; first: number; count: number } | undefined }) => void;
    let refuse!: (error: Error) => void;
    const welcomed = new Promise<{ id: number; lease: { space: number; first: number; count: number } | undefined }>((resolve, reject) => {
      welcome = resolve;
      refuse = reject;
    });
    let sender: FrameSender | undefined;
    const socket = await Bun.connect<undefined>({
      unix: handle.socket,
      socket: {
        data: (_socket, chunk) => {
          for (const frame of splitter.push(chunk)) {
            const reader = new FrameReader(frame);
            if (store !== undefined) store.onFrame(reader);
            else if (reader.type === Frame.Welcome) {
              const id = reader.u32();
              welcome({ id, ...reader.json<{ lease: { space: number; first: number; count: number } | undefined }>() });
            }
          }
        },
        drain: () => sender?.onDrain(),
        close: () => {
          refuse(new StoreClosedError(`the store ${handle.path} is closed (its owner thread is gone)`));
          store?.onOwnerGone();
        },
        error: () => store?.onOwnerGone(),
      },
    }).catch((error: unknown) => {
      throw new StoreClosedError(`cannot reach the owner of ${handle.path}: ${error instanceof Error ? error.message : String(error)} (is the store closed?)`);
    });
    sender = new FrameSender(socket);
    sender.send(new FrameBuilder(Frame.Hello).raw(new TextEncoder().encode(handle.secret)).finish());
    const timer = setTimeout(() => refuse(new StoreClosedError(`the owner of ${handle.path} did not answer within ${ATTACH_TIMEOUT_MS} ms`)), ATTACH_TIMEOUT_MS);
    let hello: { id: number; lease: { space: number; first: number; count: number } | undefined };
    try {
      hello = await welcomed;
    } catch (error) {
      socket.end();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    let reader: WorkerReader;
    try {
      reader = await WorkerReader.open(hello.id, handle, cacheBytes);
    } catch (error) {
      socket.end();
      throw error;
    }
    store = new AttachedStore({ handle, id: hello.id, reader, socket, sender });
    if (hello.lease !== undefined) store.addLease(hello.lease);
    return store;
  }

  // ───────────────────────────── the wire ─────────────────────────────

  /** @hidden Send a frame to the owner. */
  send(frame: Uint8Array): void {
    if (this.ownerGone) throw new StoreClosedError(`the store ${this.path} is closed (its owner thread is gone)`);
    this.sender.send(frame);
  }

  /** @hidden Wait while too much is queued for the owner. */
  backpressure(): Promise<void> {
    return this.sender.whenDrained(BACKLOG_BYTES);
  }

  private onFrame(frame: FrameReader): void {
    switch (frame.type) {
      case Frame.Committed: {
        const txId = frame.f64();
        this.committing.get(txId)?.resolve(undefined);
        this.committing.delete(txId);
        return;
      }
      case Frame.TxFailed: {
        const txId = frame.f64();
        this.committing.get(txId)?.reject(rebuildError(frame.json(), "the store's owner thread"));
        this.committing.delete(txId);
        return;
      }
      case Frame.Progress: {
        const id = frame.u32();
        const progress = frame.json<BackupProgress>();
        const report = this.progress.get(id);
        if (report !== undefined) {
          try {
            report(progress);
          } catch {
            // A throwing onProgress must not take the connection down (as on the owner).
          }
        }
        return;
      }
      case Frame.Response: {
        const id = frame.u32();
        this.progress.delete(id);
        const ok = frame.u8() === 1;
        const body = frame.json<unknown>();
        const pending = this.requests.get(id);
        this.requests.delete(id);
        if (ok) pending?.resolve(body);
        else pending?.reject(rebuildError(body as DescribedError, "the store's owner thread"));
        return;
      }
      default:
        return;
    }
  }

  private onOwnerGone(): void {
    if (this.ownerGone) return;
    this.ownerGone = true;
    this.sender.onClose();
    const error = new StoreClosedError(`the store ${this.path} is closed (its owner thread is gone)`);
    for (const pending of [...this.committing.values(), ...this.requests.values()]) pending.reject(error);
    this.committing.clear();
    this.requests.clear();
  }

  private request<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    try {
      this.assertOpen();
      const id = this.nextRequest++;
      const reply = new Promise<T>((resolve, reject) => this.requests.set(id, { resolve: resolve as (value: unknown) => void, reject }));
      this.send(new FrameBuilder(Frame.Request).u32(id).json({ op, args }).finish());
      return reply;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  // ───────────────────────────── state checks ─────────────────────────────

  /** True once `close()` has started (or the owner is gone). */
  get closed(): boolean {
    return !this.isOpen || this.ownerGone;
  }

  private assertOpen(): void {
    if (!this.isOpen) throw new StoreClosedError(`the store ${this.path} is closed in this Worker`);
    if (this.ownerGone) throw new StoreClosedError(`the store ${this.path} is closed (its owner thread is gone)`);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.handle.readOnly) throw new ReadOnlyError(`the store ${this.path} is open read-only`);
  }

  /** A store call inside this thread's own transaction callback that would wait for it. */
  private assertNotInTransaction(what: string): void {
    const tx = this.context.getStore();
    if (tx !== undefined && tx.active) {
      throw new TransactionError(`${what} inside transaction ${tx.id}'s callback would wait for that transaction: call it after the transaction`);
    }
  }

  // ───────────────────────────── seids ─────────────────────────────

  private addLease(lease: { space: number; first: number; count: number }): void {
    const current = this.leases.get(lease.space);
    if (current !== undefined && current.next < current.end) {
      // Keep using the current block; the new one follows it (blocks are not contiguous).
      const queued = { next: lease.first, end: lease.first + lease.count, refilling: false };
      this.pendingLeases.set(lease.space, queued);
      current.refilling = false;
      return;
    }
    this.leases.set(lease.space, { next: lease.first, end: lease.first + lease.count, refilling: false });
  }

  private readonly pendingLeases = new Map<number, Lease>();

  /** A seid never handed out before in `space` (default 1); never `0n`. Synchronous: from this Worker's lease. */
  allocateSeid(space: number = DEFAULT_SPACE): bigint {
    this.assertWritable();
    if (!Number.isInteger(space) || space < 1 || space > MAX_SPACE) {
      throw new InvalidArgumentError(`space must be an integer in [1, ${MAX_SPACE}], got ${space}`);
    }
    const high = BigInt(space) << 32n;
    for (;;) {
      let lease = this.leases.get(space);
      if (lease !== undefined && lease.next >= lease.end) {
        const queued = this.pendingLeases.get(space);
        this.pendingLeases.delete(space);
        if (queued !== undefined) this.leases.set(space, (lease = queued));
      }
      if (lease === undefined || lease.next >= lease.end) {
        this.refill(space);
        throw new InvalidArgumentError(
          lease === undefined
            ? `seid space ${space} has no lease in this Worker yet: await store.reserveSeids(${space}) once first (allocation in a Worker is synchronous from a lease)`
            : `this Worker used its lease of seids in space ${space} without a turn of its event loop: await store.reserveSeids(${space})`,
        );
      }
      const seid = high | BigInt(lease.next++);
      if (lease.end - lease.next < SEID_LEASE / 2) this.refill(space);
      // A seid of the lease that holds an element (written by hand since the lease was handed
      // out) is stepped over, as the owner's allocateSeid does: one lookup in the shared table.
      if (!this.reader.has(seid)) return seid;
    }
  }

  /** Make sure this Worker can allocate in `space` synchronously (fetches a lease if it has none). */
  async reserveSeids(space: number = DEFAULT_SPACE): Promise<void> {
    this.assertWritable();
    const lease = this.leases.get(space);
    if (lease !== undefined && lease.end - lease.next >= SEID_LEASE / 2) return;
    this.addLease(await this.request<{ space: number; first: number; count: number }>("lease", { space }));
  }

  private refill(space: number): void {
    const lease = this.leases.get(space);
    if (lease?.refilling === true || this.pendingLeases.has(space)) return;
    if (lease !== undefined) lease.refilling = true;
    this.request<{ space: number; first: number; count: number }>("lease", { space }).then(
      (block) => this.addLease(block),
      () => {
        if (lease !== undefined) lease.refilling = false;
      },
    );
  }

  /** A new seid space: a high half never handed out before (never 0). */
  createSeidSpace(): number {
    this.assertWritable();
    const space = this.spacesPool.shift();
    if (this.spacesPool.length < 2) void this.fillSpaces();
    if (space === undefined) {
      throw new InvalidArgumentError("this Worker has no seid space ready: await store.createSeidSpaceAsync() (or call createSeidSpace() after a turn of the event loop)");
    }
    return space;
  }

  /** A new seid space, asked of the owner (the asynchronous form of {@link createSeidSpace}). */
  async createSeidSpaceAsync(): Promise<number> {
    const lease = await this.request<{ space: number; first: number; count: number }>("createSpace");
    this.addLease(lease);
    return lease.space;
  }

  private spacesFilling = false;
  private async fillSpaces(): Promise<void> {
    if (this.spacesFilling) return;
    this.spacesFilling = true;
    try {
      while (this.spacesPool.length < 4 && !this.closed) this.spacesPool.push(await this.createSeidSpaceAsync());
    } catch {
      // closed meanwhile
    } finally {
      this.spacesFilling = false;
    }
  }

  // ───────────────────────────── transactions ─────────────────────────────

  /**
   * Run `fn` as a transaction, in FIFO order with every other thread's. Same contract as
   * `Store.transaction`: atomic, visible at once at commit, resolves once durable (`sync`) and,
   * when the store serves standbys, once they confirmed it as `options.replication` asks.
   */
  transaction<T>(fn: (tx: Transaction) => T | Promise<T>, options: TransactionOptions = {}): Promise<T> {
    let ticket: number | undefined;
    let level: ReplicationLevel | undefined;
    try {
      this.assertWritable();
      if (this.closing !== undefined) throw new StoreClosedError(`the store ${this.path} is closing in this Worker`);
      if (typeof fn !== "function") throw new InvalidArgumentError("transaction() takes a function");
      if (options.replication !== undefined) level = checkLevel(options.replication, "replication");
      this.assertNotInTransaction("transaction()");
      // Synchronous: the ticket is taken in call order (unless half the claim ring is queued:
      // then it waits for room first, see turn.ts).
      if (this.lock.outstanding < CLAIMS / 2) ticket = this.lock.takeNow(this.attachmentId);
    } catch (error) {
      return Promise.reject(error);
    }
    const run = this.runTransaction(ticket, fn, level);
    this.inFlight.add(run);
    const untrack = () => this.inFlight.delete(run);
    run.then(untrack, untrack);
    return run;
  }

  private async runTransaction<T>(ticket: number | undefined, fn: (tx: Transaction) => T | Promise<T>, level: ReplicationLevel | undefined): Promise<T> {
    // A ticket the owner skipped as orphaned (see turn.ts) is retaken; in practice never.
    while (ticket === undefined) ticket = await this.lock.take(this.attachmentId);
    await this.lock.waitFor(ticket, this.attachmentId, () => this.ownerGone);
    // The turn is ours: nobody else hands out transaction ids until we pass it on.
    const txId = (this.lock.txIds[0] as number) + 1;
    this.lock.txIds[0] = txId;
    const tx = new WorkerTransaction(txId, this);
    let result: T;
    try {
      if (this.ownerGone) throw new StoreClosedError(`the store ${this.path} is closed (its owner thread is gone)`);
      result = await this.context.run(tx, () => fn(tx));
    } catch (error) {
      tx.active = false;
      try {
        this.send(new FrameBuilder(Frame.Abort).f64(txId).f64(ticket).finish());
      } catch {
        // the owner is gone: it has nothing of ours to drop
      }
      throw error;
    }
    tx.active = false;
    const committed = new Promise<unknown>((resolve, reject) => this.committing.set(txId, { resolve, reject }));
    try {
      tx.sendBatch();
      this.send(new FrameBuilder(Frame.Commit).f64(txId).f64(ticket).u8(levelCode(level)).finish());
    } catch (error) {
      this.committing.delete(txId);
      throw error;
    }
    await committed;
    return result;
  }

  // ───────────────────────────── reads (no message) ─────────────────────────────

  /** The element's bytes as last committed, or `undefined` if there is none. */
  read(seid: bigint): Promise<Uint8Array | undefined> {
    try {
      this.assertOpen();
    } catch (error) {
      return Promise.reject(error);
    }
    return this.reader.read(seid);
  }

  /**
   * {@link read} without a promise (see `Store.readSync`): a hit in this Worker's cache or a small
   * value is a copy from memory or from the kernel's page cache through a read-only mapping of the
   * file; anything else is read with the thread blocked for the disk reads it needs. Every record
   * verified. Waits at most 1 s for a pin when all the store's pins are held (open read streams),
   * then throws `InvalidArgumentError`: prefer `read()`, which waits without blocking.
   * @throws InvalidArgumentError when the element is larger than `maxReadBytes`.
   */
  readSync(seid: bigint): Uint8Array | undefined {
    this.assertOpen();
    return this.reader.readSync(seid);
  }

  /**
   * Every element, or those of one space or seid range, as `[seid, bytes]` in ascending seid
   * order, read lazily (see `Store.entries`): the seids are taken when iteration starts, an
   * element deleted before it is reached is skipped.
   */
  async *entries(options: EntriesOptions = {}): AsyncGenerator<[bigint, Uint8Array], void, undefined> {
    this.assertOpen();
    for (const seid of this.reader.seidsIn(options)) {
      this.assertOpen();
      const value = await this.reader.read(seid);
      if (value !== undefined) yield [seid, value];
    }
  }

  /** The element's committed bytes as a stream (see `Store.readStream`). */
  readStream(seid: bigint): ReadableStream<Uint8Array> {
    this.assertOpen();
    return this.reader.readStream(seid);
  }

  /** True if the element exists (as last committed). */
  has(seid: bigint): boolean {
    this.assertOpen();
    return this.reader.has(seid);
  }

  /** The element's size in bytes, or `undefined` if there is none. */
  sizeOf(seid: bigint): number | undefined {
    this.assertOpen();
    return this.reader.sizeOf(seid);
  }

  /** Every seid space that exists, ascending, as `Store.spaces()` says on the owner (0, 1 and each one created). */
  spaces(): number[] {
    this.assertOpen();
    return Array.from({ length: Atomics.load(this.spaceCount, 0) }, (_, space) => space);
  }

  /** `"io_uring"` or `"portable"`: the I/O backend the owner thread uses. */
  get io(): IoKind {
    return this.handle.io;
  }

  /** Seids present in `space` (default 1), ascending. */
  seids(space: number = DEFAULT_SPACE): bigint[] {
    this.assertOpen();
    return this.reader.seids(space);
  }

  // ───────────────────────────── asked of the owner ─────────────────────────────

  /** Resolve once everything committed so far is durable. */
  async flush(): Promise<void> {
    this.assertNotInTransaction("flush()");
    await this.request("flush");
  }

  /** Write a checkpoint (on the owner thread). */
  async checkpoint(): Promise<void> {
    this.assertNotInTransaction("checkpoint()");
    await this.request("checkpoint");
  }

  /**
   * Back up the store (on the owner thread: one backup at a time per store, whichever thread
   * asks); see `Store.backup`. `onProgress` is called in this Worker as the owner reports.
   */
  async backup(target: string, options: BackupOptions = {}): Promise<BackupInfo> {
    this.assertNotInTransaction("backup()");
    const { onProgress, ...rest } = options;
    if (onProgress !== undefined && typeof onProgress !== "function") throw new InvalidArgumentError("onProgress must be a function");
    const id = this.nextRequest;
    if (onProgress !== undefined) this.progress.set(id, onProgress);
    try {
      return await this.request<BackupInfo>("backup", { target, options: rest, progress: onProgress !== undefined });
    } finally {
      this.progress.delete(id);
    }
  }

  /** Clean now (on the owner thread); see `Store.compact`. */
  async compact(options: { shrink?: boolean; utilisationPercent?: number } = {}): Promise<{ segmentsCleaned: number; bytesFreed: number }> {
    this.assertNotInTransaction("compact()");
    return this.request("compact", options);
  }

  /**
   * The owner's counters as last published (refreshed every 100 ms while Workers are attached),
   * with this Worker's own cache counters.
   */
  stats(): Record<string, unknown> & { worker: { attachmentId: number; cacheHits: number; cacheMisses: number; directRetries: number } } {
    this.assertOpen();
    const text = this.board.read();
    const owner = text === "" ? {} : (JSON.parse(text) as Record<string, unknown>);
    return { ...owner, worker: { attachmentId: this.attachmentId, cacheHits: this.reader.cacheHits, cacheMisses: this.reader.cacheMisses, directRetries: this.reader.directRetries } };
  }

  /** A handle for another Worker (the same one the owner gave out). */
  share(): StoreHandle {
    this.assertOpen();
    return this.handle;
  }

  /**
   * Detach this Worker: wait for its transactions in flight, then tell the owner and close this
   * Worker's descriptor. The store stays open for the owner and the other Workers; the last
   * holder's `close()` closes it.
   */
  close(): Promise<void> {
    try {
      this.assertNotInTransaction("close()");
    } catch (error) {
      return Promise.reject(error);
    }
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    if (!this.ownerGone) await this.request("detach").catch(() => {});
    this.isOpen = false;
    this.socket.end();
    await this.reader.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
