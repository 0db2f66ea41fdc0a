/**
 * LogStructuredStore: LLAMA's log-structured secondary storage over one file — the facade.
 *
 * Data path: `reserveSpace(n)` claims bytes of the open flush buffer (one CAS, ring.ts) → the
 * caller copies its payload (`writePayload`, no lock) → the buffer is sealed (full, or `flush()`)
 * → the last writer out (or the sealer) hands it to the owner → rotation.ts fixes the unit's
 * extent → flusher.ts writes the filled part, rounded up to 4 KiB, with a checksummed unit header
 * → the write completes → durability.ts issues a datasync after it → `stableAddress` advances
 * over the gap-free prefix of durable units → tail.ts hands the units to its followers.
 *
 * This object is the *owner*: it alone rotates buffers, allocates segments and touches the file.
 * It holds one object per piece of state and wires them together; it inherits from nothing.
 * Workers reserve and write through a {@link RingWriter} attached to {@link ringDescriptor}; the
 * owner hears them through the ring's doorbell ({@link serveWorkers}, {@link pollCompletions}).
 *
 * | file | owns |
 * |---|---|
 * | address.ts | segment / file-offset math (no state) |
 * | root.ts | the root block and its two copies |
 * | space.ts (+ segments.ts) | which segment holds what; the writer's segments; file growth and shrink |
 * | ring.ts, flush-buffer.ts | the shared ring words: reservations, seals, the open buffer |
 * | rotation.ts | the writer's position: each slot's unit, where the next unit goes |
 * | flusher.ts | the flush pipeline: the pump, writes in flight, both write modes, group commit |
 * | durability.ts | the stability tracker, datasyncs, durability waiters |
 * | reader.ts | reads and their buffer pools |
 * | walk.ts | the one unit checker and recovery's checked walk |
 * | tail.ts | the durable tail: followers, range reads, retention |
 * | prewrite.ts | zero-filling fresh segments |
 * | lifecycle.ts | open / recovered / failed |
 *
 * @module
 */
import { MAX_WAIT_BLOCK_US, type FileHandle, type IoBackend, type IoChoice, type NativeBuffer } from "../io/backend.ts";
import { openBackend } from "../io/open.ts";
import { IoQueue } from "../io/queue.ts";
import { CommitGate } from "../io/commit-gate.ts";
import fs from "node:fs";
import nodePath from "node:path";
import { ENOENT, ENOTDIR } from "../io/errno.ts";
import { CorruptionError, InvalidArgumentError, IoError, LssError, NoSpaceError, ReadOnlyError } from "../errors.ts";
import { checkAlignedSize, LogGeometry } from "./address.ts";
import { Durability } from "./durability.ts";
import { MAX_BUFFER_BYTES, type FlushBuffer } from "./flush-buffer.ts";
import type { LogPosition, RootBlock } from "./format.ts";
import { Flusher, type WriteMode } from "./flusher.ts";
import { LogLifecycle } from "./lifecycle.ts";
import { SegmentPrewriter } from "./prewrite.ts";
import { LogReader, type HeldBytes, type SegmentUnit } from "./reader.ts";
import { BlockCache, type BlockCacheStats } from "./block-cache.ts";
import { allocSlab, freeAligned } from "../io/libc.ts";
import { createRingShared, MAX_RING_SIZE, MIN_RING_SIZE, OwnerRing, type Reservation, type RingDescriptor } from "./ring.ts";
import { RootBlocks, type RootPatch } from "./root.ts";
import { Rotation } from "./rotation.ts";
import type { SegmentTableState } from "./segments.ts";
import { SegmentSpace, type ReserveSizer, type SpaceCounters, type SpaceUse } from "./space.ts";
import { DurableTail, type DurableUnit, type DurableUnitsOptions, type LogRetention } from "./tail.ts";
import { checkOpened, checkPathBeforeOpen, claimDevice, type DeviceClaim } from "./target.ts";
import { walkLog, type StepGate, type WalkedUnit } from "./walk.ts";

export type { WriteMode } from "./flusher.ts";
export type { PendingWrites, ReserveSizer, SpaceCounters, SpaceReserve, SpaceUse } from "./space.ts";
export type { DurableUnit, DurableUnitsOptions, LogRetention } from "./tail.ts";
export { DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES } from "./address.ts";

/** Options of {@link LogStructuredStore.open}. */
export interface LogOptions {
  /** `tailLocalized` (default): several flushes in flight; `serialized`: one at a time. */
  writeMode?: WriteMode;
  /** Bytes per flush buffer (default 1 MiB; a multiple of 4096, 8 KiB to 128 MiB, ≤ segmentSize). */
  bufferSize?: number;
  /** Flush buffers in the ring (default 4; 2 to 30). */
  ringSize?: number;
  /** Bytes per segment for a new file (default 8 MiB; a multiple of 4096, ≥ 64 KiB). An existing file keeps its own. */
  segmentSize?: number;
  /** I/O backend: `auto` (default), `uring` or `portable`. */
  io?: IoChoice;
  /** Queue depth of the backend the log opens (default 256). */
  queueDepth?: number;
  /** Create the file when missing (default true). */
  create?: boolean;
  /** Open without writing anything (default false). */
  readOnly?: boolean;
  /**
   * Make a store of a block device that holds none (default false): the device's first bytes
   * are overwritten with the store's root blocks and first segment, destroying what it held (a
   * filesystem, a partition table). Without it such a device is refused with `NotAStoreError`,
   * unchanged. A device that already holds a store is opened, never formatted again; a device
   * in use (mounted…) is refused with `DeviceBusyError`. Regular files ignore it: they become
   * a store only when new or empty.
   */
  format?: boolean;
  /** Largest file the log may grow to, in bytes (default: unlimited). */
  maxFileBytes?: number;
  /** Longest a lone durable commit may block the thread in the kernel, µs (default 0; see IoQueue). */
  commitWaitBlockUs?: number;
  /**
   * Small reads from the file go through the kernel's page cache (default true; see
   * LogReader.read). Off when a backend is injected: the test harnesses model one descriptor.
   * @internal
   */
  pageCacheReads?: boolean;
  /**
   * Bytes of log blocks kept in memory: units as they are written, blocks read around misses
   * (default 32 MiB; 0 disables it). See block-cache.ts.
   */
  blockCacheBytes?: number;
  /**
   * Which written units the caching layer keeps (default: all). The store keeps units of small
   * records and leaves out the parts of large elements: a streamed 4 GiB element would only push
   * the small, re-read records out, and cost a copy of every byte written.
   * @internal
   */
  cacheAdmission?: (payload: Uint8Array) => boolean;
  /**
   * Leave recovery to the caller (the seid store): it reads the checkpoint with
   * {@link LogStructuredStore.readCheckpoint} and then calls {@link LogStructuredStore.recover}.
   * @internal
   */
  deferRecovery?: boolean;
}

