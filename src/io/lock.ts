/**
 * The store lock: which opener may write a store file. A live owner — another process, another
 * Worker of this process, or this very thread — is refused with a `StoreLockedError` that names
 * it; an owner that died (SIGKILLed, or a Worker terminated without `close()`) is not an owner,
 * and the next opener gets the file as soon as the dead owner's I/O is over. Both backends take
 * it the same way (libc through bun:ffi, see `libc.ts`), on a descriptor and its path, whatever
 * the file is (a regular file or a block device).
 *
 * Two locks, on two open file descriptions of the store file:
 *
 * - **The owner lock**: an exclusive `flock` on a descriptor of its own (the store file reopened
 *   through `/proc/self/fd`), which does no I/O and is never given to io_uring. A flock belongs to
 *   its open file description and goes when the last reference to that description goes; this
 *   description is referenced by the process's descriptor table only, so the kernel releases the
 *   lock while the process exits — before its parent can reap it, so a supervisor's reopen right
 *   after `waitpid` finds the file free. (The flock used to be taken on the data descriptor. Its
 *   io_uring requests in flight hold references to that description too, and the kernel finishes
 *   them after the process is gone: 4–7 of 30 reopens right after a SIGKILL of a busy writer were
 *   refused, the lock freeing 26–72 ms later.)
 * - **The I/O marker**: an OFD read lock on the data descriptor, on a byte range no file reaches
 *   ({@link MARKER_START}). It lives exactly as long as the data descriptor's open file
 *   description, so as long as any I/O of its owner is still in flight. The new owner, holding the
 *   owner lock, waits until no other description carries the marker: a write of the dead owner
 *   landing after the new owner has read the file and written its own blocks there would destroy
 *   them. That wait is the kernel finishing a dead process's I/O (tens of milliseconds), bounded
 *   by {@link DRAIN_TIMEOUT_MS}; a live owner is never waited for.
 *
 * Who holds it: the owner lock's description records its owner thread (F_SETOWN_EX; nothing is
 * ever signalled, the descriptor is never made O_ASYNC) and, as its file position (it reads and
 * writes nothing, so its position is free), that thread's start time. The kernel keeps both with
 * the description, where every thread of the process can read them. Current kernels (checked on
 * 6.18) answer 0 from F_GETOWN_EX once the owner thread has exited, whatever thread got its id
 * since; where a kernel still answers the id, the start time tells the owner from a later thread
 * with its recycled id. Another process is named from `/proc/locks` (its pid and command).
 *
 * A Worker terminated without `close()`: its thread exits (checked in /proc/self/task), but its
 * descriptors stay open in the process and keep both locks. An opener that finds the owner lock
 * held in this process by a thread that no longer runs takes the store over: it points the dead
 * owner's lock descriptor at /dev/null (dup3), which drops the lock. Once it holds the owner lock
 * itself, every other data descriptor of this process that still carries the marker belongs to a
 * dead owner (a live owner would hold the owner lock) and is pointed at /dev/null too; the dead
 * owner's I/O still in flight keeps the marker until it is done, exactly as after a crash. The
 * numbers are never closed: a number that stays taken cannot be handed to a new descriptor, which
 * a second opener taking over at the same moment, or a queued operation of the dead Worker's
 * thread pool, would then hit. Each dead owner so leaves two descriptors on /dev/null (three on a
 * block device, whose exclusive claim carries the marker too: see {@link markOwnerDescriptor}),
 * and its ring and buffers, whose I/O may still be in flight, unfreed.
 *
 * Without /proc the locks still exclude each other and the marker still waits for a dead
 * process's I/O; only naming the holder and taking over from a dead Worker need it.
 *
 * Why this way and not another:
 * - The owner lock alone (a flock on a descriptor of its own, nothing else) frees the file at the
 *   owner's death, but then the next owner may start while the dead one's writes are still in
 *   flight: measured, in 5–10 of 30 SIGKILLs of a busy io_uring writer its data description was
 *   still alive when the writer had been reaped. Hence the marker, and the wait on it.
 * - A process-wide registry of locks and owner threads in the native shim would have to be the
 *   portable backend's too, which must work where the shim does not load; and the kernel already
 *   keeps, per open file description, everything such a registry would hold (its owner, its
 *   position, its locks in /proc/self/fdinfo), where no registry can disagree with it.
 * - Closing a dead owner's descriptors (from a thread-exit hook, or here) would free their numbers
 *   for reuse while a late operation of the dead thread may still name them: dup3 keeps them taken.
 *
 * @module
 */
