/**
 * The standby: `Store.openStandby(path, { primary, secret })`.
 *
 * A standby is an ordinary store file that follows a primary. It has three loops:
 *
 * - **The connection** (reconnects by itself with bounded backoff): authenticate (auth.ts), then
 *   ask for the log from where it stands — after the last unit it received while this process
 *   lives, else from the applied position stored in its own last commit (state.ts), else (a new
 *   standby, a position in an older epoch, log the primary no longer holds) a seed.
 * - **Receiving**: each unit is checked (crc32 over the payload, sent by the primary; addresses
 *   only move forward, so a unit received twice is dropped) and queued; received is acknowledged
 *   at once. The primary's window bounds the queue.
 * - **Applying**: units are read logically (src/backup/logical.ts: records grouped by
 *   transaction, applied at their intact Commit, the cleaner's relocations skipped, multipart
 *   values reassembled) and committed **through the standby's own commit path** — its
 *   `store.transaction()` — several primary transactions per standby commit when it is behind.
 *   Each such commit also writes the applied position (the primary's address just past the last
 *   Commit record applied, its transaction id and epoch), so data and position are one atomic
 *   commit. Readers see whole batches of whole transactions: always a committed prefix of the
 *   primary's history. Durable is acknowledged when the standby's commit is durable.
 *
 * Why apply logically and not copy the primary's log bytes: the standby's file has its own
 * segments, cleaner and checkpoints (addresses differ), and the one commit path is what keeps its
 * mapping table, utilisation table, cache and counters right; a second way to change them would be
 * a fifth copy of the commit protocol.
 *
 * A seed (seed.ts) is restored into `<path>.seeding` while the old file keeps serving reads; the
 * new file is renamed over the old one and swapped in only when it holds the base and its position.
 *
 * `promote()` stops following, applies what was received, bumps the epoch in the root block and
 * opens the store for writes; from then on a standby that has seen the new epoch refuses the old
 * primary.
 *
 * @module
 */
import fs from "node:fs/promises";
import { AuthenticationError, FencedError, InvalidArgumentError, ReadOnlyError, StandbyError, StoreClosedError } from "../errors.ts";
import type { BackupManifest } from "../backup/manifest.ts";
import { LogicalReader, type LogicalOp } from "../backup/logical.ts";
import type { StoreOptions } from "../store/config.ts";
import type { Transaction } from "../store/transaction.ts";
import { Store, storeInternals, type StoreStats } from "../store/store.ts";
import { checkNonce, macMatches, newNonce, primaryMac, secretBytes, standbyMac } from "./auth.ts";
import { Connection, Inbox, Msg, num, PROTOCOL_VERSION, str, type Message } from "./protocol.ts";
import { SeedReceiver } from "./seed.ts";
import { decodePosition, encodePosition, POSITION_SEID, readReplicationFields, writeReplicationFields, type AppliedPosition, type HeldUnit, type ReplicationFields } from "./state.ts";
import type { ReplicationServer, ServeReplicationOptions } from "./primary.ts";

/** Where the primary is: `"host:port"`, `{ host, port }` or `{ unix: path }`. */
export type PrimaryAddress = string | { host?: string; port: number } | { unix: string };

/** Options of `Store.openStandby()`. */
export interface StandbyOptions {
  /** The primary to follow. */
  primary: PrimaryAddress;
  /** The pre-shared secret (the primary's). */
  secret: string | Uint8Array;
  /** Connect over TLS: `true`, or Bun's TLS client options (e.g. `{ ca, serverName }`). */
  tls?: boolean | { ca?: string | Uint8Array; serverName?: string; rejectUnauthorized?: boolean };
  /** Options of the standby's own store (segment size, cache…); `readOnly` and `create` are the standby's. */
  store?: Omit<StoreOptions, "readOnly" | "create">;
  /** Reconnect backoff, ms: from `reconnectMinMs` (default 50) doubling to `reconnectMaxMs` (default 2 000). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** A connection attempt and each handshake step time out after this, ms. Default 5 000. */
  connectTimeoutMs?: number;
  /** Most bytes of values per standby commit when catching up. Default 4 MiB (64 KiB..256 MiB). */
  maxApplyBatchBytes?: number;
  /**
   * A store that holds elements but was never a standby would be replaced by the primary's
   * data at the first seed: refused unless this is true.
   */
  discardLocalData?: boolean;
  /** Where log lines go (authentication failures, seeds, reconnects). Default `console.warn`. */
  log?: (line: string) => void;
}

/** `stats().replication` of a standby. */
export interface StandbyReplicationStats {
  readonly role: "standby" | "promoted";
  readonly connected: boolean;
  readonly primary: string;
  readonly storeId: string;
  readonly epoch: number;
  readonly standbyId: string;
  /** The primary's last transaction applied here (and durable), and the primary's last known. */
  readonly appliedTransaction: number;
  readonly primaryTransaction: number;
  readonly lagTransactions: number;
  /** The primary's durable log not yet durable here, bytes. */
  readonly lagBytes: number;
  /** Commit time of the primary's last transaction minus that of the last applied here, ms (0 when caught up). */
  readonly lagMs: number;
  readonly receivedAddress: number;
  readonly durableAddress: number;
  readonly transactionsApplied: number;
  readonly commitsApplied: number;
  /** Acknowledgements sent to primaries (one per unit received when asked, one per durable step). */
  readonly acksSent: number;
  readonly bytesReceived: number;
  readonly seeds: number;
  readonly connects: number;
  readonly lastError: string | undefined;
}

