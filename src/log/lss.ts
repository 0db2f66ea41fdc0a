/**
 * LogStructuredStore: LLAMA's log-structured secondary storage over one file.
 *
 * Data path: `reserveSpace(n)` claims bytes of the open flush buffer (one CAS) → the caller
 * copies its payload (`writePayload`, no lock) → the buffer is sealed (full, or `flush()`) → the
 * last writer out (or the sealer) hands it to the owner → the owner writes the filled part,
 * rounded up to 4 KiB, with a checksummed unit header → the write completes → a datasync issued
 * after it completes → `stableAddress` advances over the gap-free prefix of durable units.
 *
 * This object is the *owner*: it alone rotates buffers, allocates segments and touches the file.
 * Workers reserve and write through a {@link RingWriter} attached to {@link ringDescriptor}; the
 * owner hears them through the ring's doorbell.
 *
 * @module
 */
import type { FileHandle, IoBackend, IoChoice, NativeBuffer } from "../io/backend.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { openBackend } from "../io/open.ts";
import { IoQueue } from "../io/queue.ts";
import {
  CorruptionError,
  InvalidArgumentError,
  LssError,
  NoSpaceError,
  ReadOnlyError,
  StoreClosedError,
} from "../errors.ts";
import { FlushBuffer, FLUSHING, FREE_STATE, MAX_BUFFER_BYTES, OFFSET_MASK, SEALED } from "./flush-buffer.ts";
import {
  decodeUnitHeader,
  decodeRootBlock,
  encodeRootBlock,
  encodeUnitHeader,
  FORMAT_VERSION,
  ROOT_BLOCK_BYTES,
  ROOT_REGION_BYTES,
  UNIT_HEADER_BYTES,
  unitFileBytes,
  type LogPosition,
  type RootBlock,
} from "./format.ts";
import { MIN_UNIT_ROOM_BYTES, nextSegmentStart, physicalOffset, walkLog, type WalkContext, type WalkedUnit } from "./recovery.ts";
import { createRingShared, MAX_RING_SIZE, MIN_RING_SIZE, RingWriter, type RingDescriptor } from "./ring.ts";
import { SegmentPrewriter } from "./prewrite.ts";
import { SegmentTable, type SegmentTableState } from "./segments.ts";
import { StabilityTracker } from "./stability.ts";

/** How flushes are dispatched. */
export type WriteMode = "tailLocalized" | "serialized";

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
  /** A ready backend to use instead (tests pass fault-injecting wrappers). The log does not close it. */
  backend?: IoBackend;
  /** Queue depth of the backend the log opens (default 256). */
  queueDepth?: number;
  /** Create the file when missing (default true). */
  create?: boolean;
  /** Open without writing anything (default false). */
  readOnly?: boolean;
  /** Largest file the log may grow to, in bytes (default: unlimited). */
  maxFileBytes?: number;
  /**
   * Leave recovery to the caller (the seid store): it reads the checkpoint with
   * {@link LogStructuredStore.readCheckpoint} and then calls {@link LogStructuredStore.recover}.
   */
  deferRecovery?: boolean;
}

export const DEFAULT_BUFFER_BYTES = 1 << 20;
export const DEFAULT_RING_SIZE = 4;
export const DEFAULT_SEGMENT_BYTES = 8 << 20;
export const MIN_SEGMENT_BYTES = 64 << 10;
export const MIN_BUFFER_BYTES = 8 << 10;
/** Written units that trigger a datasync even when nobody waits for durability yet. */
const SYNC_EVERY_UNITS = 16;
/** Reads up to this size reuse pooled native buffers; larger ones allocate their own. */
const READ_SCRATCH_BYTES = 64 << 10;
/** Pooled read buffers kept at most, per pool (idle native memory ≤ 16 × (64 KiB + bufferSize)). */
const READ_POOL_MAX = 16;

/** Counters the log keeps. */
export interface LogStats {
  unitsWritten: number;
  bytesWritten: number;
  datasyncs: number;
  stableAddress: number;
  segmentsLive: number;
  segmentsFree: number;
  segmentsPending: number;
  /** Fresh segments zero-filled ahead of use (see prewrite.ts). */
  segmentsPrewritten: number;
  fileBytes: number;
}

interface SlotInfo {
  unitId: number;
  segmentIndex: number;
  nextSegmentIndex: number;
  finalized: boolean;
}

function checkSize(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max || value % ALIGNMENT_BYTES !== 0) {
    throw new InvalidArgumentError(`${name} must be a multiple of ${ALIGNMENT_BYTES} in [${min}, ${max}], got ${value}`);
  }
}

/** The LLAMA log over one file. */
export class LogStructuredStore extends RingWriter {
  readonly path: string;
  readonly writeMode: WriteMode;
  readonly segmentSize: number;
  readonly readOnly: boolean;
  readonly backend: IoBackend;
  private readonly ownsBackend: boolean;
  private readonly file: FileHandle;
  private readonly queue: IoQueue;
  /** Zero-fills fresh segments so small durable commits pay a plain device flush. */
  private readonly prewriter: SegmentPrewriter;
  private readonly buffers: NativeBuffer[];
  private readonly shared: SharedArrayBuffer;
  private readonly slotInfo: SlotInfo[];
  private readonly maxFileBytes: number;
  private readonly segments = new SegmentTable();
  private stability: StabilityTracker;
  private root: RootBlock;
  private rootBuffer: NativeBuffer;
  private readScratch: NativeBuffer | undefined;
  private readonly readPool: NativeBuffer[] = [];
  private readonly largeReadPool: NativeBuffer[] = [];
  /** At most one segment-sized read buffer, kept for the cleaner's next victim. */
  private readonly segmentReadPool: NativeBuffer[] = [];

  // Writer position, owner only.
  private currentSeq = 0;
  private currentIndex = 0;
  private nextIndex = 0;
  private lastUnitEnd = 0;
  private finalizedCounter = -1;
  private pendingOpen: { base: number; prevEnd: number } | undefined;
  private readonly readyToFlush = new Set<number>();

