/**
 * The flush pipeline of the owner thread: when buffers are sealed, when their writes start (in
 * either write mode), what a completed write sets off, group commit, `flush()`, and serving
 * Workers' doorbells. Owns the pipeline's state: slots ready to flush, writes in flight, the
 * serialized mode's queue, and the group-commit flags.
 *
 * ## The pump
 *
 * Everything the owner does to move buffers along is one step, {@link Flusher.pump}:
 * 1. finalize the open buffer if it was sealed (rotation.ts fixes its unit's extent);
 * 2. open the next slot if it is free (rotation.ts);
 * 3. start the flush of every finalized slot whose last writer has left;
 * 4. open the next slot again (step 3 frees the slots of empty units at once).
 *
 * The step is idempotent and cheap, so it simply runs after each event that may let the pipeline
 * move, and only then:
 * - **ready**: a slot's last writer left a sealed buffer ({@link Flusher.flushReady}, the ring hook
 *   on the owner thread; {@link Flusher.pollCompletions} for the slots Workers flagged);
 * - **sealed**: a buffer was sealed, by a reservation that did not fit (ring hook) or by the owner
 *   ({@link Flusher.sealCurrent});
 * - **written**: a unit's write completed, freeing its slot (and, in serialized mode, letting the
 *   next queued write go).
 *
 * ## Write modes
 *
 * `tailLocalized` starts every ready flush at once (writes complete in any order; durability.ts
 * only advances over the gap-free prefix). `serialized` keeps one write in flight and queues the
 * rest in log order.
 *
 * ## Group commit
 *
 * {@link Flusher.requestFlush} seals the open buffer on the next turn of the event loop if no
 * datasync is in flight; if one is, the buffer is sealed as soon as it completes. Every commit that
 * arrives meanwhile shares one write and one datasync. Unit writes in flight without a datasync
 * (units that filled up) do not hold a commit back: its unit is written beside them, without a
 * linked datasync (it would not cover them), and durability.ts issues one datasync once the
 * writes the commit needs are done.
 *
 * ## A write that finds no space
 *
 * A unit write that fails with ENOSPC (or transfers less than asked, which on a regular file
 * means the same) into a segment the file already holds is tried again: its slot keeps the
 * unit's bytes and the same bytes go to the same place, {@link RETRY_LIMIT} times, backing off,
 * while durability waits (durability.ts explains why its waiters are not failed, and why the log
 * fails if the write never succeeds). Nothing after it can become durable before it (the stable
 * address moves over a gap-free prefix only), so a crash meanwhile loses only what nobody was
 * told is durable.
 *
 * @module
 */
import type { FileHandle, NativeBuffer } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import { CorruptionError, InvalidArgumentError, NoSpaceError } from "../errors.ts";
import type { LogGeometry } from "./address.ts";
import type { BlockCache } from "./block-cache.ts";
import { RETRY_FIRST_MS, RETRY_LIMIT, type Durability } from "./durability.ts";
import type { FlushBuffer } from "./flush-buffer.ts";
import { encodeUnitHeader, UNIT_HEADER_BYTES, unitFileBytes } from "./format.ts";
import { asLssError, type LogLifecycle } from "./lifecycle.ts";
import type { SegmentPrewriter } from "./prewrite.ts";
import type { OwnerRing } from "./ring.ts";
import type { Rotation } from "./rotation.ts";

/** How flushes are dispatched. */
export type WriteMode = "tailLocalized" | "serialized";

/** What the flusher writes with. */
export interface FlusherDeps {
  readonly writeMode: WriteMode;
  readonly ring: OwnerRing;
  /** The native buffers behind the ring's slots (what the unit writes are issued from). */
  readonly buffers: readonly NativeBuffer[];
  readonly rotation: Rotation;
  readonly durability: Durability;
  readonly prewriter: SegmentPrewriter;
  readonly queue: IoQueue;
  readonly file: FileHandle;
  readonly geometry: LogGeometry;
  readonly life: LogLifecycle;
  /** Epoch of this open, written into every unit header. */
  readonly epoch: () => number;
  /** The caching layer: a unit's bytes go in when its write completes, before its slot is freed. */
  readonly blockCache: BlockCache;
  /** Whether a written unit goes into the caching layer (the layer above knows its payloads). */
  readonly admitToCache: (payload: Uint8Array) => boolean;
  /**
   * A unit's write is being issued (the first time): `bytes` is the whole unit as it goes to the
   * file, valid only during the call. The durable tail copies it for followers that ship units
   * before they are durable (tail.ts, `beforeDurable`).
   */
  readonly onDispatch: (address: number, bytes: Uint8Array) => void;
}

