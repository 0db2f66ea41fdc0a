/**
 * The portable backend: node:fs positional reads and writes plus fdatasync, O_DIRECT where the
 * filesystem allows it, aligned native memory from libc. Same semantics as the io_uring backend:
 * batched submission, completions tagged with user data, in whatever order the threads finish.
 *
 * @module
 */
import fs from "node:fs";
import os from "node:os";
import {
  ALIGNMENT_BYTES,
  checkChains,
  linkSucceeded,
  MAX_QUEUE_DEPTH,
  type FileHandle,
  type IoBackend,
  type IoCompletion,
  type IoOp,
  type NativeBuffer,
  type OpenFileOptions,
} from "./backend.ts";
import { ECANCELED, EINVAL, EIO, EOPNOTSUPP } from "./errno.ts";
import { deviceBytesOf, refuseOnDevice } from "./device.ts";
import { allocAligned, fallocate, freeAligned } from "./libc.ts";
import { HeldLocks } from "./lock.ts";
import {
  errorFromErrno,
  InvalidArgumentError,
  IoError,
  StoreClosedError,
} from "../errors.ts";

/**
 * {@link IoBackend.writeThenSyncNow} with plain system calls (`pwrite`, then `fdatasync` only if
 * the write was whole); both backends use it. Never throws: results as a completion has them.
 */
export function writeThenSyncWithSyscalls(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): { written: number; synced: number } {
  let written: number;
  try {
    written = fs.writeSync(file.fd, buffer.bytes, bufferOffset, lengthBytes, fileOffset);
  } catch (error) {
    return { written: -errnoOf(error), synced: -ECANCELED };
  }
  if (written !== lengthBytes) return { written, synced: -ECANCELED };
  try {
    fs.fdatasyncSync(file.fd);
    return { written, synced: 0 };
  } catch (error) {
    return { written, synced: -errnoOf(error) };
  }
}

/** Positive errno of a node:fs error (EIO when it carries none we know). */
export function errnoOf(error: unknown): number {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string") {
    const value = (os.constants.errno as Record<string, number | undefined>)[code];
    if (value !== undefined) return value;
  }
  const errno = (error as { errno?: unknown } | null)?.errno;
  if (typeof errno === "number" && errno !== 0) return Math.abs(errno);
  return EIO;
}

const O_DIRECT = fs.constants.O_DIRECT ?? 0o40000;

/** Options of {@link PortableBackend}. */
export interface PortableBackendOptions {
  queueDepth?: number;
  fallbackReason?: string;
}

/** node:fs backend. */
export class PortableBackend implements IoBackend {
  readonly kind = "portable" as const;
  readonly queueDepth: number;
  readonly fallbackReason: string | undefined;
  private readonly ready: IoCompletion[] = [];
  private readonly liveBuffers = new Set<number>();
  private inFlightCount = 0;
  private waiter: { minReady: number; resolve: () => void; timer: ReturnType<typeof setTimeout> } | undefined;
  private isClosed = false;
  private readonly locks = new HeldLocks();

