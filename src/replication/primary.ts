/**
 * The primary's side of replication: `store.serveReplication(options)`.
 *
 * A `Bun.listen` server (TCP on 127.0.0.1 by default, or a Unix socket; TLS optional). Each
 * connection is a {@link Session}:
 *
 * 1. **Handshake** (auth.ts): nothing about the store is sent before the standby has proved the
 *    secret against this connection's fresh nonce. A failure is a log line, a `auth-failed` event
 *    with an {@link AuthenticationError}, a Refused frame and a closed socket. The standby's claimed
 *    epoch is checked here too: a newer one means a standby was promoted — this primary is
 *    **fenced** (event `fenced`, its synchronous commits fail with {@link FencedError}).
 * 2. **Start**: the standby names the primary log address it has applied up to, or none. If that
 *    log is still here and within `maxRetainedBytes` of the end, the session follows the durable
 *    tail from it; otherwise it **seeds** the standby (seed.ts: a base-only full backup over the
 *    socket) and then follows the tail from the base's exact point.
 * 3. **Streaming**: `log.durableUnits()` from the segment holding the start address (a unit may
 *    start before it; the standby skips records before it), each unit sent whole with its
 *    checksum. Flow control is a window: at most `maxInFlightBytes` of log sent and not yet
 *    durable on the standby, so a slow standby holds the follower back rather than memory.
 *
 * **Retention.** The follower holds the log from where it is (tail.ts). When a standby's
 * connection drops, the server keeps holding the log from the standby's last acknowledged
 * position, so a reconnect resumes without a seed. Both holds are capped: once the log past a
 * hold exceeds `maxRetainedBytes`, the hold is dropped (the session, if any, is closed) and the
 * standby will be re-seeded when it returns. The file therefore never grows by more than the cap
 * for a standby's sake.
 *
 * **Sync levels** (sync-levels.ts): every acknowledgement moves the waiters of commits.
 *
 * @module
 */
import fs from "node:fs";
import { AuthenticationError, FencedError, InvalidArgumentError, LogTruncatedError, StandbyError, StoreClosedError } from "../errors.ts";
import type { LogRetention } from "../log/log.ts";
import type { BackupHost } from "../backup/backup.ts";
import { runBackup, serialized } from "../backup/backup.ts";
import { ensureStoreId } from "../backup/identity.ts";
import { encodeManifest } from "../backup/manifest.ts";
import { checkNonce, macMatches, newNonce, primaryMac, secretBytes, standbyMac } from "./auth.ts";
import { Connection, Inbox, Msg, num, PROTOCOL_VERSION, str, type Message } from "./protocol.ts";
import { registerServer, serverOf } from "./registry.ts";
import { SocketTarget } from "./seed.ts";
import { isHeldUnit, primaryIdentity, type HeldUnit } from "./state.ts";
import { checkLevel, SyncWaiters, type ReplicationLevel, type ReplicationTimeoutPolicy } from "./sync-levels.ts";

/** TLS material for the server (Bun's `tls` options of `Bun.listen`). */
export interface ReplicationTlsOptions {
  /** PEM private key (string, or a file: `Bun.file(path)`). */
  key: string | Uint8Array | Blob;
  /** PEM certificate chain. */
  cert: string | Uint8Array | Blob;
  /** Optional passphrase of the key. */
  passphrase?: string;
}

/** Options of `store.serveReplication()`. Give `port` or `unix`. */
export interface ServeReplicationOptions {
  /** TCP port (0: any free port; read it from `server.port`). */
  port?: number;
  /** Interface to listen on. Default `"127.0.0.1"`: exposing the store is a deliberate choice. */
  host?: string;
  /** Path of a Unix socket to listen on instead of TCP. */
  unix?: string;
  /** The pre-shared secret (16..4096 bytes), the same on every standby. */
  secret: string | Uint8Array;
  /** Serve over TLS. */
  tls?: ReplicationTlsOptions;
  /** Most log kept for standbys that are behind or away, bytes. Default 1 GiB (1 MiB..1 TiB). */
  maxRetainedBytes?: number;
  /** The store's default replication level for its transactions. Default `"async"`. */
  replication?: ReplicationLevel;
  /** Longest a commit waits for a standby's confirmation, ms. Default 5 000 (1..3 600 000). */
  replicationTimeoutMs?: number;
  /** When the timeout passes: `"degrade"` to async (default) or `"fail"` the commit. */
  onReplicationTimeout?: ReplicationTimeoutPolicy;
  /** Most standbys connected at once. Default 16 (1..1 024). */
  maxStandbys?: number;
  /** Log sent to a standby and not yet durable there, bytes. Default 32 MiB (1 MiB..1 GiB). */
  maxInFlightBytes?: number;
  /** Bytes per base chunk when seeding a standby. Default 4 MiB. */
  seedChunkBytes?: number;
  /** Where log lines go (authentication failures, fencing, seeds). Default `console.warn`. */
  log?: (line: string) => void;
}