/** The owner's flush pipeline. */
export class Flusher {
  private readonly deps: FlusherDeps;
  private readonly readyToFlush = new Set<number>();
  private writes = 0;
  private readonly serializedQueue: number[] = [];
  /** A group commit waits for the datasync in flight to complete. */
  private flushWhenIdle = false;
  private sealScheduled = false;
  /** {@link sealOpenBuffer} is sealing a unit somebody wants durable (a flush or group commit). */
  private sealingForSync = false;
  private pumping = false;
  private doorbellSeen = 0;
  /** Slots whose unit write failed for lack of space: written again until it succeeds. */
  private readonly stalled = new Set<number>();
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Retry rounds since the stall began. */
  private retries = 0;
  /** The retry round in flight, settled either way. */
  private retrying: Promise<void> | undefined;
  /** Statistics. */
  unitsWritten = 0;
  bytesWritten = 0;

  constructor(deps: FlusherDeps) {
    this.deps = deps;
  }

  /** Unit writes in flight. */
  get writesInFlight(): number {
    return this.writes;
  }

  /** A group commit is waiting: durability.ts syncs what is written meanwhile. */
  get groupCommitPending(): boolean {
    return this.flushWhenIdle;
  }

  /**
   * Group commit waits while a datasync is in flight: commits arriving meanwhile share the next
   * unit and the next datasync. Unit writes in flight without one (units that filled up: a large
   * value, a bulk load) are no reason to wait: the unit sealed now is written beside them, and
   * durability.ts issues one datasync once the writes it needs are done.
   */
  private get noSyncInFlight(): boolean {
    return !this.deps.durability.busy;
  }

  // ───────────────────────────── events ─────────────────────────────

  /** Event "ready": slot `slot` is sealed and its last writer left (owner thread). */
  flushReady(slot: number): void {
    this.readyToFlush.add(slot);
    this.pump();
  }

  /** Event "sealed": a reservation that did not fit sealed the open buffer (owner thread). */
  sealed(): void {
    this.pump();
  }

  /** Process what Workers signalled and what the owner's own seals and releases left to do. */
  pollCompletions(): number {
    const mask = this.deps.ring.takeFlushMask();
    for (let slot = 0; slot < this.deps.ring.ringSize; slot++) if ((mask & (1 << slot)) !== 0) this.readyToFlush.add(slot);
    return this.pump();
  }

  /** A datasync completed: a group commit waiting for it may seal now. */
  onSynced(): void {
    if (this.flushWhenIdle && this.noSyncInFlight) this.sealOpenBuffer();
  }

  // ───────────────────────────── the pump ─────────────────────────────

  /** The owner's one step (see the module comment). Returns the flushes it started. */
  pump(): number {
    const { life, rotation } = this.deps;
    if (!life.running) return 0;
    // Invariant: the step never re-enters itself (nothing it calls completes I/O synchronously).
    if (this.pumping) throw new Error("Flusher.pump re-entered");
    this.pumping = true;
    try {
      rotation.finalizeSealed();
      rotation.openNext();
      let started = 0;
      for (const slot of [...this.readyToFlush]) {
        if (!rotation.unitOf(slot).finalized) continue;
        this.readyToFlush.delete(slot);
        this.startFlush(slot);
        started += 1;
      }
      rotation.openNext();
      return started;
    } finally {
      this.pumping = false;
    }
  }

  private startFlush(slot: number): void {
    const unit = this.deps.rotation.unitOf(slot);
    if (unit.unitId < 0) {
      // Sealed empty: no unit to write, the slot is free at once.
      (this.deps.ring.slots[slot] as FlushBuffer).markFree();
      return;
    }
    if (this.deps.writeMode === "serialized" && (this.writes > 0 || this.stalled.size > 0)) {
      this.serializedQueue.push(slot);
      return;
    }
    this.dispatchWrite(slot);
  }