  constructor(options: PortableBackendOptions = {}) {
    const queueDepth = options.queueDepth ?? 256;
    if (!Number.isInteger(queueDepth) || queueDepth < 1 || queueDepth > MAX_QUEUE_DEPTH) {
      throw new InvalidArgumentError(`queueDepth must be an integer in [1, ${MAX_QUEUE_DEPTH}], got ${queueDepth}`);
    }
    this.queueDepth = queueDepth;
    this.fallbackReason = options.fallbackReason;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get inFlight(): number {
    return this.inFlightCount;
  }

  private assertOpen(): void {
    if (this.isClosed) throw new StoreClosedError("the I/O backend is closed");
  }

  openFile(path: string, options: OpenFileOptions = {}): FileHandle {
    this.assertOpen();
    const base = (options.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR) | (options.create ? fs.constants.O_CREAT : 0);
    const wantDirect = options.direct ?? true;
    let fd: number | undefined;
    let direct = false;
    if (wantDirect) {
      try {
        fd = fs.openSync(path, base | O_DIRECT, 0o644);
        direct = true;
      } catch (error) {
        // tmpfs and some others refuse O_DIRECT with EINVAL: fall back to buffered I/O.
        if (errnoOf(error) !== EINVAL) throw errorFromErrno(-errnoOf(error), `open ${path}`);
      }
    }
    if (fd === undefined) {
      try {
        fd = fs.openSync(path, base, 0o644);
      } catch (error) {
        throw errorFromErrno(-errnoOf(error), `open ${path}`);
      }
    }
    try {
      return { fd, path, direct, deviceBytes: deviceBytesOf(fd, path) };
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
  }

  closeFile(file: FileHandle): void {
    try {
      fs.closeSync(file.fd);
    } catch (error) {
      throw errorFromErrno(-errnoOf(error), `close ${file.path}`);
    } finally {
      // After the data descriptor (a failed close still frees it): see HeldLocks.
      this.locks.releaseClosed(file);
    }
  }

  async lockFile(file: FileHandle): Promise<void> {
    this.assertOpen();
    await this.locks.lock(file);
  }

  fileSizeBytes(file: FileHandle): number {
    this.assertOpen();
    if (file.deviceBytes !== undefined) return file.deviceBytes;
    try {
      return fs.fstatSync(file.fd).size;
    } catch (error) {
      throw errorFromErrno(-errnoOf(error), `fstat ${file.path}`);
    }
  }

  allocateSpace(file: FileHandle, offset: number, lengthBytes: number): void {
    this.assertOpen();
    refuseOnDevice(file, "fallocate");
    const errno = fallocate(file.fd, 0, offset, lengthBytes);
    if (errno === EOPNOTSUPP) {
      // Filesystems without fallocate: extend by truncation, which still reserves the range's size.
      const size = this.fileSizeBytes(file);
      if (size < offset + lengthBytes) this.truncate(file, offset + lengthBytes);
      return;
    }
    if (errno !== 0) throw errorFromErrno(-errno, `fallocate ${file.path}`);
  }

  truncate(file: FileHandle, sizeBytes: number): void {
    this.assertOpen();
    refuseOnDevice(file, "ftruncate");
    try {
      fs.ftruncateSync(file.fd, sizeBytes);
    } catch (error) {
      throw errorFromErrno(-errnoOf(error), `ftruncate ${file.path}`);
    }
  }

  /** See {@link IoBackend.writeThenSyncNow}. */
  writeThenSyncNow(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): { written: number; synced: number } {
    this.assertOpen();
    return writeThenSyncWithSyscalls(file, buffer, bufferOffset, lengthBytes, fileOffset);
  }

  syncNow(file: FileHandle): void {
    this.assertOpen();
    try {
      fs.fdatasyncSync(file.fd);
    } catch (error) {
      throw errorFromErrno(-errnoOf(error), `fdatasync ${file.path}`);
    }
  }

  alloc(sizeBytes: number): NativeBuffer {
    this.assertOpen();
    const buffer = allocAligned(sizeBytes);
    this.liveBuffers.add(buffer.ptr);
    return buffer;
  }

  free(buffer: NativeBuffer): void {
    if (!this.liveBuffers.delete(buffer.ptr)) {
      throw new InvalidArgumentError(`free of a buffer this backend does not own (ptr ${buffer.ptr})`);
    }
    freeAligned(buffer);
  }

  submit(ops: readonly IoOp[]): void {
    this.assertOpen();
    if (this.inFlightCount + ops.length > this.queueDepth) {
      throw new InvalidArgumentError(
        `submitting ${ops.length} ops would put ${this.inFlightCount + ops.length} in flight, over queueDepth ${this.queueDepth}`,
      );
    }
    for (const op of ops) this.validate(op);
    checkChains(ops, this.queueDepth);
    // Every op counts in flight from now, also a chain's ops that have not started yet.
    this.inFlightCount += ops.length;
    let chainStart = 0;
    for (let i = 0; i < ops.length; i++) {
      if ((ops[i] as IoOp).link === true) continue;
      if (i === chainStart) this.start(ops[i] as IoOp);
      else this.startChain(ops.slice(chainStart, i + 1), 0);
      chainStart = i + 1;
    }
  }

  /**
   * Emulate io_uring's linked ops: run `chain[index]`, and the next op only once it has
   * succeeded; after a failure (or a short transfer) the rest complete with -ECANCELED.
   * Every op of the chain counts in flight from its submission (see `submit`).
   */
  private startChain(chain: readonly IoOp[], index: number): void {
    const op = chain[index] as IoOp;
    if (index === chain.length - 1) {
      this.start(op);
      return;
    }
    this.start(op, (result) => {
      if (linkSucceeded(op, result)) {
        this.startChain(chain, index + 1);
        return;
      }
      for (let i = index + 1; i < chain.length; i++) {
        this.inFlightCount -= 1;
        this.ready.push({ userData: (chain[i] as IoOp).userData, result: -ECANCELED });
      }
      this.wake();
    });
  }

  private validate(op: IoOp): void {
    if (op.op === "datasync") return;
    if (!this.liveBuffers.has(op.buffer.ptr)) {
      throw new InvalidArgumentError(`${op.op} uses a buffer this backend does not own`);
    }
    if (op.bufferOffset < 0 || op.lengthBytes < 0 || op.bufferOffset + op.lengthBytes > op.buffer.sizeBytes) {
      throw new InvalidArgumentError(
        `${op.op} range [${op.bufferOffset}, +${op.lengthBytes}) is outside its ${op.buffer.sizeBytes}-byte buffer`,
      );
    }
    if (op.fileOffset < 0 || !Number.isSafeInteger(op.fileOffset)) {
      throw new InvalidArgumentError(`${op.op} file offset ${op.fileOffset} is invalid`);
    }
  }

  /** Run `op` (counted in flight by `submit`); `then` runs once its completion is ready. */
  private start(op: IoOp, then?: (result: number) => void): void {
    const finish = (result: number): void => {
      this.inFlightCount -= 1;
      this.ready.push({ userData: op.userData, result });
      then?.(result);
      this.wake();
    };
    if (op.op === "datasync") {
      fs.fdatasync(op.fd, (error) => finish(error ? -errnoOf(error) : 0));
      return;
    }
    const view = op.buffer.bytes;
    if (op.op === "write") {
      fs.write(op.fd, view, op.bufferOffset, op.lengthBytes, op.fileOffset, (error, written) =>
        finish(error ? -errnoOf(error) : written),
      );
    } else {
      fs.read(op.fd, view, op.bufferOffset, op.lengthBytes, op.fileOffset, (error, bytesRead) =>
        finish(error ? -errnoOf(error) : bytesRead),
      );
    }
  }

  private wake(): void {
    const waiter = this.waiter;
    if (waiter !== undefined && this.ready.length >= waiter.minReady) {
      this.waiter = undefined;
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
  }

  reap(out: IoCompletion[], max = Number.MAX_SAFE_INTEGER): number {
    const count = Math.min(max, this.ready.length);
    for (let i = 0; i < count; i++) out.push(this.ready[i] as IoCompletion);
    this.ready.splice(0, count);
    return count;
  }

  wait(minReady: number, timeoutMs: number): Promise<void> {
    this.assertOpen();
    if (this.ready.length >= minReady) return Promise.resolve();
    if (this.waiter !== undefined) throw new InvalidArgumentError("only one wait() may be pending at a time");
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve();
      }, timeoutMs);
      this.waiter = { minReady, resolve, timer };
    });
  }

  close(): void {
    if (this.isClosed) return;
    if (this.inFlightCount > 0) throw new IoError(16, `close with ${this.inFlightCount} operations in flight`);
    for (const address of this.liveBuffers) freeAligned({ ptr: address, sizeBytes: 0, bytes: new Uint8Array(0) });
    this.liveBuffers.clear();
    this.isClosed = true;
  }
}

export { ALIGNMENT_BYTES };