/** What the primary knows of one connected standby. */
export interface StandbyConnectionStats {
  /** The standby's id (random, kept in its file). */
  readonly id: string;
  readonly peer: string;
  readonly state: "handshake" | "seeding" | "streaming";
  /** End of the log sent to it (primary log address). */
  readonly sentAddress: number;
  /** Acknowledged received / durable-and-applied up to (primary log addresses). */
  readonly receivedAddress: number;
  readonly durableAddress: number;
  /** Durable log of the primary not yet durable on the standby, bytes. */
  readonly lagBytes: number;
  /** Transaction ids between the primary's last and the standby's last applied. */
  readonly lagTransactions: number;
  /** Commit time of the primary's last transaction minus that of the standby's last applied, ms (0 when caught up). */
  readonly lagMs: number;
}

/** `stats().replication` of a primary. */
export interface PrimaryReplicationStats {
  readonly role: "primary";
  /** Where it listens: `host:port` or the Unix socket path. */
  readonly address: string;
  readonly storeId: string;
  readonly epoch: number;
  /** The store's default level. */
  readonly level: ReplicationLevel;
  readonly connectedStandbys: number;
  readonly standbys: StandbyConnectionStats[];
  /** Commits no longer wait (a timeout with `degrade`), until a standby catches up. */
  readonly degraded: boolean;
  /** A standby has seen a newer epoch: this primary was replaced. */
  readonly fenced: boolean;
  readonly confirmedCommits: number;
  readonly timeouts: number;
  readonly degradedCommits: number;
  readonly authFailures: number;
  readonly seeds: number;
  /** Holds dropped at `maxRetainedBytes` (those standbys re-seed). */
  readonly retentionDrops: number;
  /**
   * Standbys re-seeded because they held log this primary lost in a crash (shipped before it was
   * durable here; counted in `seeds` too).
   */
  readonly divergedSeeds: number;
  /** Log held for standbys (the lowest hold to the log's end), bytes. */
  readonly retainedBytes: number;
  readonly bytesSent: number;
}

/** Events of a {@link ReplicationServer}. */
export interface ReplicationServerEvents {
  "auth-failed": (error: AuthenticationError, peer: string) => void;
  fenced: (error: FencedError) => void;
  degraded: (detail: string) => void;
  restored: (detail: string) => void;
  "standby-connected": (id: string, peer: string) => void;
  "standby-disconnected": (id: string, reason: string) => void;
  seed: (id: string, bytes: number) => void;
}

const KB = 1024;
const MB = 1024 * KB;
const DEFAULT_MAX_RETAINED_BYTES = 1024 * MB;
const DEFAULT_IN_FLIGHT_BYTES = 32 * MB;
const HANDSHAKE_TIMEOUT_MS = 5_000;
const HEARTBEAT_MS = 250;
/** How often holds are measured against `maxRetainedBytes`. */
const RETENTION_CHECK_MS = 100;
/** A stalled socket may hold at most this much of ours before the sender waits. */
const SOCKET_BACKLOG_BYTES = 4 * MB;

/** The `held` of a Start frame, checked (absent: a seed's point or an empty standby, nothing to check). */
function unitHeld(message: Message): HeldUnit | undefined {
  const held = message.header.held;
  if (held === null || held === undefined) return undefined;
  if (!isHeldUnit(held)) throw new StandbyError(`Start names a malformed held unit: ${JSON.stringify(held)}`);
  return { address: held.address, epoch: held.epoch };
}

function limit(value: number | undefined, name: string, fallback: number, min: number, max: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  return v;
}

type Listener = (...args: never[]) => void;

/** A replication server (see the module doc). Close it with {@link close}; the store's close does too. */
export class ReplicationServer {
  /** The TCP port really listened on (undefined for a Unix socket). */
  readonly port: number | undefined;
  /** `host:port` or the Unix socket path. */
  readonly address: string;
  readonly storeId: string;
  readonly epoch: number;
  /** @internal */ readonly host: BackupHost;
  /** @internal */ readonly secret: Uint8Array;
  /** @internal */ readonly level: ReplicationLevel;
  /** @internal */ readonly limits: { maxRetainedBytes: number; maxInFlightBytes: number; maxStandbys: number; seedChunkBytes: number };
  /** @internal */ readonly sync: SyncWaiters;
  /** @internal */ readonly sessions = new Set<Session>();
  /** Holds for standbys that are away, by standby id. */
  private readonly held = new Map<string, LogRetention>();
  private readonly listeners = new Map<keyof ReplicationServerEvents, Listener[]>();
  private readonly listener: { stop(closeActive?: boolean): void };
  private readonly timers: Array<ReturnType<typeof setInterval>> = [];
  private readonly logLine: (line: string) => void;
  private closing: Promise<void> | undefined;
  /** End of the last user commit of this thread (what `caughtUp` on a standby waits for). */
  lastCommitEnd = 0;
  /** @internal */ readonly counters = { authFailures: 0, seeds: 0, retentionDrops: 0, divergedSeeds: 0, bytesSent: 0 };