export const DEFAULT_BUFFER_BYTES = 1 << 20;
/** Default size of the caching layer (block-cache.ts). */
export const DEFAULT_BLOCK_CACHE_BYTES = 32 << 20;
export const DEFAULT_RING_SIZE = 4;
export const MIN_BUFFER_BYTES = 8 << 10;

/** Counters the log keeps. */
export interface LogStats {
  unitsWritten: number;
  bytesWritten: number;
  datasyncs: number;
  /** Of the datasyncs, those linked after a unit write in one submission (one device round trip). */
  linkedDatasyncs: number;
  /**
   * Of the linked datasyncs, those done with their write as system calls on the owner thread (a
   * lone durable commit allowed to block it: see IoQueue.writeThenSyncNext).
   */
  syscallDatasyncs: number;
  stableAddress: number;
  segmentsLive: number;
  segmentsFree: number;
  segmentsPending: number;
  /** Fresh segments zero-filled ahead of use (see prewrite.ts). */
  segmentsPrewritten: number;
  /** Bytes of the file; on a block device, the part of it the log has used so far. */
  fileBytes: number;
  /** Size of the block device the log lives on; undefined for a regular file. */
  deviceBytes: number | undefined;
  /** The caching layer's counters (block-cache.ts). */
  blockCache: BlockCacheStats;
  /** The full-disk reserve (space.ts) in whole segments, rounded up: see {@link reserveBytes}. */
  segmentsReserved: number;
  /** Bytes of room kept allocated ahead of the writer for deletes and upkeep when the disk is full (space.ts). */
  reserveBytes: number;
  /** Bytes the log can still append without new disk blocks (the reserve among them). */
  roomBytes: number;
  /** How often the writer took the rarer ways of space.ts (renamed successors, skipped segment rests). */
  space: SpaceCounters;
  /**
   * New data is refused for lack of space now: the file could not grow the last time it tried
   * and no free segment is left outside the reserve, or a write or datasync waits for space.
   */
  outOfSpace: boolean;
}

/** Key of the internal open that takes an injected backend (see {@link openLog}): not exported. */
const OPEN_ON: unique symbol = Symbol("bloom-lss.openLog");

/**
 * Open a log on `backend` when given (the test harness injects fault-injecting and shuffling
 * backends; the store passes its own through). Not exported from the package: a test seam, not
 * an option users set. The log does not close an injected backend.
 */
export function openLog(path: string, options: LogOptions, backend: IoBackend | undefined): Promise<LogStructuredStore> {
  return LogStructuredStore[OPEN_ON](path, options, backend);
}

/** The LLAMA log over one file. */
export class LogStructuredStore {
  readonly path: string;
  readonly writeMode: WriteMode;
  readonly segmentSize: number;
  readonly readOnly: boolean;
  readonly backend: IoBackend;
  private readonly ownsBackend: boolean;
  /** Whether small reads from the file may go through the kernel's page cache (LogReader.read). */
  readonly pageCacheReads: boolean;
  /** @internal Reads from the file that went through the page cache (for tests). */
  get bufferedReads(): number {
    return this.reader.bufferedReads;
  }
  /**
   * @internal The descriptor small reads go through the kernel's page cache on (LogReader.read),
   * or undefined when reads stay O_DIRECT; closed with the log.
   */
  pageCacheDescriptor(): number | undefined {
    return this.reader.bufferedFile()?.fd;
  }
  /** @internal Of those, reads the page cache served without waiting (for tests). */
  get noWaitReads(): number {
    return this.reader.noWaitReads;
  }
  /** @internal Whether misses through the page cache read whole blocks now (LogReader.readAroundPays). */
  get readsAround(): boolean {
    return this.reader.readsAround;
  }
  private readonly file: FileHandle;
  /** The exclusive hold on a block device opened for writing (target.ts), released at close. */
  private readonly deviceClaim: DeviceClaim | undefined;
  private readonly queue: IoQueue;
  private readonly buffers: NativeBuffer[];
  private readonly shared: SharedArrayBuffer;
  private readonly geometry: LogGeometry;
  private readonly life: LogLifecycle;
  private readonly root: RootBlocks;
  private readonly ring: OwnerRing;
  private readonly prewriter: SegmentPrewriter;
  private readonly space: SegmentSpace;
  private readonly durability: Durability;
  private readonly rotation: Rotation;
  private readonly flusher: Flusher;
  private readonly reader: LogReader;
  /** The caching layer: written units and blocks read around misses (block-cache.ts). */
  private readonly blockCache: BlockCache;
  private readonly tail: DurableTail;
  /** Epoch of the checkpoint's units, learned while reading it (see replayMinEpoch). */
  private checkpointEpoch: number | undefined;
  /** What the appends made now are for (see {@link withSpaceUse}). */
  private spaceUse: SpaceUse = "write";
  /** The last NoSpaceError the log gave an appender, or the write or datasync stall. */
  private lastNoSpace: NoSpaceError | undefined;

