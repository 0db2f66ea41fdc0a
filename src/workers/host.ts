/**
 * The owner's side of a shared store: the thread that opened the store keeps the log (it alone
 * touches the file) and serves attached Workers over one socket each.
 *
 * - Every transaction, from any thread, takes a ticket of the shared turn lock (turn.ts). A Worker
 *   runs its callback itself while it holds the turn and ships its operations here (wire.ts); the
 *   owner appends them under the Worker's transaction id through a `TransactionState` and commits
 *   them through `CommitPath.commitLive` — the one commit path — then passes the turn on. So
 *   commits of all threads share flushes exactly as the owner's own do (group commit).
 * - A Worker's socket closing without a detach means it died: its open transaction is abandoned
 *   (records already in the log without a Commit are garbage, never applied), its turn and queued
 *   tickets are passed over, and its pins dropped. The store stays open for everyone else.
 * - The shared mapping table, segment index, pins and stats board (shared-state.ts) are kept
 *   current here, so Workers read without asking.
 *
 * @module
 */
import type { IoKind } from "../io/backend.ts";
import { randomBytes } from "node:crypto";
import type { Socket, UnixSocketListener } from "bun";
import type { BackupInfo, BackupOptions } from "../backup/backup.ts";
import type { ReplicationLevel } from "../replication/sync-levels.ts";
import { describeError } from "../error-wire.ts";
import { LssError, StoreClosedError, TransactionError } from "../errors.ts";
import type { RingDescriptor } from "../log/ring.ts";
import type { CommitObserver, CommitPath, StoreCore } from "../store/commit.ts";
import type { Location } from "../store/state/mapping.ts";
import { TransactionState } from "../store/transaction.ts";
import type { StagingPool } from "../store/staging.ts";
import type { StoreHandle } from "./handle.ts";
import { SharedMapping, SharedPins, SharedSegments, StatsBoard } from "./shared-state.ts";
import { OWNER_ID, OwnerTurns, TurnLock } from "./turn.ts";
import { Frame, FrameBuilder, FrameReader, FrameSender, FrameSplitter, OP_DELETE, OP_WRITE } from "./wire.ts";

/** Seids a Worker leases at a time per space (handed out synchronously by `allocateSeid`). */
export const SEID_LEASE = 1 << 16;
/** How often the owner refreshes the stats board while Workers are attached. */
export const STATS_REFRESH_MS = 100;

/** What the host needs of the store it serves (closures the Store facade hands in). */
export interface HostServices {
  readonly path: string;
  readonly core: StoreCore;
  readonly commits: CommitPath;
  readonly cacheBytes: number;
  /** Where the store's transactions stage large written values (src/store/staging.ts). */
  readonly staging: StagingPool;
  readonly maxReadBytes: number;
  readonly durability: "sync" | "relaxed";
  readonly readOnly: boolean;
  /** The I/O backend in use (`store.io`). */
  readonly io: IoKind;
  /** The committed value of `seid` (the store's read path): what a transaction reads of what it has not written. */
  readCommitted(seid: bigint): Promise<Uint8Array | undefined>;
  /** Throws the store's error when it cannot take writes. */
  assertWritable(): void;
  /** Before a transaction's records: the cleaner's throttle (writers wait for free segments). */
  throttle(): Promise<void>;
  /**
   * After a commit: durability (as the store's setting promises), checkpoints, the cleaner.
   * `deferFlush`: a queued transaction will ask for the flush (a short fallback timer asks too).
   */
  afterCommit(commitEnd: number, othersQueued: boolean, deferFlush: boolean): Promise<void>;
  /**
   * After `afterCommit`: the standbys' confirmation the transaction's replication level asks for
   * (undefined: the store's default), or undefined when the store serves no standbys.
   */
  replicated(commitEnd: number, level: ReplicationLevel | undefined): Promise<void> | undefined;
  flush(): Promise<void>;
  checkpoint(): Promise<void>;
  compact(options: { shrink?: boolean; utilisationPercent?: number }): Promise<unknown>;
  /** `store.backup` on the owner thread (a Worker's backup runs there: one backup at a time per store). */
  backup(target: string, options: BackupOptions): Promise<BackupInfo>;
  stats(): unknown;
  /** The last attachment left after the owner asked to close: close for real now. */
  lastDetached(): void;
  /** The number of attached Workers may have changed (one attached, or one went away). */
  attachedChanged(count: number): void;
}

