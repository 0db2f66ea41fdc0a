/**
 * Loading the native io_uring shim (`libbloom_lss_shim.so`, built from `shim/` by
 * `scripts/build-shim.mjs`) through bun:ffi `dlopen`, and typed wrappers over its C ABI.
 *
 * Where the library is looked for, in order:
 * 1. `$BLOOM_LSS_SHIM`, when set: an explicit path, and then the only one tried (a wrong explicit
 *    path is an error, never silently replaced by another library);
 * 2. `prebuilt/linux-x64/libbloom_lss_shim.so` of this package (relative to this file);
 * 3. the copy embedded by `bun build --compile` (see `shim-embed.ts`). Bun extracts it to `$TMPDIR`
 *    to dlopen it, which fails when `$TMPDIR` is missing or mounted `noexec`; then the bytes are
 *    copied to `$XDG_CACHE_HOME/bloom-lss` (or `~/.cache/bloom-lss`) under a name carrying their
 *    SHA-256, and that copy is dlopened.
 *
 * TinyCC (`cc()`) is never used: it does not work inside compiled binaries.
 *
 * ## The C ABI (x86_64 Linux, little-endian; every failure is a negative errno, never a crash)
 *
 * | function | returns |
 * |---|---|
 * | `i32 lss_abi_version()` | {@link SHIM_ABI_VERSION} |
 * | `i32 lss_probe()` | 0 if a 2-entry io_uring can be set up, else -errno |
 * | `i64 lss_ring_create(u32 depth)` | ring handle (> 0) or -errno |
 * | `i32 lss_ring_destroy(i64 ring)` | 0 or -EBADF |
 * | `u64 lss_alloc(u64 size)` | zeroed 4096-aligned memory, or 0 |
 * | `void lss_free(u64 ptr)` | |
 * | `i32 lss_submit(i64 ring, ptr ops, u32 count)` | ops queued and submitted (≤ count) or -errno |
 * | `i32 lss_reap(i64 ring, ptr out, u32 max)` | completions copied (never blocks) or -errno |
 * | `i32 lss_wait(i64 ring, u32 min, u32 timeout_us)` | completions ready now (timeout is not an error) or -errno |
 * | `i32 lss_open(ptr path, i32 flags, i32 mode)` | fd or -errno (O_CLOEXEC always added) |
 * | `i32 lss_close(i32 fd)`, `i32 lss_datasync(i32 fd)` | 0 or -errno |
 * | `i64 lss_file_size(i32 fd)` | size or -errno |
 * | `i32 lss_ftruncate(i32 fd, i64 len)` | 0 or -errno |
 * | `i32 lss_fallocate(i32 fd, i32 mode, i64 offset, i64 len)` | 0 or -errno |
 * | `i32 lss_lock(i32 fd, i32 exclusive, i32 nonblock)`, `i32 lss_unlock(i32 fd)` | 0 or -errno (flock) |
 * | `i32 lss_ring_eventfd(i64 ring)` | a new eventfd registered with the ring (signalled per completion), or -errno |
 * | `i32 lss_eventfd_signal(i32 fd)` | 0 or -errno (adds 1: wakes a blocked reader) |
 *
 * Submission entry, {@link SUBMISSION_ENTRY_BYTES} = 40 bytes:
 * `{ u32 op (0 write, 1 read, 2 datasync); i32 fd; u64 addr; u32 len; u32 flags (bit 0: link to
 * the next op); u64 offset; u64 user_data }`.
 * Completion entry, {@link COMPLETION_ENTRY_BYTES} = 16 bytes: `{ u64 user_data; i32 res; u32 flags }`.
 *
 * @module
 */
import { dlopen, FFIType, type Library } from "bun:ffi";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { InvalidArgumentError, IoUnavailableError } from "../errors.ts";

/** ABI version this code expects from `lss_abi_version()`. */
export const SHIM_ABI_VERSION = 2;

/** Linux open(2) flags on x86_64 (O_DIRECT differs on other architectures). */
export const O_RDONLY = 0;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
/** O_DIRECT on x86_64 Linux. */
export const O_DIRECT = 0o40000;
export const O_CLOEXEC = 0o2000000;

/** Op codes of a submission entry. */
export const OP_WRITE = 0;
export const OP_READ = 1;
export const OP_DATASYNC = 2;
/** Submission flag: IOSQE_IO_LINK to the next op. */
export const OP_FLAG_LINK = 1;

/** Size of one submission entry in bytes. */
export const SUBMISSION_ENTRY_BYTES = 40;
/** Size of one completion entry in bytes. */
export const COMPLETION_ENTRY_BYTES = 16;


/** File name of the shim library. */
export const SHIM_FILE_NAME = "libbloom_lss_shim.so";