/** Stats of a standby: the store's, with `replication` describing the standby. */
export type StandbyStats = Omit<StoreStats, "replication"> & { replication: StandbyReplicationStats };

const KB = 1024;
const MB = 1024 * KB;
/** A following standby closes a connection silent this long (the primary heartbeats every 250 ms), and reconnects. */
const SILENCE_MS = 5_000;
/** Standby commits applied and not yet durable at once (group commit across them). */
const MAX_APPLY_PIPELINE = 4;
/** Primary transactions per standby commit at most. */
const MAX_APPLY_BATCH_TRANSACTIONS = 4096;

type QueueItem =
  /** A new connection; `resume`: the stream starts again at the stored position (a fresh reader). */
  | { kind: "session"; conn: Connection; resume: boolean }
  | { kind: "seed-begin" }
  | { kind: "seed-data"; conn: Connection; header: { name: string; last: boolean; size?: number; sha256?: string }; body: Uint8Array }
  | { kind: "seed-end"; bytes: Uint8Array; storeId: string; epoch: number }
  | { kind: "unit"; address: number; end: number; epoch: number; payload: Uint8Array };

interface Batch {
  ops: LogicalOp[];
  spaces: Array<Array<[number, number]>>;
  bytes: number;
  transactions: number;
  /** Record address to resume from once this batch is applied. */
  position: number;
  lastTx: number;
  lastTime: number | null;
  /** End of the last unit read into it (acknowledged durable once it is). */
  unitEnd: number;
  /** The unit holding the record `position` follows (undefined: the position did not move in a unit). */
  held: HeldUnit | undefined;
}

function checkMs(value: number | undefined, name: string, fallback: number, min: number, max: number): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < min || v > max) throw new InvalidArgumentError(`${name} must be in [${min}, ${max}] ms, got ${String(v)}`);
  return v;
}

function parsePrimary(primary: PrimaryAddress): { label: string; connect: { hostname: string; port: number } | { unix: string } } {
  if (typeof primary === "string") {
    const match = /^(.*):(\d+)$/.exec(primary);
    if (match === null) throw new InvalidArgumentError(`primary must be "host:port", { host, port } or { unix }, got ${JSON.stringify(primary)}`);
    return { label: primary, connect: { hostname: (match[1] as string).replace(/^\[|\]$/g, "") || "127.0.0.1", port: Number(match[2]) } };
  }
  if (typeof primary === "object" && primary !== null && "unix" in primary && typeof primary.unix === "string") {
    return { label: primary.unix, connect: { unix: primary.unix } };
  }
  if (typeof primary === "object" && primary !== null && "port" in primary && Number.isInteger(primary.port)) {
    const hostname = primary.host ?? "127.0.0.1";
    return { label: `${hostname}:${primary.port}`, connect: { hostname, port: primary.port } };
  }
  throw new InvalidArgumentError("primary must be \"host:port\", { host, port } or { unix }");
}

/** A store following a primary (see the module doc). Reads as a `Store`; writes only after {@link promote}. */
export class StandbyStore {
  readonly path: string;
  private inner: Store;
  private fields: ReplicationFields;
  private position: AppliedPosition | undefined;
  /** The position of the last batch handed to the commit path (== position once it is durable). */
  private queued: AppliedPosition | undefined;
  private readonly secret: Uint8Array;
  private readonly primary: ReturnType<typeof parsePrimary>;
  private readonly options: StandbyOptions;
  private readonly limits: { minMs: number; maxMs: number; connectMs: number; batchBytes: number };
  private readonly logLine: (line: string) => void;
  private readonly seeds: SeedReceiver;

  // connection
  private conn: Connection | undefined;
  private connected = false;
  private stopped = false;
  private wakeLoop: (() => void) | undefined;
  private connectLoop: Promise<void> = Promise.resolve();
  /** The primary's epoch on the current/last connection. */
  private primaryEpoch = 0;
  private primaryStoreId = "";
  private progress = { stable: 0, lastTx: 0, lastTime: null as number | null, lastEnd: 0 };
  private pings: Array<(end: number) => void> = [];
  /** Connections with an acknowledgement scheduled (see ackSoon). */
  private readonly ackPending = new Set<Connection>();

  // stream and apply
  private queue: QueueItem[] = [];
  private queueWake: (() => void) | undefined;
  private applyLoop: Promise<void>;
  private reader: LogicalReader | undefined;
  /** End of the last unit received on a continuous stream (undefined: no stream to continue). */
  private receivedEnd: number | undefined;
  /** The unit that ends at `receivedEnd` (undefined after a seed's point). */
  private receivedUnit: HeldUnit | undefined;
  private batch: Batch | undefined;
  private pipeline: Array<Promise<void>> = [];
  /** What the apply loop is doing (for diagnostics). */
  private applyPhase = "";
  private received = 0;
  private durable = 0;
  private durableWaiters: Array<{ at: number; resolve: () => void; reject: (error: Error) => void }> = [];
  private promoted = false;
  private failure: Error | undefined;
  private closing: Promise<void> | undefined;
  private readonly counters = { transactionsApplied: 0, commitsApplied: 0, bytesReceived: 0, seeds: 0, connects: 0, acksSent: 0 };
  private lastError: Error | undefined;

