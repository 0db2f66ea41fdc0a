/**
 * The io_uring backend: bun:ffi over the native shim (`src/io/shim.ts`), O_DIRECT files, aligned
 * native memory, batched submission through one io_uring per backend.
 *
 * How it works:
 * - Every accepted op takes a *slot* (0 … queueDepth-1). The slot index is the user data the kernel
 *   sees; the caller's own `userData` stays in a JS table and is put back on the completion. So
 *   completions are matched exactly, any number is a valid `userData`, and a buffer with I/O in
 *   flight cannot be freed (each live buffer counts the ops using it).
 * - Accepted ops wait in an explicit pending queue (slot indices) until the SQ takes them; with a
 *   ring at least `queueDepth` deep that is immediate, but an SQ the kernel has not drained yet
 *   (EAGAIN/EBUSY) only delays ops, it never loses or refuses them.
 * - One native submission array (queueDepth × 40 bytes) and one native completion array
 *   (queueDepth × 16 bytes) are reused for every call: the hot path allocates nothing but the
 *   completion objects it hands back.
 * - `wait()` never blocks the JS thread on the device. It polls the ring across event-loop turns
 *   (`setImmediate`) for up to {@link SPIN_US}, which catches a short op (a 4 KiB write, a
 *   datasync) with the least latency (with many ops in flight each turn first waits
 *   {@link SPIN_SLICE_US} in the kernel, where the next completion almost always is), and then
 *   sleeps on the ring's eventfd: the kernel signals it
 *   for every completion, and a read of it parked on Bun's thread pool wakes the JS thread. So
 *   while a long write is in flight the JS thread keeps filling the next buffer: blocking in
 *   io_uring_enter instead made a streamed write run at queue depth 1 (the disk idle a fifth of
 *   the time). Without an eventfd (the kernel refused one) it falls back to blocking in the kernel
 *   for at most {@link WAIT_SLICE_US} at a time between event-loop turns.
 *
 * @module
 */
import { toArrayBuffer } from "bun:ffi";
import fs from "node:fs";
import {
  checkChains,
  MAX_QUEUE_DEPTH,
  MAX_WAIT_BLOCK_US,
  type FileHandle,
  type IoBackend,
  type IoCompletion,
  type IoOp,
  type NativeBuffer,
  type OpenFileOptions,
} from "./backend.ts";
import { deviceBytesOf, refuseOnDevice } from "./device.ts";
import {
  COMPLETION_ENTRY_BYTES,
  cString,
  loadShim,
  O_CREAT,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  OP_DATASYNC,
  OP_FLAG_LINK,
  OP_READ,
  OP_WRITE,
  SUBMISSION_ENTRY_BYTES,
  type ShimSymbols,
} from "./shim.ts";
import { EINVAL, ENOMEM, ENOSYS, EOPNOTSUPP, EPERM, errnoName } from "./errno.ts";
import {
  errorFromErrno,
  InvalidArgumentError,
  IoError,
  IoUnavailableError,
  StoreClosedError,
} from "../errors.ts";
import { HeldLocks } from "./lock.ts";
import { writeThenSyncWithSyscalls } from "./portable.ts";

/** Queue depth when the caller does not choose one. */
export const DEFAULT_QUEUE_DEPTH = 256;

/** Largest single buffer {@link UringBackend.alloc} hands out (1 GiB). */
export const MAX_BUFFER_BYTES = 1 << 30;

/** Longest single blocking wait inside the shim when the ring has no eventfd, in microseconds. */
export const WAIT_SLICE_US = 1000;

/** How long {@link UringBackend.wait} polls across event-loop turns before it sleeps on the eventfd (µs). */
export const SPIN_US = 150;

/** Longest blocking wait in the kernel per polling turn of {@link UringBackend.wait} (µs). */
export const SPIN_SLICE_US = 10;

/** Ops in flight from which a polling turn first waits {@link SPIN_SLICE_US} in the kernel. */
export const SPIN_KERNEL_MIN_OUTSTANDING = 8;