import fs from "node:fs";
import type { FileHandle } from "./backend.ts";
import { EWOULDBLOCK } from "./errno.ts";
import {
  F_RDLCK,
  F_UNLCK,
  F_WRLCK,
  ownerThread,
  positionOf,
  replaceDescriptor,
  seekTo,
  setOfdLock,
  setOwnerThread,
  testOfdLock,
  tryLockExclusive,
} from "./libc.ts";
import { errorFromErrno, InvalidArgumentError, StoreLockedError } from "../errors.ts";

/** First byte of the I/O marker's range: far past the end of any file or device. */
export const MARKER_START = 1n << 62n;
const MARKER_LENGTH = 1n;

/**
 * Longest wait for a dead owner's I/O to finish (ms). The kernel's own timeout for a request a
 * disk does not answer is 30 s; past that the device is stuck and the open says so.
 */
export const DRAIN_TIMEOUT_MS = 30_000;

/** Longest sleep between two looks at a dead owner's I/O (ms). */
const DRAIN_POLL_MAX_MS = 10;

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;

/** A lock taken by {@link acquireStoreLock}. */
export interface StoreLock {
  /** Release the owner lock. Close the data descriptor first (it carries the I/O marker). */
  release(): void;
}

/** Options of {@link acquireStoreLock}. */
export interface AcquireOptions {
  /** Longest wait for a dead owner's I/O (default {@link DRAIN_TIMEOUT_MS}). */
  drainTimeoutMs?: number;
}

/** The store file's identity, as fstat and /proc/locks spell it. */
interface FileIdentity {
  /** "maj:min:ino" with major and minor in hex, as /proc/locks prints them. */
  readonly procId: string;
}

/** A thread: its id and its start time (clock ticks after boot; 0 when unknown). */
interface ThreadIdentity {
  readonly tid: number;
  readonly start: number;
}

/** One line of /proc/locks or of a /proc/self/fdinfo `lock:` entry. */
interface LockLine {
  readonly kind: string;
  readonly type: string;
  readonly pid: number;
  readonly procId: string;
  readonly start: string;
}

function identityOf(fd: number, path: string): FileIdentity {
  let stat: fs.BigIntStats;
  try {
    stat = fs.fstatSync(fd, { bigint: true });
  } catch (error) {
    throw errorFromErrno(-errnoOf(error), `fstat ${path}`);
  }
  const dev = stat.dev;
  // glibc's gnu_dev_major/minor: the kernel prints these, in hex, in /proc/locks.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const hex = (n: bigint) => n.toString(16).padStart(2, "0");
  return { procId: `${hex(major)}:${hex(minor)}:${stat.ino}` };
}

/** Positive errno of a node:fs error (EIO when it carries none). */
function errnoOf(error: unknown): number {
  const errno = (error as { errno?: unknown } | null)?.errno;
  return typeof errno === "number" && errno !== 0 ? Math.abs(errno) : 5;
}

function readProc(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Parse a /proc/locks line (or an fdinfo `lock:` line); undefined for a blocked waiter ("->"). */
function parseLockLine(line: string): LockLine | undefined {
  const fields = line.replace(/^lock:\s*/, "").trim().split(/\s+/);
  if (fields.length < 8 || fields[1] === "->") return undefined;
  // "N: FLOCK ADVISORY WRITE pid maj:min:ino start end"
  return { kind: fields[1] as string, type: fields[3] as string, pid: Number(fields[4]), procId: fields[5] as string, start: fields[6] as string };
}

function isOwnerLock(lock: LockLine, id: FileIdentity): boolean {
  return lock.kind === "FLOCK" && lock.type === "WRITE" && lock.procId === id.procId;
}

function isMarker(lock: LockLine, id: FileIdentity): boolean {
  return lock.kind === "OFDLCK" && lock.type === "READ" && lock.procId === id.procId && lock.start === String(MARKER_START);
}

/** The calling thread (undefined without /proc). */
function currentThread(): ThreadIdentity | undefined {
  try {
    const tid = Number(fs.readlinkSync("/proc/thread-self").split("/").pop());
    if (!Number.isInteger(tid) || tid <= 0) return undefined;
    return { tid, start: threadStart(tid) ?? 0 };
  } catch {
    return undefined;
  }
}

/** Start time of thread `tid` of this process, or undefined when it does not exist (exited). */
function threadStart(tid: number): number | undefined {
  const stat = readProc(`/proc/self/task/${tid}/stat`);
  if (stat === undefined) return undefined;
  // Fields after the command (which may hold spaces and parentheses): state is field 3, starttime 22.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const start = Number(fields[19]);
  return Number.isSafeInteger(start) ? start : 0;
}

/** How long a thread of this process that holds the store may take to exit before it is named as the live holder. */
const THREAD_EXIT_GRACE_MS = 1_000;

/** True while `owner` runs: a thread with its id exists, has not exited, and started when it did. */
function threadAlive(owner: ThreadIdentity): boolean {
  if (owner.tid === 0) return false;
  const stat = readProc(`/proc/self/task/${owner.tid}/stat`);
  if (stat === undefined) return false;
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  if (state === "Z" || state === "X") return false;
  const start = threadStart(owner.tid);
  if (start === undefined) return false;
  return owner.start === 0 || start === owner.start;
}

/** True while process `pid` exists and has not exited (a zombie has closed its files). */
function processAlive(pid: number): boolean {
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat === undefined) return false;
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "Z" && state !== "X";
}

