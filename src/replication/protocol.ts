/**
 * The replication wire: frames between a primary and a standby over TCP or a Unix socket
 * (optionally TLS), and one connection object both sides use.
 *
 * The byte layer is the Workers' wire (src/workers/wire.ts): `u32 length | u8 type | payload`,
 * little-endian, split and backpressured the same way. On top of it every replication frame is
 * `u32 jsonBytes | JSON header | binary body`: control fields are small and read best as JSON
 * (validated field by field on receipt), data (log units, base chunks) travels as raw bytes.
 *
 * Conversation:
 * ```
 * standby                                  primary
 *   Hello {nonce_s, storeId?, epoch, id} →
 *                                       ← Challenge {nonce_p}
 *   Auth {mac_s}                         →     (checked: nothing of the store was sent before)
 *                                       ← Welcome {storeId, epoch, mac_p} | Refused {code}
 *   Start {from | null}                  →
 *                                       ← SeedBegin, SeedData…, SeedManifest   (from = null, or the log is gone)
 *                                       ← Unit… (the durable tail), Heartbeat
 *   Ack {received, durable, …}           →     (also SeedAck per base object)
 *   Ping                                 →  ← Pong {lastCommitEnd}
 * ```
 *
 * Limits: a frame is at most `MAX_FRAME_BYTES` (64 MiB, the wire's); a JSON header at most
 * {@link MAX_HEADER_BYTES}; a base object travels in pieces of {@link SEED_PIECE_BYTES}.
 *
 * @module
 */
import { StandbyError } from "../errors.ts";
import { Frame, FrameBuilder, FrameReader, FrameSender, FrameSplitter, MAX_FRAME_BYTES } from "../workers/wire.ts";

export { MAX_FRAME_BYTES };

/**
 * Protocol version, in the Hello: a peer of another version is refused. 2: units are shipped as
 * their writes are issued (not once durable), each Unit carries the epoch of the open that wrote
 * it, and Start names the last unit the standby holds so the primary can tell whether it is still
 * part of its log (docs/REPLICATION.md, "Shipping before durable").
 */
export const PROTOCOL_VERSION = 2;

/** Longest JSON header of a frame. */
export const MAX_HEADER_BYTES = 64 << 10;

/** Frames of one turn are joined into one socket write up to this many bytes (see Connection). */
const MAX_JOINED_BYTES = 256 << 10;

/** Bytes of a base object per SeedData frame. */
export const SEED_PIECE_BYTES = 1 << 20;

/** Replication frame types (a separate numbering from the Workers' frames; same framing). */
export const enum Msg {
  Hello = 1,
  Challenge = 2,
  Auth = 3,
  Welcome = 4,
  Refused = 5,
  Start = 6,
  SeedBegin = 7,
  SeedData = 8,
  SeedManifest = 9,
  SeedAck = 10,
  Unit = 11,
  Ack = 12,
  Heartbeat = 13,
  Ping = 14,
  Pong = 15,
}