interface OpenTransaction {
  readonly txId: number;
  readonly state: TransactionState;
  readonly streams: Map<number, WritableStreamDefaultWriter<Uint8Array>>;
  failure: unknown;
}

interface Connection {
  id: number;
  readonly sender: FrameSender;
  readonly splitter: FrameSplitter;
  /** Frames of one connection are handled one after the other. */
  chain: Promise<void>;
  authenticated: boolean;
  alive: boolean;
  tx: OpenTransaction | undefined;
}

/** Serves attached Workers for one store (see the module doc). */
export class WorkerHost implements CommitObserver {
  readonly lock: TurnLock;
  readonly turns: OwnerTurns;
  readonly mapping: SharedMapping;
  readonly segments: SharedSegments;
  readonly pins: SharedPins;
  readonly statsBoard: StatsBoard;
  /** Int32 [0]: the store's seid space count, for `spaces()` in Workers. */
  private readonly spaceCount = new Int32Array(new SharedArrayBuffer(4));
  private readonly services: HostServices;
  private readonly secret = randomBytes(32).toString("hex");
  private readonly socketName = `\0bloom-lss-${process.pid}-${randomBytes(8).toString("hex")}`;
  private readonly server: UnixSocketListener<Connection>;
  private readonly connections = new Map<number, Connection>();
  private nextId = OWNER_ID + 1;
  private statsTimer: ReturnType<typeof setInterval> | undefined;
  private ownerDetached = false;
  private stopped = false;
  /** Workers attached over the store's life, and those that died attached (for stats and tests). */
  attachedTotal = 0;
  deaths = 0;

  constructor(services: HostServices) {
    this.services = services;
    const { core, commits } = services;
    this.lock = new TurnLock();
    this.turns = new OwnerTurns(this.lock, (id) => this.connections.get(id)?.alive === true);
    this.mapping = new SharedMapping();
    this.segments = new SharedSegments();
    this.pins = new SharedPins();
    this.statsBoard = new StatsBoard();
    // Publish what exists now, then keep it current from the one commit path.
    this.mapping.beginWrite();
    for (const [seid, location] of core.map.entries()) this.mapping.set(seid, location);
    this.mapping.endWrite();
    this.publishSegments(true);
    Atomics.store(this.spaceCount, 0, core.spaces.spaceCount);
    core.spaces.onSpaceCount = (count) => Atomics.store(this.spaceCount, 0, count);
    core.observer = this;
    commits.shareTurns(this.turns, this.lock.txIds);
    this.server = Bun.listen<Connection>({
      unix: this.socketName,
      socket: {
        open: (socket) => {
          const connection: Connection = {
            id: 0,
            sender: new FrameSender(socket),
            splitter: new FrameSplitter(),
            chain: Promise.resolve(),
            authenticated: false,
            alive: true,
            tx: undefined,
          };
          socket.data = connection;
        },
        data: (socket, chunk) => this.onData(socket, chunk),
        drain: (socket) => socket.data.sender.onDrain(),
        close: (socket) => this.onClose(socket.data),
        error: (socket) => this.onClose(socket.data),
      },
    });
    this.refreshStats();
  }

  /** The cloneable handle a Worker attaches with. */
  handle(ring: RingDescriptor, segmentSize: number): StoreHandle {
    const { services } = this;
    return {
      kind: "bloom-lss/shared-store",
      version: 1,
      path: services.path,
      socket: this.socketName,
      secret: this.secret,
      turn: this.lock.shared,
      mapping: this.mapping.buffers,
      segments: this.segments.shared,
      pins: this.pins.shared,
      stats: this.statsBoard.shared,
      ring,
      segmentSize,
      maxReadBytes: services.maxReadBytes,
      cacheBytes: services.cacheBytes,
      durability: services.durability,
      readOnly: services.readOnly,
      io: services.io,
      spaces: this.spaceCount.buffer as SharedArrayBuffer,
    };
  }

  /** Workers attached now. */
  get attached(): number {
    let count = 0;
    for (const connection of this.connections.values()) if (connection.alive && connection.authenticated) count += 1;
    return count;
  }

