/**
 * Options of `Store.open`, their defaults and their limits. Every limit is explicit and checked;
 * a bad option is an `InvalidArgumentError` before anything touches the file.
 *
 * @module
 */
import type { IoChoice } from "../io/backend.ts";
import { DEFAULT_BLOCK_CACHE_BYTES, type WriteMode } from "../log/log.ts";
import { InvalidArgumentError } from "../errors.ts";
import { MAX_WAIT_BLOCK_US } from "../io/backend.ts";

/**
 * Default `commitWaitBlockUs`: a serial durable commit blocks this thread for its write and
 * datasync, as sqlite's and lmdb's synchronous commits do, instead of polling across event-loop
 * turns and then sleeping on the ring's eventfd (see uring.ts). Measured (bench/store.ts section
 * a, alternating on and off): serial durable commits 1,331 → 1,952/s and 1,058 → 1,619/s when it
 * meant a blocking wait for io_uring's completions; 64 in flight unchanged. Since 2026-12-01 it
 * means system calls (IoQueue.writeThenSyncNext): 4.8–5.6 k → 8.3–8.5 k/s on a quieter machine.
 */
export const DEFAULT_COMMIT_WAIT_BLOCK_US = 1000;

/** When a transaction's promise resolves. */
export type Durability = "sync" | "relaxed";

/** Options of `Store.open`. */
export interface StoreOptions {
  /** Create the file when missing (default true). */
  create?: boolean;
  /** Open for reads only: nothing is written, not even recovery's bookkeeping (default false). */
  readOnly?: boolean;
  /**
   * Make a store of a block device (a raw partition such as `/dev/sdb1`) that holds none
   * (default false). Formatting overwrites the device's first bytes with the store's root blocks
   * and first segment, destroying what it held. Without it, a device holding anything but a
   * bloom-lss store — a filesystem, a partition table, even zeros — is refused with
   * `NotAStoreError` and left unchanged. A device that already holds a store is opened, never
   * formatted again, so passing `format: true` on every start is safe. A device in use (mounted,
   * part of RAID or LVM) is refused with `DeviceBusyError`, format or not. Ignored for regular
   * files: a file becomes a store only when it is new or empty.
   */
  format?: boolean;
  /** Bytes per segment for a new file (default 8 MiB). An existing file keeps its own. */
  segmentSize?: number;
  /** Bytes per flush buffer (default 1 MiB). */
  bufferSize?: number;
  /** Flush buffers in the ring (default 4). */
  ringSize?: number;
  /** Bytes of element values the read cache may hold (default 64 MiB; 0 disables it). */
  cacheBytes?: number;
  /**
   * Bytes of log blocks the caching layer keeps (default 32 MiB; 0 disables it): units as they are
   * written and blocks read around misses, so reading what was just written, or a record's
   * neighbours, needs no disk read. Held besides `cacheBytes` (values).
   */
  blockCacheBytes?: number;
  /** `"sync"` (default): a commit resolves once durable. `"relaxed"`: once applied. */
  durability?: Durability;
  /** With `"relaxed"`, the longest time a commit stays only in memory (default 100 ms). */
  flushTimeMs?: number;
  /** I/O backend (default `"auto"`). */
  io?: IoChoice;
  /**
   * How long, in µs, a durable commit that is alone in flight may block this thread while its
   * write and datasync complete (default 1000; 0 never blocks; at most 1000). Such a commit does
   * its write and datasync as plain system calls (`pwrite`, `fdatasync`), as sqlite's and lmdb's
   * synchronous commits do: through io_uring the kernel hands the datasync to a worker thread and
   * then wakes this one, which cost 120–147 µs per commit where the system calls cost 64–77 µs
   * (serial durable commits 4.8–5.6 k → 8.3–8.5 k/s, bench/store.ts section a, 2026-12-01). A
   * commit whose calls took longer than this sends the next 64 lone commits through io_uring,
   * where the thread blocks at most this long in the kernel and then waits without blocking, so a
   * slow spell of the disk does not hold timers and sockets up. Never used while the store is
   * shared with Workers or serving standbys (their messages must be answered).
   */
  commitWaitBlockUs?: number;

  /** How the log dispatches flushes (default `"tailLocalized"`). */
  writeMode?: WriteMode;
  /** Take a checkpoint after the log has moved through this many segments (default 16). */
  numSegmentsPerCheckpoint?: number;
  /** Largest element `read()` returns whole (default 1 GiB); larger ones need `readStream()`. */
  maxReadBytes?: number;
  /** Largest file the store may grow to (default unlimited; on a block device, at most the device). */
  maxFileBytes?: number;
  /** Segments below this live percentage are cleaning candidates (default 80; 1 to 99). */
  cleanerUtilisationPercent?: number;
  /** Under `maxFileBytes`: below this many free segments, writers wait for the cleaner (default 2). */
  cleanerLowWaterSegments?: number;
  /** Under `maxFileBytes`: the background cleaner works until this many segments are free (default 4). */
  cleanerHighWaterSegments?: number;
  /**
   * Without `maxFileBytes`: the cleaner keeps the file within this multiple of the live data
   * (default 1.5; 1.1 to 1000), cleaning before the file grows past it and giving free room back.
   * Lower means a smaller file and more write amplification. (The water marks above apply under
   * `maxFileBytes`, where the file's limit is the goal.)
   */
  cleanerSpaceAmplification?: number;
  /** Clean in the background by itself (default true); `compact()` works either way. */
  autoClean?: boolean;
}

