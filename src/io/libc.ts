/**
 * The few libc calls the portable backend needs that node:fs does not offer: aligned native
 * memory (posix_memalign/free), advisory whole-file locks (flock) and fallocate.
 *
 * These come straight from the system's libc through bun:ffi, so the portable backend keeps
 * working where the liburing shim cannot be built or loaded.
 *
 * @module
 */
import { dlopen, FFIType, ptr, read, toArrayBuffer } from "bun:ffi";
import { ALIGNMENT_BYTES, type NativeBuffer } from "./backend.ts";
import { InvalidArgumentError, IoUnavailableError } from "../errors.ts";
import { EWOULDBLOCK } from "./errno.ts";

type LibcSymbols = ReturnType<typeof openLibc>["symbols"];

function openLibc() {
  return dlopen("libc.so.6", {
    posix_memalign: { args: [FFIType.ptr, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
    free: { args: [FFIType.u64], returns: FFIType.void },
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    fallocate: { args: [FFIType.i32, FFIType.i32, FFIType.i64, FFIType.i64], returns: FFIType.i32 },
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
  if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_ALLOC_BYTES) {
    throw new InvalidArgumentError(`buffer size must be an integer in [1, ${MAX_ALLOC_BYTES}], got ${sizeBytes}`);
  }
  const lib = symbols();
  const rc = lib.posix_memalign(ptr(outPointer), ALIGNMENT_BYTES, sizeBytes);
  if (rc !== 0) throw new InvalidArgumentError(`posix_memalign(${sizeBytes}) failed with errno ${rc}`);
  const address = Number(outPointer[0]);
  // No finalizer: the memory lives until freeAligned, whatever the GC thinks of the view.
  const bytes = new Uint8Array(toArrayBuffer(address as never, 0, sizeBytes));
  return { ptr: address, sizeBytes, bytes };
}

/** Free memory from {@link allocAligned}. The caller guarantees no I/O still uses it. */
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


/** fallocate(fd, mode, offset, len): 0 or a positive errno. */
export function fallocate(fd: number, mode: number, offset: number, lengthBytes: number): number {
  const rc = symbols().fallocate(fd, mode, offset, lengthBytes);
  return rc === 0 ? 0 : lastErrno();
}