  private constructor(init: {
    path: string;
    options: LogOptions;
    backend: IoBackend;
    ownsBackend: boolean;
    file: FileHandle;
    claim: DeviceClaim | undefined;
    queue: IoQueue;
    root: RootBlocks;
    buffers: NativeBuffer[];
    shared: SharedArrayBuffer;
  }) {
    const { backend, file, queue, buffers } = init;
    this.path = init.path;
    this.writeMode = init.options.writeMode ?? "tailLocalized";
    this.readOnly = init.options.readOnly ?? false;
    this.backend = backend;
    this.ownsBackend = init.ownsBackend;
    // An injected backend (a test harness) models one descriptor: reads stay on it.
    this.pageCacheReads = init.ownsBackend && (init.options.pageCacheReads ?? true);
    this.file = file;
    this.deviceClaim = init.claim;
    this.queue = queue;
    this.buffers = buffers;
    this.shared = init.shared;
    this.root = init.root;
    this.segmentSize = init.root.current.segmentSize;
    const geometry = (this.geometry = new LogGeometry(this.segmentSize));
    const life = (this.life = new LogLifecycle(init.path, this.readOnly));
    const descriptor: RingDescriptor = {
      shared: init.shared,
      ringSize: buffers.length,
      bufferSize: (buffers[0] as NativeBuffer).sizeBytes,
      bufferPtrs: buffers.map((b) => b.ptr),
    };
    // The ring's hooks reach the flusher, made below: they only fire once reservations start.
    this.ring = new OwnerRing(
      descriptor,
      buffers.map((b) => b.bytes),
      {
        flushReady: (slot) => this.flusher.flushReady(slot),
        sealed: () => this.flusher.sealed(),
        assertCanReserve: () => this.assertCanReserve(),
      },
    );
    // The slab is not I/O memory: plain aligned native memory, not the backend's (a test backend
    // that quarantines freed buffers would keep every open's slab).
    this.blockCache = new BlockCache(init.options.blockCacheBytes ?? DEFAULT_BLOCK_CACHE_BYTES, { alloc: allocSlab, free: freeAligned });
    this.prewriter = new SegmentPrewriter(backend, queue, file);
    this.space = new SegmentSpace(backend, file, geometry, this.prewriter, init.options.maxFileBytes ?? Number.MAX_SAFE_INTEGER);
    this.durability = new Durability(queue, file, life, init.root.current.replayFrom.address, {
      groupCommitPending: () => this.flusher.groupCommitPending,
      onSynced: () => {
        this.promotePending();
        this.tail.onStableAdvanced();
        this.flusher.onSynced();
      },
    });
    this.rotation = new Rotation(this.ring, geometry, this.space, this.durability, this.prewriter, life, () => this.spaceUse);
    // Room is counted from where the next append goes.
    this.space.attachWriter(() => this.rotation.appendedEnd);
    this.flusher = new Flusher({
      writeMode: this.writeMode,
      ring: this.ring,
      buffers,
      rotation: this.rotation,
      durability: this.durability,
      prewriter: this.prewriter,
      queue,
      file,
      geometry,
      life,
      epoch: () => this.root.current.epoch,
      blockCache: this.blockCache,
      admitToCache: init.options.cacheAdmission ?? (() => true),
      onDispatch: (address, bytes) => this.tail.onDispatch(address, bytes),
    });
    this.reader = new LogReader(backend, queue, file, geometry, this.space, this.ring, life, this.blockCache, () => this.durability.stableAddress, this.pageCacheReads);
    this.tail = new DurableTail({
      geometry,
      space: this.space,
      reader: this.reader,
      durability: this.durability,
      life,
      queue,
      file,
      onRetentionMoved: () => this.promotePending(),
    });
    life.onFailure(() => this.ring.wakeReservers());
    for (const slot of this.ring.slots) slot.markFree();
  }

  /** Open (or create) the log file at `path`. */
  static async open(path: string, options: LogOptions = {}): Promise<LogStructuredStore> {
    return LogStructuredStore[OPEN_ON](path, options, undefined);
  }