  /** Tickets taken by anyone and not yet served (group commit reads it). */
  get queuedTickets(): number {
    return Math.max(0, this.lock.outstanding - 1);
  }

  /** Which of `seqs` a Worker's read has pinned (the cleaner and checkpointer ask through SegmentPins). */
  pinnedAmong(seqs: readonly number[]): Set<number> {
    return this.pins.pinnedAmong(seqs);
  }

  // ───────────────────────────── commit observer ─────────────────────────────

  begin(): void {
    // Segment index first: a location published below must be resolvable by then.
    this.publishSegments(false);
    this.mapping.beginWrite();
  }

  set(seid: bigint, location: Location): void {
    this.mapping.set(seid, location);
  }

  delete(seid: bigint): void {
    this.mapping.delete(seid);
  }

  end(): void {
    this.mapping.endWrite();
  }

  private publishSegments(force: boolean): void {
    const log = this.services.core.log;
    const live = log.liveSegmentSeqs();
    if (force) this.segments.publish(log.segmentState().live);
    else this.segments.publishIfChanged(log.tailSegmentSeq, live.length, () => log.segmentState().live);
  }

  // ───────────────────────────── connections ─────────────────────────────

  private onData(socket: Socket<Connection>, chunk: Uint8Array): void {
    const connection = socket.data;
    let frames: Uint8Array[];
    try {
      frames = connection.splitter.push(chunk);
    } catch {
      socket.end();
      return;
    }
    for (const frame of frames) {
      connection.chain = connection.chain.then(() => this.onFrame(socket, connection, new FrameReader(frame))).catch(() => {
        // A frame that breaks the protocol ends the connection (the Worker is then treated as gone).
        socket.end();
      });
    }
  }

  private async onFrame(socket: Socket<Connection>, connection: Connection, frame: FrameReader): Promise<void> {
    if (!connection.alive) return;
    if (!connection.authenticated) {
      if (frame.type !== Frame.Hello || new TextDecoder().decode(frame.rest()) !== this.secret) {
        socket.end();
        return;
      }
      connection.authenticated = true;
      connection.id = this.nextId++;
      this.connections.set(connection.id, connection);
      this.attachedTotal += 1;
      this.refreshStats();
      const lease = this.services.readOnly ? undefined : this.lease(1);
      connection.sender.send(new FrameBuilder(Frame.Welcome).u32(connection.id).json({ lease }).finish());
      return;
    }
    switch (frame.type) {
      case Frame.Ops:
        return this.onOps(connection, frame);
      case Frame.StreamOpen:
      case Frame.StreamData:
      case Frame.StreamEnd:
        return this.onStream(connection, frame);
      case Frame.Commit:
        return this.onCommit(connection, frame);
      case Frame.Abort:
        return this.onAbort(connection, frame);
      case Frame.Request:
        return this.onRequest(socket, connection, frame);
      default:
        throw new Error(`unexpected frame ${frame.type}`);
    }
  }

  /**
   * The Worker's open transaction, created at its first frame (it must hold the turn). The
   * cleaner's throttle runs here, before the transaction's first record, as it does before an
   * owner's callback: run later, the cleaner would count the segments holding the transaction's
   * not yet committed records as empty, and give them back under it.
   */
  private async openTx(connection: Connection, txId: number): Promise<OpenTransaction> {
    if (connection.tx !== undefined) {
      if (connection.tx.txId !== txId) throw new Error(`frames of transaction ${txId} while ${connection.tx.txId} is open`);
      return connection.tx;
    }
    if (this.lock.claimOf(this.lock.serving) !== connection.id) throw new Error(`transaction ${txId} without the turn`);
    let failure: unknown;
    try {
      this.services.assertWritable();
      await this.services.throttle();
    } catch (error) {
      failure = error;
    }
    const tx: OpenTransaction = {
      txId,
      state: new TransactionState(txId, this.services.core.log, this.services.cacheBytes, {
        readCommitted: (seid) => this.services.readCommitted(seid),
        maxReadBytes: this.services.maxReadBytes,
      }, this.services.staging),
      streams: new Map(),
      failure,
    };
    connection.tx = tx;
    return tx;
  }

