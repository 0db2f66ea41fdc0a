/**
 * The I/O backend interface: everything `src/log` needs from the operating system.
 *
 * Two implementations keep the same semantics: `uring` (bun:ffi over the liburing shim, O_DIRECT
 * through io_uring) and `portable` (node:fs positional I/O plus fdatasync). A fault-injecting
 * wrapper for tests implements the same interface.
 *
 * Submission is asynchronous and batched: `submit` queues operations, each tagged with caller
 * user data; completions come back, in whatever order the kernel finishes them, through `reap`
 * (never blocks) and `wait` (resolves once at least N completions are ready, or on timeout).
 *
 * @module
 */
import { InvalidArgumentError } from "../errors.ts";

/** Alignment of every I/O buffer, file offset and length under O_DIRECT. */
export const ALIGNMENT_BYTES = 4096;

/** Largest queue depth a backend accepts (io_uring's own limit is 32768; we keep it smaller). */
export const MAX_QUEUE_DEPTH = 4096;

/** Which backend is really in use. */
export type IoKind = "io_uring" | "portable";

/** What the caller asks for at open: `auto` probes io_uring and O_DIRECT and falls back. */
export type IoChoice = "auto" | "uring" | "portable";

/**
 * Native memory, aligned to {@link ALIGNMENT_BYTES}, freed only by {@link IoBackend.free}.
 * `bytes` is a view of it from JS; `ptr` is its address as a plain number (it keeps nothing alive).
 */
export interface NativeBuffer {
  readonly ptr: number;
  readonly sizeBytes: number;
  readonly bytes: Uint8Array;
}

/**
 * One operation of a batch. `userData` comes back, unchanged, in its completion.
 *
 * `link: true` links the op to the next one of the same `submit` batch (io_uring's
 * IOSQE_IO_LINK): the next op starts only after this one has completed *successfully* — a read or
 * write that transferred all of `lengthBytes`, a datasync that returned 0 — and otherwise
 * completes with `-ECANCELED` without running (and so does the rest of the chain). A chain is the
 * run of linked ops plus the first unlinked op after them; it must end inside its batch (the last
 * op of a batch never links), and a backend starts it whole or not at all, never split across
 * submissions. A datasync linked after a write therefore covers that write: it starts only once
 * the write is complete.
 */
export type IoOp =
  | {
      readonly op: "write" | "read";
      readonly fd: number;
      readonly buffer: NativeBuffer;
      /** Offset inside `buffer` where the transfer starts. */
      readonly bufferOffset: number;
      readonly lengthBytes: number;
      readonly fileOffset: number;
      readonly userData: number;
      readonly link?: boolean;
    }
  | { readonly op: "datasync"; readonly fd: number; readonly userData: number; readonly link?: boolean };

/** True when `op` finished as a link chain needs it to (a whole transfer, or a datasync's 0). */
export function linkSucceeded(op: IoOp, result: number): boolean {
  return op.op === "datasync" ? result === 0 : result === op.lengthBytes;
}

/**
 * Check that every chain of `ops` ends inside the batch and fits in `queueDepth`.
 * @throws InvalidArgumentError otherwise.
 */
export function checkChains(ops: readonly IoOp[], queueDepth: number): void {
  let run = 0;
  for (const op of ops) {
    run = op.link === true ? run + 1 : 0;
    if (run + 1 > queueDepth) {
      throw new InvalidArgumentError(`a link chain of more than ${queueDepth} ops cannot fit in queueDepth ${queueDepth}`);
    }
  }
  if (run > 0) throw new InvalidArgumentError("the last op of a batch links to nothing: a link chain must end inside its batch");
}

/** A finished operation: `result` is bytes transferred (≥ 0) or a negative errno. */
export interface IoCompletion {
  userData: number;
  result: number;
}

/** How to open a file. */
export interface OpenFileOptions {
  /** Create the file when missing (default false). */
  create?: boolean;
  /** Open for reading only (default false). */
  readOnly?: boolean;
  /** Ask for O_DIRECT; the backend reports whether it got it (default: the backend's own choice). */
  direct?: boolean;
}