  /** @hidden Used by {@link openLog}; not part of the API. */
  static async [OPEN_ON](path: string, options: LogOptions, injected: IoBackend | undefined): Promise<LogStructuredStore> {
    const requestedBufferSize = options.bufferSize;
    let bufferSize = requestedBufferSize ?? DEFAULT_BUFFER_BYTES;
    const ringSize = options.ringSize ?? DEFAULT_RING_SIZE;
    checkAlignedSize("bufferSize", bufferSize, MIN_BUFFER_BYTES, MAX_BUFFER_BYTES);
    if (!Number.isInteger(ringSize) || ringSize < MIN_RING_SIZE || ringSize > MAX_RING_SIZE) {
      throw new InvalidArgumentError(`ringSize must be an integer in [${MIN_RING_SIZE}, ${MAX_RING_SIZE}], got ${ringSize}`);
    }
    const writeMode = options.writeMode ?? "tailLocalized";
    if (writeMode !== "tailLocalized" && writeMode !== "serialized") {
      throw new InvalidArgumentError(`writeMode must be "tailLocalized" or "serialized", got ${JSON.stringify(writeMode)}`);
    }
    // An injected backend (the test harness's fault-injecting or shuffling wrappers) stays the
    // caller's to close.
    const ownsBackend = injected === undefined;
    if (options.format !== undefined && typeof options.format !== "boolean") {
      throw new InvalidArgumentError(`format must be a boolean, got ${JSON.stringify(options.format)}`);
    }
    if (options.format === true && options.readOnly === true) {
      throw new InvalidArgumentError("format and readOnly exclude each other: formatting writes");
    }
    // Before anything is opened: a directory, character device, FIFO or socket is never ours.
    checkPathBeforeOpen(path);
    const backend = injected ?? (await openBackend({ io: options.io, queueDepth: options.queueDepth }));
    let file: FileHandle | undefined;
    let claim: DeviceClaim | undefined;
    let root: RootBlocks | undefined;
    const buffers: NativeBuffer[] = [];
    try {
      file = openLogFile(backend, path, options);
      checkOpened(file);
      await backend.lockFile(file);
      // A device is written to only while held exclusively: never while mounted or used by others.
      if (file.deviceBytes !== undefined && options.readOnly !== true) claim = claimDevice(file);
      const queue = new IoQueue(backend, { loneChainBlockUs: options.commitWaitBlockUs ?? 0, gate: new CommitGate() });
      root = await RootBlocks.loadOrCreate(queue, file, options, bufferSize);
      const segmentSize = root.current.segmentSize;
      // An existing file keeps its segment size; an unspecified buffer size fits inside it.
      if (requestedBufferSize === undefined) bufferSize = Math.min(bufferSize, segmentSize);
      if (bufferSize > segmentSize) {
        throw new InvalidArgumentError(`bufferSize ${bufferSize} exceeds the file's segmentSize ${segmentSize}`);
      }
      for (let i = 0; i < ringSize; i++) buffers.push(backend.alloc(bufferSize));
      const log = new LogStructuredStore({ path, options, backend, ownsBackend, file, claim, queue, root, buffers, shared: createRingShared(ringSize) });
      if (options.deferRecovery !== true) await log.recover(undefined, () => {});
      return log;
    } catch (error) {
      for (const buffer of buffers) backend.free(buffer);
      root?.free();
      // The claim before the file, whose close releases the store lock: a next owner must find
      // the device unclaimed once it holds the lock.
      claim?.release();
      if (file !== undefined) backend.closeFile(file);
      if (ownsBackend) backend.close();
      throw error;
    }
  }

  // ───────────────────────────── state ─────────────────────────────

  /** @internal The root block as loaded or last written (the layer above keeps its own fields in `user`). */
  get rootBlock(): Readonly<RootBlock> {
    return this.root.current;
  }

  /** What a Worker needs to reserve and write through this ring. */
  get ringDescriptor(): RingDescriptor {
    return { shared: this.shared, ringSize: this.ring.ringSize, bufferSize: this.ring.bufferSize, bufferPtrs: this.buffers.map((b) => b.ptr) };
  }

  /**
   * Epoch of this open: every unit it writes carries it, and each writable open takes the next
   * one (root.ts), so a unit's epoch tells which open wrote it.
   */
  get writeEpoch(): number {
    return this.root.current.epoch;
  }

  /** Every log byte below this address is on stable storage. */
  get stableAddress(): number {
    return this.durability.stableAddress;
  }

  /** True when the log byte at `address` is durable. */
  isDurable(address: number): boolean {
    return this.durability.isDurable(address);
  }

  /** The file's size; on a block device, the part of it the log has taken so far (its size is fixed). */
  private fileBytesUsed(): number {
    const deviceBytes = this.file.deviceBytes;
    if (deviceBytes === undefined) return this.backend.fileSizeBytes(this.file);
    // A segment refused for lying past the device's end still counts in the table: clamp.
    return Math.min(deviceBytes, this.geometry.fileBytesFor(this.space.fileSegments));
  }

  /** Size of the block device the log lives on; undefined for a regular file. */
  get deviceBytes(): number | undefined {
    return this.file.deviceBytes;
  }

  /**
   * Largest the file may grow to: the `maxFileBytes` option, or a block device's own size when
   * smaller; undefined when nothing bounds it. The cleaner keeps the store inside it.
   */
  get maxFileBytes(): number | undefined {
    const limit = this.space.fileBytesLimit;
    return limit >= Number.MAX_SAFE_INTEGER ? undefined : limit;
  }

  /** Why the log stopped accepting writes, if it did (a failed write or datasync). */
  get failedReason(): LssError | undefined {
    return this.life.failed;
  }

  /** True once {@link close} has run. */
  get closed(): boolean {
    return !this.life.isOpen;
  }

  /** Counters and sizes, for `Store.stats()` and benchmarks. */
  stats(): LogStats {
    return {
      unitsWritten: this.flusher.unitsWritten,
      bytesWritten: this.flusher.bytesWritten,
      datasyncs: this.durability.datasyncs,
      linkedDatasyncs: this.durability.linkedDatasyncs,
      syscallDatasyncs: this.queue.syncCallChains,
      stableAddress: this.stableAddress,
      segmentsLive: this.space.liveCount,
      segmentsFree: this.space.freeCount,
      segmentsPending: this.space.pendingCount,
      segmentsPrewritten: this.prewriter.segmentsPrewritten,
      fileBytes: this.backend.closed ? 0 : this.fileBytesUsed(),
      deviceBytes: this.file.deviceBytes,
      blockCache: this.blockCache.stats(),
      segmentsReserved: this.space.reserveSegments,
      reserveBytes: this.space.reserveTotal,
      roomBytes: this.life.recovered ? this.space.roomBytes : 0,
      space: { ...this.space.counters },
      outOfSpace: this.outOfSpace,
    };
  }

  // ───────────────────────────── space (space.ts) ─────────────────────────────

  /**
   * Keep the full-disk reserve `sizer` says (for the store's state, asked afresh each time)
   * allocated ahead of the writer for deletes and the store's upkeep, so that they have room
   * when the disk is full (allocated now when the file can grow). See space.ts.
   * @internal
   */
  keepSpaceReserve(sizer: ReserveSizer): void {
    this.spaceStep(() => this.space.keepReserve(sizer));
  }

  /**
   * Run a step of the space layer that may grow the file (a writable, running log only). An I/O
   * error other than no space, growing the file, fails the log: it cannot go on.
   */
  private spaceStep(step: () => void): void {
    if (this.readOnly || !this.life.running) return;
    try {
      step();
    } catch (error) {
      this.life.fail(error instanceof LssError ? error : new CorruptionError(String(error)));
      throw error;
    }
  }

