/**
 * The durable tail: every durable unit after a position, in log order, as it becomes durable; a
 * raw read of a durable log range; and retention, which keeps the log a reader still needs from
 * being reused. It is the one seam that backup increments, continuous archiving and a hot
 * standby's log shipping read from, so none of them reaches into the log's internals.
 *
 * Why units, not records: a unit is what the log checksums and makes durable as a whole, and the
 * only thing it can hand out verified without knowing the layer above. A follower copies units;
 * the layer above decodes records from their payloads.
 *
 * Why from the file: a unit's flush buffer is freed as soon as its write completes, before the
 * datasync that makes it durable, so a durable unit is (almost) never still in its buffer. Reading
 * it back through pooled aligned buffers also checks what really is on the disk, which is what a
 * backup must copy. A follower that only wants the bytes soon (a hot standby) may ask for
 * `fromMemory`: the caching layer got a copy of each unit when its write completed, and a window
 * it holds whole is taken from there (a read and a wake-up less per unit; a miss reads the file).
 * Each unit, either way, passes the one unit checker (walk.ts): its address, segment, the chain to
 * the unit before it, its epoch and its payload checksum.
 *
 * Why retention: the cleaner gives segments back and the allocator reuses them (segments.ts). A
 * reader behind the tail holds a low-water mark ({@link LogRetention}); no segment holding log at
 * or after it leaves the pending state, so its bytes stay what they were. A reader that asks for
 * log already freed gets a {@link LogTruncatedError}, never wrong bytes.
 *
 * Why `beforeDurable`: a hot standby with the `durable` level makes a commit wait for two device
 * flushes, the primary's and the standby's. Shipped only once durable, they run one after the
 * other; shipped as its write is issued, the standby's flush overlaps the primary's (measured in
 * docs/REPLICATION.md). While such a follower exists, the tail keeps a copy of every unit whose
 * write is issued until it is durable (at most the ring's units in flight) and hands the follower
 * the next one in the chain from there. Such a unit may yet be lost by a crash of this process;
 * the follower must be able to tell (each unit carries the epoch of the open that wrote it).
 *
 * Followers never poll: they sleep until the durability tracker reports that `stableAddress`
 * moved past them, or (`beforeDurable`) a unit write is issued (or the log closes or fails, or
 * their signal aborts).
 *
 * @module
 */
import { ALIGNMENT_BYTES, type FileHandle, type NativeBuffer } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import { CorruptionError, InvalidArgumentError, LogTruncatedError } from "../errors.ts";
import type { LogGeometry } from "./address.ts";
import type { Durability } from "./durability.ts";
import { UNIT_HEADER_BYTES, unitFileBytes, type LogPosition } from "./format.ts";
import type { LogLifecycle } from "./lifecycle.ts";
import type { LogReader } from "./reader.ts";
import type { SegmentSpace } from "./space.ts";
import { checkUnit, checkUnitHeader, positionAfter, type CheckedUnit, type UnitExpectation } from "./walk.ts";

/** One durable unit of the log, as the tail hands it out. */
export interface DurableUnit {
  /** Log address of the unit (its header). */
  readonly address: number;
  /** Address where the next unit may start (the unit's end in the file, 4 KiB aligned). */
  readonly endAddress: number;
  /** Epoch of the open that wrote it. */
  readonly epoch: number;
  /** Sequence number of the segment holding it. */
  readonly segmentSeq: number;
  /**
   * The payload: a copy, checksum-verified. Units handed out before they are durable share one
   * copy among such followers: read it, do not write to it.
   */
  readonly payload: Uint8Array;
  /** Position right after the unit: pass it as `from` to resume after this unit. */
  readonly position: LogPosition;
}

/** Options of {@link DurableTail.durableUnits}. */
export interface DurableUnitsOptions {
  /** Aborting ends the iteration (the pending `next()` resolves done). */
  signal?: AbortSignal;
  /**
   * Take units from the caching layer when it holds them, else from the file. The cache holds
   * the bytes the unit's write sent (copied when it completed), checked again by the same unit
   * checker; what it cannot vouch for is that the disk kept them. A backup must copy what is on
   * the disk (default `false`); a hot standby that follows the tail wants the unit now, without
   * a read and a wake-up per unit on its way (src/replication).
   */
  fromMemory?: boolean;
  /**
   * Hand out each unit as soon as its write is issued, not once it is durable (default `false`).
   * A unit handed out so may be lost if this process or machine crashes before its datasync: the
   * reopened log then continues, under a new epoch, from before it. For a hot standby whose
   * flushes should overlap the primary's (src/replication); a backup must never ask for it.
   */
  beforeDurable?: boolean;
}