const SHIM_FUNCTIONS = {
  lss_abi_version: { args: [], returns: FFIType.i32 },
  lss_probe: { args: [], returns: FFIType.i32 },
  lss_ring_create: { args: [FFIType.u32], returns: FFIType.i64_fast },
  lss_ring_destroy: { args: [FFIType.i64], returns: FFIType.i32 },
  lss_alloc: { args: [FFIType.u64], returns: FFIType.u64_fast },
  lss_free: { args: [FFIType.u64], returns: FFIType.void },
  lss_submit: { args: [FFIType.i64, FFIType.u64, FFIType.u32], returns: FFIType.i32 },
  lss_reap: { args: [FFIType.i64, FFIType.u64, FFIType.u32], returns: FFIType.i32 },
  lss_wait: { args: [FFIType.i64, FFIType.u32, FFIType.u32], returns: FFIType.i32 },
  lss_open: { args: [FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  lss_close: { args: [FFIType.i32], returns: FFIType.i32 },
  lss_datasync: { args: [FFIType.i32], returns: FFIType.i32 },
  lss_file_size: { args: [FFIType.i32], returns: FFIType.i64_fast },
  lss_ftruncate: { args: [FFIType.i32, FFIType.i64], returns: FFIType.i32 },
  lss_fallocate: { args: [FFIType.i32, FFIType.i32, FFIType.i64, FFIType.i64], returns: FFIType.i32 },
  lss_lock: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  lss_unlock: { args: [FFIType.i32], returns: FFIType.i32 },
  lss_ring_eventfd: { args: [FFIType.i64], returns: FFIType.i32 },
  lss_eventfd_signal: { args: [FFIType.i32], returns: FFIType.i32 },
} as const;

/** The shim's functions as bun:ffi exposes them. Pointers travel as plain numbers (u64). */
export type ShimSymbols = Library<typeof SHIM_FUNCTIONS>["symbols"];

/** Where the loaded library came from. */
export type ShimSource = "env" | "prebuilt" | "embedded" | "embedded-cache";

/** Which file was dlopened, and how it was found. */
export interface ShimInfo {
  readonly path: string;
  readonly source: ShimSource;
}

let loaded: { symbols: ShimSymbols; info: ShimInfo } | undefined;

function describeError(error: unknown): string {
  if (error instanceof Error) return error.message.split("\n")[0] ?? String(error);
  return String(error);
}

/** dlopen `file` and check its ABI version; the library is closed again on a mismatch. */
function openAt(file: string): ShimSymbols {
  const library = dlopen(file, SHIM_FUNCTIONS);
  const version = library.symbols.lss_abi_version();
  if (version !== SHIM_ABI_VERSION) {
    library.close();
    throw new Error(`ABI version ${version}, expected ${SHIM_ABI_VERSION} (a library from another version of bloom-lss)`);
  }
  return library.symbols;
}

/**
 * Where this copy of bloom-lss runs: inside a `bun build --compile` binary, from an installed
 * package (under `node_modules`), or from a checkout of its repository. Advice about a shim that
 * does not load depends on it: a binary's user cannot rebuild anything.
 */
export type RunContext = "compiled" | "installed" | "checkout";

/** This module's {@link RunContext}. */
export function runContext(): RunContext {
  const file = fileURLToPath(import.meta.url);
  // Inside a compiled binary every module lives under the embedded file system /$bunfs/.
  if (file.startsWith("/$bunfs/")) return "compiled";
  return file.includes(`${path.sep}node_modules${path.sep}`) ? "installed" : "checkout";
}

/** What to do about a shim that does not load, for where this process runs. */
export function shimRemedy(context: RunContext = runContext()): string {
  switch (context) {
    case "compiled":
      return (
        "This binary embeds the shim and copies it to $TMPDIR or, failing that, to " +
        `${shimCacheDir()} to load it: point TMPDIR or XDG_CACHE_HOME at a writable directory on a ` +
        "filesystem mounted with exec, or set BLOOM_LSS_SHIM to a copy of the library."
      );
    case "installed":
      return `The bloom-lss package ships it as prebuilt/linux-x64/${SHIM_FILE_NAME}: reinstall the package, or set BLOOM_LSS_SHIM to a copy of the library.`;
    case "checkout":
      return "Build it with `bun run build:shim`, or point BLOOM_LSS_SHIM at it.";
  }
}

/** `$XDG_CACHE_HOME/bloom-lss`, else `~/.cache/bloom-lss`. */
export function shimCacheDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  const base = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".cache");
  return path.join(base, "bloom-lss");
}