  /**
   * The user transaction appending now committed or aborted (the caller holds the store's
   * transaction turn): the full-disk reserve is sized for its writes from now on (space.ts).
   * @internal
   */
  writesSettled(): void {
    this.spaceStep(() => this.space.writesSettled());
  }

  /**
   * Run `fn` with its appends counted as `use` (space.ts): only the holder of the store's
   * transaction turn appends, so one setting at a time is enough. Restored afterwards.
   * @internal
   */
  async withSpaceUse<T>(use: SpaceUse, fn: () => Promise<T>): Promise<T> {
    const previous = this.spaceUse;
    this.spaceUse = use;
    try {
      return await fn();
    } finally {
      this.spaceUse = previous;
    }
  }

  /** Durable commits on the device now, for background I/O to yield to (commit-gate.ts). */
  get commitGate(): CommitGate {
    return this.queue.gate as CommitGate; // the log's queue is made with one (open)
  }

  /**
   * How long a lone commit may block the thread waiting for its write and datasync, µs (0:
   * never). The store turns it to 0 while this thread has messages to answer as commits are in
   * flight (Workers attached, standbys served).
   */
  get commitWaitBlockUs(): number {
    return this.queue.loneChainBlockUs;
  }

  set commitWaitBlockUs(us: number) {
    if (!Number.isInteger(us) || us < 0 || us > MAX_WAIT_BLOCK_US) throw new InvalidArgumentError(`commitWaitBlockUs must be an integer in [0, ${MAX_WAIT_BLOCK_US}], got ${us}`);
    this.queue.loneChainBlockUs = us;
  }

  /** See {@link LogStats.outOfSpace}. */
  get outOfSpace(): boolean {
    return this.durability.stalled !== undefined || this.space.outOfSpace;
  }

  /** The last NoSpaceError the log gave out (kept after space came back), if any. */
  get lastNoSpaceError(): NoSpaceError | undefined {
    return this.durability.stalled ?? this.lastNoSpace;
  }

  /**
   * Throws NoSpaceError unless the current space use may append (space.ts). Remembered for
   * `lastNoSpaceError`.
   */
  private assertRoom(lengthBytes: number): void {
    try {
      this.space.assertRoomFor(this.spaceUse, lengthBytes);
    } catch (error) {
      if (error instanceof NoSpaceError) this.lastNoSpace = error;
      else if (error instanceof LssError) this.life.fail(error);
      throw error;
    }
  }

  // ───────────────────────────── the ring (delegated) ─────────────────────────────

  /** Flush buffers in the ring. */
  get ringSize(): number {
    return this.ring.ringSize;
  }

  /** Bytes per flush buffer. */
  get bufferSize(): number {
    return this.ring.bufferSize;
  }

  /** Largest single reservation: a whole buffer's payload. */
  get maxReservationBytes(): number {
    return this.ring.maxReservationBytes;
  }

  /** @internal The ring's slots (for tests and diagnostics). */
  get slots(): readonly FlushBuffer[] {
    return this.ring.slots;
  }

  /** @internal Ring counter of the open buffer. */
  get currentCounter(): number {
    return this.ring.currentCounter;
  }

  /**
   * Bytes the open flush buffer can still take: a hint for sizing one reservation for several
   * records (another writer may take the room first; {@link tryReserve} decides).
   */
  get openRoomBytes(): number {
    return this.ring.openRoomBytes;
  }

  /**
   * Try to reserve `lengthBytes` without waiting; undefined when every buffer is sealed or
   * flushing. Throws NoSpaceError when the current space use may not append (space.ts).
   */
  tryReserve(lengthBytes: number): Reservation | undefined {
    this.assertRoom(lengthBytes);
    const reservation = this.ring.tryReserve(lengthBytes);
    if (reservation !== undefined) this.noteAppended(lengthBytes);
    return reservation;
  }

  /** Claim `lengthBytes` of log, waiting when every buffer is sealed or flushing. */
  async reserveSpace(lengthBytes: number): Promise<Reservation> {
    this.assertCanReserve(lengthBytes);
    const reservation = this.ring.tryReserve(lengthBytes) ?? (await this.ring.reserve(lengthBytes));
    this.noteAppended(lengthBytes);
    return reservation;
  }

  /** User writes' bytes raise the full-disk reserve once committed: the space counts them meanwhile. */
  private noteAppended(lengthBytes: number): void {
    if (this.spaceUse === "write") this.space.noteWritten(lengthBytes);
    else if (this.spaceUse === "relocate") this.space.noteRelocated(lengthBytes);
  }

  /**
   * The cleaner is done with its victim: what its relocations took from the full-disk reserve is
   * no longer lent (space.ts `SpaceUse`).
   * @internal
   */
  lentReturned(): void {
    this.spaceStep(() => this.space.lentReturned());
  }

  /** Copy `bytes` into the reservation and release it. */
  writePayload(bytes: Uint8Array, reservation: Reservation): void {
    this.ring.writePayload(bytes, reservation);
  }

  /** Drop the reservation's writer (after writing `reservation.bytes` in place). */
  release(reservation: Reservation): void {
    this.ring.release(reservation);
  }

  /**
   * A reservation (or one waiting for a rotation) gives up once the log has failed or closed, and
   * with NoSpaceError when it would wait for space: the current space use may not append, or the
   * next segment cannot be had for it.
   */
  private assertCanReserve(lengthBytes = 0): void {
    if (this.life.failed !== undefined && this.life.isOpen) throw this.life.failed;
    this.life.assertWritable();
    this.assertRoom(lengthBytes);
    const rotation = this.rotation;
    if (rotation.opening && rotation.spaceBlocked !== undefined) {
      // The last try found no segment; this append may be allowed more of the reserve, or space
      // may have been freed since: try again (the pump is idempotent and not running now).
      this.flusher.pump();
      if (rotation.opening && rotation.spaceBlocked !== undefined) {
        this.lastNoSpace = rotation.spaceBlocked;
        throw rotation.spaceBlocked;
      }
    }
  }