  private constructor(init: {
    host: BackupHost;
    secret: Uint8Array;
    options: ServeReplicationOptions;
    identity: { storeId: string; epoch: number };
    listen: (server: ReplicationServer) => Listening;
  }) {
    const { options } = init;
    this.host = init.host;
    this.secret = init.secret;
    this.storeId = init.identity.storeId;
    this.epoch = init.identity.epoch;
    this.level = checkLevel(options.replication ?? "async", "replication");
    this.limits = {
      maxRetainedBytes: limit(options.maxRetainedBytes, "maxRetainedBytes", DEFAULT_MAX_RETAINED_BYTES, MB, 1024 * 1024 * MB),
      maxInFlightBytes: limit(options.maxInFlightBytes, "maxInFlightBytes", DEFAULT_IN_FLIGHT_BYTES, MB, 1024 * MB),
      maxStandbys: limit(options.maxStandbys, "maxStandbys", 16, 1, 1024),
      seedChunkBytes: limit(options.seedChunkBytes, "seedChunkBytes", 4 * MB, 64 * KB, 64 * MB - 64 * KB),
    };
    const policy = options.onReplicationTimeout ?? "degrade";
    if (policy !== "degrade" && policy !== "fail") throw new InvalidArgumentError(`onReplicationTimeout must be "degrade" or "fail", got ${JSON.stringify(policy)}`);
    this.logLine = options.log ?? ((line) => console.warn(line));
    this.sync = new SyncWaiters({
      level: this.level,
      timeoutMs: limit(options.replicationTimeoutMs, "replicationTimeoutMs", 5_000, 1, 3_600_000),
      policy,
      emit: (event, detail) => {
        this.log(detail);
        this.emit(event, detail);
      },
    });
    // Commits before serving are before this: a standby at or past it has them all.
    this.lastCommitEnd = init.host.core.log.appendedEnd;
    const listening = init.listen(this);
    this.listener = listening.listener;
    this.port = listening.port;
    this.address = listening.address;
    this.timers.push(setInterval(() => this.checkRetention(), RETENTION_CHECK_MS));
    this.timers.push(setInterval(() => this.heartbeat(), HEARTBEAT_MS));
    for (const timer of this.timers) timer.unref?.();
  }

  /** Start serving `host`'s store. One server per store. */
  static async start(host: BackupHost, options: ServeReplicationOptions): Promise<ReplicationServer> {
    if (typeof options !== "object" || options === null) throw new InvalidArgumentError("serveReplication() takes an options object");
    const secret = secretBytes(options.secret, "primary");
    if (serverOf(host.core) !== undefined) throw new InvalidArgumentError("this store already serves replication: close that server first");
    const log = host.core.log;
    if (log.closed) throw new StoreClosedError("the store is closed");
    if (log.readOnly) throw new InvalidArgumentError("a read-only store cannot serve replication (it could not record its identity and epoch)");
    if ((options.port === undefined) === (options.unix === undefined)) throw new InvalidArgumentError("serveReplication() takes either port or unix");
    const identity = await host.commits.exclusive(() => primaryIdentity(log, () => ensureStoreId(log)));
    const server = new ReplicationServer({ host, secret, options, identity, listen: (s) => listen(s, options) });
    registerServer(host.core, server);
    return server;
  }

  /** Listen to an event. */
  on<E extends keyof ReplicationServerEvents>(event: E, listener: ReplicationServerEvents[E]): this {
    const list = this.listeners.get(event) ?? [];
    list.push(listener as Listener);
    this.listeners.set(event, list);
    return this;
  }

  /** @internal */
  emit<E extends keyof ReplicationServerEvents>(event: E, ...args: Parameters<ReplicationServerEvents[E]>): void {
    for (const listener of this.listeners.get(event) ?? []) {
      try {
        (listener as unknown as (...a: Parameters<ReplicationServerEvents[E]>) => void)(...args);
      } catch {
        // a listener's failure is not the server's
      }
    }
  }

  /** @internal */
  log(line: string): void {
    try {
      this.logLine(`bloom-lss replication: ${line}`);
    } catch {
      // logging must never break replication
    }
  }

  /** @internal A commit ended at `end`: wait as its level asks. */
  afterCommit(end: number, level: ReplicationLevel | undefined): Promise<void> {
    if (end > this.lastCommitEnd) this.lastCommitEnd = end;
    const wanted = level === undefined ? this.level : checkLevel(level, "replication");
    if (this.closing !== undefined) return Promise.resolve();
    return this.sync.wait(end, wanted);
  }

  /** @internal The primary learned of a newer epoch. */
  fence(epoch: number, peer: string): FencedError {
    const error = new FencedError(
      `this primary (epoch ${this.epoch}) has been replaced: standby ${peer} has seen epoch ${epoch}; its writes are no longer replicated`,
      this.epoch,
    );
    if (this.sync.fenced === undefined) {
      this.log(error.message);
      this.sync.fence(error);
      this.emit("fenced", error);
    }
    return error;
  }

  /** @internal A standby's connection is authenticated: one session per standby id. */
  admit(session: Session): boolean {
    for (const other of this.sessions) {
      // The same standby again: its old connection is dead or stalled (a proxy kept it open).
      if (other !== session && other.standbyId === session.standbyId) other.conn.abort(new StandbyError("replaced by a newer connection of the same standby"));
    }
    const live = [...this.sessions].filter((s) => s.authenticated && !s.conn.closed && s !== session).length;
    return live < this.limits.maxStandbys;
  }