/**
 * A hold on the log from {@link LogRetention.address} on: while it is held, no segment holding
 * log at or after that address is reused. Release it (or let `using` do it) when done.
 */
export interface LogRetention extends Disposable {
  /** Oldest log address still needed. */
  readonly address: number;
  /** True once released. */
  readonly released: boolean;
  /** Move the hold forward to `address` (never back); older segments may be reused now. */
  advance(address: number): void;
  /** Give the hold up (idempotent). */
  release(): void;
}

/** What the tail needs of the log. */
export interface TailDeps {
  readonly geometry: LogGeometry;
  readonly space: SegmentSpace;
  readonly reader: LogReader;
  readonly durability: Durability;
  readonly life: LogLifecycle;
  readonly queue: IoQueue;
  readonly file: FileHandle;
  /** A retention moved or was released: the reuse rule may free segments now. */
  readonly onRetentionMoved: () => void;
}

/** Copies of the units whose writes were issued and that are not durable yet, by address. */
interface Submitted {
  readonly units: Map<number, Uint8Array>;
  /** Counts captures: a follower that found nothing waits for it to move. */
  seq: number;
}

class Retention implements LogRetention {
  private current: number;
  private done = false;
  private readonly owner: DurableTail;

  constructor(owner: DurableTail, address: number) {
    this.owner = owner;
    this.current = address;
  }

  get address(): number {
    return this.current;
  }

  get released(): boolean {
    return this.done;
  }

  advance(address: number): void {
    if (this.done) throw new InvalidArgumentError("advance() of a released log retention");
    if (!Number.isFinite(address) || address < this.current) {
      throw new InvalidArgumentError(`a log retention only moves forward: ${address} < ${this.current}`);
    }
    if (address === this.current) return;
    this.current = address;
    this.owner.retentionMoved();
  }