  // ───────────────────────────── the flush pipeline (delegated) ─────────────────────────────

  /** Process what Workers signalled and what the owner's own seals and releases left to do. */
  pollCompletions(): number {
    return this.flusher.pollCompletions();
  }

  /**
   * Seal the open buffer and resolve when everything reserved so far is durable. Reservations
   * still being written are waited for: their buffer flushes when the last writer releases.
   */
  flush(): Promise<void> {
    return this.flusher.flush();
  }

  /**
   * Group commit: ask for everything reserved so far to become durable, without forcing a flush
   * of its own while another write or datasync is in flight. Pair with {@link waitDurable}.
   */
  requestFlush(immediate = false): void {
    this.flusher.requestFlush(immediate);
  }

  /** Resolve once every log byte below `address` is durable. */
  waitDurable(address: number): Promise<void> {
    return this.durability.waitDurable(address);
  }

  /**
   * Move the log's tail to the start of the next segment (taking the lowest free segment for the
   * one after), so that high segments can later be cut off the file. Needs an empty open buffer
   * (`flush()` first), and a unit written before it is called again.
   * @internal
   */
  advanceSegment(): Promise<void> {
    return this.flusher.advanceSegment();
  }

  /**
   * Serve Workers writing through {@link ringDescriptor}: until `stop` resolves (or close),
   * wake on the ring's doorbell and process what they signal. Returns when stopped.
   */
  serveWorkers(stop: Promise<unknown>): Promise<void> {
    return this.flusher.serveWorkers(stop);
  }

  /** @internal Address where the next unit will start; meaningful right after `flush()` (nothing buffered). */
  tailPosition(): LogPosition {
    const position = this.rotation.emptyTail();
    if (position === undefined) throw new InvalidArgumentError("tailPosition() needs an empty open buffer: flush() first");
    return position;
  }

  /** @internal End of the last unit sealed so far (flush() makes everything below it durable). */
  get sealedEnd(): number {
    return this.rotation.sealedEnd;
  }

  /** @internal Address just past everything reserved so far (the open buffer's fill included). */
  get appendedEnd(): number {
    return this.rotation.appendedEnd;
  }

  // ───────────────────────────── reads (delegated) ─────────────────────────────

  /**
   * Read `lengthBytes` at log `address`: from a flush buffer if the bytes are still in memory,
   * else from the file. The log does not interpret the bytes; callers verify their own checksums.
   */
  read(address: number, lengthBytes: number, direct = false): Promise<Uint8Array> {
    return this.reader.read(address, lengthBytes, direct);
  }

  /**
   * @internal Read like {@link read}, but a file read comes back as a view of a native buffer held
   * until `release()` (see LogReader.readHeld): streams copy it straight into a caller's buffer.
   */
  readHeld(address: number, lengthBytes: number): Promise<HeldBytes> {
    return this.reader.readHeld(address, lengthBytes);
  }

  /**
   * @internal Copy `[address, +lengthBytes)` into `into` if a flush buffer or the caching layer
   * holds it (see LogReader.copyFromMemory); false if not. Synchronous: no read is started.
   */
  copyFromMemory(address: number, lengthBytes: number, into: Uint8Array): boolean {
    return this.reader.copyFromMemory(address, lengthBytes, into);
  }

  /** @internal Copy from a flush buffer still holding `[address, +length)`, if one does. */
  readFromBuffers(address: number, lengthBytes: number): Uint8Array | undefined {
    return this.reader.readFromBuffers(address, lengthBytes);
  }

  /** @internal Read every intact unit of segment `seq` (for the cleaner), in address order. */
  readSegmentUnits(seq: number): Promise<SegmentUnit[]> {
    return this.reader.readSegmentUnits(seq);
  }

  /** @internal Visit every intact unit of segment `seq` without copying (see {@link LogReader.visitSegmentUnits}). */
  visitSegmentUnits(seq: number, visit: (address: number, payload: Uint8Array) => void, stepBytes?: number, beforeStep?: StepGate): Promise<void> {
    return this.reader.visitSegmentUnits(seq, visit, stepBytes, beforeStep);
  }

  // ───────────────────────────── the durable tail ─────────────────────────────

  /**
   * Every durable unit whose address is at least `from`, in log order, each handed out once it is
   * durable (the iterator sleeps until the stable address passes it; it never polls).
   *
   * `from` is a log address, or the `position` of a unit handed out earlier (resume after it).
   * The log from `from` on is retained while the iterator runs: no segment holding it is reused.
   * The iteration ends (`done`) when the log closes, `options.signal` aborts, or the caller stops
   * (`break` / `return()`, which releases the retention; an iterator dropped without either
   * holds its log until close). It throws {@link LogTruncatedError} (on the first `next()`) when
   * the log at `from` was already given back, the log's I/O failure when it fails, and a
   * `CorruptionError` when a durable unit does not check out.
   */
  durableUnits(from: LogPosition | number, options?: DurableUnitsOptions): AsyncIterableIterator<DurableUnit> {
    return this.tail.durableUnits(from, options);
  }

  /**
   * The durable units whose addresses lie in `[from, to)`, read from the file, each checked (for a
   * standby catching up, or a backup increment). `to` must not exceed {@link stableAddress}.
   * Throws {@link LogTruncatedError} when the log at `from` was already given back.
   */
  readRange(from: LogPosition | number, to: number): Promise<DurableUnit[]> {
    return this.tail.readRange(from, to);
  }

  /**
   * Hold the log from `address` on: until the handle is advanced past it or released, no segment
   * holding log at or after `address` is reused (given-back segments stay pending). Throws
   * {@link LogTruncatedError} when that log is gone already.
   */
  retain(address: number): LogRetention {
    return this.tail.retain(address);
  }