/** A received frame: its type, its JSON header (unchecked: check each field), its body. */
export interface Message {
  readonly type: Msg;
  readonly header: Record<string, unknown>;
  readonly body: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encode one frame. */
export function encodeMessage(type: Msg, header: Record<string, unknown>, body?: Uint8Array): Uint8Array {
  const json = encoder.encode(JSON.stringify(header));
  if (json.length > MAX_HEADER_BYTES) throw new StandbyError(`replication frame header of ${json.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  const size = 4 + json.length + (body?.length ?? 0);
  if (size > MAX_FRAME_BYTES) throw new StandbyError(`replication frame of ${size} bytes exceeds ${MAX_FRAME_BYTES}`);
  // The wire's frame types are the Workers' enum; the numbering here is the replication's own.
  const builder = new FrameBuilder(type as number as Frame, size + 8).blob(json);
  if (body !== undefined) builder.raw(body);
  return builder.finish();
}

/** Decode one frame (type + payload) the splitter produced. */
export function decodeMessage(frame: Uint8Array): Message {
  const reader = new FrameReader(frame);
  const json = reader.blob();
  if (json.length > MAX_HEADER_BYTES) throw new StandbyError(`replication frame header of ${json.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  const header: unknown = JSON.parse(decoder.decode(json));
  if (typeof header !== "object" || header === null || Array.isArray(header)) throw new StandbyError("replication frame header is not an object");
  return { type: reader.type as number as Msg, header: header as Record<string, unknown>, body: reader.rest() };
}

/** A field of a received header, checked: a finite number. */
export function num(message: Message, field: string): number {
  const value = message.header[field];
  if (typeof value !== "number" || !Number.isFinite(value)) throw new StandbyError(`replication frame ${message.type}: field ${field} is not a number`);
  return value;
}

/** A field of a received header, checked: a string of at most `max` characters. */
export function str(message: Message, field: string, max = 1024): string {
  const value = message.header[field];
  if (typeof value !== "string" || value.length > max) throw new StandbyError(`replication frame ${message.type}: field ${field} is not a string`);
  return value;
}

/** What a connection needs of a Bun socket. */
export interface WireSocket {
  write(data: Uint8Array): number;
  end(): void;
  terminate?(): void;
  setNoDelay?(noDelay?: boolean): boolean;
  readonly remoteAddress?: string;
}

/**
 * One replication connection, either side: frames in (to `onMessage`, in order), frames out
 * with backpressure, one close that reaches everybody waiting.
 */
export class Connection {
  private readonly splitter = new FrameSplitter();
  private readonly sender: FrameSender;
  private readonly socket: WireSocket;
  private closeListeners: Array<(reason: Error | undefined) => void> = [];
  /** Called for each frame, in order. Throwing closes the connection with that error. */
  onMessage: (message: Message) => void = () => {};
  closed = false;
  /** Why it closed (undefined: an orderly close). */
  closeReason: Error | undefined;
  bytesIn = 0;
  bytesOut = 0;
  /**
   * Frames sent in this turn, written together at its end (a microtask, before the thread waits
   * for anything): one socket write where a burst (the units of one tail read, an ack behind a
   * unit) made one each. A loopback TCP write costs the sender its syscall and the receiver a
   * wake-up; on the loaded 2-core VM ~0.3 ms each (the replication bench's profile).
   */
  private corked: Uint8Array[] = [];
  private corkedBytes = 0;

  constructor(socket: WireSocket) {
    this.socket = socket;
    this.sender = new FrameSender(socket);
    // Acknowledgements and units are small frames that must not wait for Nagle's coalescing
    // (with delayed ACKs it adds up to ~40 ms per round trip, which a synchronous commit pays).
    try {
      socket.setNoDelay?.(true);
    } catch {
      // a Unix socket has no Nagle
    }
  }

  /** Remote address, for log lines. */
  get peer(): string {
    return this.socket.remoteAddress ?? "unix socket";
  }

  /** Bytes waiting for the socket. */
  get backlog(): number {
    return this.sender.backlog + this.corkedBytes;
  }

  send(type: Msg, header: Record<string, unknown>, body?: Uint8Array): void {
    if (this.closed) return;
    const frame = encodeMessage(type, header, body);
    this.bytesOut += frame.length;
    if (this.corked.length === 0) queueMicrotask(() => this.uncork());
    this.corked.push(frame);
    this.corkedBytes += frame.length;
  }

  /** Write the frames of this turn (see {@link corked}). */
  private uncork(): void {
    const frames = this.corked;
    if (frames.length === 0) return;
    this.corked = [];
    const bytes = this.corkedBytes;
    this.corkedBytes = 0;
    if (this.closed) return;
    if (frames.length === 1 || bytes > MAX_JOINED_BYTES) {
      // Large frames (seed pieces, big units) are not copied to save a write.
      for (const frame of frames) this.sender.send(frame);
      return;
    }
    const joined = new Uint8Array(bytes);
    let at = 0;
    for (const frame of frames) {
      joined.set(frame, at);
      at += frame.length;
    }
    this.sender.send(joined);
  }

  /** Resolves once at most `limitBytes` wait for the socket (or the connection closed). */
  whenDrained(limitBytes: number): Promise<void> {
    this.uncork();
    return this.sender.whenDrained(limitBytes);
  }

  /** Socket handler: bytes arrived. */
  data(chunk: Uint8Array): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    try {
      for (const frame of this.splitter.push(chunk)) {
        if (this.closed) return;
        this.onMessage(decodeMessage(frame));
      }
    } catch (error) {
      this.close(error instanceof Error ? error : new StandbyError(String(error)));
    }
  }

  /** Socket handler: the socket can take more. */
  drain(): void {
    this.sender.onDrain();
  }

  /** Socket handler: the socket closed (or failed). */
  socketClosed(error?: Error): void {
    this.finish(error ?? this.closeReason ?? new StandbyError("the replication connection closed", "LSS_STANDBY_DISCONNECTED"));
  }

  /** Close (idempotent). A `reason` marks a failure; it is what waiters see. */
  close(reason?: Error): void {
    if (this.closed) return;
    this.closeReason ??= reason;
    // What was sent before an orderly close goes first (a Refused frame says why).
    this.uncork();
    try {
      this.socket.end();
    } catch {
      // already gone
    }
    this.finish(reason);
  }

  /** Close without flushing what waits (a stalled peer must not hold anything). */
  abort(reason: Error): void {
    if (this.closed) return;
    this.closeReason ??= reason;
    try {
      if (this.socket.terminate !== undefined) this.socket.terminate();
      else this.socket.end();
    } catch {
      // already gone
    }
    this.finish(reason);
  }

  /** Call `listener` once, when the connection closes (at once if it has). */
  onClose(listener: (reason: Error | undefined) => void): void {
    if (this.closed) listener(this.closeReason);
    else this.closeListeners.push(listener);
  }

  private finish(reason: Error | undefined): void {
    if (this.closed && this.closeListeners.length === 0) return;
    this.closed = true;
    this.corked = [];
    this.corkedBytes = 0;
    this.closeReason ??= reason;
    this.sender.onClose();
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const listener of listeners) listener(this.closeReason);
  }
}

/**
 * Waits for the next frame of a type (the handshake's request–response steps), with a deadline:
 * a silent peer never holds a handshake open.
 */
export class Inbox {
  private queue: Message[] = [];
  private waiter: { resolve: (m: Message) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  push(message: Message): void {
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      waiter.resolve(message);
    } else this.queue.push(message);
  }

  fail(error: Error): void {
    this.failure ??= error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }

  /** The next frame, or a rejection after `timeoutMs` or when the connection fails. */
  next(timeoutMs: number, what: string): Promise<Message> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new StandbyError(`replication handshake: no ${what} within ${timeoutMs} ms`, "LSS_STANDBY_TIMEOUT"));
      }, timeoutMs);
      this.waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }
}