function describeProcess(pid: number): string {
  const comm = readProc(`/proc/${pid}/comm`)?.trim();
  return comm === undefined || comm === "" ? `process ${pid}` : `process ${pid} (${comm})`;
}

function describeThread(tid: number): string {
  if (tid === process.pid) return "the main thread of this process";
  const comm = readProc(`/proc/self/task/${tid}/comm`)?.trim();
  return `thread ${tid}${comm === undefined || comm === "" ? "" : ` ("${comm}")`} of this process (a Worker)`;
}

/** Descriptors of this process (other than `except`) with a lock line that `match` accepts. */
function ownDescriptorsWith(match: (lock: LockLine) => boolean, except: ReadonlySet<number>): number[] {
  let names: string[];
  try {
    names = fs.readdirSync("/proc/self/fd");
  } catch {
    return [];
  }
  const found: number[] = [];
  for (const name of names) {
    const fd = Number(name);
    if (except.has(fd) || !holdsLock(fd, match)) continue;
    found.push(fd);
  }
  return found;
}

function holdsLock(fd: number, match: (lock: LockLine) => boolean): boolean {
  const info = readProc(`/proc/self/fdinfo/${fd}`);
  if (info === undefined) return false;
  for (const line of info.split("\n")) {
    if (!line.startsWith("lock:")) continue;
    const lock = parseLockLine(line);
    if (lock !== undefined && match(lock)) return true;
  }
  return false;
}

/** Point `fd` at /dev/null (dup3): its old description loses this reference, the number stays taken. */
function neutralize(fd: number, path: string): void {
  let devNull: number;
  try {
    devNull = fs.openSync("/dev/null", O_RDONLY | O_CLOEXEC);
  } catch (error) {
    throw errorFromErrno(-errnoOf(error), `open /dev/null to take ${path} over from a dead owner`);
  }
  try {
    const errno = replaceDescriptor(devNull, fd);
    if (errno !== 0) throw errorFromErrno(-errno, `dup3 over a dead owner's descriptor of ${path}`);
  } finally {
    fs.closeSync(devNull);
  }
}

/** Who holds the owner lock, as far as /proc tells. */
type Holder =
  | { readonly kind: "thread"; readonly fd: number; readonly owner: ThreadIdentity }
  | { readonly kind: "descriptor" }
  | { readonly kind: "process"; readonly pid: number }
  | { readonly kind: "gone" }
  | { readonly kind: "unknown" };

function findHolder(id: FileIdentity, ownLockFd: number, dataFd: number): Holder {
  const mine = ownDescriptorsWith((lock) => isOwnerLock(lock, id), new Set([ownLockFd, dataFd]));
  for (const fd of mine) {
    // A position of 0: no owner was recorded (not a bloom-lss owner lock, or taken without /proc).
    const position = positionOf(fd);
    if (position <= 0) return { kind: "descriptor" };
    // Owner 0: current kernels report no owner once the owner thread has exited.
    return { kind: "thread", fd, owner: { tid: ownerThread(fd), start: position > 1 ? position : 0 } };
  }
  const locks = readProc("/proc/locks");
  if (locks === undefined) return { kind: "unknown" };
  for (const line of locks.split("\n")) {
    const lock = parseLockLine(line);
    if (lock === undefined || !isOwnerLock(lock, id)) continue;
    // Held through a descriptor of this process that the scan above did not see (taken since, or
    // a kernel without lock lines in fdinfo): live as far as can be told.
    if (lock.pid === process.pid) return { kind: "descriptor" };
    return lock.pid > 0 ? { kind: "process", pid: lock.pid } : { kind: "unknown" };
  }
  return { kind: "gone" };
}