  /** @internal A standby will follow from `address`: the hold kept for it while it was away can go once the follower holds. */
  releaseHold(standbyId: string): void {
    this.takeHold(standbyId)?.release();
  }

  /** @internal The hold kept for a standby while it was away, handed to its new session (which releases it). */
  takeHold(standbyId: string): LogRetention | undefined {
    const hold = this.held.get(standbyId);
    this.held.delete(standbyId);
    return hold;
  }

  /**
   * @internal A standby's connection ended: keep `hold` (the session's own, handed over: it
   * already holds everything the standby may resume from) until the standby returns, unless it is
   * past `maxRetainedBytes` or the server is closing.
   *
   * Handed over, not taken again from an address: a new retention can only be taken on log that is
   * still held, and the address a standby acknowledges (its applied position) can lie below what
   * the session held; taking it failed, nothing was held, and the returning standby found its log
   * reused and re-seeded (the network test, about 1 run in 40 under load).
   */
  keepHold(standbyId: string, hold: LogRetention): void {
    this.releaseHold(standbyId);
    if (hold.released) return;
    if (this.closing !== undefined || this.host.core.log.appendedEnd - hold.address > this.limits.maxRetainedBytes) {
      hold.release();
      return;
    }
    this.held.set(standbyId, hold);
  }

  private checkRetention(): void {
    const log = this.host.core.log;
    if (log.closed) return;
    const end = log.appendedEnd;
    const cap = this.limits.maxRetainedBytes;
    for (const [id, hold] of this.held) {
      if (end - hold.address > cap) {
        hold.release();
        this.held.delete(id);
        this.counters.retentionDrops += 1;
        this.log(`dropped the log held for standby ${id} (away, more than maxRetainedBytes ${cap} behind): it will re-seed`);
      }
    }
    for (const session of this.sessions) {
      const from = session.holdAddress;
      if (from !== undefined && end - from > cap) {
        this.counters.retentionDrops += 1;
        this.log(`standby ${session.standbyId} (${session.conn.peer}) is more than maxRetainedBytes ${cap} behind: disconnected, it will re-seed`);
        session.dropForRetention();
      } else session.capAckHold(end - cap);
    }
  }

  private heartbeat(): void {
    for (const session of this.sessions) session.heartbeat();
  }

  /** Bytes of log held for standbys (lowest hold to the log's end). */
  private retainedBytes(): number {
    const log = this.host.core.log;
    let low = Number.POSITIVE_INFINITY;
    for (const hold of this.held.values()) low = Math.min(low, hold.address);
    for (const session of this.sessions) {
      if (session.holdAddress !== undefined) low = Math.min(low, session.holdAddress);
      const ack = session.ackHoldAddress;
      if (ack !== undefined) low = Math.min(low, ack);
    }
    return Number.isFinite(low) ? Math.max(0, log.appendedEnd - low) : 0;
  }

  stats(): PrimaryReplicationStats {
    const standbys = [...this.sessions].filter((s) => s.authenticated && !s.conn.closed).map((s) => s.stats());
    let bytesSent = this.counters.bytesSent;
    for (const s of this.sessions) bytesSent += s.conn.bytesOut;
    return {
      role: "primary",
      address: this.address,
      storeId: this.storeId,
      epoch: this.epoch,
      level: this.level,
      connectedStandbys: standbys.length,
      standbys,
      degraded: this.sync.degraded,
      fenced: this.sync.fenced !== undefined,
      confirmedCommits: this.sync.counters.confirmed,
      timeouts: this.sync.counters.timeouts,
      degradedCommits: this.sync.counters.degradedCommits,
      authFailures: this.counters.authFailures,
      seeds: this.counters.seeds,
      retentionDrops: this.counters.retentionDrops,
      divergedSeeds: this.counters.divergedSeeds,
      retainedBytes: this.retainedBytes(),
      bytesSent,
    };
  }

  /**
   * @internal What the server and each session are doing, for a test's failure message. Not an
   * API; the shape may change.
   */
  diagnostics(): Record<string, unknown> {
    const log = this.host.core.log;
    return {
      lastCommitEnd: this.lastCommitEnd,
      stableAddress: log.stableAddress,
      appendedEnd: log.appendedEnd,
      awayHolds: [...this.held].map(([id, hold]) => `${id.slice(0, 8)}@${hold.address}`),
      sessions: [...this.sessions].map((s) => s.diagnostics()),
      sync: { waiting: this.sync.waiting, degraded: this.sync.degraded },
    };
  }

  /**
   * Stop listening, close every standby's connection, release every hold. Waiting commits
   * resolve. Safe to call twice. Inside a transaction's callback it throws `TransactionError` (a
   * standby being seeded holds it up until it gets the transaction turn).
   */
  close(): Promise<void> {
    try {
      // It waits for its sessions, and a seeding one takes the transaction turn: inside a
      // transaction's callback that would wait for the callback itself.
      this.host.commits.refuseInsideCallback("server.close()");
    } catch (error) {
      return Promise.reject(error);
    }
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    try {
      this.listener.stop(true);
    } catch {
      // already stopped
    }
    const ending = [...this.sessions].map((s) => s.end(new StoreClosedError("the primary is closing")));
    await Promise.allSettled(ending);
    for (const hold of this.held.values()) hold.release();
    this.held.clear();
    this.sync.close();
    if (serverOf(this.host.core) === this) registerServer(this.host.core, undefined);
  }
}

