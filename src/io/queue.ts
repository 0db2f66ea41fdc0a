/**
 * Promise-shaped I/O over a backend's batched submit/reap: each call gets its own user data, and
 * one pump reaps completions for everybody who shares the backend. Short reads and errno results
 * become typed errors here, so the layers above see either the whole transfer or an exception.
 *
 * @module
 */
import type { FileHandle, IoBackend, IoCompletion, IoOp, NativeBuffer } from "./backend.ts";
import { CorruptionError, errorFromErrno } from "../errors.ts";
import { EIO } from "./errno.ts";

/** Longest single blocking wait of the pump; short so timers and other callers keep running. */
const PUMP_WAIT_MS = 50;

interface Pending {
  resolve: (result: number) => void;
  reject: (error: Error) => void;
}

/** Promise-returning reads, writes and datasyncs over one backend. */
export class IoQueue {
  readonly backend: IoBackend;
  private nextUserData = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly backlog: IoOp[] = [];
  private pumping = false;
  private readonly completions: IoCompletion[] = [];

  constructor(backend: IoBackend) {
    this.backend = backend;
  }

  /** Operations issued and not yet finished (including those waiting for queue room). */
  get outstanding(): number {
    return this.pending.size;
  }

  /** Write `lengthBytes` from `buffer` at `bufferOffset` to `fileOffset`; rejects on any error or short write. */
  async write(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): Promise<void> {
    const written = await this.issue((userData) => ({ op: "write", fd: file.fd, buffer, bufferOffset, lengthBytes, fileOffset, userData }), `write ${file.path}@${fileOffset}+${lengthBytes}`);
    if (written !== lengthBytes) throw errorFromErrno(-EIO, `short write ${written}/${lengthBytes} at ${fileOffset} of ${file.path}`);
  }

  /** Read exactly `lengthBytes`; a read past the end of the file is a `CorruptionError`. */
  async read(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): Promise<void> {
    const got = await this.issue((userData) => ({ op: "read", fd: file.fd, buffer, bufferOffset, lengthBytes, fileOffset, userData }), `read ${file.path}@${fileOffset}+${lengthBytes}`);
    if (got !== lengthBytes) {
      throw new CorruptionError(`read of ${lengthBytes} bytes at ${fileOffset} of ${file.path} got ${got}: past the end of the file`);
    }
  }

  /** fdatasync through the backend's queue. */
  async datasync(file: FileHandle): Promise<void> {
    await this.issue((userData) => ({ op: "datasync", fd: file.fd, userData }), `fdatasync ${file.path}`);
  }

  private issue(make: (userData: number) => IoOp, what: string): Promise<number> {
    const userData = this.nextUserData++;
    const op = make(userData);
    const promise = new Promise<number>((resolve, reject) => {
      this.pending.set(userData, {
        resolve: (result) => (result < 0 ? reject(errorFromErrno(result, what)) : resolve(result)),
        reject,
      });
    });
    this.backlog.push(op);
    this.drainBacklog();
    this.startPump();
    return promise;
  }

  private drainBacklog(): void {
    const room = this.backend.queueDepth - this.backend.inFlight;
    if (room <= 0 || this.backlog.length === 0) return;
    const batch = this.backlog.splice(0, room);
    try {
      this.backend.submit(batch);
    } catch (error) {
      for (const op of batch) this.settle(op.userData, undefined, error as Error);
    }
  }

  private settle(userData: number, result: number | undefined, error?: Error): void {
    const entry = this.pending.get(userData);
    if (entry === undefined) return;
    this.pending.delete(userData);
    if (error !== undefined) entry.reject(error);
    else entry.resolve(result as number);
  }

  private startPump(): void {
    if (this.pumping) return;
    this.pumping = true;
    void this.pump();
  }

  private async pump(): Promise<void> {
    try {
      while (this.pending.size > 0 && !this.backend.closed) {
        await this.backend.wait(1, PUMP_WAIT_MS);
        this.completions.length = 0;
        this.backend.reap(this.completions);
        for (const c of this.completions) this.settle(c.userData, c.result);
        this.drainBacklog();
      }
    } catch (error) {
      for (const userData of [...this.pending.keys()]) this.settle(userData, undefined, error as Error);
    } finally {
      this.pumping = false;
    }
  }
}