  // ───────────────────────────── recovery ─────────────────────────────

  /**
   * Read the checkpoint the root block points to: the payloads of its units, in order (copied).
   * Undefined when the root names no checkpoint. A checkpoint that cannot be read whole is a
   * `CorruptionError`: the root only ever points to a durable one.
   * @internal
   */
  async readCheckpoint(): Promise<Uint8Array[] | undefined> {
    const checkpoint = this.root.current.checkpoint;
    if (checkpoint === undefined) return undefined;
    const payloads: Uint8Array[] = [];
    let epoch = 0;
    const walked = await walkLog(
      this.reader.walkContext(),
      checkpoint.start,
      (unit) => {
        payloads.push(unit.payload.slice());
        epoch = unit.header.epoch;
      },
      checkpoint.endAddress,
    );
    if (walked.end.address < checkpoint.endAddress) {
      throw new CorruptionError(
        `checkpoint at log address ${checkpoint.start.address} is damaged: readable up to ${walked.end.address}, expected ${checkpoint.endAddress}`,
      );
    }
    this.space.assignAll(walked.segments);
    this.checkpointEpoch = epoch;
    return payloads;
  }

  /**
   * Epoch of the open that wrote the checkpoint (and set `replayFrom`): every unit after
   * `replayFrom` was written by it or a later open. A unit of an older epoch at `replayFrom` is
   * stale — left beyond the tail an earlier crash recovered to, where the log has since been
   * rewritten up to exactly its address — and must not be replayed. 0 without a checkpoint.
   */
  private async replayMinEpoch(): Promise<number> {
    if (this.checkpointEpoch !== undefined) return this.checkpointEpoch;
    const checkpoint = this.root.current.checkpoint;
    if (checkpoint === undefined) return 0;
    let epoch = 0;
    await walkLog(this.reader.walkContext(), checkpoint.start, (unit) => void (epoch = unit.header.epoch), checkpoint.start.address + 1);
    return epoch;
  }

  /**
   * Replay the log after the root's `replayFrom`, calling `onUnit` for each intact unit in order,
   * stopping at the first hole; then set the write position after the last intact unit.
   * `state` is the segment table of the checkpoint, when there is one.
   * @internal
   */
  async recover(state: SegmentTableState | undefined, onUnit: (unit: WalkedUnit) => void | Promise<void>): Promise<{ units: number; bytes: number }> {
    if (this.life.recovered) throw new InvalidArgumentError("recover() runs once, at open");
    if (state !== undefined) this.restoreSegments(state);
    const start = this.root.current.replayFrom;
    const walked = await walkLog(this.reader.walkContext(), start, onUnit, Number.POSITIVE_INFINITY, await this.replayMinEpoch());
    this.space.assignAll(walked.segments);
    this.life.markRecovered();
    await this.startWriting(walked.end);
    return { units: walked.units, bytes: walked.bytes };
  }

  /**
   * Load the checkpoint's segment table (keeping the segments the checkpoint walk itself found),
   * so that reads of checkpointed addresses work before the replay. Called by `recover(state)`,
   * or earlier by the layer above when it must read elements while loading its checkpoint.
   * @internal
   */
  restoreSegments(state: SegmentTableState): void {
    if (this.life.recovered) throw new InvalidArgumentError("restoreSegments() runs before recovery");
    this.space.restore(state);
  }

  private async startWriting(end: LogPosition): Promise<void> {
    this.durability.restart(end.address);
    this.tail.onStableAdvanced();
    this.rotation.startAt(end);
    this.space.startAt(end, !this.readOnly);
    if (this.readOnly) return;
    // A new epoch, durable before any unit of it is written: stale units past the tail carry an
    // older epoch and can never pass for successors of the new ones.
    const root = this.root.current;
    await this.writeRoot({
      epoch: root.epoch + 1,
      cleanShutdown: false,
      uncleanShutdowns: root.uncleanShutdowns + (root.cleanShutdown ? 0 : 1),
    });
    this.rotation.openFirst(end);
    // Opening the first buffer may need a new segment (fallocate, fstat): if that failed, the
    // open fails with it, rather than handing out a log that is already read-only.
    if (this.life.failed !== undefined) throw this.life.failed;
  }

  // ───────────────────────────── segments and the root ─────────────────────────────

  /** @internal The segment table's state, for a checkpoint. */
  segmentState(): SegmentTableState {
    return this.space.snapshot();
  }

  /** @internal Sequence number of the segment holding `address`. */
  segmentSeqOf(address: number): number {
    return this.geometry.seqOf(address);
  }

  /** @internal Segment sequence numbers that hold log, ascending. */
  liveSegmentSeqs(): number[] {
    return this.space.liveSeqs();
  }

  /** @internal Read buffers pooled now (see LogReader's pools): for tests of their bounds. */
  get pooledReadBuffers(): { small: number; unit: number } {
    return this.reader.pooledBuffers;
  }

  /** @internal Bytes of one pooled unit read buffer. */
  get unitReadBytes(): number {
    return this.reader.unitReadBytes;
  }

  /** @internal Physical index of segment `seq` in the file, or undefined when it holds no log. */
  segmentIndexOf(seq: number): number | undefined {
    return this.space.indexOf(seq);
  }

  /** @internal True while segment `seq` holds log (it has not been given back). */
  isLiveSegment(seq: number): boolean {
    return this.space.indexOf(seq) !== undefined;
  }

  /** @internal Give segment `seq` back (the cleaner emptied it); reusable after the next durable root. */
  releaseSegment(seq: number): void {
    const tailSeq = this.space.tailSeq;
    if (seq >= tailSeq) throw new InvalidArgumentError(`segment seq ${seq} is not behind the log's tail (${tailSeq})`);
    this.space.release(seq, this.appendedEnd);
    this.promotePending();
  }