interface SocketData {
  session?: Session;
}

/** A listening socket, as the server keeps it. */
interface Listening {
  listener: { stop(closeActive?: boolean): void };
  port: number | undefined;
  address: string;
}

function listen(server: ReplicationServer, options: ServeReplicationOptions): Listening {
  const handlers = {
    open(socket: Bun.Socket<SocketData>) {
      const session = new Session(server, socket);
      socket.data = { session };
    },
    data(socket: Bun.Socket<SocketData>, chunk: Uint8Array) {
      socket.data?.session?.conn.data(chunk);
    },
    drain(socket: Bun.Socket<SocketData>) {
      socket.data?.session?.conn.drain();
    },
    close(socket: Bun.Socket<SocketData>, error?: Error) {
      socket.data?.session?.conn.socketClosed(error);
    },
    error(socket: Bun.Socket<SocketData>, error: Error) {
      socket.data?.session?.conn.socketClosed(error);
    },
  };
  // The public type says Blob (a Bun.file is one) so the shipped .d.ts needs no Bun types; Bun's
  // listener takes its own file type, which is what a Blob here is at run time.
  type BunTlsFile = string | Uint8Array | ReturnType<typeof Bun.file>;
  const tls =
    options.tls === undefined
      ? undefined
      : { key: options.tls.key as BunTlsFile, cert: options.tls.cert as BunTlsFile, passphrase: options.tls.passphrase };
  if (options.unix !== undefined) {
    if (typeof options.unix !== "string" || options.unix.length === 0) throw new InvalidArgumentError("unix must be a socket path");
    // A stale socket file of a dead server would make listen fail; only ever remove a socket.
    try {
      if (fs.lstatSync(options.unix).isSocket()) fs.rmSync(options.unix);
    } catch {
      // missing
    }
    const listener = Bun.listen<SocketData>({ unix: options.unix, socket: handlers, ...(tls ? { tls } : {}) });
    return { listener, port: undefined, address: options.unix };
  }
  const hostname = options.host ?? "127.0.0.1";
  const port = options.port as number;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`port must be an integer in [0, 65535], got ${String(port)}`);
  const listener = Bun.listen<SocketData>({ hostname, port, socket: handlers, ...(tls ? { tls } : {}) });
  return { listener, port: listener.port, address: `${hostname}:${listener.port}` };
}

/** One standby's connection, from accept to close. */
class Session {
  readonly server: ReplicationServer;
  readonly conn: Connection;
  private readonly inbox = new Inbox();
  authenticated = false;
  standbyId = "";
  state: "handshake" | "seeding" | "streaming" = "handshake";
  /** Lowest log address this session holds (undefined: none). */
  holdAddress: number | undefined;
  private readonly abort = new AbortController();
  private sent = 0;
  private acked = { received: 0, durable: 0, position: 0, transaction: 0, commitTime: null as number | null };
  /** The log held from the acknowledged position while this session streams (see stream()). */
  private ackHold: LogRetention | undefined;
  private ackWaiter: (() => void) | undefined;
  private target: SocketTarget | undefined;
  private running: Promise<void> = Promise.resolve();
  /** What stream() waits on (for diagnostics). */
  private phase = "";

  constructor(server: ReplicationServer, socket: Bun.Socket<SocketData>) {
    this.server = server;
    this.conn = new Connection(socket);
    server.sessions.add(this);
    this.conn.onMessage = (message) => this.onMessage(message);
    this.conn.onClose((reason) => this.closed(reason));
    this.running = this.handshake().catch((error: unknown) => this.failed(error));
  }

  private onMessage(message: Message): void {
    if (!this.authenticated) {
      this.inbox.push(message);
      return;
    }
    switch (message.type) {
      case Msg.Start:
        if (this.state !== "handshake") throw new StandbyError("Start sent twice");
        this.running = this.run(message.header.from === null ? null : num(message, "from"), unitHeld(message)).catch((error: unknown) => this.failed(error));
        return;
      case Msg.Ack:
        this.onAck(message);
        return;
      case Msg.SeedAck:
        this.target?.acknowledged(str(message, "name"));
        return;
      case Msg.Ping:
        this.conn.send(Msg.Pong, { end: this.server.lastCommitEnd, stable: this.server.host.core.log.stableAddress });
        return;
      default:
        throw new StandbyError(`unexpected frame ${message.type} from a standby`);
    }
  }