  private constructor(path: string, inner: Store, options: StandbyOptions) {
    this.path = path;
    this.inner = inner;
    this.options = options;
    this.secret = secretBytes(options.secret, "standby");
    this.primary = parsePrimary(options.primary);
    this.limits = {
      minMs: checkMs(options.reconnectMinMs, "reconnectMinMs", 50, 1, 60_000),
      maxMs: checkMs(options.reconnectMaxMs, "reconnectMaxMs", 2_000, 1, 600_000),
      connectMs: checkMs(options.connectTimeoutMs, "connectTimeoutMs", 5_000, 10, 600_000),
      batchBytes: options.maxApplyBatchBytes ?? 4 * MB,
    };
    if (!Number.isSafeInteger(this.limits.batchBytes) || this.limits.batchBytes < 64 * KB || this.limits.batchBytes > 256 * MB) {
      throw new InvalidArgumentError(`maxApplyBatchBytes must be an integer in [${64 * KB}, ${256 * MB}]`);
    }
    this.logLine = options.log ?? ((line) => console.warn(line));
    this.seeds = new SeedReceiver(path);
    this.fields = readReplicationFields(storeInternals(inner).core.log);
    this.applyLoop = this.runApply();
  }

  /** Open (or create) the standby at `path` and start following. See `Store.openStandby`. */
  static async open(path: string, options: StandbyOptions): Promise<StandbyStore> {
    if (typeof options !== "object" || options === null) throw new InvalidArgumentError("openStandby() takes an options object");
    secretBytes(options.secret, "standby");
    parsePrimary(options.primary);
    if (typeof path !== "string" || path.length === 0) throw new InvalidArgumentError("path must be a non-empty string");
    // Leftovers of a seed cut short: the file at `path` is still the last complete state.
    await new SeedReceiver(path).reset(path);
    // The standby's commits keep the store's default commitWaitBlockUs: a batch alone in flight
    // is written and synced with system calls on this thread (docs/REPLICATION.md, "Measured").
    const inner = await Store.open(path, { ...options.store, create: true, readOnly: false });
    let standby: StandbyStore;
    try {
      standby = new StandbyStore(path, inner, options);
      await standby.init();
    } catch (error) {
      await inner.close().catch(() => {});
      throw error;
    }
    try {
      await standby.start();
    } catch (error) {
      await standby.close().catch(() => {});
      throw error;
    }
    return standby;
  }

  private async init(): Promise<void> {
    const { core, commits } = storeInternals(this.inner);
    const bytes = await this.inner.read(POSITION_SEID);
    this.position = bytes === undefined ? undefined : decodePosition(bytes);
    this.queued = this.position;
    this.durable = this.received = this.position?.address ?? 0;
    if (this.position === undefined && core.map.size > 0 && this.options.discardLocalData !== true) {
      throw new StandbyError(
        `${this.path} holds ${core.map.size} elements and was never a standby: following a primary would replace them (pass discardLocalData: true to allow it)`,
      );
    }
    if (this.fields.standbyId === "") {
      this.fields = await commits.exclusive(() => writeReplicationFields(core.log, { standbyId: crypto.randomUUID() }));
    }
  }