/** Copy `bytes` into the cache directory under a content-hashed name (atomically); returns its path. */
function copyToCache(bytes: Uint8Array): string {
  const hash = createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  const dir = shimCacheDir();
  const target = path.join(dir, `libbloom_lss_shim-${hash}.so`);
  try {
    const existing = fs.readFileSync(target);
    if (createHash("sha256").update(existing).digest("hex").slice(0, 16) === hash) return target;
  } catch {
    // Not there yet (or unreadable): write it below.
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const temporary = `${target}.${process.pid}.${Date.now()}.tmp`;
  try {
    fs.writeFileSync(temporary, bytes, { mode: 0o755 });
    fs.renameSync(temporary, target);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  }
  return target;
}

/** The embedded library's path, via a module that only loads when the file exists. */
function embeddedPath(): string {
  // require(), not import: a missing prebuilt must fail here, inside try/catch, not at load time.
  // ".js", not ".ts": the build (tsc) rewrites import specifiers but not require() strings, and
  // Bun resolves "./shim-embed.js" to the .ts file when run from source.
  const module = require("./shim-embed.js") as { default?: unknown };
  if (typeof module.default !== "string" || module.default === "") throw new Error("no embedded path");
  return module.default;
}

/**
 * Load the shim (once; later calls return the cached symbols).
 * @throws IoUnavailableError naming every path tried and why each failed.
 */
export function loadShim(): ShimSymbols {
  return loadShimWithInfo().symbols;
}

/** Which library {@link loadShim} loaded (loading it first if needed). */
export function shimInfo(): ShimInfo {
  return loadShimWithInfo().info;
}

function loadShimWithInfo(): { symbols: ShimSymbols; info: ShimInfo } {
  if (loaded !== undefined) return loaded;
  const tried: string[] = [];
  const attempt = (file: string, source: ShimSource): boolean => {
    try {
      loaded = { symbols: openAt(file), info: { path: file, source } };
      return true;
    } catch (error) {
      tried.push(`${file} (${source}): ${describeError(error)}`);
      return false;
    }
  };

  const explicit = process.env.BLOOM_LSS_SHIM;
  if (explicit !== undefined && explicit !== "") {
    if (!fs.existsSync(explicit)) tried.push(`${explicit} (env BLOOM_LSS_SHIM): no such file`);
    else if (attempt(explicit, "env") && loaded !== undefined) return loaded;
    throw new IoUnavailableError(`cannot load the bloom-lss native shim from BLOOM_LSS_SHIM: ${tried.join("; ")}`);
  }

  // Inside a `bun build --compile` binary there is no package directory next to this module, so
  // only the embedded copy counts.
  const compiled = runContext() === "compiled";
  const prebuilt = fileURLToPath(new URL(`../../prebuilt/linux-x64/${SHIM_FILE_NAME}`, import.meta.url));
  if (compiled) tried.push("prebuilt: skipped inside a compiled binary");
  else if (!fs.existsSync(prebuilt)) tried.push(`${prebuilt} (prebuilt): no such file`);
  else if (attempt(prebuilt, "prebuilt") && loaded !== undefined) return loaded;

  let embedded: string | undefined;
  try {
    embedded = embeddedPath();
  } catch (error) {
    tried.push(`embedded copy: none (${describeError(error)})`);
  }
  if (embedded !== undefined && embedded !== prebuilt) {
    if (attempt(embedded, "embedded") && loaded !== undefined) return loaded;
    // dlopen of an embedded file extracts it to $TMPDIR; copy it somewhere of our own instead.
    try {
      const copy = copyToCache(new Uint8Array(fs.readFileSync(embedded)));
      if (attempt(copy, "embedded-cache") && loaded !== undefined) return loaded;
    } catch (error) {
      tried.push(`copy of ${embedded} into ${shimCacheDir()}: ${describeError(error)}`);
    }
  }

  throw new IoUnavailableError(
    `cannot load the bloom-lss native shim ${SHIM_FILE_NAME}; tried: ${tried.join("; ")}. ${shimRemedy()}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Typed wrappers: numbers in, numbers out (negative results are -errno, as the ABI returns them).

function asNumber(value: number | bigint): number {
  return typeof value === "number" ? value : Number(value);
}

/** 0 if an io_uring can be set up here, else -errno. */
export function shimProbe(): number {
  return loadShim().lss_probe();
}

/** A ring with `depth` SQ entries: its handle (> 0) or -errno. */
export function shimRingCreate(depth: number): number {
  return asNumber(loadShim().lss_ring_create(depth));
}

/** Destroy a ring: 0 or -errno. */
export function shimRingDestroy(ring: number): number {
  return loadShim().lss_ring_destroy(ring);
}

/** Zeroed 4096-aligned native memory, or 0 when it cannot be had. */
export function shimAlloc(sizeBytes: number): number {
  return asNumber(loadShim().lss_alloc(sizeBytes));
}

/** Free memory from {@link shimAlloc}. */
export function shimFree(address: number): void {
  loadShim().lss_free(address);
}

/** A NUL-terminated copy of `file` for the C side. */
export function cString(file: string): Uint8Array {
  if (file.includes("\0")) throw new InvalidArgumentError(`path contains a NUL byte: ${JSON.stringify(file)}`);
  return new TextEncoder().encode(`${file}\0`);
}