  release(): void {
    if (this.done) return;
    this.done = true;
    this.owner.dropRetention(this);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/** Checks a `from` argument; returns its address. */
function addressOf(from: LogPosition | number, what: string): number {
  const address = typeof from === "number" ? from : from?.address;
  if (typeof address !== "number" || !Number.isSafeInteger(address) || address < 0) {
    throw new InvalidArgumentError(`${what} must be a log address (a non-negative integer) or a LogPosition, got ${String(address)}`);
  }
  return address;
}

/**
 * Reads durable units forward from a position. Keeps what it needs to check the next unit: its
 * address, the end of the unit before it (the chain) and the epoch (never decreasing).
 */
class TailCursor {
  private readonly deps: TailDeps;
  private readonly reads: ReadCounter;
  /** Where the next unit is looked for. */
  address: number;
  private prevEnd: number | undefined;
  private minEpoch = 0;
  /** Units below this address are read (to learn the chain) but not handed out. */
  private readonly skipBelow: number;
  /** Windows the caching layer holds whole come from it (see DurableUnitsOptions.fromMemory). */
  private readonly fromMemory: boolean;
  /** Units not durable yet come from here (DurableUnitsOptions.beforeDurable); else they wait. */
  private readonly submitted: Submitted | undefined;

  constructor(deps: TailDeps, reads: ReadCounter, from: LogPosition | number, fromMemory = false, submitted?: Submitted) {
    this.deps = deps;
    this.reads = reads;
    this.fromMemory = fromMemory;
    this.submitted = submitted;
    if (typeof from === "number") {
      // A bare address: units of a segment are contiguous from its start, so walk from there.
      this.address = deps.geometry.segmentStart(deps.geometry.seqOf(from));
      this.prevEnd = undefined;
      this.skipBelow = from;
    } else {
      this.address = from.address;
      this.prevEnd = from.prevEnd;
      this.skipBelow = from.address;
    }
  }

  /**
   * The next units with addresses in `[cursor, min(stable, limit))`, at least one when there is
   * one (at most about one buffer's worth). `stable` must be the log's stable address (a unit end).
   */
  async readBatch(stable: number, limit = Number.POSITIVE_INFINITY): Promise<DurableUnit[]> {
    const geometry = this.deps.geometry;
    const out: DurableUnit[] = [];
    let jumped = false;
    for (;;) {
      const at = geometry.unitStartFrom(this.address);
      if (at >= limit || !this.deps.life.isOpen) return out;
      if (at >= stable) {
        if (this.submitted !== undefined) this.takeSubmitted(out);
        return out;
      }
      const found = await this.readWindow(at, stable, limit, out);
      if (out.length > 0) return out;
      if (found > 0) {
        jumped = false;
        continue; // every unit read lay below `skipBelow`
      }
      // No unit at `at`, below the stable address. The writer skips the rest of a segment when a
      // reservation does not fit it (or advanceSegment): the next unit is at the next segment's
      // start. A segment's start always holds its first unit, so anything else is damage.
      if (geometry.isSegmentStart(at) || jumped) {
        throw new CorruptionError(`durable log unit at address ${at} does not check out (stable address ${stable})`);
      }
      this.address = geometry.nextSegmentStart(at);
      jumped = true;
    }
  }

  /** Read the units from `at` on that one window holds; append those to hand out to `out`. Returns units read. */
  private async readWindow(at: number, stable: number, limit: number, out: DurableUnit[]): Promise<number> {
    const { geometry, space, reader, queue, file } = this.deps;
    const seq = geometry.seqOf(at);
    const index = space.heldIndexOf(seq);
    if (index === undefined) {
      throw new LogTruncatedError(at, `log at address ${at} is gone: its segment (seq ${seq}) was given back and may be reused`);
    }
    const segmentEnd = geometry.segmentStart(seq + 1);
    const windowBytes = Math.min(segmentEnd, stable, at + reader.unitReadBytes) - at;
    // Invariant: units start and end on 4 KiB boundaries, and so does the stable address.
    if (windowBytes <= 0 || windowBytes % ALIGNMENT_BYTES !== 0) throw new Error(`tail window of ${windowBytes} bytes at ${at}`);
    // Counted from the first borrow to the last give-back: close() waits for it (the buffers and
    // the file must outlive the read).
    this.reads.active += 1;
    let window: NativeBuffer | undefined;
    let found = 0;
    try {
      // The window's bytes: from the caching layer when asked and it holds all of them, else read.
      let windowData: Uint8Array | undefined = this.fromMemory ? reader.cached(at, windowBytes) : undefined;
      if (windowData === undefined) {
        window = reader.borrow(windowBytes);
        await queue.read(file, window, 0, windowBytes, geometry.physicalOffset(index, at));
        windowData = window.bytes;
      }
      let offset = 0;
      while (offset + UNIT_HEADER_BYTES <= windowBytes) {
        const address = at + offset;
        if (address >= limit || (offset > 0 && geometry.unitStartFrom(address) !== address)) break;
        const expected: UnitExpectation = {
          address,
          segmentIndex: index,
          prevEnd: this.prevEnd,
          minEpoch: this.minEpoch,
          roomBytes: segmentEnd - address,
        };
        let bytes = windowData.subarray(offset, windowBytes);
        const header = checkUnitHeader(bytes, expected);
        if (header === undefined) break;
        const fileBytes = unitFileBytes(header.payloadBytes);
        if (fileBytes > bytes.length) {
          // Larger than what the window holds: the next batch starts at it, unless it is the
          // first (written by an open with a larger bufferSize): then read it whole, alone.
          if (offset > 0) break;
          if (address + fileBytes > stable) throw new Error(`unit at ${address} ends past the stable address ${stable}`);
          if (window !== undefined) reader.giveBack(window);
          window = reader.borrow(fileBytes);
          await queue.read(file, window, 0, fileBytes, geometry.physicalOffset(index, address));
          bytes = window.bytes.subarray(0, fileBytes);
        }
        const unit = checkUnit(bytes, expected);
        if (unit === undefined) break;
        this.accept(unit, seq, out);
        found += 1;
        offset += unit.fileBytes;
      }
      return found;
    } finally {
      if (window !== undefined) reader.giveBack(window);
      this.reads.active -= 1;
    }
  }

  /**
   * Move past a checked unit; hand it out unless it lies below `skipBelow`. `owned`: its bytes are
   * a copy nobody writes to (a submitted unit's), so the payload may view them.
   */
  private accept(unit: CheckedUnit, seq: number, out: DurableUnit[], owned = false): void {
    const address = unit.header.address;
    const position = positionAfter(this.deps.geometry, unit.header, unit.fileBytes);
    this.address = position.address;
    this.prevEnd = position.prevEnd;
    this.minEpoch = unit.header.epoch;
    if (address >= this.skipBelow) {
      out.push({
        address,
        endAddress: position.address,
        epoch: unit.header.epoch,
        segmentSeq: seq,
        payload: owned ? unit.payload : unit.payload.slice(), // the window goes back to the pool
        position,
      });
    }
  }

  /**
   * Past the stable address (`beforeDurable`): the units whose writes were issued, each the next
   * in the chain, from the copies the tail keeps. Stops at the first it has no copy of (issued
   * before this follower existed, or not yet): that one comes from the file once durable.
   */
  private takeSubmitted(out: DurableUnit[]): void {
    const { geometry, space } = this.deps;
    const units = (this.submitted as Submitted).units;
    for (;;) {
      let at = geometry.unitStartFrom(this.address);
      let bytes = units.get(at);
      if (bytes === undefined && this.prevEnd !== undefined && !geometry.isSegmentStart(at)) {
        // The writer skipped the rest of this segment: its next unit starts the next one, and its
        // header names this chain's end as the unit before it (checked below).
        at = geometry.nextSegmentStart(at);
        bytes = units.get(at);
      }
      if (bytes === undefined) return;
      const seq = geometry.seqOf(at);
      const index = space.heldIndexOf(seq);
      if (index === undefined) return; // not the segment the writer is in: wait for the file
      const expected: UnitExpectation = {
        address: at,
        segmentIndex: index,
        prevEnd: this.prevEnd,
        minEpoch: this.minEpoch,
        roomBytes: geometry.segmentStart(seq + 1) - at,
      };
      const unit = checkUnit(bytes, expected);
      // A copy that does not continue this chain is not handed out; the file decides once durable.
      if (unit === undefined) return;
      this.accept(unit, seq, out, true);
    }
  }
}

/** Tail reads between their first borrow and last give-back. */
interface ReadCounter {
  active: number;
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/** One follower of the durable tail (see {@link DurableTail.durableUnits}). */
class Follower implements AsyncIterableIterator<DurableUnit> {
  private readonly tail: DurableTail;
  private readonly deps: TailDeps;
  private readonly cursor: TailCursor | undefined;
  private readonly retention: Retention | undefined;
  private readonly signal: AbortSignal | undefined;
  private startError: Error | undefined;
  private queued: DurableUnit[] = [];
  /** Ended: by return(), abort, close, an error, or a bad `from`. */
  ended = false;
  /** Stable address at which the last read found nothing new: wait for it to move. */
  private emptyAt = -1;
  /** `beforeDurable`: the tail's capture count at that read (a new capture may be the next unit). */
  private emptySeq = -1;
  /** Hands out units before they are durable (DurableUnitsOptions.beforeDurable). */
  readonly beforeDurable: boolean;
  private wake: (() => void) | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly onAbort = (): void => this.finish();

  constructor(tail: DurableTail, deps: TailDeps, reads: ReadCounter, from: LogPosition | number, options: DurableUnitsOptions) {
    this.tail = tail;
    this.deps = deps;
    this.signal = options.signal;
    this.beforeDurable = options.beforeDurable === true;
    try {
      // Synchronously, at the call: the log from `from` is held before any segment can go.
      this.retention = tail.retain(addressOf(from, "from")) as Retention;
      this.cursor = new TailCursor(deps, reads, from, options.fromMemory === true, this.beforeDurable ? tail.submitted : undefined);
      this.signal?.addEventListener("abort", this.onAbort, { once: true });
    } catch (error) {
      // Reported by the first next(), as iterators report failures.
      this.startError = error as Error;
      this.ended = true;
    }
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<DurableUnit> {
    return this;
  }

  /** The next durable unit; calls are served one at a time, in order. */
  next(): Promise<IteratorResult<DurableUnit>> {
    const result = this.chain.then(() => this.step());
    this.chain = result.catch(() => undefined);
    return result;
  }

  /** Stop following: releases the retention; a `next()` waiting resolves done. */
  async return(): Promise<IteratorResult<DurableUnit>> {
    this.finish();
    return DONE;
  }

  async throw(error?: unknown): Promise<IteratorResult<DurableUnit>> {
    this.finish();
    throw error;
  }

  /** Called by the tail when the stable address moved, the log closed or failed. */
  notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** The address the stable address must pass before this follower has something to read. */
  get needs(): number {
    return Math.max(this.cursor?.address ?? 0, this.emptyAt);
  }

  /** Where this follower reads next (the submitted copies below it are of no use to it). */
  get at(): number {
    return this.cursor?.address ?? 0;
  }

  /** Something may be there to read: the stable address passed what it needs, or a unit was captured. */
  ready(stable: number): boolean {
    return stable > this.needs || (this.beforeDurable && this.tail.submitted.seq !== this.emptySeq);
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.queued = [];
    this.retention?.release();
    this.signal?.removeEventListener("abort", this.onAbort);
    this.tail.dropFollower(this);
    this.notify();
  }

  private async step(): Promise<IteratorResult<DurableUnit>> {
    if (this.startError !== undefined) {
      const error = this.startError;
      this.startError = undefined;
      throw error;
    }
    const { life, durability } = this.deps;
    const cursor = this.cursor as TailCursor;
    try {
      for (;;) {
        if (this.ended) return DONE;
        if (this.signal?.aborted === true || !life.isOpen) {
          this.finish();
          return DONE;
        }
        const unit = this.queued.shift();
        if (unit !== undefined) {
          // Invariant: nothing is handed out before it is durable, unless asked for.
          if (!this.beforeDurable && !durability.isDurable(unit.endAddress - 1)) throw new Error(`tail unit at ${unit.address} is not durable`);
          (this.retention as Retention).advance(unit.endAddress);
          return { done: false, value: unit };
        }
        if (life.failed !== undefined) throw life.failed;
        const stable = durability.stableAddress;
        if (this.ready(stable)) {
          const seq = this.tail.submitted.seq;
          const batch = await cursor.readBatch(stable);
          if (batch.length === 0) {
            this.emptyAt = stable;
            this.emptySeq = seq;
          }
          this.queued = batch;
          if (this.beforeDurable) this.tail.pruneSubmitted();
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          this.tail.waitFor(this);
        });
      }
    } catch (error) {
      this.finish();
      throw error;
    }
  }
}

/** The durable tail of one log: followers, range reads and retentions. */
export class DurableTail {
  private readonly deps: TailDeps;
  private readonly retentions = new Set<Retention>();
  private readonly followers = new Set<Follower>();
  /** Followers asleep until the stable address passes what they need. */
  private readonly waiting = new Set<Follower>();
  private readonly reads: ReadCounter = { active: 0 };
  /** @internal Copies of issued, not yet durable units, kept while a `beforeDurable` follower exists. */
  readonly submitted: Submitted = { units: new Map(), seq: 0 };
  private earlyFollowers = 0;

  constructor(deps: TailDeps) {
    this.deps = deps;
    deps.life.onFailure(() => this.wakeAll());
  }

  /** Oldest address a retention still holds (+Infinity when none): the reuse rule's low-water mark. */
  get retainedFrom(): number {
    let lowest = Number.POSITIVE_INFINITY;
    for (const retention of this.retentions) lowest = Math.min(lowest, retention.address);
    return lowest;
  }

  /**
   * Hold the log from `address` on (see {@link LogRetention}). Throws {@link LogTruncatedError}
   * when the segment holding `address` is gone already.
   */
  retain(address: number): LogRetention {
    this.deps.life.assertOpen();
    addressOf(address, "address");
    this.assertHeld(address);
    const retention = new Retention(this, address);
    this.retentions.add(retention);
    return retention;
  }

  /** Every durable unit whose address is at least `from`, in log order, as each becomes durable. */
  durableUnits(from: LogPosition | number, options: DurableUnitsOptions = {}): AsyncIterableIterator<DurableUnit> {
    const follower = new Follower(this, this.deps, this.reads, from, options);
    if (!follower.ended) {
      this.followers.add(follower);
      if (follower.beforeDurable) this.earlyFollowers += 1;
    }
    return follower;
  }

  /** A tail read is between its first buffer and its last (close waits for it). */
  get busy(): boolean {
    return this.reads.active > 0;
  }

  /**
   * The durable units whose addresses lie in `[from, to)`, read from the file and checked. `to`
   * must not pass the stable address.
   */
  async readRange(from: LogPosition | number, to: number): Promise<DurableUnit[]> {
    const fromAddress = addressOf(from, "from");
    const stable = this.deps.durability.stableAddress;
    if (!Number.isFinite(to) || to > stable) {
      throw new InvalidArgumentError(`readRange up to ${to}: only the log below the stable address ${stable} is durable`);
    }
    if (to <= fromAddress) return [];
    const retention = this.retain(fromAddress);
    try {
      const cursor = new TailCursor(this.deps, this.reads, from);
      const units: DurableUnit[] = [];
      for (;;) {
        const batch = await cursor.readBatch(stable, to);
        if (batch.length === 0) break;
        for (const unit of batch) units.push(unit);
      }
      this.deps.life.assertOpen();
      return units;
    } finally {
      retention.release();
    }
  }

  /** The stable address moved: wake the followers it passed. */
  onStableAdvanced(): void {
    if (this.submitted.units.size > 0) this.pruneSubmitted();
    this.wakeReady();
  }

  /**
   * A unit's write is being issued (flusher.ts): keep a copy for the `beforeDurable` followers,
   * if there are any, and wake them.
   */
  onDispatch(address: number, bytes: Uint8Array): void {
    if (this.earlyFollowers === 0) return;
    this.submitted.units.set(address, bytes.slice());
    this.submitted.seq += 1;
    this.wakeReady();
  }

  /** @internal Drop the copies every `beforeDurable` follower is past, and those now durable. */
  pruneSubmitted(): void {
    const units = this.submitted.units;
    if (units.size === 0) return;
    let lowest = Number.POSITIVE_INFINITY;
    for (const follower of this.followers) if (follower.beforeDurable) lowest = Math.min(lowest, follower.at);
    const below = this.earlyFollowers === 0 ? Number.POSITIVE_INFINITY : Math.max(this.deps.durability.stableAddress, lowest);
    for (const address of units.keys()) if (address < below) units.delete(address);
  }

  private wakeReady(): void {
    if (this.waiting.size === 0) return;
    const stable = this.deps.durability.stableAddress;
    for (const follower of [...this.waiting]) {
      if (!follower.ready(stable)) continue;
      this.waiting.delete(follower);
      follower.notify();
    }
  }

  /** The log is closing: every follower ends (its pending `next()` resolves done). */
  close(): void {
    this.wakeAll();
  }

  /** @internal Follower: sleep until woken. */
  waitFor(follower: Follower): void {
    this.waiting.add(follower);
    // The stable address may have moved between the follower's check and now (it cannot, on one
    // thread without an await in between, but a lost wake-up would be a hang: check anyway).
    this.wakeReady();
  }

  /** @internal Follower ended. */
  dropFollower(follower: Follower): void {
    if (this.followers.delete(follower) && follower.beforeDurable) this.earlyFollowers -= 1;
    this.waiting.delete(follower);
    this.pruneSubmitted();
  }

  /** @internal Retention moved. */
  retentionMoved(): void {
    this.deps.onRetentionMoved();
  }

  /** @internal Retention released. */
  dropRetention(retention: Retention): void {
    this.retentions.delete(retention);
    this.deps.onRetentionMoved();
  }

  private wakeAll(): void {
    this.submitted.units.clear();
    this.waiting.clear();
    for (const follower of [...this.followers]) follower.notify();
  }

  /** Throws LogTruncatedError unless the log at `address` is still held (or not written yet). */
  private assertHeld(address: number): void {
    const { geometry, space } = this.deps;
    const seq = geometry.seqOf(address);
    if (seq >= space.tailSeq || space.heldIndexOf(seq) !== undefined) return;
    throw new LogTruncatedError(address, `log at address ${address} is gone: its segment (seq ${seq}) was given back and may be reused`);
  }
}
