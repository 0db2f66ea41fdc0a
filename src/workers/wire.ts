/**
 * The wire between an attached Worker and the owner: length-prefixed binary frames over a Unix
 * socket in the abstract namespace (no file to clean up; gone with the process).
 *
 * Why a socket and not a MessagePort: a MessagePort must be listed in `postMessage`'s transfer
 * list, so a handle holding one is not the plain cloneable value `worker.postMessage(store.share())`
 * takes. And why not BroadcastChannel: it fans out to every listener and says nothing when a
 * Worker dies. A socket is point to point, ordered, and its `close` reaches the owner within a few
 * milliseconds of the Worker's death — terminated, thrown, exited, or stuck in a busy loop (measured
 * on Bun 1.4.5; `terminate()` runs no exit handler in the Worker, so nothing the Worker does itself
 * could tell the owner).
 *
 * Frame: u32 length (of what follows) | u8 type | payload. Everything little-endian.
 *
 * @module
 */

/** Frame types. Worker → owner below 20, owner → Worker from 20. */
export const enum Frame {
  Hello = 1,
  /** f64 txId, then ops: u8 kind (1 write, 2 delete), u64 seid, and for a write u32 length + bytes. */
  Ops = 2,
  /** f64 txId, u32 stream, u64 seid. */
  StreamOpen = 3,
  /** f64 txId, u32 stream, bytes. */
  StreamData = 4,
  /** f64 txId, u32 stream, u8 aborted. */
  StreamEnd = 5,
  /** f64 txId, f64 ticket. */
  Commit = 6,
  /** f64 txId, f64 ticket. */
  Abort = 7,
  /** u32 request id, JSON { op, args }. */
  Request = 8,
  /** u32 attachment id, JSON info. */
  Welcome = 20,
  /** f64 txId. */
  Committed = 21,
  /** f64 txId, JSON { name, code, message }. */
  TxFailed = 22,
  /** u32 request id, u8 ok, JSON (the result, or { name, code, message }). */
  Response = 23,
  /** u32 request id, JSON progress of a long request (a backup's `onProgress`). */
  Progress = 24,
}

export const OP_WRITE = 1;
export const OP_DELETE = 2;

/** Longest frame accepted (explicit limit; larger values travel as streams). */
export const MAX_FRAME_BYTES = 64 << 20;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Builds one frame. */
export class FrameBuilder {
  private buffer: Uint8Array;
  private view: DataView;
  private length = 0;

  constructor(type: Frame, capacity = 256) {
    this.buffer = new Uint8Array(Math.max(capacity, 16));
    this.view = new DataView(this.buffer.buffer);
    this.length = 4;
    this.u8(type);
  }

  get bytes(): number {
    return this.length;
  }

  private room(n: number): void {
    if (this.length + n <= this.buffer.length) return;
    const next = new Uint8Array(Math.max(this.buffer.length * 2, this.length + n));
    next.set(this.buffer.subarray(0, this.length));
    this.buffer = next;
    this.view = new DataView(next.buffer);
  }

  u8(value: number): this {
    this.room(1);
    this.view.setUint8(this.length, value);
    this.length += 1;
    return this;
  }

  u32(value: number): this {
    this.room(4);
    this.view.setUint32(this.length, value, true);
    this.length += 4;
    return this;
  }

  f64(value: number): this {
    this.room(8);
    this.view.setFloat64(this.length, value, true);
    this.length += 8;
    return this;
  }

  u64(value: bigint): this {
    this.room(8);
    this.view.setBigUint64(this.length, value, true);
    this.length += 8;
    return this;
  }

  raw(bytes: Uint8Array): this {
    this.room(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
    return this;
  }

  /** u32 length + bytes. */
  blob(bytes: Uint8Array): this {
    return this.u32(bytes.length).raw(bytes);
  }

  json(value: unknown): this {
    return this.raw(encoder.encode(JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? `${v}n` : v))));
  }

  /** The finished frame (length prefix filled in). */
  finish(): Uint8Array {
    this.view.setUint32(0, this.length - 4, true);
    return this.buffer.subarray(0, this.length);
  }
}