  /** @internal Sequence number of the segment the log is writing. */
  get tailSegmentSeq(): number {
    return this.space.tailSeq;
  }

  /** @internal Free segments (reusable now). */
  get freeSegments(): number {
    return this.space.freeCount;
  }

  /** @internal Segments given back but waiting for a checkpoint (or a tail reader) before reuse. */
  get pendingSegments(): number {
    return this.space.pendingCount;
  }

  /** @internal Segment slots of the file (those it holds, whole or in part, and the writer's successor). */
  get fileSegments(): number {
    return this.space.fileSegments;
  }

  /** @internal Bytes a regular file grows by at a time now (space.ts). */
  get growthStepBytes(): number {
    return this.space.stepBytes();
  }

  /** @internal Bytes of the file as the log keeps track of them (no fstat; a device: the part used). */
  get fileBytes(): number {
    return this.space.allocatedBytes;
  }

  /** @internal The space's counters (as in {@link stats}, without touching the file). */
  get spaceCounters(): SpaceCounters {
    return { ...this.space.counters };
  }

  /** @internal Bytes the log can still append without new disk blocks (space.ts). */
  get roomBytes(): number {
    return this.space.roomBytes;
  }

  /**
   * Truncate free segments at the end of the file. Returns the bytes given back. Safe at any
   * time: only segments on the free list are cut, and nothing durable points into them.
   * @internal
   */
  shrinkFile(keepRoomBytes?: number): number {
    return this.space.shrinkFile(this.readOnly, keepRoomBytes);
  }

  /** Free the pending segments the reuse rule allows now (see segments.ts). */
  private promotePending(): void {
    this.space.promotePending(this.stableAddress, this.root.current.checkpoint?.start.address, this.tail.retainedFrom);
  }

  /**
   * Write a new root block (the other copy), then datasync. The layer above calls this after a
   * checkpoint's units are durable; the log itself does at open and close.
   * @internal
   */
  async writeRoot(patch: RootPatch): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError("writeRoot on a read-only log");
    // On a block device, recovery follows the root's positions into the segments they name:
    // each must be zeroed durably first (prewrite.ts).
    const named = [patch.replayFrom, patch.checkpoint?.start].flatMap((p) => (p === undefined ? [] : [p.segmentIndex, p.nextSegmentIndex]));
    const zeroed = this.prewriter.zeroed(named);
    if (zeroed !== undefined) await zeroed;
    // A new anchor: segments given back before this checkpoint are safe to reuse now.
    if (await this.root.write(patch)) this.promotePending();
  }

  // ───────────────────────────── close ─────────────────────────────

  /** Flush, mark the file cleanly closed, end tail followers, free every native buffer, close the file. */
  async close(): Promise<void> {
    const life = this.life;
    if (!life.isOpen) return;
    let error: unknown;
    try {
      if (!this.readOnly && life.failed === undefined && life.recovered) {
        await this.flush();
        await this.writeRoot({ cleanShutdown: true });
      }
    } catch (caught) {
      error = caught;
    }
    // Also until the completion callbacks have run (settling a write resolves its promise a
    // microtask before its callback, which may dispatch a queued write or a datasync): freeing
    // the buffers under them would be a use-after-free. And until every pre-write has settled
    // and every tail read has given its buffers back. No await between this loop and
    // markClosed: a turn of the event loop there could start new I/O (a flush timer sealing a
    // buffer).
    // Writes that failed for lack of space are not tried again: nobody was told they are durable.
    this.flusher.stopRetrying();
    // Sleep on a timer between checks, never on the backend: the queue's pump is what reaps, and
    // waiting on the backend too either raced it (the portable backend allows one wait) or, with
    // a completion ready that only the pump would reap, resolved at once forever and starved it.
    while (this.queue.outstanding > 0 || this.flusher.writesInFlight > 0 || this.durability.busy || this.prewriter.busy || this.tail.busy) {
      await new Promise<void>((resolve) => setTimeout(resolve, 1));
    }
    life.markClosed();
    this.tail.close();
    this.prewriter.free();
    this.ring.markClosed();
    for (const buffer of this.buffers) this.backend.free(buffer);
    this.root.free();
    this.reader.free();
    this.blockCache.clear();
    this.deviceClaim?.release(); // before the file, whose close releases the store lock
    this.backend.closeFile(this.file);
    if (this.ownsBackend) this.backend.close();
    if (error !== undefined) throw error;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function openLogFile(backend: IoBackend, path: string, options: LogOptions): FileHandle {
  const create = (options.create ?? true) && !options.readOnly;
  try {
    return backend.openFile(path, { create, readOnly: options.readOnly, direct: true });
  } catch (error) {
    if (!(error instanceof IoError) || (error.errno !== ENOENT && error.errno !== ENOTDIR)) throw error;
    // ENOENT also comes from a missing directory on the way, whatever `create` says: name the
    // directory then (a store creates its file, never directories), so "create is false" is
    // never the answer to a path whose directory is missing.
    const directory = nodePath.dirname(nodePath.resolve(path));
    const problem = directoryProblem(directory);
    if (problem !== undefined) throw new InvalidArgumentError(`cannot open ${path}: ${problem}`);
    if (error.errno === ENOENT && !create) {
      throw new InvalidArgumentError(`${path} does not exist${options.readOnly ? " (readOnly never creates)" : " and create is false"}`);
    }
    throw error;
  }
}

/** Why `directory` cannot hold a file: missing, or not a directory (`undefined` when it can). */
function directoryProblem(directory: string): string | undefined {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(directory);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return `the directory ${directory} does not exist (a store creates its file, never the directories above it)`;
    if (code === "ENOTDIR") return `${directory} is not a directory (a part of the path above it is a file)`;
    return undefined;
  }
  return stat.isDirectory() ? undefined : `${directory} is not a directory`;
}