  /** Connect once (resolve on success or a network failure, reject on refusal), then keep following. */
  private start(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const first = (error?: Error): void => {
        if (settled) return;
        settled = true;
        if (error !== undefined) reject(error);
        else resolve();
      };
      this.connectLoop = this.runConnections(first);
    });
  }

  // ───────────────────────────── reads (the inner store's) ─────────────────────────────

  /** The element's bytes as of the last applied transaction, or `undefined`. */
  read(seid: bigint): Promise<Uint8Array | undefined> {
    return this.inner.read(seid);
  }

  /** The element's bytes as a stream (see `Store.readStream`). */
  readStream(seid: bigint): ReadableStream<Uint8Array> {
    return this.inner.readStream(seid);
  }

  has(seid: bigint): boolean {
    return this.inner.has(seid);
  }

  sizeOf(seid: bigint): number | undefined {
    return this.inner.sizeOf(seid);
  }

  /** Seids present in `space`, ascending. */
  seids(space?: number): bigint[] {
    return this.inner.seids(space);
  }

  /**
   * Writes are refused on a standby ({@link ReadOnlyError}); after {@link promote} this is the
   * store's `transaction`.
   */
  transaction<T>(fn: (tx: Transaction) => T | Promise<T>): Promise<T> {
    if (!this.promoted) return Promise.reject(new ReadOnlyError(`${this.path} is a standby of ${this.primary.label}: promote() it to write`));
    return this.inner.transaction(fn);
  }

  /** After {@link promote}: serve standbys of its own. */
  serveReplication(options: ServeReplicationOptions): Promise<ReplicationServer> {
    if (!this.promoted) return Promise.reject(new StandbyError("a standby serves replication only after promote()"));
    return this.inner.serveReplication(options);
  }

  /** True once {@link promote} has run: the store accepts writes. */
  get isPromoted(): boolean {
    return this.promoted;
  }

  /** The store behind the standby (for a promoted one: the primary to use). */
  get store(): Store {
    return this.inner;
  }

  // ───────────────────────────── the connection ─────────────────────────────

  private log(line: string): void {
    try {
      this.logLine(`bloom-lss standby ${this.path}: ${line}`);
    } catch {
      // logging never breaks replication
    }
  }

  private async runConnections(first: (error?: Error) => void): Promise<void> {
    let backoff = this.limits.minMs;
    while (!this.stopped) {
      let authenticated = false;
      try {
        await this.session(() => {
          authenticated = true;
          backoff = this.limits.minMs;
          first();
        });
      } catch (caught) {
        const error = caught instanceof Error ? caught : new StandbyError(String(caught));
        this.lastError = error;
        const refused = error instanceof AuthenticationError || error instanceof FencedError;
        if (refused) this.log(error.message);
        if (!authenticated) first(refused ? error : undefined);
      }
      this.connected = false;
      if (this.stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        this.wakeLoop = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeLoop = undefined;
      backoff = Math.min(backoff * 2, this.limits.maxMs);
    }
    first();
  }

  private async connect(): Promise<Connection> {
    let conn: Connection | undefined;
    const handlers = {
      data: (_s: unknown, chunk: Uint8Array) => conn?.data(chunk),
      drain: () => conn?.drain(),
      close: (_s: unknown, error?: Error) => conn?.socketClosed(error),
      error: (_s: unknown, error: Error) => conn?.socketClosed(error),
      connectError: () => {},
    };
    const tlsOption = this.options.tls;
    const tls = tlsOption === undefined || tlsOption === false ? undefined : tlsOption === true ? true : tlsOption;
    const target = this.primary.connect;
    const connecting = "unix" in target
      ? Bun.connect({ unix: target.unix, socket: handlers, ...(tls !== undefined ? { tls } : {}) })
      : Bun.connect({ hostname: target.hostname, port: target.port, socket: handlers, ...(tls !== undefined ? { tls } : {}) });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StandbyError(`no connection to ${this.primary.label} within ${this.limits.connectMs} ms`, "LSS_STANDBY_TIMEOUT")), this.limits.connectMs);
    });
    try {
      const socket = await Promise.race([connecting, timeout]);
      conn = new Connection(socket);
      return conn;
    } catch (error) {
      void connecting.then((s) => s.terminate(), () => {});
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** One connection: handshake, Start, then frames until it closes. */
  private async session(onAuthenticated: () => void): Promise<void> {
    const conn = await this.connect();
    this.conn = conn;
    const inbox = new Inbox();
    let authenticated = false;
    // While the tail streams, the primary sends a frame at least every heartbeat (250 ms). A
    // connection silent for SILENCE_MS then is wedged (a stalled network path that never comes
    // back, a half-open socket): close it, and the connect loop resumes from what was received.
    // Without this the standby waited forever (the network test's stall-then-resume caught it).
    let lastFrameAt = Date.now();
    let tailing = false;
    conn.onMessage = (message) => {
      lastFrameAt = Date.now();
      if (message.type === Msg.Unit || message.type === Msg.Heartbeat) tailing = true;
      else if (message.type === Msg.SeedBegin) tailing = false;
      if (!authenticated) inbox.push(message);
      else this.onMessage(conn, message);
    };
    const watchdog = setInterval(() => {
      if (tailing && Date.now() - lastFrameAt > SILENCE_MS) {
        conn.close(new StandbyError(`no frame from ${this.primary.label} for ${SILENCE_MS} ms while following: reconnecting`, "LSS_STANDBY_DISCONNECTED"));
      }
    }, SILENCE_MS / 5);
    const ended = new Promise<Error | undefined>((resolve) => conn.onClose(resolve));
    void ended.then(() => clearInterval(watchdog));
    conn.onClose((reason) => inbox.fail(reason ?? new StandbyError("the primary closed the connection", "LSS_STANDBY_DISCONNECTED")));
    if (this.stopped) {
      conn.close();
      return;
    }
    try {
      const standbyNonce = newNonce();
      const { storeId, epoch, standbyId } = this.fields;
      conn.send(Msg.Hello, { version: PROTOCOL_VERSION, nonce: standbyNonce, storeId, epoch, standbyId });
      const challenge = refusedOr(await inbox.next(this.limits.connectMs, "Challenge"), Msg.Challenge);
      const primaryNonce = checkNonce(str(challenge, "nonce"), "primary");
      conn.send(Msg.Auth, { mac: standbyMac(this.secret, { standbyNonce, primaryNonce, storeId, epoch, standbyId }) });
      const welcome = refusedOr(await inbox.next(this.limits.connectMs, "Welcome"), Msg.Welcome);
      const primaryStore = str(welcome, "storeId", 128);
      const primaryEpoch = num(welcome, "epoch");
      if (!macMatches(welcome.header.mac, primaryMac(this.secret, { standbyNonce, primaryNonce, storeId: primaryStore, epoch: primaryEpoch }))) {
        throw new AuthenticationError(`the primary ${this.primary.label} failed to prove the secret (a wrong secret, or a replayed answer)`);
      }
      if (storeId !== "" && primaryStore !== storeId) {
        throw new AuthenticationError(`the primary ${this.primary.label} serves another store (${primaryStore}); this standby follows ${storeId}`);
      }
      if (primaryEpoch < epoch) {
        throw new FencedError(`the primary ${this.primary.label} is of epoch ${primaryEpoch}, older than epoch ${epoch} this standby has seen: refused (it was replaced)`, epoch);
      }
      authenticated = true;
      this.counters.connects += 1;
      this.connected = true;
      onAuthenticated();
      // Where to resume: a continuous stream of this process, the stored position, or a seed.
      let from: number | null = null;
      let held: HeldUnit | undefined;
      let resume = false;
      if (this.receivedEnd !== undefined && primaryEpoch === this.primaryEpoch && primaryStore === this.primaryStoreId) {
        from = this.receivedEnd;
        held = this.receivedUnit;
      } else if (this.position !== undefined && this.position.epoch === primaryEpoch && storeId === primaryStore) {
        from = this.position.address;
        held = this.position.held;
        resume = true;
      }
      if (from === null || resume) {
        // Acknowledgements are addresses of this primary's log: start them where this stream starts.
        this.received = this.durable = resume ? (this.position?.address ?? 0) : 0;
      }
      this.primaryEpoch = primaryEpoch;
      this.primaryStoreId = primaryStore;
      this.log(`connected to ${this.primary.label}: ${from === null ? "asking for a seed" : `resuming from ${from}${resume ? " (the stored position)" : ""}`}`);
      this.queue.push({ kind: "session", conn, resume });
      this.receivedEnd = from ?? undefined;
      this.receivedUnit = held;
      this.wakeApply();
      // `held`: the primary checks that unit is still in its log (units come before they are
      // durable there, and a crash of the primary may lose them): if not, it seeds this standby.
      conn.send(Msg.Start, { from, held: held ?? null });
      const reason = await ended;
      if (!this.stopped) this.log(`the connection to ${this.primary.label} ended (${reason?.message ?? "closed"}) at received ${this.received}, durable ${this.durable}: reconnecting`);
      if (reason !== undefined && (reason instanceof AuthenticationError || reason instanceof FencedError)) throw reason;
      if (reason !== undefined && !(reason instanceof StandbyError && reason.code === "LSS_STANDBY_DISCONNECTED")) this.lastError = reason;
    } finally {
      conn.close();
      this.connected = false;
    }
  }

  private onMessage(conn: Connection, message: Message): void {
    switch (message.type) {
      case Msg.Unit: {
        const address = num(message, "address");
        const end = num(message, "end");
        this.noteProgress(message);
        if (this.receivedEnd !== undefined && end <= this.receivedEnd) return; // received already
        if ((Bun.hash.crc32(message.body) >>> 0) !== num(message, "crc")) throw new StandbyError(`log unit at ${address} arrived damaged (crc32 mismatch)`);
        const epoch = num(message, "epoch");
        this.queue.push({ kind: "unit", address, end, epoch, payload: message.body.slice() });
        this.counters.bytesReceived += message.body.length;
        this.receivedEnd = end;
        this.receivedUnit = { address, epoch };
        this.received = Math.max(this.received, end);
        // Only when the primary has commits waiting for `received` (SyncWaiters.wantsReceivedAcks;
        // a primary that does not say asks for it): else the ack of its durability confirms both.
        if (message.header.ackReceived !== false) this.ackSoon(conn);
        this.wakeApply();
        return;
      }
      case Msg.Heartbeat:
        this.noteProgress(message);
        return;
      case Msg.SeedBegin:
        this.receivedEnd = undefined;
        this.receivedUnit = undefined;
        this.queue.push({ kind: "seed-begin" });
        this.wakeApply();
        return;
      case Msg.SeedData: {
        const name = str(message, "name", 512);
        const header = { name, last: message.header.last === true, size: message.header.size as number | undefined, sha256: message.header.sha256 as string | undefined };
        this.queue.push({ kind: "seed-data", conn, header, body: message.body.slice() });
        this.counters.bytesReceived += message.body.length;
        this.wakeApply();
        return;
      }
      case Msg.SeedManifest: {
        const lsn = num(message, "lsn");
        this.queue.push({ kind: "seed-end", bytes: message.body.slice(), storeId: this.primaryStoreId, epoch: this.primaryEpoch });
        this.receivedEnd = lsn;
        this.wakeApply();
        return;
      }
      case Msg.Pong: {
        const end = num(message, "end");
        const pings = this.pings;
        this.pings = [];
        for (const resolve of pings) resolve(end);
        return;
      }
      case Msg.Refused:
        throw refusal(message);
      default:
        throw new StandbyError(`unexpected frame ${message.type} from the primary`);
    }
  }

  private noteProgress(message: Message): void {
    const h = message.header;
    if (typeof h.stable === "number") this.progress.stable = Math.max(this.progress.stable, h.stable);
    if (typeof h.lastTx === "number") this.progress.lastTx = Math.max(this.progress.lastTx, h.lastTx);
    if (typeof h.lastTime === "number") this.progress.lastTime = h.lastTime;
    if (typeof h.lastEnd === "number") this.progress.lastEnd = Math.max(this.progress.lastEnd, h.lastEnd);
  }

  /**
   * Acknowledge what was received and is durable, once for everything that happened in this turn:
   * the units of one socket read, the standby commits one datasync made durable. The ack goes
   * out in a microtask, before the thread waits for anything, so none waits longer; a loopback
   * write costs ~0.3 ms of this thread's and the primary's time on the loaded VM (the profile),
   * and the units that pile up while a thread is descheduled arrive together.
   */
  private ackSoon(conn: Connection | undefined = this.conn): void {
    if (conn === undefined || conn.closed || this.ackPending.has(conn)) return;
    this.ackPending.add(conn);
    queueMicrotask(() => {
      this.ackPending.delete(conn);
      this.sendAck(conn);
    });
  }

  private sendAck(conn: Connection | undefined = this.conn): void {
    if (conn === undefined || conn.closed) return;
    this.counters.acksSent += 1;
    conn.send(Msg.Ack, {
      received: this.received,
      durable: this.durable,
      position: this.position?.address ?? 0,
      transaction: this.position?.transaction ?? 0,
      commitTime: this.position?.commitTime ?? null,
    });
  }

  // ───────────────────────────── applying ─────────────────────────────

  private wakeApply(): void {
    const wake = this.queueWake;
    this.queueWake = undefined;
    wake?.();
  }

  private async runApply(): Promise<void> {
    try {
      for (;;) {
        const item = this.queue.shift();
        if (item === undefined) {
          // Caught up with what arrived: commit what is batched, then sleep until more comes.
          this.applyPhase = "commit (idle)";
          await this.commitBatch();
          if (this.stopped && this.queue.length === 0) return;
          // Items may have arrived while the batch was handed over: sleep only on an empty queue.
          this.applyPhase = "asleep";
          if (this.queue.length === 0) await new Promise<void>((resolve) => (this.queueWake = resolve));
          continue;
        }
        this.applyPhase = item.kind;
        await this.applyItem(item);
      }
    } catch (caught) {
      const error = caught instanceof Error ? caught : new StandbyError(String(caught));
      this.failure = error;
      this.lastError = error;
      this.log(`applying failed, the standby stops following: ${error.message}`);
      this.stopped = true;
      for (const w of this.durableWaiters.splice(0)) w.reject(error);
      this.conn?.close(error);
      this.wakeLoop?.();
    }
  }

  private async applyItem(item: QueueItem): Promise<void> {
    switch (item.kind) {
      case "session":
        // A new connection: a seed the old one left half-done is abandoned.
        await this.seeds.reset(this.path);
        if (item.resume && this.position !== undefined) {
          await this.commitBatch();
          await this.drainPipeline();
          this.reader = new LogicalReader(this.position.address);
        }
        return;
      case "seed-begin":
        await this.commitBatch();
        await this.drainPipeline();
        await this.seeds.reset(this.path);
        this.reader = undefined;
        return;
      case "seed-data": {
        if (this.stopped) return;
        const stored = await this.seeds.piece(item.header, item.body);
        if (stored !== undefined && !item.conn.closed) item.conn.send(Msg.SeedAck, { name: stored });
        return;
      }
      case "seed-end": {
        if (this.stopped) return;
        const manifest = await this.seeds.finish(item.bytes, this.path, this.options.store ?? {});
        await this.installSeed(manifest, item.storeId, item.epoch);
        this.reader = new LogicalReader(manifest.base.lsn);
        return;
      }
      case "unit":
        this.readUnit(item);
        if (this.batch !== undefined && (this.batch.bytes >= this.limits.batchBytes || this.batch.transactions >= MAX_APPLY_BATCH_TRANSACTIONS)) {
          await this.commitBatch();
        }
        return;
    }
  }

  private readUnit(item: Extract<QueueItem, { kind: "unit" }>): void {
    const reader = this.reader;
    if (reader === undefined) return; // no stream to apply to (a seed was cut short): the next session re-seeds
    const batch = (this.batch ??= {
      ops: [],
      spaces: [],
      bytes: 0,
      transactions: 0,
      // Where the last batch handed to the commit path left off (its commit may still be in flight).
      position: this.queued?.address ?? 0,
      lastTx: this.queued?.transaction ?? 0,
      lastTime: this.queued?.commitTime ?? null,
      unitEnd: item.end,
      held: this.queued?.held,
    });
    for (const event of reader.unit({ address: item.address, endAddress: item.end, epoch: 0, payload: item.payload })) {
      if (event.kind === "spaces") {
        batch.spaces.push(event.entries);
        continue;
      }
      if (event.kind === "system-commit") {
        // The cleaner's: nothing changes; the position may move past it.
        batch.position = event.commitAddress + 1;
        batch.held = { address: item.address, epoch: item.epoch };
        continue;
      }
      const tx = event.transaction;
      for (const op of tx.ops) {
        batch.ops.push(op);
        if (op.kind === "write") batch.bytes += op.value.length;
      }
      batch.transactions += 1;
      batch.position = tx.commitAddress + 1;
      batch.held = { address: item.address, epoch: item.epoch };
      batch.lastTx = tx.txId;
      batch.lastTime = tx.time;
    }
    batch.unitEnd = item.end;
  }

  /** Commit the batch through the store's commit path (with its position), pipelined. */
  private async commitBatch(): Promise<void> {
    const batch = this.batch;
    this.batch = undefined;
    if (batch === undefined) return;
    const unitEnd = batch.unitEnd;
    const epoch = this.primaryEpoch;
    if (batch.transactions === 0 && batch.spaces.length === 0) {
      // Nothing to write: durable as soon as what is before it is.
      this.pipeline.push(Promise.all(this.pipeline).then(() => this.setDurable(unitEnd, epoch)));
      return;
    }
    const position: AppliedPosition = { epoch: this.primaryEpoch, address: batch.position, transaction: batch.lastTx, commitTime: batch.lastTime, held: batch.held };
    this.queued = position;
    const store = this.inner;
    const { core, commits } = storeInternals(store);
    for (const entries of batch.spaces) core.spaces.apply(entries, true);
    // Ids of this store stay above the primary's: after a promotion new ids follow the old ones.
    commits.noteLoggedTxId(batch.lastTx);
    const ops = batch.ops;
    const committed = store.transaction((tx) => {
      for (const op of ops) {
        if (op.kind === "write") tx.write(op.seid, op.value);
        else tx.delete(op.seid);
      }
      tx.write(POSITION_SEID, encodePosition(position));
    });
    const before = Promise.all(this.pipeline);
    const done = Promise.all([before, committed]).then(() => {
      this.position = position;
      this.counters.transactionsApplied += batch.transactions;
      this.counters.commitsApplied += 1;
      this.setDurable(unitEnd, epoch);
    });
    this.pipeline.push(done);
    done.catch(() => {});
    while (this.pipeline.length >= MAX_APPLY_PIPELINE) await this.pipeline.shift();
  }

  private async drainPipeline(): Promise<void> {
    while (this.pipeline.length > 0) await this.pipeline.shift();
  }

  private setDurable(end: number, epoch: number): void {
    // An acknowledgement in another primary's addresses would confirm what this one never sent.
    if (epoch !== this.primaryEpoch || end <= this.durable) return;
    this.durable = end;
    this.ackSoon();
    if (this.durableWaiters.length > 0) {
      const keep = [];
      for (const w of this.durableWaiters) {
        if (w.at <= end) w.resolve();
        else keep.push(w);
      }
      this.durableWaiters = keep;
    }
  }

  /** The seeded file (`<path>.seeding`): record identity and position in it, then swap it in. */
  private async installSeed(manifest: BackupManifest, storeId: string, epoch: number): Promise<void> {
    const seeded = await Store.open(SeedReceiver.seedingPath(this.path), { ...this.options.store, create: false, readOnly: false });
    try {
      const { core, commits } = storeInternals(seeded);
      const fields = await commits.exclusive(() => writeReplicationFields(core.log, { storeId, epoch, standbyId: this.fields.standbyId }));
      const position: AppliedPosition = { epoch, address: manifest.base.lsn, transaction: manifest.base.transaction, commitTime: manifest.base.commitTime };
      commits.noteLoggedTxId(manifest.base.transaction);
      await seeded.transaction((tx) => tx.write(POSITION_SEID, encodePosition(position)));
      // The swap: the rename is atomic; the old store keeps its (now unlinked) file until it closes.
      await fs.rename(SeedReceiver.seedingPath(this.path), this.path);
      const old = this.inner;
      this.inner = seeded;
      this.fields = fields;
      this.position = position;
      this.queued = position;
      this.counters.seeds += 1;
      this.received = Math.max(this.received, position.address);
      this.setDurable(position.address, epoch);
      this.log(`seeded from ${this.primary.label}: transaction ${manifest.base.transaction}, ${this.seeds.bytes} bytes`);
      await old.close().catch(() => {});
    } catch (error) {
      await seeded.close().catch(() => {});
      throw error;
    }
  }

  // ───────────────────────────── waiting, promotion, stats, close ─────────────────────────────

  /**
   * Resolves once everything the primary had committed when this was called (its user
   * transactions) is applied and durable here. Rejects with a `StandbyError` after `timeoutMs`
   * (default 10 000), or when not connected by then.
   */
  async caughtUp(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    const timeoutError = () => new StandbyError(`the standby did not catch up with ${this.primary.label} within ${timeoutMs} ms`, "LSS_STANDBY_TIMEOUT");
    const withDeadline = <T>(promise: Promise<T>): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(timeoutError()), Math.max(0, deadline - Date.now()));
        promise.then(
          (v) => {
            clearTimeout(timer);
            resolve(v);
          },
          (e: unknown) => {
            clearTimeout(timer);
            reject(e);
          },
        );
      });
    for (;;) {
      // A standby that stopped following (its apply failed, or it closed) never catches up: say
      // why at once rather than after the whole timeout.
      if (this.failure !== undefined) throw this.failure;
      if (this.closing !== undefined) throw new StoreClosedError(`the standby ${this.path} is closed`);
      if (Date.now() > deadline) throw timeoutError();
      const conn = this.conn;
      if (this.connected && conn !== undefined && !conn.closed) {
        const end = await withDeadline(
          new Promise<number>((resolve, reject) => {
            this.pings.push(resolve);
            conn.onClose(() => reject(new StandbyError("disconnected", "LSS_STANDBY_DISCONNECTED")));
            conn.send(Msg.Ping, {});
          }),
        ).catch((error: unknown) => {
          if (error instanceof StandbyError && error.code === "LSS_STANDBY_DISCONNECTED") return undefined;
          throw error;
        });
        if (end !== undefined) {
          if (this.durable >= end) return;
          await withDeadline(new Promise<void>((resolve, reject) => this.durableWaiters.push({ at: end, resolve, reject })));
          return;
        }
      }
      await Bun.sleep(10);
    }
  }

  /**
   * Stop following and become a writable primary: what was received is applied, the epoch in the
   * file goes one past the newest seen (standbys that see it refuse the old primary), the applied
   * position is removed. Returns the store (this object also accepts writes from now on).
   */
  async promote(): Promise<Store> {
    if (this.promoted) return this.inner;
    if (this.closing !== undefined) throw new StoreClosedError(`the standby ${this.path} is closed`);
    this.stopped = true;
    this.conn?.close();
    this.wakeLoop?.();
    this.wakeApply();
    await this.applyLoop;
    await this.commitBatch();
    await this.drainPipeline();
    await this.seeds.reset(this.path);
    await this.connectLoop;
    if (this.failure !== undefined) throw this.failure;
    const { core, commits } = storeInternals(this.inner);
    const epoch = Math.max(this.fields.epoch, this.primaryEpoch) + 1;
    const storeId = this.fields.storeId !== "" ? this.fields.storeId : this.primaryStoreId;
    this.fields = await commits.exclusive(() => writeReplicationFields(core.log, { epoch, storeId }));
    await this.inner.transaction((tx) => tx.delete(POSITION_SEID));
    this.promoted = true;
    this.position = undefined;
    this.log(`promoted: epoch ${epoch}, last transaction of the old primary applied ${this.counters.transactionsApplied > 0 ? "" : "(none since open) "}— writes accepted`);
    return this.inner;
  }

  /** Replication state (see {@link StandbyReplicationStats}). */
  replicationStats(): StandbyReplicationStats {
    const applied = this.position?.transaction ?? 0;
    const caughtUp = this.durable >= this.progress.lastEnd;
    const appliedTime = this.position?.commitTime ?? null;
    return {
      role: this.promoted ? "promoted" : "standby",
      connected: this.connected,
      primary: this.primary.label,
      storeId: this.fields.storeId !== "" ? this.fields.storeId : this.primaryStoreId,
      epoch: this.fields.epoch,
      standbyId: this.fields.standbyId,
      appliedTransaction: applied,
      primaryTransaction: this.progress.lastTx,
      lagTransactions: caughtUp ? 0 : Math.max(0, this.progress.lastTx - applied),
      lagBytes: Math.max(0, this.progress.stable - this.durable),
      lagMs: caughtUp || appliedTime === null || this.progress.lastTime === null ? 0 : Math.max(0, this.progress.lastTime - appliedTime),
      receivedAddress: this.received,
      durableAddress: this.durable,
      transactionsApplied: this.counters.transactionsApplied,
      commitsApplied: this.counters.commitsApplied,
      acksSent: this.counters.acksSent,
      bytesReceived: this.counters.bytesReceived,
      seeds: this.counters.seeds,
      connects: this.counters.connects,
      lastError: this.lastError?.message,
    };
  }

  /**
   * @internal What the standby's loops are doing, for a test's failure message: where the stream
   * and the apply stand, and what the apply loop waits on. Not an API; the shape may change.
   */
  diagnostics(): Record<string, unknown> {
    return {
      connected: this.connected,
      connClosed: this.conn?.closed,
      connBacklog: this.conn?.backlog,
      stopped: this.stopped,
      failure: this.failure?.message,
      lastError: this.lastError?.message,
      primaryEpoch: this.primaryEpoch,
      position: this.position,
      queued: this.queued,
      receivedEnd: this.receivedEnd,
      received: this.received,
      durable: this.durable,
      progress: { ...this.progress },
      queue: this.queue.map((item) => (item.kind === "unit" ? `unit ${item.address}-${item.end}` : item.kind)).slice(0, 8),
      queueLength: this.queue.length,
      applyPhase: this.applyPhase,
      applyAsleep: this.queueWake !== undefined,
      hasReader: this.reader !== undefined,
      batch: this.batch === undefined ? undefined : { transactions: this.batch.transactions, position: this.batch.position, unitEnd: this.batch.unitEnd },
      pipeline: this.pipeline.length,
      durableWaiters: this.durableWaiters.map((w) => w.at),
      pings: this.pings.length,
      counters: { ...this.counters },
    };
  }

  /** The store's stats, with `replication` describing the standby. */
  stats(): StandbyStats {
    const stats = this.inner.stats();
    // The position element is the standby's bookkeeping, not the application's.
    const own = this.position !== undefined && this.inner.has(POSITION_SEID) ? 1 : 0;
    return { ...stats, elements: stats.elements - own, replication: this.replicationStats() };
  }

  /** Stop following and close the store. Always returns; safe to call twice. */
  close(): Promise<void> {
    try {
      // Inside a (promoted) transaction's callback, closing would wait for that transaction.
      storeInternals(this.inner).commits.refuseInsideCallback("standby.close()");
    } catch (error) {
      return Promise.reject(error);
    }
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.stopped = true;
    this.queue = this.queue.filter((item) => item.kind === "unit");
    this.conn?.close();
    this.wakeLoop?.();
    this.wakeApply();
    await this.applyLoop.catch(() => {});
    await this.commitBatch().catch(() => {});
    await this.drainPipeline().catch(() => {});
    await this.connectLoop.catch(() => {});
    for (const w of this.durableWaiters) w.resolve();
    this.durableWaiters = [];
    await this.seeds.reset(this.path).catch(() => {});
    await this.inner.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The expected frame, or the typed error a Refused frame carries. */
function refusedOr(message: Message, expected: Msg): Message {
  if (message.type === Msg.Refused) throw refusal(message);
  if (message.type !== expected) throw new StandbyError(`expected frame ${expected} from the primary, got ${message.type}`);
  return message;
}

function refusal(message: Message): Error {
  const code = typeof message.header.code === "string" ? message.header.code : "LSS_STANDBY";
  const text = typeof message.header.message === "string" ? message.header.message : "refused";
  if (code === "LSS_AUTH") return new AuthenticationError(`the primary refused this standby: ${text} (a wrong secret, or a standby of another store)`);
  if (code === "LSS_FENCED") return new FencedError(`the primary refused this standby: ${text}`, typeof message.header.epoch === "number" ? message.header.epoch : 0);
  // A code from the wire is only trusted when it is one of the standby codes this build knows.
  const known = ["LSS_STANDBY", "LSS_STANDBY_DISCONNECTED", "LSS_STANDBY_RESEED", "LSS_STANDBY_TIMEOUT"] as const;
  const standbyCode = known.find((c) => c === code) ?? "LSS_STANDBY";
  return new StandbyError(`the primary refused this standby: ${text}`, standbyCode);
}