  private async onOps(connection: Connection, frame: FrameReader): Promise<void> {
    const tx = await this.openTx(connection, frame.f64());
    if (tx.failure !== undefined) return;
    try {
      while (!frame.done) {
        const kind = frame.u8();
        const seid = frame.u64();
        if (kind === OP_WRITE) tx.state.write(seid, frame.blob());
        else if (kind === OP_DELETE) tx.state.delete(seid);
        else throw new Error(`unknown op ${kind}`);
      }
    } catch (error) {
      tx.failure ??= error;
    }
  }

  private async onStream(connection: Connection, frame: FrameReader): Promise<void> {
    const type = frame.type;
    const tx = await this.openTx(connection, frame.f64());
    const stream = frame.u32();
    if (tx.failure !== undefined) return;
    try {
      if (type === Frame.StreamOpen) {
        tx.streams.set(stream, tx.state.writeStream(frame.u64()).getWriter());
        return;
      }
      const writer = tx.streams.get(stream);
      if (writer === undefined) throw new Error(`write stream ${stream} is not open`);
      if (type === Frame.StreamData) {
        await writer.write(frame.rest().slice());
        return;
      }
      tx.streams.delete(stream);
      if (frame.u8() !== 0) await writer.abort();
      else await writer.close();
    } catch (error) {
      tx.failure ??= error;
    }
  }

  private async onCommit(connection: Connection, frame: FrameReader): Promise<void> {
    const txId = frame.f64();
    frame.f64(); // the ticket
    const level = levelFromCode(frame.u8());
    const tx = connection.tx ?? (await this.openTx(connection, txId));
    connection.tx = undefined;
    let commitEnd: number | undefined;
    try {
      try {
        if (tx.failure !== undefined) throw tx.failure;
        this.services.assertWritable();
        commitEnd = await this.services.commits.commitTransaction(tx.state);
      } catch (error) {
        await this.abandon(tx);
        throw error;
      } finally {
        this.passOnFrom(connection);
      }
      // Group commit across Workers: with tickets queued behind this commit, the flush is left
      // to the last of them (a Worker's next commit needs a round trip, so "seal on the next
      // turn of the event loop" would flush each commit nearly alone). See afterCommit.
      if (commitEnd !== undefined) {
        await this.services.afterCommit(commitEnd, this.queuedTickets > 0, this.queuedTickets > 0);
        // As on the owner: the standbys' confirmation the transaction's level asks for.
        const replicated = this.services.replicated(commitEnd, level);
        if (replicated !== undefined) await replicated;
      }
      connection.sender.send(new FrameBuilder(Frame.Committed).f64(txId).finish());
    } catch (error) {
      connection.sender.send(new FrameBuilder(Frame.TxFailed).f64(txId).json(describeError(error)).finish());
    }
  }

  private async onAbort(connection: Connection, frame: FrameReader): Promise<void> {
    frame.f64();
    const tx = connection.tx;
    connection.tx = undefined;
    if (tx !== undefined) await this.abandon(tx);
    this.passOnFrom(connection);
  }

  /** The transaction of `connection` is over: pass the turn on if it holds it. */
  private passOnFrom(connection: Connection): void {
    if (this.lock.claimOf(this.lock.serving) === connection.id && this.lock.hasWaiting) this.turns.passOn();
  }

  private async abandon(tx: OpenTransaction): Promise<void> {
    for (const writer of tx.streams.values()) await writer.abort().catch(() => {});
    tx.streams.clear();
    await tx.state.abandon().catch(() => {});
  }