/** Open the descriptor that carries the owner lock: the same file, a description of its own. */
function openLockDescriptor(file: FileHandle, id: FileIdentity): number {
  let fd: number | undefined;
  try {
    // Through /proc/self/fd the same inode is reopened even if the path was renamed or replaced.
    fd = fs.openSync(`/proc/self/fd/${file.fd}`, O_RDONLY | O_CLOEXEC);
  } catch {
    try {
      fd = fs.openSync(file.path, O_RDONLY | O_CLOEXEC);
    } catch (error) {
      throw errorFromErrno(-errnoOf(error), `open ${file.path} for its lock`);
    }
  }
  if (identityOf(fd, file.path).procId !== id.procId) {
    fs.closeSync(fd);
    throw new StoreLockedError(`${file.path} was replaced while it was being opened`);
  }
  return fd;
}

/**
 * Record `self` as the owner of the lock description: F_SETOWN_EX, and its start time as the
 * file position (1 where the position cannot hold it: a block device smaller than the number,
 * which still tells an owner lock of ours from any other flock, but not a recycled thread id on
 * a kernel that reports an exited owner's id). The kernel refuses neither on an open file.
 */
function recordOwner(lockFd: number, self: ThreadIdentity): void {
  setOwnerThread(lockFd, self.tid);
  if (self.start <= 1 || seekTo(lockFd, self.start) !== 0) seekTo(lockFd, 1);
}

/** Sleep `ms`, or throw when `deadline` has passed. */
async function pause(ms: number, deadline: number, onTimeout: () => Error): Promise<void> {
  if (Date.now() >= deadline) throw onTimeout();
  await Bun.sleep(Math.min(ms, Math.max(1, deadline - Date.now())));
}

/**
 * Take the store lock for the data descriptor `file`. Resolves once the file is this opener's to
 * write: no live owner holds it and no dead owner's I/O is in flight.
 * @throws StoreLockedError naming a live owner (a process, a thread of this process, this thread),
 *   or when a dead owner's I/O does not finish within the drain timeout.
 */
export async function acquireStoreLock(file: FileHandle, options: AcquireOptions = {}): Promise<StoreLock> {
  const drainTimeoutMs = options.drainTimeoutMs ?? DRAIN_TIMEOUT_MS;
  const id = identityOf(file.fd, file.path);
  const lockFd = openLockDescriptor(file, id);
  try {
    const self = currentThread();
    // Recorded before the flock, so a lock anyone can see already names its owner.
    if (self !== undefined) recordOwner(lockFd, self);
    const deadline = Date.now() + drainTimeoutMs;
    await takeOwnerLock(file, id, lockFd, self, deadline);
    await waitForDeadOwnersIo(file, id, lockFd, deadline, drainTimeoutMs);
    return { release: () => fs.closeSync(lockFd) };
  } catch (error) {
    fs.closeSync(lockFd);
    throw error;
  }
}

async function takeOwnerLock(file: FileHandle, id: FileIdentity, lockFd: number, self: ThreadIdentity | undefined, deadline: number): Promise<void> {
  let pauseMs = 1;
  let threadSeenAt: number | undefined;
  for (let attempt = 1; ; attempt++) {
    const errno = tryLockExclusive(lockFd);
    if (errno === 0) return;
    if (errno !== EWOULDBLOCK) throw errorFromErrno(-errno, `flock ${file.path}`);
    const holder = findHolder(id, lockFd, file.fd);
    let wait = attempt > 3; // after a take-over or a release the next attempt wins, unless another opener won
    let waitingFor = "another opener";
    switch (holder.kind) {
      case "thread": {
        const alive = threadAlive(holder.owner);
        if (alive && self !== undefined && holder.owner.tid === self.tid) {
          throw new StoreLockedError(`${file.path} is locked: it is already open in this thread (close that store first)`);
        }
        if (alive) {
          // A Worker being terminated: its `close` event can come before its thread has exited
          // (seen in a clean-clone test run: the thread was still in /proc/self/task). Give it a
          // moment to go before naming it as the live holder.
          threadSeenAt ??= Date.now();
          if (Date.now() - threadSeenAt >= THREAD_EXIT_GRACE_MS) {
            throw new StoreLockedError(`${file.path} is locked by ${describeThread(holder.owner.tid)}, which has it open`);
          }
          await pause(5, deadline, () => new StoreLockedError(`${file.path} is locked by ${describeThread(holder.owner.tid)}, which has it open`));
          continue;
        }
        // Its thread is gone (a Worker terminated without close()): take over. Checked again just
        // before, so a description that changed hands since the scan is left alone.
        if (
          holdsLock(holder.fd, (lock) => isOwnerLock(lock, id)) &&
          ownerThread(holder.fd) === holder.owner.tid &&
          positionOf(holder.fd) === Math.max(holder.owner.start, 1)
        ) {
          neutralize(holder.fd, file.path);
        }
        waitingFor = `the descriptor of dead thread ${holder.owner.tid}`;
        break;
      }
      case "descriptor":
        throw new StoreLockedError(`${file.path} is locked by another descriptor of this process`);
      case "process":
        if (processAlive(holder.pid)) throw new StoreLockedError(`${file.path} is locked by ${describeProcess(holder.pid)}, which has it open`);
        // A dead process still holding a flock: an owner of an older bloom-lss, whose lock was on
        // its data descriptor, with I/O still in flight. Its end is near; wait for it.
        wait = true;
        waitingFor = `${describeProcess(holder.pid)}, which exited`;
        break;
      case "gone":
        break; // released between the attempt and the look: try again
      case "unknown":
        throw new StoreLockedError(`${file.path} is locked by another process`);
    }
    if (wait) {
      await pause(pauseMs, deadline, () => new StoreLockedError(`${file.path} is locked by ${waitingFor}; the kernel did not release its lock in time`));
      pauseMs = Math.min(pauseMs * 2, DRAIN_POLL_MAX_MS);
    }
  }
}