  // Flush pipeline, owner only.
  private writesInFlight = 0;
  private readonly serializedQueue: number[] = [];
  private syncInFlight = false;
  private flushWhenIdle = false;
  private sealScheduled = false;
  /** A flush was asked for up to here: sync until stable reaches it, waiters or not. */
  private syncTarget = 0;
  private durabilityWaiters: Array<{ address: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private failure: LssError | undefined;
  private isOpen = true;
  private recovered = false;
  private checkpointEpoch: number | undefined;
  private doorbellSeen = 0;
  private readonly counters = { unitsWritten: 0, bytesWritten: 0, datasyncs: 0 };

  private constructor(init: {
    path: string;
    options: LogOptions;
    backend: IoBackend;
    ownsBackend: boolean;
    file: FileHandle;
    root: RootBlock;
    rootBuffer: NativeBuffer;
    buffers: NativeBuffer[];
    shared: SharedArrayBuffer;
  }) {
    const ringSize = init.buffers.length;
    const bufferSize = (init.buffers[0] as NativeBuffer).sizeBytes;
    super(
      { shared: init.shared, ringSize, bufferSize, bufferPtrs: init.buffers.map((b) => b.ptr) },
      init.buffers.map((b) => b.bytes),
    );
    this.path = init.path;
    this.writeMode = init.options.writeMode ?? "tailLocalized";
    this.readOnly = init.options.readOnly ?? false;
    this.maxFileBytes = init.options.maxFileBytes ?? Number.MAX_SAFE_INTEGER;
    this.backend = init.backend;
    this.ownsBackend = init.ownsBackend;
    this.file = init.file;
    this.queue = new IoQueue(init.backend);
    this.prewriter = new SegmentPrewriter(init.backend, this.queue, init.file);
    this.buffers = init.buffers;
    this.shared = init.shared;
    this.root = init.root;
    this.rootBuffer = init.rootBuffer;
    this.segmentSize = init.root.segmentSize;
    this.slotInfo = init.buffers.map(() => ({ unitId: -1, segmentIndex: 0, nextSegmentIndex: 0, finalized: false }));
    this.stability = new StabilityTracker(init.root.replayFrom.address);
    for (const slot of this.slots) slot.markFree();
  }

  /** Open (or create) the log file at `path`. */
  static async open(path: string, options: LogOptions = {}): Promise<LogStructuredStore> {
    const requestedBufferSize = options.bufferSize;
    let bufferSize = requestedBufferSize ?? DEFAULT_BUFFER_BYTES;
    const ringSize = options.ringSize ?? DEFAULT_RING_SIZE;
    checkSize("bufferSize", bufferSize, MIN_BUFFER_BYTES, MAX_BUFFER_BYTES);
    if (!Number.isInteger(ringSize) || ringSize < MIN_RING_SIZE || ringSize > MAX_RING_SIZE) {
      throw new InvalidArgumentError(`ringSize must be an integer in [${MIN_RING_SIZE}, ${MAX_RING_SIZE}], got ${ringSize}`);
    }
    const writeMode = options.writeMode ?? "tailLocalized";
    if (writeMode !== "tailLocalized" && writeMode !== "serialized") {
      throw new InvalidArgumentError(`writeMode must be "tailLocalized" or "serialized", got ${JSON.stringify(writeMode)}`);
    }
    const ownsBackend = options.backend === undefined;
    const backend = options.backend ?? (await openBackend({ io: options.io, queueDepth: options.queueDepth }));
    let file: FileHandle | undefined;
    const buffers: NativeBuffer[] = [];
    try {
      file = openLogFile(backend, path, options);
      backend.lockFile(file);
      const rootBuffer = backend.alloc(ROOT_REGION_BYTES);
      buffers.push(rootBuffer);
      const root = await loadOrCreateRoot(backend, file, rootBuffer, options, bufferSize);
      // An existing file keeps its segment size; an unspecified buffer size fits inside it.
      if (requestedBufferSize === undefined) bufferSize = Math.min(bufferSize, root.segmentSize);
      if (bufferSize > root.segmentSize) {
        throw new InvalidArgumentError(`bufferSize ${bufferSize} exceeds the file's segmentSize ${root.segmentSize}`);
      }
      buffers.pop();
      for (let i = 0; i < ringSize; i++) buffers.push(backend.alloc(bufferSize));
      const log = new LogStructuredStore({
        path,
        options,
        backend,
        ownsBackend,
        file,
        root,
        rootBuffer,
        buffers,
        shared: createRingShared(ringSize),
      });
      if (options.deferRecovery !== true) await log.recover(undefined, () => {});
      return log;
    } catch (error) {
      for (const buffer of buffers) backend.free(buffer);
      if (file !== undefined) backend.closeFile(file);
      if (ownsBackend) backend.close();
      throw error;
    }
  }

  /** The root block as loaded or last written (the layer above keeps its own fields in `user`). */
  get rootBlock(): Readonly<RootBlock> {
    return this.root;
  }

  /** What a Worker needs to reserve and write through this ring. */
  get ringDescriptor(): RingDescriptor {
    return { shared: this.shared, ringSize: this.ringSize, bufferSize: this.bufferSize, bufferPtrs: this.buffers.map((b) => b.ptr) };
  }

  /** Every log byte below this address is on stable storage. */
  get stableAddress(): number {
    return this.stability.stableAddress;
  }

  /** True when the log byte at `address` is durable. */
  isDurable(address: number): boolean {
    return this.stability.isDurable(address);
  }

  /** Why the log stopped accepting writes, if it did (a failed write or datasync). */
  get failedReason(): LssError | undefined {
    return this.failure;
  }

  stats(): LogStats {
    return {
      ...this.counters,
      stableAddress: this.stableAddress,
      segmentsLive: this.segments.liveCount,
      segmentsFree: this.segments.freeCount,
      segmentsPending: this.segments.pendingCount,
      segmentsPrewritten: this.prewriter.segmentsPrewritten,
      fileBytes: this.backend.closed ? 0 : this.backend.fileSizeBytes(this.file),
    };
  }

  // ───────────────────────────── recovery ─────────────────────────────

  private walkContext(): WalkContext {
    const scratch = this.scratchFor(this.bufferSize);
    return { backend: this.backend, queue: this.queue, file: this.file, segmentSize: this.segmentSize, scratch };
  }

  /**
   * Read the checkpoint the root block points to: the payloads of its units, in order (copied).
   * Undefined when the root names no checkpoint. A checkpoint that cannot be read whole is a
   * `CorruptionError`: the root only ever points to a durable one.
   */
  async readCheckpoint(): Promise<Uint8Array[] | undefined> {
    const checkpoint = this.root.checkpoint;
    if (checkpoint === undefined) return undefined;
    const payloads: Uint8Array[] = [];
    let epoch = 0;
    const walked = await walkLog(
      this.walkContext(),
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
    for (const [seq, index] of walked.segments) this.segments.assign(seq, index);
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
    const checkpoint = this.root.checkpoint;
    if (checkpoint === undefined) return 0;
    let epoch = 0;
    await walkLog(this.walkContext(), checkpoint.start, (unit) => void (epoch = unit.header.epoch), checkpoint.start.address + 1);
    return epoch;
  }

  /**
   * Replay the log after the root's `replayFrom`, calling `onUnit` for each intact unit in order,
   * stopping at the first hole; then set the write position after the last intact unit.
   * `state` is the segment table of the checkpoint, when there is one.
   */
  async recover(state: SegmentTableState | undefined, onUnit: (unit: WalkedUnit) => void | Promise<void>): Promise<{ units: number; bytes: number }> {
    if (this.recovered) throw new InvalidArgumentError("recover() runs once, at open");
    if (state !== undefined) this.restoreSegments(state);
    const start = this.root.replayFrom;
    const walked = await walkLog(this.walkContext(), start, onUnit, Number.POSITIVE_INFINITY, await this.replayMinEpoch());
    for (const [seq, index] of walked.segments) this.segments.assign(seq, index);
    this.recovered = true;
    await this.startWriting(walked.end);
    return { units: walked.units, bytes: walked.bytes };
  }

  /**
   * Load the checkpoint's segment table (keeping the segments the checkpoint walk itself found),
   * so that reads of checkpointed addresses work before the replay. Called by `recover(state)`,
   * or earlier by the layer above when it must read elements while loading its checkpoint.
   */
  restoreSegments(state: SegmentTableState): void {
    if (this.recovered) throw new InvalidArgumentError("restoreSegments() runs before recovery");
    const assigned = this.segments.liveSeqs().map((seq) => [seq, this.segments.indexOf(seq) as number] as const);
    this.segments.restore(state);
    for (const [seq, index] of assigned) this.segments.assign(seq, index);
  }

  private async startWriting(end: LogPosition): Promise<void> {
    this.stability = new StabilityTracker(end.address);
    this.lastUnitEnd = end.prevEnd;
    this.currentSeq = Math.floor(end.address / this.segmentSize);
    this.currentIndex = end.segmentIndex;
    this.segments.assign(this.currentSeq, this.currentIndex);
    if (this.readOnly) return;
    if (end.nextSegmentIndex === 0xffffffff || end.nextSegmentIndex === end.segmentIndex) {
      this.nextIndex = this.takeSegment();
    } else {
      this.nextIndex = end.nextSegmentIndex;
      this.segments.claim(this.nextIndex);
      this.ensureFileHolds(this.nextIndex);
    }
    this.ensureFileHolds(this.currentIndex);
    // A new epoch, durable before any unit of it is written: stale units past the tail carry an
    // older epoch and can never pass for successors of the new ones.
    const unclean = this.root.cleanShutdown ? 0 : 1;
    await this.writeRoot({
      epoch: this.root.epoch + 1,
      cleanShutdown: false,
      uncleanShutdowns: this.root.uncleanShutdowns + unclean,
    });
    this.finalizedCounter = -1;
    this.pendingOpen = { base: end.address, prevEnd: end.prevEnd };
    this.openNext();
    // Opening the first buffer may need a new segment (fallocate, fstat): if that failed, the
    // open fails with it, rather than handing out a log that is already read-only.
    if (this.failure !== undefined) throw this.failure;
  }

  // ───────────────────────────── segments ─────────────────────────────

  private takeSegment(): number {
    const index = this.segments.take();
    this.ensureFileHolds(index);
    return index;
  }

  /**
   * Grow the file to hold segment `index`, allocating every segment between the old end and it:
   * a segment skipped here would be a hole, and a write into a hole allocates, so its datasync
   * would commit the filesystem journal too (see prewrite.ts). Whole new segments are offered to
   * the pre-writer; one the old end cuts through is only allocated (it may hold log data).
   */
  private ensureFileHolds(index: number): void {
    const needBytes = ROOT_REGION_BYTES + (index + 1) * this.segmentSize;
    if (needBytes > this.maxFileBytes) {
      throw new NoSpaceError(`the log needs ${needBytes} bytes of file, over maxFileBytes ${this.maxFileBytes}`);
    }
    const sizeBytes = this.backend.fileSizeBytes(this.file);
    if (sizeBytes >= needBytes) return;
    const bytesPastRoot = Math.max(0, sizeBytes - ROOT_REGION_BYTES);
    const firstPartial = Math.floor(bytesPastRoot / this.segmentSize);
    const firstWhole = Math.ceil(bytesPastRoot / this.segmentSize);
    for (let segment = firstPartial; segment <= index; segment++) {
      const offsetBytes = ROOT_REGION_BYTES + segment * this.segmentSize;
      this.backend.allocateSpace(this.file, offsetBytes, this.segmentSize);
      if (segment >= firstWhole) this.prewriter.onFreshSegment(segment, offsetBytes, this.segmentSize);
    }
  }

  /** The segment table's state, for a checkpoint. */
  segmentState(): SegmentTableState {
    return this.segments.snapshot();
  }

  /** Sequence number of the segment holding `address`. */
  segmentSeqOf(address: number): number {
    return Math.floor(address / this.segmentSize);
  }

  /** Segment sequence numbers that hold log, ascending. */
  liveSegmentSeqs(): number[] {
    return this.segments.liveSeqs();
  }

  /** True while segment `seq` holds log (it has not been given back). */
  isLiveSegment(seq: number): boolean {
    return this.segments.indexOf(seq) !== undefined;
  }

  /** Give segment `seq` back (the cleaner emptied it); reusable after the next durable root. */
  releaseSegment(seq: number): void {
    if (seq >= this.currentSeq) throw new InvalidArgumentError(`segment seq ${seq} is not behind the log's tail (${this.currentSeq})`);
    this.segments.release(seq, this.appendedEnd);
    this.promotePending();
  }

  /** Address just past everything reserved so far (the open buffer's fill included). */
  get appendedEnd(): number {
    if (this.pendingOpen !== undefined) return this.pendingOpen.base;
    const current = this.slots[this.currentCounter % this.ringSize] as FlushBuffer;
    return current.baseAddress + UNIT_HEADER_BYTES + current.offsetBytes;
  }

  /** Free the pending segments the reuse rule allows now (see SegmentTable). */
  private promotePending(): void {
    if (this.segments.pendingCount === 0) return;
    const checkpoint = this.root.checkpoint;
    if (checkpoint === undefined) return;
    this.segments.promotePending(this.stableAddress, Math.floor(checkpoint.start.address / this.segmentSize));
  }

  // ───────────────────────────── write path ─────────────────────────────

  /** Claim `lengthBytes` of log, waiting when every buffer is sealed or flushing. */
  async reserveSpace(lengthBytes: number): Promise<import("./ring.ts").Reservation> {
    this.assertCanReserve();
    const reservation = this.tryReserve(lengthBytes);
    if (reservation !== undefined) return reservation;
    return this.reserve(lengthBytes);
  }

  private assertWritable(): void {
    if (!this.isOpen) throw new StoreClosedError(`the log ${this.path} is closed`);
    if (this.readOnly) throw new ReadOnlyError(`the log ${this.path} is open read-only`);
    if (this.failure !== undefined) throw new ReadOnlyError(`the log is read-only after an I/O failure: ${this.failure.message}`);
    if (!this.recovered) throw new InvalidArgumentError("the log has not been recovered yet");
  }

  /** A reservation waiting for a rotation gives up once the log has failed or closed. */
  protected override assertCanReserve(): void {
    if (this.failure !== undefined && this.isOpen) throw this.failure;
    this.assertWritable();
  }

  protected override onFlushReady(slot: number): void {
    this.readyToFlush.add(slot);
    this.pump();
  }

  protected override onSealed(_slot: number): void {
    this.pump();
  }

  /** Process what Workers signalled and what the owner's own seals and releases left to do. */
  pollCompletions(): number {
    const mask = this.takeFlushMask();
    for (let slot = 0; slot < this.ringSize; slot++) if ((mask & (1 << slot)) !== 0) this.readyToFlush.add(slot);
    return this.pump();
  }

  /** Owner: finalize a sealed current buffer, open the next, start flushes that are ready. */
  private pump(): number {
    if (!this.isOpen || this.failure !== undefined) return 0;
    this.finalizeSealed();
    this.openNext();
    let started = 0;
    for (const slot of [...this.readyToFlush]) {
      const info = this.slotInfo[slot] as SlotInfo;
      if (!info.finalized) continue;
      this.readyToFlush.delete(slot);
      this.startFlush(slot);
      started += 1;
    }
    this.openNext();
    return started;
  }

  /** If the open buffer is sealed, fix its unit's extent and where the next unit goes. */
  private finalizeSealed(): void {
    const counter = this.currentCounter;
    if (counter <= this.finalizedCounter || this.pendingOpen !== undefined) return;
    const buffer = this.slots[counter % this.ringSize] as FlushBuffer;
    const state = buffer.state;
    if ((state & SEALED) === 0 || state === FREE_STATE || buffer.counter !== counter) return;
    // A reservation that overran the capacity lowers the fill limit only after its CAS (another
    // thread may be between the two): the fill is final once no writer is left (FLUSHING).
    if ((state & OFFSET_MASK) > buffer.capacityWords && (state & FLUSHING) === 0) return;
    const info = this.slotInfo[buffer.slot] as SlotInfo;
    const fill = buffer.finalFillBytes;
    const base = buffer.baseAddress;
    let nextBase: number;
    if (fill > 0) {
      this.prewriter.noteUnit(fill, this.bufferSize);
      const end = base + unitFileBytes(fill);
      info.unitId = this.stability.register(end);
      this.lastUnitEnd = end;
      nextBase = end;
    } else {
      // Sealed empty: a reservation did not fit the room left in this segment.
      info.unitId = -1;
      nextBase = nextSegmentStart(this.segmentSize, base);
    }
    info.finalized = true;
    this.finalizedCounter = counter;
    this.pendingOpen = { base: nextBase, prevEnd: this.lastUnitEnd };
  }

  /** Open the next slot at the pending position once that slot is free. */
  private openNext(): void {
    const pending = this.pendingOpen;
    if (pending === undefined) return;
    const counter = this.finalizedCounter + 1;
    const buffer = this.slots[counter % this.ringSize] as FlushBuffer;
    if (!buffer.isFree) return;
    let base = pending.base;
    if (nextSegmentStart(this.segmentSize, base) - base < MIN_UNIT_ROOM_BYTES) base = nextSegmentStart(this.segmentSize, base);
    const seq = Math.floor(base / this.segmentSize);
    if (seq !== this.currentSeq) {
      if (seq !== this.currentSeq + 1) throw new Error(`log skipped from segment ${this.currentSeq} to ${seq}`);
      try {
        this.enterNextSegment(seq);
      } catch (error) {
        this.fail(error instanceof LssError ? error : new NoSpaceError(String(error)));
        return;
      }
    }
    const capacityBytes = Math.min(this.bufferSize, nextSegmentStart(this.segmentSize, base) - base) - UNIT_HEADER_BYTES;
    const info = this.slotInfo[buffer.slot] as SlotInfo;
    info.finalized = false;
    info.unitId = -1;
    info.segmentIndex = this.currentIndex;
    info.nextSegmentIndex = this.nextIndex;
    this.pendingOpen = undefined;
    buffer.open(base, capacityBytes, pending.prevEnd, counter);
    this.publishCurrent(counter);
  }

  private enterNextSegment(seq: number): void {
    const index = this.nextIndex;
    const following = this.takeSegment();
    this.currentSeq = seq;
    this.currentIndex = index;
    this.nextIndex = following;
    this.segments.assign(seq, index);
  }

  private startFlush(slot: number): void {
    const info = this.slotInfo[slot] as SlotInfo;
    const buffer = this.slots[slot] as FlushBuffer;
    if (info.unitId < 0) {
      buffer.markFree();
      return;
    }
    if (this.writeMode === "serialized" && this.writesInFlight > 0) {
      this.serializedQueue.push(slot);
      return;
    }
    this.dispatchWrite(slot);
  }

  private dispatchWrite(slot: number): void {
    if (!this.isOpen) return;
    const info = this.slotInfo[slot] as SlotInfo;
    const buffer = this.slots[slot] as FlushBuffer;
    const native = this.buffers[slot] as NativeBuffer;
    const fill = buffer.finalFillBytes;
    const fileBytes = unitFileBytes(fill);
    const base = buffer.baseAddress;
    const payload = native.bytes.subarray(UNIT_HEADER_BYTES, UNIT_HEADER_BYTES + fill);
    native.bytes.fill(0, UNIT_HEADER_BYTES + fill, fileBytes);
    encodeUnitHeader(native.bytes, {
      address: base,
      payloadBytes: fill,
      prevEnd: buffer.prevEnd,
      segmentIndex: info.segmentIndex,
      nextSegmentIndex: info.nextSegmentIndex,
      payloadCrc: Bun.hash.crc32(payload) >>> 0,
      epoch: this.root.epoch,
    });
    const offset = physicalOffset(this.segmentSize, info.segmentIndex, base);
    const unitId = info.unitId;
    this.writesInFlight += 1;
    // A segment being pre-written takes no unit until its zeros are down (see prewrite.ts).
    const prewrite = this.prewriter.ready(info.segmentIndex);
    const write =
      prewrite === undefined
        ? this.queue.write(this.file, native, 0, fileBytes, offset)
        : prewrite.then(() => this.queue.write(this.file, native, 0, fileBytes, offset));
    write.then(
      () => {
        this.writesInFlight -= 1;
        this.counters.unitsWritten += 1;
        this.counters.bytesWritten += fileBytes;
        this.stability.markWritten(unitId);
        buffer.markFree();
        this.scheduleSync();
        const queued = this.serializedQueue.shift();
        if (queued !== undefined) this.dispatchWrite(queued);
        this.pump();
      },
      (error: unknown) => {
        this.writesInFlight -= 1;
        this.fail(error instanceof LssError ? error : new CorruptionError(String(error)));
      },
    );
  }

  /**
   * Issue a datasync covering every unit written so far, if one is wanted: someone waits for
   * durability, a flush was asked for, or {@link SYNC_EVERY_UNITS} units have piled up. Streaming
   * writes nobody waits on thus run at device speed, not at datasync speed.
   */
  private scheduleSync(): void {
    if (this.syncInFlight || this.stability.unsyncedUnits === 0 || this.failure !== undefined) return;
    const wanted =
      this.durabilityWaiters.length > 0 ||
      this.flushWhenIdle ||
      this.stableAddress < this.syncTarget ||
      this.stability.unsyncedUnits >= SYNC_EVERY_UNITS;
    if (!wanted) return;
    const ids = this.stability.beginSync();
    this.syncInFlight = true;
    this.queue.datasync(this.file).then(
      () => {
        this.syncInFlight = false;
        this.counters.datasyncs += 1;
        this.stability.completeSync(ids);
        this.promotePending();
        this.wakeDurabilityWaiters();
        this.scheduleSync();
        if (this.flushWhenIdle && this.writesInFlight === 0 && !this.syncInFlight) this.sealOpenBuffer();
      },
      (error: unknown) => {
        this.syncInFlight = false;
        this.stability.failSync(ids);
        this.fail(error instanceof LssError ? error : new CorruptionError(String(error)));
      },
    );
  }

  /** A write or datasync failed: nothing more is acknowledged; the log is read-only until reopened. */
  private fail(error: LssError): void {
    if (this.failure === undefined) this.failure = error;
    this.wakeReservers();
    const waiters = this.durabilityWaiters;
    this.durabilityWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  private wakeDurabilityWaiters(): void {
    if (this.durabilityWaiters.length === 0) return;
    const stable = this.stableAddress;
    const still: typeof this.durabilityWaiters = [];
    for (const waiter of this.durabilityWaiters) {
      if (waiter.address <= stable) waiter.resolve();
      else still.push(waiter);
    }
    this.durabilityWaiters = still;
  }

  /** Resolve once every log byte below `address` is durable. */
  waitDurable(address: number): Promise<void> {
    if (address <= this.stableAddress) return Promise.resolve();
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const waiting = new Promise<void>((resolve, reject) => this.durabilityWaiters.push({ address, resolve, reject }));
    this.scheduleSync();
    return waiting;
  }

  /**
   * Seal the open buffer and resolve when everything reserved so far is durable. Reservations
   * still being written are waited for: their buffer flushes when the last writer releases.
   */
  async flush(): Promise<void> {
    if (!this.isOpen) throw new StoreClosedError(`the log ${this.path} is closed`);
    if (this.readOnly) return;
    if (this.failure !== undefined) throw this.failure;
    this.pollCompletions();
    this.sealCurrentBuffer(false);
    // Sealed but not finalized (a Worker's overrunning reservation still holds a writer): its
    // end is not known yet; wait for that writer's release, signalled through the doorbell.
    while (this.sealedUnfinalized()) {
      const seen = this.doorbell;
      this.pollCompletions();
      if (!this.sealedUnfinalized()) break;
      if (this.failure !== undefined) throw this.failure;
      await this.waitDoorbell(seen, 5);
    }
    await this.waitDurable(this.lastUnitEnd);
  }

  /**
   * Group commit: ask for everything reserved so far to become durable, without forcing a flush
   * of its own while another write or datasync is in flight. If the pipeline is idle the open
   * buffer is sealed now; otherwise it is sealed as soon as the pipeline drains, so every commit
   * that arrived meanwhile shares one write and one datasync. Pair with {@link waitDurable}.
   */
  requestFlush(immediate = false): void {
    if (!this.isOpen || this.readOnly || this.failure !== undefined) return;
    this.flushWhenIdle = true;
    if (this.writesInFlight > 0 || this.syncInFlight) return;
    if (immediate) {
      // The caller knows no other commit is coming in this turn: no reason to wait for one.
      this.sealOpenBuffer();
      return;
    }
    if (this.sealScheduled) return;
    // Seal on the next turn of the event loop, not now: every commit made in this turn (their
    // promise chains run as microtasks) joins the same unit and the same datasync.
    this.sealScheduled = true;
    setImmediate(() => {
      this.sealScheduled = false;
      if (this.flushWhenIdle && this.writesInFlight === 0 && !this.syncInFlight) this.sealOpenBuffer();
    });
  }

  /**
   * Seal the open buffer and hand it on: a non-empty one becomes a unit; with `evenIfEmpty`, an
   * empty one moves the log to the next segment's start (see finalizeSealed).
   */
  private sealCurrentBuffer(evenIfEmpty: boolean): void {
    const current = this.slots[this.currentCounter % this.ringSize] as FlushBuffer;
    if (this.pendingOpen !== undefined || current.isFree) return;
    if (!evenIfEmpty && current.offsetBytes === 0) return;
    if (current.seal() && current.startFlush) this.readyToFlush.add(current.slot);
    this.pump();
  }

  private sealOpenBuffer(): void {
    this.flushWhenIdle = false;
    this.sealCurrentBuffer(false);
    // Whatever was sealed must also be synced, even if nobody waits on it (relaxed durability).
    this.syncTarget = Math.max(this.syncTarget, this.lastUnitEnd);
    this.scheduleSync();
  }

  /** The open buffer is sealed but its unit's extent is not fixed yet (see finalizeSealed). */
  private sealedUnfinalized(): boolean {
    if (!this.isOpen || this.pendingOpen !== undefined || this.currentCounter <= this.finalizedCounter) return false;
    const current = this.slots[this.currentCounter % this.ringSize] as FlushBuffer;
    return (current.state & SEALED) !== 0 && !current.isFree;
  }

  /** Address where the next unit will start; meaningful right after `flush()` (nothing buffered). */
  tailPosition(): LogPosition {
    const current = this.slots[this.currentCounter % this.ringSize] as FlushBuffer;
    if (this.pendingOpen !== undefined || current.offsetBytes !== 0) {
      throw new InvalidArgumentError("tailPosition() needs an empty open buffer: flush() first");
    }
    const info = this.slotInfo[current.slot] as SlotInfo;
    return { address: current.baseAddress, segmentIndex: info.segmentIndex, nextSegmentIndex: info.nextSegmentIndex, prevEnd: current.prevEnd };
  }

  /** End of the last unit sealed so far (flush() makes everything below it durable). */
  get sealedEnd(): number {
    return this.lastUnitEnd;
  }

  /**
   * Write a new root block (the other copy), then datasync. The layer above calls this after a
   * checkpoint's units are durable; the log itself does at open and close.
   */
  async writeRoot(patch: Partial<Omit<RootBlock, "formatVersion" | "generation" | "segmentSize">>): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError("writeRoot on a read-only log");
    const movesAnchor = patch.checkpoint !== undefined || patch.replayFrom !== undefined;
    await this.writeRootCopy({ ...this.root, ...patch, generation: this.root.generation + 1 });
    if (!movesAnchor) return;
    // A new anchor goes into both copies (one after the other, each synced, so one is always
    // intact): then no copy can lead recovery to an older checkpoint, and segments given back
    // before this checkpoint are safe to reuse.
    await this.writeRootCopy({ ...this.root, generation: this.root.generation + 1 });
    this.promotePending();
  }

  private async writeRootCopy(next: RootBlock): Promise<void> {
    const copy = next.generation % 2;
    const view = this.rootBuffer.bytes.subarray(0, ROOT_BLOCK_BYTES);
    encodeRootBlock(view, next);
    await this.queue.write(this.file, this.rootBuffer, 0, ROOT_BLOCK_BYTES, copy * ROOT_BLOCK_BYTES);
    await this.queue.datasync(this.file);
    this.root = next;
  }

  /**
   * Read every intact unit of segment `seq` (for the cleaner), in address order: units are read
   * from the segment's start while their headers check out and claim the expected address.
   */
  async readSegmentUnits(seq: number): Promise<Array<{ address: number; payload: Uint8Array }>> {
    if (!this.isOpen) throw new StoreClosedError(`the log ${this.path} is closed`);
    const index = this.segments.indexOf(seq);
    if (index === undefined) throw new InvalidArgumentError(`segment seq ${seq} is not live`);
    // One segment-sized buffer kept for the next victim: a fresh one per segment cleaned meant an
    // mmap, a page fault per 4 KiB and a munmap each time. A second reader at once allocates.
    const scratch = this.segmentReadPool.pop() ?? this.backend.alloc(this.segmentSize);
    try {
      const physical = physicalOffset(this.segmentSize, index, seq * this.segmentSize);
      const fileBytes = this.backend.fileSizeBytes(this.file);
      const readable = Math.min(this.segmentSize, Math.floor((fileBytes - physical) / ALIGNMENT_BYTES) * ALIGNMENT_BYTES);
      if (readable <= 0) return [];
      await this.queue.read(this.file, scratch, 0, readable, physical);
      const units: Array<{ address: number; payload: Uint8Array }> = [];
      let offset = 0;
      while (offset + MIN_UNIT_ROOM_BYTES <= readable) {
        const header = decodeUnitHeader(scratch.bytes.subarray(offset, offset + UNIT_HEADER_BYTES));
        const address = seq * this.segmentSize + offset;
        if (header === undefined || header.address !== address || header.segmentIndex !== index) break;
        const fileBytesOfUnit = unitFileBytes(header.payloadBytes);
        if (offset + fileBytesOfUnit > readable) break;
        const payload = scratch.bytes.subarray(offset + UNIT_HEADER_BYTES, offset + UNIT_HEADER_BYTES + header.payloadBytes);
        if (Bun.hash.crc32(payload) >>> 0 !== header.payloadCrc) break;
        units.push({ address, payload: payload.slice() }); // the buffer is reused
        offset += fileBytesOfUnit;
      }
      return units;
    } finally {
      if (this.isOpen && this.segmentReadPool.length === 0) this.segmentReadPool.push(scratch);
      else this.backend.free(scratch);
    }
  }

  /**
   * Move the log's tail to the start of the next segment (taking the lowest free segment for the
   * one after), so that high segments can later be cut off the file. Needs an empty open buffer
   * (`flush()` first), and a unit written before it is called again: the recovery walk follows
   * one skipped segment tail at a time, never a whole empty segment.
   */
  async advanceSegment(): Promise<void> {
    await this.flush();
    const current = this.slots[this.currentCounter % this.ringSize] as FlushBuffer;
    if (this.pendingOpen !== undefined || current.offsetBytes !== 0) throw new InvalidArgumentError("advanceSegment() needs an empty open buffer");
    this.sealCurrentBuffer(true);
    if (this.pendingOpen !== undefined) await this.waitForRotation(this.currentCounter);
  }

  /** Sequence number of the segment the log is writing. */
  get tailSegmentSeq(): number {
    return this.currentSeq;
  }

  /** Free segments (reusable now), and those given back but waiting for a checkpoint. */
  get freeSegments(): number {
    return this.segments.freeCount;
  }

  get pendingSegments(): number {
    return this.segments.pendingCount;
  }

  /** Segments the file has room for. */
  get fileSegments(): number {
    return this.segments.fileSegments;
  }

  /**
   * Truncate free segments at the end of the file. Returns the bytes given back. Safe at any
   * time: only segments on the free list are cut, and nothing durable points into them.
   */
  shrinkFile(): number {
    if (this.readOnly) throw new ReadOnlyError("shrinkFile on a read-only log");
    const keep = Math.max(this.currentIndex, this.nextIndex, this.segments.highestHeldIndex()) + 1;
    const before = this.backend.fileSizeBytes(this.file);
    const after = ROOT_REGION_BYTES + keep * this.segmentSize;
    if (after >= before) return 0;
    this.segments.shrinkTo(keep);
    this.backend.truncate(this.file, after);
    return before - after;
  }

  // ───────────────────────────── read path ─────────────────────────────

  /**
   * Read `lengthBytes` at log `address`: from a flush buffer if the bytes are still in memory,
   * else from the file. The log does not interpret the bytes; callers verify their own checksums.
   */
  async read(address: number, lengthBytes: number): Promise<Uint8Array> {
    if (!this.isOpen) throw new StoreClosedError(`the log ${this.path} is closed`);
    const fromMemory = this.readFromBuffers(address, lengthBytes);
    if (fromMemory !== undefined) return fromMemory;
    const seq = Math.floor(address / this.segmentSize);
    const index = this.segments.indexOf(seq);
    if (index === undefined || address + lengthBytes > (seq + 1) * this.segmentSize) {
      throw new InvalidArgumentError(`log range [${address}, +${lengthBytes}) is not in a live segment`);
    }
    const physical = physicalOffset(this.segmentSize, index, address);
    const alignedStart = Math.floor(physical / ALIGNMENT_BYTES) * ALIGNMENT_BYTES;
    const alignedBytes = Math.ceil((physical + lengthBytes) / ALIGNMENT_BYTES) * ALIGNMENT_BYTES - alignedStart;
    // Two pools: small reads (≤ 64 KiB) and reads up to a whole unit (streams read parts of
    // half a buffer); anything larger allocates its own buffer.
    const largeBytes = this.bufferSize + 2 * ALIGNMENT_BYTES;
    const pool = alignedBytes <= READ_SCRATCH_BYTES ? this.readPool : alignedBytes <= largeBytes ? this.largeReadPool : undefined;
    const pooled = pool !== undefined;
    const scratch =
      pool === undefined
        ? this.backend.alloc(alignedBytes)
        : (pool.pop() ?? this.backend.alloc(pool === this.readPool ? READ_SCRATCH_BYTES : largeBytes));
    try {
      await this.queue.read(this.file, scratch, 0, alignedBytes, alignedStart);
      return scratch.bytes.slice(physical - alignedStart, physical - alignedStart + lengthBytes);
    } finally {
      if (pooled && pool.length < READ_POOL_MAX && this.isOpen) pool.push(scratch);
      else this.backend.free(scratch);
    }
  }

  /** Copy from a flush buffer still holding `[address, +length)`, if one does. */
  readFromBuffers(address: number, lengthBytes: number): Uint8Array | undefined {
    for (const buffer of this.slots) {
      if (buffer.isFree) continue;
      const base = buffer.baseAddress;
      const start = address - base;
      // The fill, not the offset: a reservation that did not fit pushed the offset past the fill,
      // and those addresses belong to the next unit (possibly open in another slot).
      if (start < UNIT_HEADER_BYTES || start + lengthBytes > UNIT_HEADER_BYTES + buffer.finalFillBytes) continue;
      if (start + lengthBytes > this.bufferSize) continue;
      return (this.views[buffer.slot] as Uint8Array).slice(start, start + lengthBytes);
    }
    return undefined;
  }

  private scratchFor(sizeBytes: number): NativeBuffer {
    if (this.readScratch === undefined || this.readScratch.sizeBytes < sizeBytes) {
      if (this.readScratch !== undefined) this.backend.free(this.readScratch);
      this.readScratch = this.backend.alloc(sizeBytes);
    }
    return this.readScratch;
  }

  // ───────────────────────────── workers ─────────────────────────────

  /**
   * Serve Workers writing through {@link ringDescriptor}: until `stop` resolves (or close),
   * wake on the ring's doorbell and process what they signal. Returns when stopped.
   */
  async serveWorkers(stop: Promise<unknown>): Promise<void> {
    let stopped = false;
    void stop.then(() => {
      stopped = true;
    });
    while (!stopped && this.isOpen) {
      const seen = this.doorbell;
      if (seen !== this.doorbellSeen) {
        this.doorbellSeen = seen;
        this.pollCompletions();
        continue;
      }
      await this.waitDoorbell(seen, 5);
    }
    this.pollCompletions();
  }

  // ───────────────────────────── close ─────────────────────────────

  /** Flush, mark the file cleanly closed, free every native buffer, close the file. */
  async close(): Promise<void> {
    if (!this.isOpen) return;
    let error: unknown;
    try {
      if (!this.readOnly && this.failure === undefined && this.recovered) {
        await this.flush();
        await this.writeRoot({ cleanShutdown: true });
      }
    } catch (caught) {
      error = caught;
    }
    // Also until the completion callbacks have run (settling a write resolves its promise a
    // microtask before its callback, which may dispatch a queued write or a datasync): freeing
    // the buffers under them would be a use-after-free.
    // And until every pre-write has settled. No await between this loop and isOpen = false: a
    // turn of the event loop there could start new I/O (a flush timer sealing a buffer).
    while (this.queue.outstanding > 0 || this.writesInFlight > 0 || this.syncInFlight || this.prewriter.busy) {
      await this.backend.wait(1, 10);
    }
    this.isOpen = false;
    this.prewriter.free();
    this.markClosed();
    for (const buffer of this.buffers) this.backend.free(buffer);
    this.backend.free(this.rootBuffer);
    if (this.readScratch !== undefined) this.backend.free(this.readScratch);
    for (const buffer of this.readPool.splice(0)) this.backend.free(buffer);
    for (const buffer of this.largeReadPool.splice(0)) this.backend.free(buffer);
    for (const buffer of this.segmentReadPool.splice(0)) this.backend.free(buffer);
    this.backend.closeFile(this.file);
    if (this.ownsBackend) this.backend.close();
    if (error !== undefined) throw error;
  }

  get closed(): boolean {
    return !this.isOpen;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function openLogFile(backend: IoBackend, path: string, options: LogOptions): FileHandle {
  try {
    return backend.openFile(path, { create: (options.create ?? true) && !options.readOnly, readOnly: options.readOnly, direct: true });
  } catch (error) {
    if (error instanceof LssError && /ENOENT/.test(error.message)) {
      throw new InvalidArgumentError(`${path} does not exist${options.readOnly ? " (readOnly never creates)" : " and create is false"}`);
    }
    throw error;
  }
}

async function loadOrCreateRoot(
  backend: IoBackend,
  file: FileHandle,
  rootBuffer: NativeBuffer,
  options: LogOptions,
  bufferSize: number,
): Promise<RootBlock> {
  const queue = new IoQueue(backend);
  const sizeBytes = backend.fileSizeBytes(file);
  if (sizeBytes === 0) {
    if (options.readOnly) throw new CorruptionError(`${file.path} is empty: not a bloom-lss file`);
    const segmentSize = options.segmentSize ?? Math.max(DEFAULT_SEGMENT_BYTES, bufferSize);
    checkSize("segmentSize", segmentSize, MIN_SEGMENT_BYTES, 0x7fffffff - (0x7fffffff % ALIGNMENT_BYTES));
    const root: RootBlock = {
      formatVersion: FORMAT_VERSION,
      generation: 1,
      segmentSize,
      replayFrom: { address: 0, segmentIndex: 0, nextSegmentIndex: 0xffffffff, prevEnd: 0 },
      checkpoint: undefined,
      uncleanShutdowns: 0,
      cleanShutdown: true,
      epoch: 0,
      user: new Uint8Array(0),
    };
    // Both copies: generation 0 and 1, so a torn first update still leaves one valid.
    encodeRootBlock(rootBuffer.bytes.subarray(0, ROOT_BLOCK_BYTES), { ...root, generation: 0 });
    encodeRootBlock(rootBuffer.bytes.subarray(ROOT_BLOCK_BYTES, ROOT_REGION_BYTES), root);
    await queue.write(file, rootBuffer, 0, ROOT_REGION_BYTES, 0);
    await queue.datasync(file);
    return root;
  }
  if (sizeBytes < ROOT_REGION_BYTES) throw new CorruptionError(`${file.path} is ${sizeBytes} bytes: too short for a root block`);
  await queue.read(file, rootBuffer, 0, ROOT_REGION_BYTES, 0);
  let newest: RootBlock | undefined;
  let versionError: unknown;
  for (let copy = 0; copy < 2; copy++) {
    try {
      const root = decodeRootBlock(rootBuffer.bytes.subarray(copy * ROOT_BLOCK_BYTES, (copy + 1) * ROOT_BLOCK_BYTES));
      if (root !== undefined && (newest === undefined || root.generation > newest.generation)) newest = root;
    } catch (error) {
      versionError = error;
    }
  }
  if (newest === undefined) {
    if (versionError !== undefined) throw versionError;
    throw new CorruptionError(`${file.path} has no valid root block: not a bloom-lss file, or both copies are damaged`);
  }
  if (newest.segmentSize < MIN_SEGMENT_BYTES || newest.segmentSize % ALIGNMENT_BYTES !== 0) {
    throw new CorruptionError(`${file.path}: root block names an invalid segment size ${newest.segmentSize}`);
  }
  return newest;
}