/** Mode of files the backend creates. */
const FILE_MODE = 0o644;

const TWO_POW_32 = 0x1_0000_0000;

/** Options of {@link UringBackend.create}. */
export interface UringBackendOptions {
  /** Operations that may be in flight at once, 1 … {@link MAX_QUEUE_DEPTH} (default 256). */
  queueDepth?: number | undefined;
  /** Recorded as {@link UringBackend.fallbackReason} (io_uring is normally nobody's fallback). */
  fallbackReason?: string | undefined;
}

/** A file opened by the io_uring backend. */
export interface UringFileHandle extends FileHandle {
  /** Why O_DIRECT was asked for and not obtained (the filesystem refused it), if it was. */
  readonly directFallbackReason: string | undefined;
}

/** What the backend knows about one buffer it allocated. */
interface BufferRecord {
  readonly sizeBytes: number;
  /** Ops in flight (accepted, not yet reaped) that use this buffer. */
  inFlight: number;
}

function hintFor(errno: number): string {
  switch (errno) {
    case EPERM:
      return " (io_uring is forbidden here: a seccomp profile such as Docker's default, or /proc/sys/kernel/io_uring_disabled)";
    case ENOSYS:
      return " (this kernel has no io_uring)";
    case ENOMEM:
      return " (not enough locked memory for the ring: raise RLIMIT_MEMLOCK or lower queueDepth)";
    default:
      return "";
  }
}