  private async handshake(): Promise<void> {
    const hello = await this.inbox.next(HANDSHAKE_TIMEOUT_MS, "Hello");
    if (hello.type !== Msg.Hello) throw new AuthenticationError(`the peer spoke before authenticating (frame ${hello.type})`);
    if (hello.header.version !== PROTOCOL_VERSION) throw new AuthenticationError(`protocol version ${String(hello.header.version)} (this primary speaks ${PROTOCOL_VERSION})`);
    const standbyNonce = checkNonce(str(hello, "nonce"), "standby");
    const claimedStore = str(hello, "storeId", 128);
    const claimedEpoch = num(hello, "epoch");
    const standbyId = str(hello, "standbyId", 128);
    const primaryNonce = newNonce();
    this.conn.send(Msg.Challenge, { nonce: primaryNonce });
    const auth = await this.inbox.next(HANDSHAKE_TIMEOUT_MS, "Auth");
    if (auth.type !== Msg.Auth) throw new AuthenticationError(`expected Auth, got frame ${auth.type}`);
    const expected = standbyMac(this.server.secret, { standbyNonce, primaryNonce, storeId: claimedStore, epoch: claimedEpoch, standbyId });
    if (!macMatches(auth.header.mac, expected)) {
      throw new AuthenticationError("the standby's proof does not match: a wrong secret, or a replayed handshake");
    }
    if (claimedStore !== "" && claimedStore !== this.server.storeId) {
      throw new AuthenticationError(`the standby follows another store (${claimedStore}); this primary serves ${this.server.storeId}`);
    }
    if (claimedEpoch > this.server.epoch) {
      const error = this.server.fence(claimedEpoch, this.conn.peer);
      this.conn.send(Msg.Refused, { code: error.code, message: error.message, epoch: this.server.epoch });
      this.conn.close(error);
      return;
    }
    this.standbyId = standbyId;
    this.authenticated = true;
    if (!this.server.admit(this)) {
      const error = new StandbyError(`this primary already serves maxStandbys (${this.server.limits.maxStandbys}) standbys`);
      this.conn.send(Msg.Refused, { code: error.code, message: error.message });
      this.conn.close(error);
      return;
    }
    const mac = primaryMac(this.server.secret, { standbyNonce, primaryNonce, storeId: this.server.storeId, epoch: this.server.epoch });
    this.conn.send(Msg.Welcome, { storeId: this.server.storeId, epoch: this.server.epoch, mac });
    this.server.emit("standby-connected", standbyId, this.conn.peer);
  }

  private failed(error: unknown): void {
    const err = error instanceof Error ? error : new StandbyError(String(error));
    if (err instanceof AuthenticationError) {
      this.server.counters.authFailures += 1;
      this.server.log(`refused ${this.conn.peer}: ${err.message}`);
      this.server.emit("auth-failed", err, this.conn.peer);
      this.conn.send(Msg.Refused, { code: err.code, message: "authentication failed" });
    } else if (!this.conn.closed && !(err instanceof StoreClosedError)) {
      this.server.log(`standby ${this.standbyId || this.conn.peer}: ${err.message}`);
      this.conn.send(Msg.Refused, { code: (err as { code?: string }).code ?? "LSS_STANDBY", message: err.message });
    }
    this.conn.close(err);
  }

  private onAck(message: Message): void {
    const received = num(message, "received");
    const durable = num(message, "durable");
    this.acked = {
      received: Math.max(this.acked.received, received),
      durable: Math.max(this.acked.durable, durable),
      position: num(message, "position"),
      transaction: num(message, "transaction"),
      commitTime: typeof message.header.commitTime === "number" ? message.header.commitTime : null,
    };
    this.server.sync.acknowledge(this.acked.received, this.acked.durable);
    const hold = this.ackHold;
    if (hold !== undefined && !hold.released) {
      const segmentSize = this.server.host.core.log.segmentSize;
      const start = Math.floor(this.acked.position / segmentSize) * segmentSize;
      if (start > hold.address) hold.advance(start);
    }
    const wake = this.ackWaiter;
    this.ackWaiter = undefined;
    wake?.();
  }

  /** Serve a Start: follow from `from`, or seed first. `held`: the last unit the standby holds. */
  private async run(from: number | null, held: HeldUnit | undefined): Promise<void> {
    const log = this.server.host.core.log;
    // The hold kept while the standby was away goes only once the new follower holds the log
    // itself (stream() releases it after its first unit): released first, a checkpoint could free
    // the segment in between, and the standby re-seeded (seen in the network test).
    const awayHold = this.server.takeHold(this.standbyId);
    try {
      if (from !== null && held !== undefined && !(await this.stillOurs(held))) {
        // Shipped before it was durable here, then lost by a crash of this primary: the standby
        // holds log this primary's history does not have. Only a new copy makes it a copy again.
        this.server.counters.divergedSeeds += 1;
        this.server.log(`standby ${this.standbyId}: its log unit at ${held.address} (epoch ${held.epoch}) is not in this primary's log (it was lost in a crash before it was durable here): re-seeding`);
        from = null;
      }
      // Units past the stable address are this open's, shipped as their writes were issued (a
      // reconnect in the same open): the follower hands them out from there.
      const end = held !== undefined && held.epoch === log.writeEpoch ? log.appendedEnd : log.stableAddress;
      if (from !== null && from <= end && log.appendedEnd - from <= this.server.limits.maxRetainedBytes) {
        try {
          await this.stream(from, awayHold);
          return;
        } catch (error) {
          if (!(error instanceof LogTruncatedError)) throw error;
          this.server.log(`standby ${this.standbyId}: the log at ${from} is gone (${error.message}): re-seeding`);
        }
      }
    } finally {
      awayHold?.release();
    }
    await this.seed();
  }

