/**
 * The few libc calls the portable backend needs that node:fs does not offer: aligned native
 * memory (posix_memalign/free), advisory whole-file locks (flock) and fallocate; two that both
 * backends use at open: a block device's size (ioctl BLKGETSIZE64) and the type of the
 * filesystem a file lives on (fstatfs); and the calls of the store lock (`src/io/lock.ts`, used
 * by both backends): flock, fcntl (OFD locks, the descriptor's owner), dup3 and lseek.
 *
 * These come straight from the system's libc through bun:ffi, so the portable backend keeps
 * working where the liburing shim cannot be built or loaded.
 *
 * @module
 */
import { dlopen, FFIType, ptr, read, toArrayBuffer, type Pointer } from "bun:ffi";
import { ALIGNMENT_BYTES, type NativeBuffer } from "./backend.ts";
import { InvalidArgumentError, IoUnavailableError } from "../errors.ts";
import { EWOULDBLOCK } from "./errno.ts";

type LibcSymbols = ReturnType<typeof openLibc>["symbols"];

function openLibc() {
  return dlopen("libc.so.6", {
    posix_memalign: { args: [FFIType.ptr, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
    free: { args: [FFIType.u64], returns: FFIType.void },
    madvise: { args: [FFIType.u64, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    fallocate: { args: [FFIType.i32, FFIType.i32, FFIType.i64, FFIType.i64], returns: FFIType.i32 },
    // ioctl is variadic in C; its third argument is one pointer, passed in the same register a
    // fixed one is (x86-64 and aarch64 Linux ABIs), so it is declared with that one.
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
    fstatfs: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    // fcntl is variadic; every command used here passes one pointer, which the x86_64 and arm64
    // Linux calling conventions pass the same way to a variadic and a fixed-argument function.
    fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    dup3: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    lseek: { args: [FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64_fast },
    sync_file_range: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.u32], returns: FFIType.i32 },
    preadv2: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64_fast },
    gettid: { args: [], returns: FFIType.i32 },
    mmap: { args: [FFIType.u64, FFIType.u64, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.i64], returns: FFIType.u64 },
    munmap: { args: [FFIType.u64, FFIType.u64], returns: FFIType.i32 },
    sched_setscheduler: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
}

let libc: LibcSymbols | undefined;

function symbols(): LibcSymbols {
  if (libc === undefined) {
    try {
      libc = openLibc().symbols;
    } catch (error) {
      throw new IoUnavailableError(`cannot load libc.so.6 through bun:ffi: ${String(error)}`);
    }
  }
  return libc;
}

/** The calling thread's errno, as a positive number. */
function lastErrno(): number {
  const location = symbols().__errno_location();
  if (location === null) return 5;
  return read.i32(location, 0);
}

/** Largest single allocation we hand out (1 GiB): an explicit limit, not a hope. */
export const MAX_ALLOC_BYTES = 1 << 30;

const outPointer = new BigUint64Array(1);

/**
 * Allocate `sizeBytes` of native memory aligned to 4096 bytes. Its contents are unspecified:
 * callers zero what they will write but did not fill (zeroing here would fault in every page of
 * every buffer, which costs more than the I/O for large, short-lived buffers).
 */
export function allocAligned(sizeBytes: number): NativeBuffer {
  return memalign(sizeBytes, ALIGNMENT_BYTES);
}

/** posix_memalign of `sizeBytes` aligned to `alignment`, with a view over it. */
function memalign(sizeBytes: number, alignment: number): NativeBuffer {
  if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_ALLOC_BYTES) {
    throw new InvalidArgumentError(`buffer size must be an integer in [1, ${MAX_ALLOC_BYTES}], got ${sizeBytes}`);
  }
  const rc = symbols().posix_memalign(ptr(outPointer), alignment, sizeBytes);
  if (rc !== 0) throw new InvalidArgumentError(`posix_memalign(${sizeBytes}) failed with errno ${rc}`);
  const address = Number(outPointer[0]);
  // No finalizer: the memory lives until freeAligned, whatever the GC thinks of the view.
  const bytes = new Uint8Array(toArrayBuffer(address as never, 0, sizeBytes));
  return { ptr: address, sizeBytes, bytes };
}

/** Transparent huge pages: the size and alignment of one, and madvise's advice asking for them. */
const HUGE_PAGE_BYTES = 2 << 20;
const MADV_HUGEPAGE = 14;

/**
 * Allocate a long-lived slab of `sizeBytes` (a cache's), aligned to 2 MiB and backed by
 * transparent huge pages where the kernel offers them (`madvise` mode included); below 2 MiB as
 * {@link allocAligned}. Free it with {@link freeAligned}.
 *
 * Why: a slab is touched page by page as it fills, and on this VM the first touch of a 4 KiB
 * page costs ~12 µs (a page fault, zeroing, and the hypervisor's share); every unit the block
 * cache kept — one per serial commit — touched a fresh page until the slab was full. With huge
 * pages the same 64 MiB faulted in 6–130 ms instead of 190–200 ms (a throwaway probe: mmap,
 * madvise, one store per 4 KiB page; the high figure is the kernel compacting memory to find
 * 2 MiB pages). Advice the kernel refuses (THP off) changes nothing but the speed.
 */
export function allocSlab(sizeBytes: number): NativeBuffer {
  if (!(sizeBytes >= HUGE_PAGE_BYTES)) return allocAligned(sizeBytes);
  const slab = memalign(sizeBytes, HUGE_PAGE_BYTES);
  symbols().madvise(slab.ptr, sizeBytes - (sizeBytes % HUGE_PAGE_BYTES), MADV_HUGEPAGE); // refused when THP is off
  return slab;
}

/** Free memory from {@link allocAligned} or {@link allocSlab}. The caller guarantees no I/O still uses it. */
export function freeAligned(buffer: NativeBuffer): void {
  symbols().free(buffer.ptr);
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/** Try to take an exclusive flock; returns 0, or the positive errno (EWOULDBLOCK when held). */
export function tryLockExclusive(fd: number): number {
  const rc = symbols().flock(fd, LOCK_EX | LOCK_NB);
  return rc === 0 ? 0 : lastErrno();
}

const F_SETOWN_EX = 15;
const F_GETOWN_EX = 16;
const F_OWNER_TID = 0;
const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
/** `l_type` of struct flock. */
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
const SEEK_SET = 0;
const SEEK_CUR = 1;
const O_CLOEXEC = 0o2000000;

/** struct f_owner_ex { int type; pid_t pid; } */
const ownerEx = new Int32Array(2);
/** struct flock (x86_64 and arm64): short l_type, short l_whence, off_t l_start @8, off_t l_len @16, pid_t l_pid @24. */
const flockBytes = new ArrayBuffer(32);
const flockView = new DataView(flockBytes);

/** Make thread `tid` the owner of `fd`'s open file description (F_SETOWN_EX); 0 or errno. */
export function setOwnerThread(fd: number, tid: number): number {
  ownerEx[0] = F_OWNER_TID;
  ownerEx[1] = tid;
  return symbols().fcntl(fd, F_SETOWN_EX, ptr(ownerEx)) === 0 ? 0 : lastErrno();
}

/** The thread set by {@link setOwnerThread} on `fd`'s description, or 0 when none (or not a thread). */
export function ownerThread(fd: number): number {
  ownerEx[0] = 0;
  ownerEx[1] = 0;
  if (symbols().fcntl(fd, F_GETOWN_EX, ptr(ownerEx)) !== 0) return 0;
  return ownerEx[0] === F_OWNER_TID && (ownerEx[1] as number) > 0 ? (ownerEx[1] as number) : 0;
}

function fillFlock(type: number, start: bigint, lengthBytes: bigint): void {
  flockView.setInt16(0, type, true);
  flockView.setInt16(2, SEEK_SET, true);
  flockView.setBigInt64(8, start, true);
  flockView.setBigInt64(16, lengthBytes, true);
  flockView.setInt32(24, 0, true); // OFD locks require l_pid 0
}

/** Set an open-file-description lock (F_OFD_SETLK, never waits) of `type` on a range; 0 or errno. */
export function setOfdLock(fd: number, type: number, start: bigint, lengthBytes: bigint): number {
  fillFlock(type, start, lengthBytes);
  return symbols().fcntl(fd, F_OFD_SETLK, ptr(flockBytes)) === 0 ? 0 : lastErrno();
}

/**
 * F_OFD_GETLK: the type of a lock held through *another* open file description that conflicts
 * with a `type` lock on the range (F_UNLCK when none does), or a negative errno.
 */
export function testOfdLock(fd: number, type: number, start: bigint, lengthBytes: bigint): number {
  fillFlock(type, start, lengthBytes);
  if (symbols().fcntl(fd, F_OFD_GETLK, ptr(flockBytes)) !== 0) return -lastErrno();
  return flockView.getInt16(0, true);
}

/** dup3(from, to, O_CLOEXEC): `to` now names `from`'s description; 0 or errno. */
export function replaceDescriptor(from: number, to: number): number {
  return symbols().dup3(from, to, O_CLOEXEC) === to ? 0 : lastErrno();
}

/** lseek(fd, position, SEEK_SET); 0 or errno. */
export function seekTo(fd: number, position: number): number {
  return symbols().lseek(fd, position, SEEK_SET) === position ? 0 : lastErrno();
}

/** lseek(fd, 0, SEEK_CUR): the description's file position, or -1. */
export function positionOf(fd: number): number {
  const position = symbols().lseek(fd, 0, SEEK_CUR);
  return typeof position === "number" ? position : Number(position);
}


/** fallocate(fd, mode, offset, len): 0 or a positive errno. */
export function fallocate(fd: number, mode: number, offset: number, lengthBytes: number): number {
  const rc = symbols().fallocate(fd, mode, offset, lengthBytes);
  return rc === 0 ? 0 : lastErrno();
}

/** sync_file_range flags (<linux/fs.h>). */
export const SYNC_FILE_RANGE_WAIT_BEFORE = 1;
export const SYNC_FILE_RANGE_WRITE = 2;
export const SYNC_FILE_RANGE_WAIT_AFTER = 4;

/**
 * sync_file_range(fd, offset, len, flags): 0 or a positive errno. With SYNC_FILE_RANGE_WRITE alone
 * it starts writeback of the range's dirty pages and returns without waiting for it: what a bulk
 * writer calls every few hundred KiB so its dirty pages reach the device in small pieces instead
 * of one burst at fsync (PostgreSQL's `*_flush_after` settings do the same, for the same reason).
 * It makes nothing durable: the fsync still comes.
 */
export function syncFileRange(fd: number, offset: number, lengthBytes: number, flags: number): number {
  const rc = symbols().sync_file_range(fd, offset, lengthBytes, flags);
  return rc === 0 ? 0 : lastErrno();
}

/** preadv2's flag: fail with EAGAIN instead of waiting for the device (<linux/fs.h> RWF_NOWAIT). */
const RWF_NOWAIT = 0x8;
/** The one iovec of {@link readNoWait}: base address, length. */
const iovec = new BigUint64Array(2);

/**
 * Read `[position, +lengthBytes)` of buffered descriptor `fd` into `buffer` at `offset`, only if
 * the kernel's page cache holds all of it: preadv2 with RWF_NOWAIT, which copies cached pages and
 * fails with EAGAIN rather than wait for the device. Returns true when every byte was read;
 * false for anything else (a page not cached, a short read, an error, no preadv2), and the caller
 * reads the usual way, which reports real errors.
 *
 * Why: a read through io_uring that the page cache could serve at once still completed through
 * the event loop (eventfd, epoll, a macrotask): 20–40 µs per read on this VM against a few µs for
 * the copy itself.
 */
export function readNoWait(fd: number, buffer: NativeBuffer, offset: number, lengthBytes: number, position: number): boolean {
  if (offset < 0 || lengthBytes <= 0 || offset + lengthBytes > buffer.sizeBytes) {
    throw new InvalidArgumentError(`read of ${lengthBytes} bytes at ${offset} does not fit a buffer of ${buffer.sizeBytes}`);
  }
  let table: LibcSymbols;
  try {
    table = symbols();
  } catch {
    return false;
  }
  iovec[0] = BigInt(buffer.ptr + offset);
  iovec[1] = BigInt(lengthBytes);
  const read = Number(table.preadv2(fd, ptr(iovec), 1, position, RWF_NOWAIT));
  return read === lengthBytes;
}

/** `_IOR(0x12, 114, size_t)`: the size of a block device in bytes, as a u64. */
const BLKGETSIZE64 = 0x80081272;
const sizeOut = new BigUint64Array(1);

/**
 * The size in bytes of the block device open as `fd` (ioctl BLKGETSIZE64): what the kernel says
 * the device holds. fstat reports 0 for a device, which is why a device's size never comes from
 * it. Returns a negative errno on failure (ENOTTY when `fd` is not a block device).
 *
 * Why libc and not the shim: it runs once per open, io_uring has nothing to add to it, and the
 * portable backend must work where the shim cannot be loaded; one call serves both backends.
 */
export function blockDeviceBytes(fd: number): number {
  sizeOut[0] = 0n;
  const rc = symbols().ioctl(fd, BLKGETSIZE64, ptr(sizeOut));
  if (rc !== 0) return -lastErrno();
  const size = sizeOut[0] as bigint;
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) return -75; // EOVERFLOW: beyond exact file offsets
  return Number(size);
}

/** struct statfs is 120 bytes on 64-bit Linux; f_type (a long) comes first. */
const statfsOut = new BigInt64Array(16);

/** The magic number of the filesystem `fd` lives on (statfs f_type), or a negative errno. */
export function fileSystemMagic(fd: number): number {
  statfsOut.fill(0n);
  const rc = symbols().fstatfs(fd, ptr(statfsOut));
  if (rc !== 0) return -lastErrno();
  return Number(BigInt.asUintN(32, statfsOut[0] as bigint));
}

const SCHED_IDLE = 5;

/**
 * Give the calling thread (not the process) the lowest CPU priority, `SCHED_IDLE`, so a
 * background copy on a thread of its own never keeps the store's thread waiting for a core: the
 * kernel runs a `SCHED_IDLE` thread only when nothing else wants the CPU and preempts it when
 * something does. Any thread may lower its own priority; an unprivileged one cannot raise it back
 * (leaving `SCHED_IDLE` needs CAP_SYS_NICE or an RLIMIT_NICE of 20), so a thread that calls this
 * should do only background work from then on. Where it is refused (a seccomp filter), the errno
 * is returned and nothing changes.
 * @returns 0, or the errno of the refused call
 */
export function setThreadIdle(): number {
  const { gettid, sched_setscheduler } = symbols();
  const param = new Int32Array(2); // struct sched_param { int sched_priority; }: 0 for SCHED_IDLE
  return sched_setscheduler(gettid(), SCHED_IDLE, ptr(param)) === 0 ? 0 : lastErrno();
}

const PROT_READ = 1;
const MADV_RANDOM = 1;
const MAP_SHARED = 1;
/** mmap's MAP_FAILED, (void *) -1, as the u64 the FFI returns. */
const MAP_FAILED = 0xffffffffffffffffn;

/**
 * Map `sizeBytes` of the file open as `fd` read-only and shared (PROT_READ, MAP_SHARED): the
 * kernel's page cache pages themselves, so a read is a copy from memory, and a write through the
 * mapping is impossible (it faults). The caller unmaps it with {@link unmapFile}; the returned
 * array must not be touched after that. Touching a page past the file's end kills the process
 * (SIGBUS): the caller reads only what it knows the file holds.
 * @returns the mapping, or a negative errno
 */
export function mapFileReadOnly(fd: number, sizeBytes: number): { address: number; bytes: Uint8Array } | number {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new InvalidArgumentError(`cannot map ${sizeBytes} bytes`);
  const address = symbols().mmap(0, sizeBytes, PROT_READ, MAP_SHARED, fd, 0) as number | bigint;
  if (BigInt(address) === MAP_FAILED) return -lastErrno();
  // No read-around on a fault: readers touch only the records they read (whose writes are done),
  // never the pages around them, which may be the log's tail being written (advisory).
  symbols().madvise(Number(address), sizeBytes, MADV_RANDOM);
  return { address: Number(address), bytes: new Uint8Array(toArrayBuffer(Number(address) as unknown as Pointer, 0, sizeBytes)) };
}

/** Unmap what {@link mapFileReadOnly} mapped. @returns 0, or the errno */
export function unmapFile(address: number, sizeBytes: number): number {
  return symbols().munmap(address, sizeBytes) === 0 ? 0 : lastErrno();
}