async function waitForDeadOwnersIo(file: FileHandle, id: FileIdentity, lockFd: number, deadline: number, drainTimeoutMs: number): Promise<void> {
  // Our own marker first (a read lock: it never conflicts with another marker). A filesystem
  // without OFD locks, or one that maps flock onto record locks (NFS) and so sees our owner lock
  // in the way, gets no marker, and nothing to wait for: the owner lock alone, as before.
  if (setOfdLock(file.fd, F_RDLCK, MARKER_START, MARKER_LENGTH) !== 0) return;
  let tookOver = false;
  let pauseMs = 1;
  for (;;) {
    const other = testOfdLock(file.fd, F_WRLCK, MARKER_START, MARKER_LENGTH);
    if (other === F_UNLCK || other < 0) return;
    if (!tookOver) {
      // The owner lock is ours, so a data descriptor of this process that carries the marker
      // is a dead owner's (a Worker terminated without close()): release its reference.
      tookOver = true;
      for (const fd of ownDescriptorsWith((lock) => isMarker(lock, id), new Set([lockFd, file.fd]))) neutralize(fd, file.path);
      continue;
    }
    await pause(pauseMs, deadline, () => new StoreLockedError(
      `${file.path}: its previous owner is gone, but the kernel has not finished that owner's I/O on it ` +
        `within ${Math.round(drainTimeoutMs / 1000)} s (a stuck device?); open it again once that I/O is done`,
    ));
    pauseMs = Math.min(pauseMs * 2, DRAIN_POLL_MAX_MS);
  }
}

/**
 * Mark `fd`, a descriptor the store's owner keeps open besides its data descriptor (a block
 * device's exclusive claim), with the I/O marker: a new owner then waits while it is open in a
 * process that died, and releases it when its owner was a thread of this process that died (a
 * claim left open would refuse the next owner's claim with EBUSY). Best effort: a filesystem
 * without OFD locks has no markers at all.
 */
export function markOwnerDescriptor(fd: number): void {
  setOfdLock(fd, F_RDLCK, MARKER_START, MARKER_LENGTH);
}

/**
 * The store locks one backend took, by data descriptor. Each is released right after its data
 * descriptor is closed (the data descriptor carries the I/O marker, which must go first).
 */
export class HeldLocks {
  private readonly byFd = new Map<number, StoreLock>();

  /** Lock `file` (once: a second call for the same descriptor changes nothing). */
  async lock(file: FileHandle): Promise<void> {
    if (this.byFd.has(file.fd)) return;
    if (!Number.isInteger(file.fd) || file.fd < 0) throw new InvalidArgumentError(`lockFile needs an open file, got fd ${file.fd}`);
    const lock = await acquireStoreLock(file);
    this.byFd.set(file.fd, lock);
  }

  /** Release the lock of `file`, whose descriptor was just closed. */
  releaseClosed(file: FileHandle): void {
    const lock = this.byFd.get(file.fd);
    if (lock === undefined) return;
    this.byFd.delete(file.fd);
    lock.release();
  }
}