/**
 * Most a {@link IoBackend.wait} may block the JS thread (`blockUs`), µs. A lone durable commit's
 * write and datasync take 0.15–0.6 ms on the machines we measure on; past this the wait goes on
 * without blocking, so timers and sockets are never held up longer.
 */
export const MAX_WAIT_BLOCK_US = 1000;

/** An open file of a backend. */
export interface FileHandle {
  readonly fd: number;
  readonly path: string;
  /** True when the file was opened with O_DIRECT. */
  readonly direct: boolean;
  /**
   * Set when the path is a block device (a raw partition): its size in bytes, from the device
   * (ioctl BLKGETSIZE64), fixed while it is open. A device is never truncated or fallocated:
   * {@link IoBackend.allocateSpace} and {@link IoBackend.truncate} refuse it.
   */
  readonly deviceBytes?: number | undefined;
}

/** The contract every backend keeps. All failures are typed errors from `src/errors.ts`. */
export interface IoBackend {
  readonly kind: IoKind;
  /** Operations that may be in flight at once. */
  readonly queueDepth: number;
  /** Why `auto` fell back to this backend, when it did. */
  readonly fallbackReason: string | undefined;

  openFile(path: string, options?: OpenFileOptions): FileHandle;
  closeFile(file: FileHandle): void;
  /**
   * Take the store lock of `file` (see `lock.ts`): resolves once the file is this opener's to
   * write — no live owner holds it, and a dead owner's I/O is over. Rejects with a
   * `StoreLockedError` that names a live owner. `closeFile` releases it.
   */
  lockFile(file: FileHandle): Promise<void>;
  /** The file's size; a block device's own size (fstat says 0 for a device). */
  fileSizeBytes(file: FileHandle): number;
  /** Reserve space (fallocate; the file grows to cover it). Refused on a block device. */
  allocateSpace(file: FileHandle, offset: number, lengthBytes: number): void;
  /** Set the file's size. Refused on a block device. */
  truncate(file: FileHandle, sizeBytes: number): void;
  /** Synchronous datasync, for rare paths (open, close); hot paths submit `datasync` ops. */
  syncNow(file: FileHandle): void;
  /**
   * Optional: write `[bufferOffset, +lengthBytes)` of `buffer` at `fileOffset`, then fdatasync,
   * with plain system calls on this thread (it blocks for both). Returns the write's result (bytes
   * or -errno) and the datasync's (0, -errno, or -ECANCELED when the write failed or was short,
   * so no datasync was issued). For a lone durable commit: through io_uring the datasync is handed
   * to a kernel worker thread, a hand-off and a wake-up this path does not pay (IoQueue).
   * A backend that models durability (a test's fault backend) leaves it out.
   */
  writeThenSyncNow?(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): { written: number; synced: number };

  alloc(sizeBytes: number): NativeBuffer;
  free(buffer: NativeBuffer): void;

  /** Queue a batch. Throws `InvalidArgumentError` if it would exceed `queueDepth` in flight. */
  submit(ops: readonly IoOp[]): void;
  /** Operations submitted and not yet reaped. */
  readonly inFlight: number;
  /** Move up to `max` ready completions into `out` (appended); returns how many. Never blocks. */
  reap(out: IoCompletion[], max?: number): number;
  /**
   * Resolve once at least `minReady` completions are ready to reap, or after `timeoutMs`.
   * `blockUs` (default 0, at most {@link MAX_WAIT_BLOCK_US}) lets a backend block the JS thread in
   * the kernel that long, once, before it waits without blocking: for a wait that nothing else on
   * the thread can use (a lone commit's write and datasync), where waking from the kernel
   * directly is the cheaper wake-up. A backend may ignore it.
   */
  wait(minReady: number, timeoutMs: number, blockUs?: number): Promise<void>;

  /** Free the backend's own resources. Files must be closed and buffers freed by their owners. */
  close(): void;
  readonly closed: boolean;
}