/** Reads the fields of one frame's payload. */
export class FrameReader {
  readonly type: Frame;
  private readonly view: DataView;
  private readonly bytes: Uint8Array;
  private offset = 1;

  constructor(frame: Uint8Array) {
    this.bytes = frame;
    this.view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    this.type = frame[0] as Frame;
  }

  get done(): boolean {
    return this.offset >= this.bytes.length;
  }

  u8(): number {
    const value = this.view.getUint8(this.offset);
    this.offset += 1;
    return value;
  }

  u32(): number {
    const value = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return value;
  }

  f64(): number {
    const value = this.view.getFloat64(this.offset, true);
    this.offset += 8;
    return value;
  }

  u64(): bigint {
    const value = this.view.getBigUint64(this.offset, true);
    this.offset += 8;
    return value;
  }

  /** The next `n` bytes (a view: copy before keeping). */
  raw(n: number): Uint8Array {
    if (this.offset + n > this.bytes.length) throw new RangeError("frame field past the frame's end");
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  blob(): Uint8Array {
    return this.raw(this.u32());
  }

  rest(): Uint8Array {
    return this.raw(this.bytes.length - this.offset);
  }

  json<T>(): T {
    const text = decoder.decode(this.rest());
    return JSON.parse(text, (_key, v: unknown) => (typeof v === "string" && /^\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v)) as T;
  }
}

/** Splits a byte stream into frames. */
export class FrameSplitter {
  private pending: Uint8Array = new Uint8Array(0);

  /** Feed received bytes; returns every complete frame (type + payload, copied). */
  push(chunk: Uint8Array): Uint8Array[] {
    let data: Uint8Array;
    if (this.pending.length === 0) data = chunk;
    else {
      data = new Uint8Array(this.pending.length + chunk.length);
      data.set(this.pending);
      data.set(chunk, this.pending.length);
    }
    const frames: Uint8Array[] = [];
    let offset = 0;
    while (data.length - offset >= 4) {
      const length = (data[offset] as number) | ((data[offset + 1] as number) << 8) | ((data[offset + 2] as number) << 16) | ((data[offset + 3] as number) << 24);
      const size = length >>> 0;
      if (size > MAX_FRAME_BYTES + 64) throw new RangeError(`frame of ${size} bytes exceeds the limit`);
      if (data.length - offset - 4 < size) break;
      frames.push(data.slice(offset + 4, offset + 4 + size));
      offset += 4 + size;
    }
    this.pending = offset === data.length ? new Uint8Array(0) : data.slice(offset);
    return frames;
  }
}

/** What the sending side of a Bun socket needs. */
export interface RawSocket {
  write(data: Uint8Array): number;
  end(): void;
}

/**
 * Writes frames to a socket with backpressure: what the kernel did not take waits for `drain`.
 * `whenDrained()` lets a producer (a write stream) wait instead of buffering without bound.
 */
export class FrameSender {
  private readonly socket: RawSocket;
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private waiters: Array<() => void> = [];
  closed = false;

  constructor(socket: RawSocket) {
    this.socket = socket;
  }

  send(frame: Uint8Array): void {
    if (this.closed) return;
    if (this.queue.length === 0) {
      const written = this.socket.write(frame);
      if (written >= frame.length) return;
      frame = frame.subarray(Math.max(written, 0));
    }
    this.queue.push(frame);
    this.queuedBytes += frame.length;
  }

  /** Bytes waiting for the socket. */
  get backlog(): number {
    return this.queuedBytes;
  }

  /** The socket can take more: write what waits. */
  onDrain(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0] as Uint8Array;
      const written = this.socket.write(head);
      if (written >= head.length) {
        this.queue.shift();
        this.queuedBytes -= head.length;
        continue;
      }
      if (written > 0) {
        this.queue[0] = head.subarray(written);
        this.queuedBytes -= written;
      }
      return;
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Resolves once the backlog is under `limitBytes` (or the socket closed). */
  whenDrained(limitBytes: number): Promise<void> {
    if (this.queuedBytes <= limitBytes || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  onClose(): void {
    this.closed = true;
    this.queue = [];
    this.queuedBytes = 0;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}