  private async onRequest(socket: Socket<Connection>, connection: Connection, frame: FrameReader): Promise<void> {
    const requestId = frame.u32();
    const { op, args } = frame.json<{ op: string; args: Record<string, unknown> }>();
    try {
      let result: unknown;
      switch (op) {
        case "lease":
          result = this.lease(args.space as number);
          break;
        case "createSpace": {
          this.services.assertWritable();
          this.services.commits.dirty = true;
          const space = this.services.core.spaces.createSpace();
          result = this.lease(space);
          break;
        }
        case "flush":
          await this.services.flush();
          break;
        case "checkpoint":
          await this.services.checkpoint();
          break;
        case "compact":
          result = await this.services.compact(args as { shrink?: boolean; utilisationPercent?: number });
          break;
        case "stats":
          result = this.services.stats();
          break;
        case "backup": {
          // The Worker's onProgress cannot cross threads: each report travels as a Progress frame.
          const options = { ...(args.options as BackupOptions) };
          if (args.progress === true) {
            options.onProgress = (progress) => connection.sender.send(new FrameBuilder(Frame.Progress).u32(requestId).json(progress).finish());
          }
          result = await this.services.backup(args.target as string, options);
          break;
        }
        case "detach":
          connection.sender.send(new FrameBuilder(Frame.Response).u32(requestId).u8(1).json(null).finish());
          this.detach(connection);
          socket.end();
          return;
        default:
          throw new LssError("LSS_INVALID_ARGUMENT", `unknown request ${op}`);
      }
      connection.sender.send(new FrameBuilder(Frame.Response).u32(requestId).u8(1).json(result ?? null).finish());
    } catch (error) {
      connection.sender.send(new FrameBuilder(Frame.Response).u32(requestId).u8(0).json(describeError(error)).finish());
    }
  }

  /** A block of seids of `space` for a Worker's synchronous `allocateSeid`. */
  private lease(space: number): { space: number; first: number; count: number } {
    this.services.assertWritable();
    this.services.commits.dirty = true;
    const first = this.services.core.spaces.allocateBlock(space, SEID_LEASE);
    return { space, first, count: SEID_LEASE };
  }

  /** A connection left (detach) or died (its socket closed without a detach). */
  private onClose(connection: Connection | undefined): void {
    if (connection === undefined || !connection.alive) return;
    const died = connection.authenticated;
    if (died) this.deaths += 1;
    this.detach(connection);
  }

  private detach(connection: Connection): void {
    if (!connection.alive) return;
    connection.alive = false;
    connection.sender.onClose();
    this.pins.dropAll(connection.id);
    // After whatever frame of it is being handled: abandon its transaction, pass its turn over.
    connection.chain = connection.chain
      .then(async () => {
        const tx = connection.tx;
        connection.tx = undefined;
        if (tx !== undefined) await this.abandon(tx);
      })
      .finally(() => {
        this.connections.delete(connection.id);
        this.turns.passOnIfHeldBy(connection.id);
        this.refreshStats();
        if (this.ownerDetached && this.attached === 0) this.services.lastDetached();
      });
  }

  private refreshStats(): void {
    if (this.stopped) return;
    this.services.attachedChanged(this.attached);
    try {
      this.statsBoard.publish(JSON.stringify(this.services.stats()));
    } catch {
      // stats of a store closing: keep the last board
    }
    if (this.attached > 0 && this.statsTimer === undefined) {
      this.statsTimer = setInterval(() => this.refreshStats(), STATS_REFRESH_MS);
      this.statsTimer.unref?.();
    } else if (this.attached === 0 && this.statsTimer !== undefined) {
      clearInterval(this.statsTimer);
      this.statsTimer = undefined;
    }
  }

  /**
   * The owner called `close()`: resolve `lastDetached` once no Worker is attached (at once if
   * none is). With `detachWorkers`, end every attachment now (their calls get StoreClosedError).
   */
  ownerClosing(detachWorkers: boolean): void {
    this.ownerDetached = true;
    if (detachWorkers) {
      for (const connection of this.connections.values()) this.detach(connection);
      this.server.stop(true);
    }
    if (this.attached === 0) this.services.lastDetached();
  }

  /** Stop serving (the store is closing for real): waiters everywhere give up. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.statsTimer !== undefined) clearInterval(this.statsTimer);
    this.turns.close();
    this.server.stop(true);
    this.services.core.observer = undefined;
    this.services.core.spaces.onSpaceCount = undefined;
    this.services.commits.unshareTurns();
  }
}

/** A transaction's replication level on the wire (0: the store's default). */
const LEVEL_CODES: ReadonlyArray<ReplicationLevel | undefined> = [undefined, "async", "received", "durable", "applied"];

export function levelCode(level: ReplicationLevel | undefined): number {
  return LEVEL_CODES.indexOf(level);
}

function levelFromCode(code: number): ReplicationLevel | undefined {
  if (code >= LEVEL_CODES.length) throw new Error(`unknown replication level code ${code}`);
  return LEVEL_CODES[code];
}

export { StoreClosedError, TransactionError };