  private async seed(): Promise<void> {
    const { host } = this.server;
    const log = host.core.log;
    this.state = "seeding";
    this.conn.send(Msg.SeedBegin, {});
    // Held from before the base's point until the follower holds from it: no gap can be reused.
    const segmentStart = Math.floor(log.appendedEnd / log.segmentSize) * log.segmentSize;
    const hold = log.retain(segmentStart);
    this.holdAddress = segmentStart;
    try {
      const target = new SocketTarget(this.conn);
      this.target = target;
      await serialized(host.core, () => runBackup(host, target, { full: true, baseOnly: true, chunkBytes: this.server.limits.seedChunkBytes }));
      const manifest = target.manifest;
      if (manifest === undefined) throw new StandbyError("the seed backup committed no manifest");
      if (this.conn.closed) throw this.conn.closeReason ?? new StandbyError("the standby disconnected during its seed");
      this.conn.send(Msg.SeedManifest, { lsn: manifest.base.lsn, transaction: manifest.base.transaction }, encodeManifest(manifest));
      this.server.counters.seeds += 1;
      this.server.log(`seeded standby ${this.standbyId} (${target.bytes} bytes at transaction ${manifest.base.transaction})`);
      this.server.emit("seed", this.standbyId, target.bytes);
      this.target = undefined;
      await this.stream(manifest.base.lsn, hold);
    } finally {
      hold.release();
    }
  }

  /**
   * Whether the unit a standby holds last is part of this primary's log. A unit of this open is
   * (units go out only after their write is issued, and this open's log only grows). A unit of an
   * earlier open is if recovery kept it: it lies below the stable address and the unit there
   * carries the same epoch (an address reused after a crash carries a newer one). A newer epoch
   * than this open's never is.
   */
  private async stillOurs(held: HeldUnit): Promise<boolean> {
    const log = this.server.host.core.log;
    if (held.epoch === log.writeEpoch) return true;
    if (held.epoch > log.writeEpoch || held.address >= log.stableAddress) return false;
    try {
      const units = await log.readRange(held.address, held.address + 1);
      return units.length === 1 && units[0]?.address === held.address && units[0].epoch === held.epoch;
    } catch (error) {
      if (error instanceof LogTruncatedError) return true; // gone anyway: run() seeds it for that
      throw error;
    }
  }

  /** Follow the durable tail from `from` (a record address; the unit holding it is sent whole). */
  private async stream(from: number, handOff: LogRetention | undefined): Promise<void> {
    const log = this.server.host.core.log;
    const start = Math.floor(from / log.segmentSize) * log.segmentSize;
    // The follower's own retention moves with what is *sent*; units in flight are lost when the
    // connection drops, and the standby resumes from what it *received* (or, restarted, from its
    // applied position, which may lie further back). Hold the log from the lowest of those for as
    // long as this session lives, then hand the hold to the server (keepHold), so a reconnect
    // finds its log. It starts at the hold handed in when that is lower (the standby's applied
    // position from an earlier connection, or the seed's point): until this standby acknowledges
    // a newer position, that is still where a restarted standby resumes.
    const ackFrom = handOff !== undefined && !handOff.released ? Math.min(start, handOff.address) : start;
    this.ackHold?.release();
    this.ackHold = log.retain(ackFrom);
    // From memory: the unit just made durable is in the caching layer; reading it back from the
    // file cost a read and a wake-up of this thread per unit on the way to the standby. Before
    // durable: the standby's flush overlaps this primary's (see stillOurs for the other half).
    const units = log.durableUnits(start, { signal: this.abort.signal, fromMemory: true, beforeDurable: true });
    this.holdAddress = start;
    this.state = "streaming";
    this.sent = Math.max(this.sent, from);
    const window = this.server.limits.maxInFlightBytes;
    try {
      for (;;) {
        this.phase = "next unit";
        const next = await units.next();
        this.phase = "got unit";
        handOff?.release();
        if (next.done === true || this.conn.closed) return;
        const unit = next.value;
        this.holdAddress = unit.address;
        if (unit.endAddress <= from) continue;
        // Window: never more than `window` bytes sent and not durable on the standby.
        // The window counts from what this standby acknowledged, or, before its first ack on this
        // connection, from where the stream starts: it had everything before `from` (a seed, or
        // what it received before a reconnect). Counting from 0 deadlocked once the log passed the
        // window: the primary waited for an ack, the standby for a unit to ack.
        const base = Math.max(this.acked.durable, from);
        while (!this.conn.closed && unit.endAddress - Math.max(this.acked.durable, base) > window && this.sent > Math.max(this.acked.durable, base)) {
          this.phase = "window";
          await new Promise<void>((resolve) => {
            this.ackWaiter = resolve;
            this.conn.onClose(() => resolve());
          });
        }
        // Only a backlog is waited for: an await per unit put the send behind every microtask
        // queued meanwhile (a group commit resolves hundreds of transactions' chains at once).
        if (this.conn.backlog > SOCKET_BACKLOG_BYTES) {
          this.phase = "drain";
          await this.conn.whenDrained(SOCKET_BACKLOG_BYTES);
        }
        this.phase = "send";
        if (this.conn.closed) return;
        this.conn.send(
          Msg.Unit,
          {
            address: unit.address,
            end: unit.endAddress,
            epoch: unit.epoch,
            crc: Bun.hash.crc32(unit.payload) >>> 0,
            ackReceived: this.server.sync.wantsReceivedAcks(),
            ...this.progress(),
          },
          unit.payload,
        );
        this.sent = unit.endAddress;
      }
    } finally {
      this.phase = "ended";
      await units.return?.();
      this.holdAddress = undefined;
    }
  }