  /**
   * Write slot `slot`'s unit. `retry`: the write failed for lack of space before; it is not given
   * a linked datasync (the one linked the first time may still be settling). Resolves once the
   * outcome is handled, either way.
   */
  private dispatchWrite(slot: number, retry = false): Promise<void> {
    const { ring, rotation, durability, prewriter, queue, file, geometry, life } = this.deps;
    if (!life.isOpen) return Promise.resolve();
    const unit = rotation.unitOf(slot);
    const buffer = ring.slots[slot] as FlushBuffer;
    const native = this.deps.buffers[slot] as NativeBuffer;
    const fill = buffer.finalFillBytes;
    const fileBytes = unitFileBytes(fill);
    const base = buffer.baseAddress;
    const payload = native.bytes.subarray(UNIT_HEADER_BYTES, UNIT_HEADER_BYTES + fill);
    native.bytes.fill(0, UNIT_HEADER_BYTES + fill, fileBytes);
    encodeUnitHeader(native.bytes, {
      address: base,
      payloadBytes: fill,
      prevEnd: buffer.prevEnd,
      segmentIndex: unit.segmentIndex,
      nextSegmentIndex: unit.nextSegmentIndex,
      payloadCrc: Bun.hash.crc32(payload) >>> 0,
      epoch: this.deps.epoch(),
    });
    const offset = geometry.physicalOffset(unit.segmentIndex, base);
    const unitId = unit.unitId;
    if (!retry) this.deps.onDispatch(base, native.bytes.subarray(0, fileBytes));
    this.writes += 1;
    // No unit is written over zeros still being written there, and on a block device no unit
    // names a successor whose zeros are not down (see prewrite.ts).
    const prewrite = prewriter.readyFor(unit.segmentIndex, unit.nextSegmentIndex, offset, offset + fileBytes);
    let write: Promise<void>;
    // Linked only when no other unit write is in flight: a datasync linked here would not cover
    // those (it starts after this write alone), and another would have to follow them.
    if (prewrite === undefined && !retry && this.writes === 1 && durability.wantsLinkedSync(this.sealingForSync)) {
      // Somebody waits for durability and no datasync is in flight: link one after this write, so
      // a serial commit costs one device round trip and one wake-up of this thread, not two.
      // Awaited: a commit waits for this datasync, and may have it done at once with system calls
      // (IoQueue.writeThenSyncNext); a datasync nobody waits for yet (units piling up under a
      // stream) must not block the thread that keeps the stream's writes going.
      const linked = queue.writeThenSync(file, native, 0, fileBytes, offset, durability.awaited);
      durability.syncLinked(unitId, linked.synced);
      write = linked.written;
    } else {
      write =
        prewrite === undefined
          ? queue.write(file, native, 0, fileBytes, offset)
          : prewrite.then(() => queue.write(file, native, 0, fileBytes, offset));
    }
    return write.then(
      () => {
        // Event "written".
        this.writes -= 1;
        if (this.stalled.delete(slot) && this.stalled.size === 0) {
          this.retries = 0;
          durability.writesResumed();
        }
        this.unitsWritten += 1;
        this.bytesWritten += fileBytes;
        // Reading what was just written must not go to the disk: keep the unit's bytes (exactly
        // what the file now holds) while its buffer is still ours.
        if (this.deps.admitToCache(payload)) this.deps.blockCache.put(base, native.bytes.subarray(0, fileBytes));
        buffer.markFree();
        // May make the unit durable at once (a linked datasync reaped first) and wake its waiters.
        durability.markWritten(unitId);
        durability.scheduleSync();
        const queued = this.serializedQueue.shift();
        if (queued !== undefined) this.dispatchWrite(queued);
        this.pump();
      },
      (error: unknown) => {
        this.writes -= 1;
        const failure = asLssError(error, (message) => new CorruptionError(message));
        if (failure instanceof NoSpaceError && life.running && this.retries < RETRY_LIMIT) {
          // Tried again (see the module comment): the slot keeps the unit's bytes.
          this.stalled.add(slot);
          durability.stallWrites(failure);
          this.scheduleRetry();
          return;
        }
        life.fail(failure);
      },
    );
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== undefined || this.retrying !== undefined || this.stalled.size === 0) return;
    const delay = RETRY_FIRST_MS * 2 ** this.retries;
    this.retries += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retryStalled();
    }, delay);
  }

  /** Write every stalled unit again, in log order; resolves once each outcome is handled. */
  private retryStalled(): Promise<void> {
    if (this.retrying !== undefined) return this.retrying;
    if (!this.deps.life.running || this.stalled.size === 0) return Promise.resolve();
    const slots = [...this.stalled].sort((a, b) => (this.deps.ring.slots[a] as FlushBuffer).baseAddress - (this.deps.ring.slots[b] as FlushBuffer).baseAddress);
    const round = Promise.all(slots.map((slot) => this.dispatchWrite(slot, true))).then(() => {
      this.retrying = undefined;
      this.scheduleRetry();
    });
    this.retrying = round;
    return round;
  }

  /** Stop trying stalled writes (the log is closing: their units are never written). */
  stopRetrying(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.deps.durability.stopRetrying();
  }

  // ───────────────────────────── sealing ─────────────────────────────

  /**
   * Seal the open buffer and hand it on: a non-empty one becomes a unit; with `evenIfEmpty`, an
   * empty one moves the log to the next segment's start (see Rotation.finalizeSealed).
   */
  sealCurrent(evenIfEmpty: boolean): void {
    const rotation = this.deps.rotation;
    const current = rotation.current;
    if (rotation.opening || current.isFree) return;
    if (!evenIfEmpty && current.offsetBytes === 0) return;
    if (current.seal() && current.startFlush) this.readyToFlush.add(current.slot);
    this.pump();
  }

  private sealOpenBuffer(): void {
    this.flushWhenIdle = false;
    // The unit sealed now is wanted durable: its write gets a linked datasync (dispatchWrite).
    this.sealingForSync = true;
    try {
      this.sealCurrent(false);
    } finally {
      this.sealingForSync = false;
    }
    // Whatever was sealed must also be synced, even if nobody waits on it (relaxed durability).
    this.deps.durability.syncUpTo(this.deps.rotation.sealedEnd);
  }

  /**
   * Group commit: ask for everything reserved so far to become durable, without forcing a flush
   * of its own while another write or datasync is in flight (see the module comment).
   */
  requestFlush(immediate = false): void {
    const life = this.deps.life;
    if (!life.running || life.readOnly) return;
    this.flushWhenIdle = true;
    if (!this.noSyncInFlight) return;
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
      if (this.flushWhenIdle && this.noSyncInFlight) this.sealOpenBuffer();
    });
  }

  /**
   * Seal the open buffer and resolve when everything reserved so far is durable. Reservations
   * still being written are waited for: their buffer flushes when the last writer releases.
   */
  async flush(): Promise<void> {
    const { life, rotation, ring } = this.deps;
    life.assertOpen();
    if (life.readOnly) return;
    if (life.failed !== undefined) throw life.failed;
    this.pollCompletions();
    this.sealingForSync = true; // the caller waits for durability: link a datasync to the write
    try {
      this.sealCurrent(false);
    } finally {
      this.sealingForSync = false;
    }
    // Sealed but not finalized (a Worker's overrunning reservation still holds a writer): its
    // end is not known yet; wait for that writer's release, signalled through the doorbell.
    while (life.isOpen && rotation.sealedUnfinalized) {
      const seen = ring.doorbell;
      this.pollCompletions();
      if (!rotation.sealedUnfinalized) break;
      if (life.failed !== undefined) throw life.failed;
      await ring.waitDoorbell(seen, 5);
    }
    await this.deps.durability.waitDurable(rotation.sealedEnd);
  }

  /**
   * Move the log's tail to the start of the next segment. Needs an empty open buffer (`flush()`
   * first), and a unit written before it is called again: the recovery walk follows one skipped
   * segment tail at a time, never a whole empty segment.
   */
  async advanceSegment(): Promise<void> {
    await this.flush();
    const { rotation, ring } = this.deps;
    if (rotation.emptyTail() === undefined) throw new InvalidArgumentError("advanceSegment() needs an empty open buffer");
    rotation.advanceOnEmptySeal();
    this.sealCurrent(true);
    if (rotation.opening) await ring.waitForRotation(ring.currentCounter);
  }

  /**
   * Serve Workers writing through the ring: until `stop` resolves (or close), wake on the ring's
   * doorbell and process what they signal.
   */
  async serveWorkers(stop: Promise<unknown>): Promise<void> {
    const { life, ring } = this.deps;
    let stopped = false;
    void stop.then(() => {
      stopped = true;
    });
    while (!stopped && life.isOpen) {
      const seen = ring.doorbell;
      if (seen !== this.doorbellSeen) {
        this.doorbellSeen = seen;
        this.pollCompletions();
        continue;
      }
      await ring.waitDoorbell(seen, 5);
    }
    this.pollCompletions();
  }
}