/** Options with every default filled in. */
export interface ResolvedOptions {
  create: boolean;
  readOnly: boolean;
  format: boolean;
  segmentSize: number | undefined;
  bufferSize: number | undefined;
  ringSize: number | undefined;
  cacheBytes: number;
  blockCacheBytes: number;
  durability: Durability;
  flushTimeMs: number;
  io: IoChoice;
  commitWaitBlockUs: number;
  writeMode: WriteMode;
  numSegmentsPerCheckpoint: number;
  maxReadBytes: number;
  maxFileBytes: number | undefined;
  cleanerUtilisationPercent: number;
  cleanerLowWaterSegments: number;
  cleanerHighWaterSegments: number;
  cleanerSpaceAmplification: number;
  autoClean: boolean;
}

export const DEFAULT_CACHE_BYTES = 64 << 20;
/** The caching layer's default size: the log's own (one constant, src/log/log.ts). */
export { DEFAULT_BLOCK_CACHE_BYTES };
export const MAX_CACHE_BYTES = 2 ** 40;
export const DEFAULT_FLUSH_TIME_MS = 100;
export const MAX_FLUSH_TIME_MS = 60_000;
export const DEFAULT_SEGMENTS_PER_CHECKPOINT = 16;
export const DEFAULT_MAX_READ_BYTES = 1 << 30;

/** Default of `cleanerSpaceAmplification`. */
export const DEFAULT_SPACE_AMPLIFICATION = 1.5;

function numberIn(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be a number in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

function integerIn(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

/** Check options and fill defaults. */
export function resolveOptions(options: StoreOptions = {}): ResolvedOptions {
  if (typeof options !== "object" || options === null) throw new InvalidArgumentError("options must be an object");
  const durability = options.durability ?? "sync";
  if (durability !== "sync" && durability !== "relaxed") {
    throw new InvalidArgumentError(`durability must be "sync" or "relaxed", got ${JSON.stringify(durability)}`);
  }
  if (options.format !== undefined && typeof options.format !== "boolean") {
    throw new InvalidArgumentError(`format must be a boolean, got ${JSON.stringify(options.format)}`);
  }
  if (options.format === true && options.readOnly === true) {
    throw new InvalidArgumentError("format and readOnly exclude each other: formatting writes");
  }
  return {
    create: options.create ?? true,
    readOnly: options.readOnly ?? false,
    format: options.format ?? false,
    segmentSize: options.segmentSize,
    bufferSize: options.bufferSize,
    ringSize: options.ringSize,
    cacheBytes: integerIn("cacheBytes", options.cacheBytes ?? DEFAULT_CACHE_BYTES, 0, MAX_CACHE_BYTES),
    blockCacheBytes: integerIn("blockCacheBytes", options.blockCacheBytes ?? DEFAULT_BLOCK_CACHE_BYTES, 0, MAX_CACHE_BYTES),
    durability,
    flushTimeMs: integerIn("flushTimeMs", options.flushTimeMs ?? DEFAULT_FLUSH_TIME_MS, 1, MAX_FLUSH_TIME_MS),
    io: options.io ?? "auto",
    commitWaitBlockUs: integerIn("commitWaitBlockUs", options.commitWaitBlockUs ?? DEFAULT_COMMIT_WAIT_BLOCK_US, 0, MAX_WAIT_BLOCK_US),
    writeMode: options.writeMode ?? "tailLocalized",
    numSegmentsPerCheckpoint: integerIn("numSegmentsPerCheckpoint", options.numSegmentsPerCheckpoint ?? DEFAULT_SEGMENTS_PER_CHECKPOINT, 1, 1 << 20),
    maxReadBytes: integerIn("maxReadBytes", options.maxReadBytes ?? DEFAULT_MAX_READ_BYTES, 0, DEFAULT_MAX_READ_BYTES),
    maxFileBytes:
      options.maxFileBytes === undefined ? undefined : integerIn("maxFileBytes", options.maxFileBytes, 1 << 20, Number.MAX_SAFE_INTEGER),
    cleanerUtilisationPercent: integerIn("cleanerUtilisationPercent", options.cleanerUtilisationPercent ?? 80, 1, 99),
    cleanerLowWaterSegments: integerIn("cleanerLowWaterSegments", options.cleanerLowWaterSegments ?? 2, 0, 1 << 16),
    cleanerHighWaterSegments: integerIn("cleanerHighWaterSegments", options.cleanerHighWaterSegments ?? 4, 1, 1 << 16),
    cleanerSpaceAmplification: numberIn("cleanerSpaceAmplification", options.cleanerSpaceAmplification ?? DEFAULT_SPACE_AMPLIFICATION, 1.1, 1000),
    autoClean: options.autoClean ?? true,
  };
}