  /** The primary's progress, for the standby's lag figures. */
  private progress(): { stable: number; lastTx: number; lastTime: number | null; lastEnd: number } {
    const { core, commits } = this.server.host;
    return { stable: core.log.stableAddress, lastTx: commits.lastTxId, lastTime: commits.lastCommitTime, lastEnd: this.server.lastCommitEnd };
  }

  heartbeat(): void {
    if (this.state === "streaming" && !this.conn.closed) this.conn.send(Msg.Heartbeat, this.progress());
  }

  /** @internal See {@link ReplicationServer.diagnostics}. */
  diagnostics(): Record<string, unknown> {
    return {
      standby: this.standbyId.slice(0, 8),
      peer: this.conn.peer,
      state: this.state,
      phase: this.phase,
      closed: this.conn.closed,
      closeReason: this.conn.closeReason?.message,
      backlog: this.conn.backlog,
      bytesIn: this.conn.bytesIn,
      bytesOut: this.conn.bytesOut,
      sent: this.sent,
      acked: { ...this.acked },
      holdAddress: this.holdAddress,
      ackHold: this.ackHold === undefined ? undefined : this.ackHold.released ? "released" : this.ackHold.address,
      waitingForAck: this.ackWaiter !== undefined,
      aborted: this.abort.signal.aborted,
    };
  }

  /** Lowest address of the log held from what the standby acknowledged (undefined: none). */
  get ackHoldAddress(): number | undefined {
    const hold = this.ackHold;
    return hold === undefined || hold.released ? undefined : hold.address;
  }

  /**
   * Keep the acknowledged-position hold within `maxRetainedBytes` of the end (`lowest` is the
   * lowest address allowed): a standby whose applied position stands still while it receives
   * (a long stretch of the cleaner's log moves no position) must not grow the file past the cap.
   * Past it a restarted standby re-seeds; a reconnect of this process resumes from what it
   * received, which the follower's own hold (checked against the same cap) keeps.
   */
  capAckHold(lowest: number): void {
    const hold = this.ackHold;
    if (hold === undefined || hold.released) return;
    // Holds are whole segments: the segment holding `lowest` stays (as the follower's check allows).
    const segmentSize = this.server.host.core.log.segmentSize;
    const to = Math.floor(lowest / segmentSize) * segmentSize;
    if (to > hold.address) hold.advance(to);
  }

  /** Past `maxRetainedBytes`: let go of the log and the standby. */
  dropForRetention(): void {
    this.holdAddress = undefined;
    this.abort.abort();
    this.conn.abort(new StandbyError("the standby fell more than maxRetainedBytes behind", "LSS_STANDBY_RESEED"));
  }

  stats(): StandbyConnectionStats {
    const { core, commits } = this.server.host;
    const stable = core.log.stableAddress;
    const caughtUp = this.acked.durable >= this.server.lastCommitEnd;
    const lastTime = commits.lastCommitTime;
    return {
      id: this.standbyId,
      peer: this.conn.peer,
      state: this.state,
      sentAddress: this.sent,
      receivedAddress: this.acked.received,
      durableAddress: this.acked.durable,
      lagBytes: Math.max(0, stable - this.acked.durable),
      lagTransactions: caughtUp ? 0 : Math.max(0, commits.lastTxId - this.acked.transaction),
      lagMs: caughtUp || lastTime === null || this.acked.commitTime === null ? 0 : Math.max(0, lastTime - this.acked.commitTime),
    };
  }

  /** End the session (server closing). */
  async end(reason: Error): Promise<void> {
    this.abort.abort();
    this.conn.close(reason);
    await this.running.catch(() => {});
  }

  private closed(reason: Error | undefined): void {
    this.abort.abort();
    this.inbox.fail(reason ?? new StandbyError("the standby disconnected", "LSS_STANDBY_DISCONNECTED"));
    const wake = this.ackWaiter;
    this.ackWaiter = undefined;
    wake?.();
    this.server.sessions.delete(this);
    if (this.authenticated) {
      const dropped = (reason as { code?: string } | undefined)?.code === "LSS_STANDBY_RESEED";
      const hold = this.ackHold;
      this.ackHold = undefined;
      if (hold !== undefined) {
        if (this.state === "streaming" && !dropped) this.server.keepHold(this.standbyId, hold);
        else hold.release();
      }
      this.server.emit("standby-disconnected", this.standbyId, reason?.message ?? "closed");
    }
    this.server.counters.bytesSent += this.conn.bytesOut;
  }
}