function checkNonNegativeInteger(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative safe integer, got ${value}`);
  }
}

/** The io_uring backend. Create it with {@link UringBackend.create}. */
export class UringBackend implements IoBackend {
  readonly kind = "io_uring" as const;
  readonly queueDepth: number;
  readonly fallbackReason: string | undefined;

  private readonly lib: ShimSymbols;
  private readonly ring: number;
  private isClosed = false;
  private inFlightCount = 0;
  private readonly locks = new HeldLocks();

  /** Native submission array and its views. */
  private readonly sqAddress: number;
  private readonly sqU32: Uint32Array;
  private readonly sqI32: Int32Array;
  /** Native completion array and its views. */
  private readonly cqAddress: number;
  private readonly cqU32: Uint32Array;
  private readonly cqI32: Int32Array;

  /** Per-slot state of accepted ops. */
  private readonly slotUserData: Float64Array;
  private readonly slotOp: Uint8Array;
  /** Submission flags of the op in each slot ({@link OP_FLAG_LINK}). */
  private readonly slotFlags: Uint8Array;
  private readonly slotFd: Int32Array;
  private readonly slotAddress: Float64Array;
  private readonly slotLength: Uint32Array;
  private readonly slotFileOffset: Float64Array;
  private readonly slotBuffer: (BufferRecord | undefined)[];
  private readonly slotBusy: Uint8Array;
  private readonly freeSlots: Int32Array;
  private freeTop: number;

  /** Accepted ops not yet taken by the SQ: a circular queue of slot indices. */
  private readonly pendingSlots: Int32Array;
  private pendingHead = 0;
  private pendingCount = 0;

  /** Completions made up in JS when a whole submission failed (rare; errors only). */
  private readonly failed: IoCompletion[] = [];

  /** Buffers this backend allocated and has not freed, by address. */
  private readonly buffers = new Map<number, BufferRecord>();

  /** The ring's eventfd (signalled per completion), or -1 when the kernel refused one. */
  private readonly eventFd: number;
  /** The one read of {@link eventFd} parked on the thread pool, while there is one. */
  private eventRead: Promise<void> | undefined;
  private readonly eventBytes = new Uint8Array(8);

  /**
   * Load the shim, probe io_uring and set up a ring.
   * @throws InvalidArgumentError for a bad queue depth.
   * @throws IoUnavailableError naming the cause when the shim cannot load or io_uring cannot work.
   */
  static create(options: UringBackendOptions = {}): UringBackend {
    const queueDepth = options.queueDepth ?? DEFAULT_QUEUE_DEPTH;
    if (!Number.isInteger(queueDepth) || queueDepth < 1 || queueDepth > MAX_QUEUE_DEPTH) {
      throw new InvalidArgumentError(`queueDepth must be an integer in [1, ${MAX_QUEUE_DEPTH}], got ${queueDepth}`);
    }
    let lib: ShimSymbols;
    try {
      lib = loadShim();
    } catch (error) {
      if (error instanceof IoUnavailableError) throw error;
      throw new IoUnavailableError(`cannot load the io_uring shim: ${String(error)}`);
    }
    const probe = lib.lss_probe();
    if (probe < 0) {
      throw new IoUnavailableError(
        `io_uring is unavailable: io_uring_queue_init failed with ${errnoName(-probe)} (errno ${-probe})${hintFor(-probe)}`,
      );
    }
    const ringResult = lib.lss_ring_create(queueDepth);
    const ring = typeof ringResult === "number" ? ringResult : Number(ringResult);
    if (ring <= 0) {
      const errno = ring < 0 ? -ring : EINVAL;
      throw new IoUnavailableError(
        `io_uring is unavailable: a ring of ${queueDepth} entries could not be set up: ${errnoName(errno)} (errno ${errno})${hintFor(errno)}`,
      );
    }
    try {
      return new UringBackend(lib, ring, queueDepth, options.fallbackReason);
    } catch (error) {
      lib.lss_ring_destroy(ring);
      throw error;
    }
  }

  private constructor(lib: ShimSymbols, ring: number, queueDepth: number, fallbackReason: string | undefined) {
    this.lib = lib;
    this.ring = ring;
    this.queueDepth = queueDepth;
    this.fallbackReason = fallbackReason;

    const sqBytes = queueDepth * SUBMISSION_ENTRY_BYTES;
    const cqBytes = queueDepth * COMPLETION_ENTRY_BYTES;
    this.sqAddress = this.nativeAlloc(sqBytes);
    this.cqAddress = this.nativeAlloc(cqBytes);
    if (this.sqAddress === 0 || this.cqAddress === 0) {
      lib.lss_free(this.sqAddress);
      lib.lss_free(this.cqAddress);
      throw errorFromErrno(-ENOMEM, `allocating the io_uring submission/completion arrays (${sqBytes + cqBytes} bytes)`);
    }
    const sq = toArrayBuffer(this.sqAddress, 0, sqBytes);
    this.sqU32 = new Uint32Array(sq);
    this.sqI32 = new Int32Array(sq);
    const cq = toArrayBuffer(this.cqAddress, 0, cqBytes);
    this.cqU32 = new Uint32Array(cq);
    this.cqI32 = new Int32Array(cq);

    this.slotUserData = new Float64Array(queueDepth);
    this.slotOp = new Uint8Array(queueDepth);
    this.slotFlags = new Uint8Array(queueDepth);
    this.slotFd = new Int32Array(queueDepth);
    this.slotAddress = new Float64Array(queueDepth);
    this.slotLength = new Uint32Array(queueDepth);
    this.slotFileOffset = new Float64Array(queueDepth);
    this.slotBuffer = new Array<BufferRecord | undefined>(queueDepth).fill(undefined);
    this.slotBusy = new Uint8Array(queueDepth);
    this.freeSlots = new Int32Array(queueDepth);
    for (let i = 0; i < queueDepth; i++) this.freeSlots[i] = queueDepth - 1 - i;
    this.freeTop = queueDepth;
    this.pendingSlots = new Int32Array(queueDepth);
    // A ring without an eventfd still works, with blocking waits (see the module comment).
    const eventFd = lib.lss_ring_eventfd(ring);
    this.eventFd = eventFd >= 0 ? eventFd : -1;
  }

  private nativeAlloc(sizeBytes: number): number {
    const address = this.lib.lss_alloc(sizeBytes);
    return typeof address === "number" ? address : Number(address);
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Operations accepted by {@link submit} and not yet handed back by {@link reap}. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  private assertOpen(): void {
    if (this.isClosed) throw new StoreClosedError("the io_uring backend is closed");
  }

  // -------------------------------------------------------------------------------------------
  // Files

  /**
   * Open `path` for reading and writing (or reading only), creating it when asked. O_DIRECT is
   * asked for unless `direct: false`; a filesystem that refuses it (EINVAL, as tmpfs may) gets a
   * buffered open instead, reported as `direct: false` with `directFallbackReason`.
   */
  openFile(path: string, options: OpenFileOptions = {}): UringFileHandle {
    this.assertOpen();
    if (typeof path !== "string" || path === "") throw new InvalidArgumentError("openFile needs a non-empty path");
    const name = cString(path);
    const base = (options.readOnly === true ? O_RDONLY : O_RDWR) | (options.create === true ? O_CREAT : 0);
    const wantDirect = options.direct ?? true;
    let directFallbackReason: string | undefined;
    if (wantDirect) {
      const fd = this.lib.lss_open(name, base | O_DIRECT, FILE_MODE);
      if (fd >= 0) return this.handleOf(fd, path, true, undefined);
      if (fd !== -EINVAL) throw errorFromErrno(fd, `open ${path}`);
      directFallbackReason = `the filesystem of ${path} refuses O_DIRECT (EINVAL); using buffered I/O`;
    }
    const fd = this.lib.lss_open(name, base, FILE_MODE);
    if (fd < 0) throw errorFromErrno(fd, `open ${path}`);
    return this.handleOf(fd, path, false, directFallbackReason);
  }

  /** The handle of a file just opened as `fd` (closed again if its device size cannot be read). */
  private handleOf(fd: number, path: string, direct: boolean, directFallbackReason: string | undefined): UringFileHandle {
    try {
      return { fd, path, direct, directFallbackReason, deviceBytes: deviceBytesOf(fd, path) };
    } catch (error) {
      this.lib.lss_close(fd);
      throw error;
    }
  }

  /** Close a file this backend opened (and release its store lock, after it: see `HeldLocks`). */
  closeFile(file: FileHandle): void {
    this.assertOpen();
    const rc = this.lib.lss_close(file.fd);
    // close(2) frees the descriptor even when it reports an error.
    this.locks.releaseClosed(file);
    if (rc < 0) throw errorFromErrno(rc, `close ${file.path}`);
  }

  /**
   * Take the store lock (`lock.ts`): not on the data descriptor, whose io_uring requests keep
   * its description alive past the death of its owner. @throws StoreLockedError naming a live owner.
   */
  async lockFile(file: FileHandle): Promise<void> {
    this.assertOpen();
    await this.locks.lock(file);
  }

  /** The file's size in bytes; a block device's own size (see {@link FileHandle.deviceBytes}). */
  fileSizeBytes(file: FileHandle): number {
    this.assertOpen();
    if (file.deviceBytes !== undefined) return file.deviceBytes;
    const result = this.lib.lss_file_size(file.fd);
    const size = typeof result === "number" ? result : Number(result);
    if (size < 0) throw errorFromErrno(size, `fstat ${file.path}`);
    return size;
  }

  /**
   * Reserve `[offset, offset + lengthBytes)` with fallocate (mode 0: the file grows to cover it).
   * Where the filesystem has no fallocate, the file is extended by ftruncate instead.
   */
  allocateSpace(file: FileHandle, offset: number, lengthBytes: number): void {
    this.assertOpen();
    refuseOnDevice(file, "fallocate");
    checkNonNegativeInteger(offset, "allocateSpace offset");
    checkNonNegativeInteger(lengthBytes, "allocateSpace length");
    if (lengthBytes === 0) return;
    const rc = this.lib.lss_fallocate(file.fd, 0, offset, lengthBytes);
    if (rc === -EOPNOTSUPP) {
      if (this.fileSizeBytes(file) < offset + lengthBytes) this.truncate(file, offset + lengthBytes);
      return;
    }
    if (rc < 0) throw errorFromErrno(rc, `fallocate ${file.path} [${offset}, +${lengthBytes})`);
  }

  /** Set the file's size. */
  truncate(file: FileHandle, sizeBytes: number): void {
    this.assertOpen();
    refuseOnDevice(file, "ftruncate");
    checkNonNegativeInteger(sizeBytes, "truncate size");
    const rc = this.lib.lss_ftruncate(file.fd, sizeBytes);
    if (rc < 0) throw errorFromErrno(rc, `ftruncate ${file.path}`);
  }

  /** See {@link IoBackend.writeThenSyncNow}. */
  writeThenSyncNow(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): { written: number; synced: number } {
    this.assertOpen();
    return writeThenSyncWithSyscalls(file, buffer, bufferOffset, lengthBytes, fileOffset);
  }

  /** fdatasync, synchronously (blocks the thread: for open and close paths only). */
  syncNow(file: FileHandle): void {
    this.assertOpen();
    const rc = this.lib.lss_datasync(file.fd);
    if (rc < 0) throw errorFromErrno(rc, `fdatasync ${file.path}`);
  }

  // -------------------------------------------------------------------------------------------
  // Memory

  /** `sizeBytes` of zeroed native memory aligned to 4096 bytes; lives until {@link free}. */
  alloc(sizeBytes: number): NativeBuffer {
    this.assertOpen();
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_BUFFER_BYTES) {
      throw new InvalidArgumentError(`buffer size must be an integer in [1, ${MAX_BUFFER_BYTES}], got ${sizeBytes}`);
    }
    const address = this.nativeAlloc(sizeBytes);
    if (address === 0) throw errorFromErrno(-ENOMEM, `alloc of ${sizeBytes} bytes`);
    this.buffers.set(address, { sizeBytes, inFlight: 0 });
    // No finalizer: the memory lives until free(), whatever the GC thinks of the view.
    const bytes = new Uint8Array(toArrayBuffer(address, 0, sizeBytes));
    return { ptr: address, sizeBytes, bytes };
  }

  /**
   * Free a buffer from {@link alloc}. Its `bytes` view must not be used afterwards.
   * @throws InvalidArgumentError for a buffer this backend does not own (or already freed), or
   *   one that operations still in flight use.
   */
  free(buffer: NativeBuffer): void {
    this.assertOpen();
    const record = this.buffers.get(buffer.ptr);
    if (record === undefined) {
      throw new InvalidArgumentError(`free of a buffer this backend does not own or already freed (ptr ${buffer.ptr})`);
    }
    if (record.inFlight > 0) {
      throw new InvalidArgumentError(`free of a buffer that ${record.inFlight} operations in flight still use (ptr ${buffer.ptr})`);
    }
    this.buffers.delete(buffer.ptr);
    this.lib.lss_free(buffer.ptr);
  }

  // -------------------------------------------------------------------------------------------
  // Submission and completion

  /**
   * Accept a batch and hand it to the kernel. All ops are checked first: a bad one throws and
   * none is accepted.
   * @throws InvalidArgumentError when more than `queueDepth` would be in flight, or for a bad op.
   */
  submit(ops: readonly IoOp[]): void {
    this.assertOpen();
    const count = ops.length;
    if (this.inFlightCount + count > this.queueDepth) {
      throw new InvalidArgumentError(
        `submitting ${count} ops would put ${this.inFlightCount + count} in flight, over queueDepth ${this.queueDepth}`,
      );
    }
    for (let i = 0; i < count; i++) this.validate(ops[i] as IoOp);
    checkChains(ops, this.queueDepth);
    for (let i = 0; i < count; i++) this.accept(ops[i] as IoOp);
    this.inFlightCount += count;
    this.flushPending();
  }

  private validate(op: IoOp): void {
    if (op === null || typeof op !== "object") throw new InvalidArgumentError("an op must be an object");
    if (!Number.isInteger(op.fd) || op.fd < -0x8000_0000 || op.fd > 0x7fff_ffff) {
      throw new InvalidArgumentError(`${String(op.op)} needs an integer fd, got ${op.fd}`);
    }
    if (typeof op.userData !== "number") throw new InvalidArgumentError(`userData must be a number, got ${typeof op.userData}`);
    if (op.op === "datasync") return;
    if (op.op !== "write" && op.op !== "read") {
      throw new InvalidArgumentError(`unknown op ${JSON.stringify((op as { op: unknown }).op)}`);
    }
    const record = typeof op.buffer === "object" && op.buffer !== null ? this.buffers.get(op.buffer.ptr) : undefined;
    if (record === undefined) throw new InvalidArgumentError(`${op.op} uses a buffer this backend does not own`);
    if (
      !Number.isInteger(op.bufferOffset) ||
      !Number.isInteger(op.lengthBytes) ||
      op.bufferOffset < 0 ||
      op.lengthBytes < 0 ||
      op.bufferOffset + op.lengthBytes > record.sizeBytes
    ) {
      throw new InvalidArgumentError(
        `${op.op} range [${op.bufferOffset}, +${op.lengthBytes}) is outside its ${record.sizeBytes}-byte buffer`,
      );
    }
    checkNonNegativeInteger(op.fileOffset, `${op.op} file offset`);
  }

  private accept(op: IoOp): void {
    const slot = this.freeSlots[--this.freeTop] as number;
    this.slotBusy[slot] = 1;
    this.slotUserData[slot] = op.userData;
    this.slotFd[slot] = op.fd;
    // The kernel links the chain (IOSQE_IO_LINK); the shim never splits one across submissions.
    this.slotFlags[slot] = op.link === true ? OP_FLAG_LINK : 0;
    if (op.op === "datasync") {
      this.slotOp[slot] = OP_DATASYNC;
      this.slotAddress[slot] = 0;
      this.slotLength[slot] = 0;
      this.slotFileOffset[slot] = 0;
      this.slotBuffer[slot] = undefined;
    } else {
      const record = this.buffers.get(op.buffer.ptr) as BufferRecord;
      record.inFlight += 1;
      this.slotOp[slot] = op.op === "write" ? OP_WRITE : OP_READ;
      this.slotAddress[slot] = op.buffer.ptr + op.bufferOffset;
      this.slotLength[slot] = op.lengthBytes;
      this.slotFileOffset[slot] = op.fileOffset;
      this.slotBuffer[slot] = record;
    }
    const tail = (this.pendingHead + this.pendingCount) % this.queueDepth;
    this.pendingSlots[tail] = slot;
    this.pendingCount += 1;
  }

  /** Encode the pending queue into the native array and submit what the SQ takes. */
  private flushPending(): void {
    const count = this.pendingCount;
    if (count === 0) return;
    const u32 = this.sqU32;
    const qd = this.queueDepth;
    for (let i = 0; i < count; i++) {
      const slot = this.pendingSlots[(this.pendingHead + i) % qd] as number;
      const w = i * 10; // 40 bytes = 10 words
      const address = this.slotAddress[slot] as number;
      const offset = this.slotFileOffset[slot] as number;
      u32[w] = this.slotOp[slot] as number;
      this.sqI32[w + 1] = this.slotFd[slot] as number;
      u32[w + 2] = address >>> 0;
      u32[w + 3] = Math.floor(address / TWO_POW_32);
      u32[w + 4] = this.slotLength[slot] as number;
      u32[w + 5] = this.slotFlags[slot] as number;
      u32[w + 6] = offset >>> 0;
      u32[w + 7] = Math.floor(offset / TWO_POW_32);
      u32[w + 8] = slot;
      u32[w + 9] = 0;
    }
    const rc = this.lib.lss_submit(this.ring, this.sqAddress, count);
    if (rc < 0) {
      // Nothing was queued and the ring refuses work: fail every pending op through its completion.
      for (let i = 0; i < count; i++) {
        const slot = this.pendingSlots[(this.pendingHead + i) % qd] as number;
        this.failed.push({ userData: this.slotUserData[slot] as number, result: rc });
        this.releaseSlot(slot);
      }
      this.pendingHead = 0;
      this.pendingCount = 0;
      return;
    }
    this.pendingHead = (this.pendingHead + rc) % qd;
    this.pendingCount -= rc;
  }

  /** Give a slot back; the op it held is no longer in flight. */
  private releaseSlot(slot: number): void {
    const record = this.slotBuffer[slot];
    if (record !== undefined) {
      record.inFlight -= 1;
      this.slotBuffer[slot] = undefined;
    }
    this.slotBusy[slot] = 0;
    this.freeSlots[this.freeTop++] = slot;
  }

  /** Move up to `max` ready completions into `out`. Never blocks. */
  reap(out: IoCompletion[], max = Number.MAX_SAFE_INTEGER): number {
    this.assertOpen();
    let got = 0;
    while (this.failed.length > 0 && got < max) {
      out.push(this.failed.shift() as IoCompletion);
      this.inFlightCount -= 1;
      got += 1;
    }
    const u32 = this.cqU32;
    const i32 = this.cqI32;
    while (got < max) {
      const want = Math.min(max - got, this.queueDepth);
      const rc = this.lib.lss_reap(this.ring, this.cqAddress, want);
      if (rc < 0) throw errorFromErrno(rc, "io_uring reap");
      for (let j = 0; j < rc; j++) {
        const w = j * 4; // 16 bytes = 4 words
        const slot = u32[w] as number;
        if (u32[w + 1] !== 0 || slot >= this.queueDepth || this.slotBusy[slot] !== 1) continue; // not ours
        out.push({ userData: this.slotUserData[slot] as number, result: i32[w + 2] as number });
        this.releaseSlot(slot);
        this.inFlightCount -= 1;
        got += 1;
      }
      if (rc < want) break;
    }
    if (this.pendingCount > 0) this.flushPending();
    return got;
  }

  /**
   * Resolve once at least `minReady` completions are ready to reap, or after `timeoutMs`
   * (`Infinity` waits for as long as it takes).
   *
   * A loop: count what is ready; if enough, resolve. Otherwise poll across event-loop turns for
   * up to {@link SPIN_US}, then sleep on the ring's eventfd until a completion is posted or the
   * deadline passes (see the module comment). When nothing in flight could still complete, it
   * sleeps on a 1 ms timer instead, so other code can submit more.
   * @throws StoreClosedError when the backend is (or becomes) closed.
   */
  async wait(minReady: number, timeoutMs: number, blockUs = 0): Promise<void> {
    this.assertOpen();
    if (typeof minReady !== "number" || Number.isNaN(minReady)) {
      throw new InvalidArgumentError(`minReady must be a number, got ${minReady}`);
    }
    if (typeof timeoutMs !== "number" || Number.isNaN(timeoutMs) || timeoutMs < 0) {
      throw new InvalidArgumentError(`timeoutMs must be a non-negative number, got ${timeoutMs}`);
    }
    const started = performance.now();
    const deadline = started + timeoutMs;
    const spinUntil = started + SPIN_US / 1000;
    let mayBlockUs = Math.min(blockUs, MAX_WAIT_BLOCK_US);
    for (;;) {
      this.assertOpen();
      if (this.pendingCount > 0) this.flushPending();
      const need = minReady - this.failed.length;
      if (need <= 0) return;
      const readyNow = this.checked(this.lib.lss_wait(this.ring, 0, 0));
      if (readyNow >= need) return;
      const now = performance.now();
      const remainingMs = deadline - now;
      if (remainingMs <= 0) return;
      // Ops the kernel has and has not completed yet (pending ones are still in JS).
      const outstanding = this.inFlightCount - this.failed.length - this.pendingCount - readyNow;
      if (outstanding <= 0) {
        await new Promise<void>((resolve) => setTimeout(resolve, Math.min(1, remainingMs)));
      } else if (mayBlockUs >= 1) {
        // Once per wait: the caller says nothing else on this thread can use the time.
        const sliceUs = Math.max(1, Math.min(mayBlockUs, Math.floor(remainingMs * 1000)));
        mayBlockUs = 0;
        const ready = this.checked(this.lib.lss_wait(this.ring, Math.min(need, readyNow + outstanding), sliceUs));
        if (ready >= need) return;
      } else if (now < spinUntil) {
        // With many ops in flight the next completion is microseconds away: a few in the kernel
        // catch it without an event-loop turn, and hold other JS up only that long. With few
        // in flight (a commit's write, a stream's 1 MiB units) only poll: a timed wait in the
        // kernel there costs more than it saves (QD1 reads fell from 17k to 12k IOPS with it).
        if (outstanding >= SPIN_KERNEL_MIN_OUTSTANDING) {
          const ready = this.checked(this.lib.lss_wait(this.ring, Math.min(need, readyNow + outstanding), SPIN_SLICE_US));
          if (ready >= need) return;
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      } else if (this.eventFd >= 0) {
        await this.sleepOnEventFd(remainingMs);
      } else {
        const sliceUs = Math.max(1, Math.min(WAIT_SLICE_US, Math.floor(remainingMs * 1000)));
        const ready = this.checked(this.lib.lss_wait(this.ring, Math.min(need, readyNow + outstanding), sliceUs));
        if (ready >= need) return;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }

  /**
   * Resolve when the ring posts a completion (its eventfd becomes readable) or after `timeoutMs`.
   * At most one read of the eventfd is parked on the thread pool at a time, and only while ops
   * are in flight, so it always returns: every op in flight posts a completion.
   */
  private sleepOnEventFd(timeoutMs: number): Promise<void> {
    if (this.eventRead === undefined) {
      this.eventRead = new Promise<void>((resolve) => {
        fs.read(this.eventFd, this.eventBytes, 0, 8, null, () => {
          this.eventRead = undefined;
          resolve(); // an error only means "look again": the caller re-counts what is ready
        });
      });
    }
    if (!Number.isFinite(timeoutMs)) return this.eventRead;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(1, Math.ceil(timeoutMs)));
    });
    return Promise.race([this.eventRead, timeout]).finally(() => clearTimeout(timer));
  }

  private checked(rc: number): number {
    if (rc < 0) throw errorFromErrno(rc, "io_uring wait");
    return rc;
  }

  /**
   * Destroy the ring and free the backend's native memory, including buffers still allocated.
   * Idempotent. Files must be closed by their owners.
   * @throws IoError (EBUSY) while operations are in flight: reap them first.
   */
  close(): void {
    if (this.isClosed) return;
    if (this.inFlightCount > 0) throw new IoError(16, `close with ${this.inFlightCount} operations in flight`);
    this.isClosed = true;
    const rc = this.lib.lss_ring_destroy(this.ring);
    this.closeEventFd();
    for (const address of this.buffers.keys()) this.lib.lss_free(address);
    this.buffers.clear();
    this.lib.lss_free(this.sqAddress);
    this.lib.lss_free(this.cqAddress);
    if (rc < 0) throw errorFromErrno(rc, "io_uring ring teardown");
  }

  /** Close the eventfd, first waking a read still parked on it (it is closed once that returns). */
  private closeEventFd(): void {
    if (this.eventFd < 0) return;
    const fd = this.eventFd;
    const parked = this.eventRead;
    if (parked === undefined) {
      this.lib.lss_close(fd);
      return;
    }
    this.lib.lss_eventfd_signal(fd);
    void parked.then(() => this.lib.lss_close(fd));
  }
}
