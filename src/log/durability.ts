/**
 * What is durable, and making it so: the stability tracker, the datasync pipeline (at most one
 * datasync in flight, issued only when wanted) and the promises that wait for durability.
 *
 * Units are registered in log order; each becomes durable when its write has completed *and* a
 * datasync issued after that completion has completed. Writes may finish in any order
 * (tailLocalized mode), so durable units can form islands ahead of a gap; `stableAddress`
 * advances only over the gap-free prefix, and never goes backwards.
 *
 * Addresses are logical log bytes everywhere, the one unit (bloom_lfs compared a byte address
 * against a slot index). Nothing counts as durable before it was written: `stableAddress` starts
 * at the log's start and only a completed write plus datasync moves it.
 *
 * A datasync is issued only when someone wants one: a durability waiter, a flush asked for (the
 * sync target, or a group commit in waiting — see flusher.ts), or {@link SYNC_EVERY_UNITS} written
 * units piling up. Streaming writes nobody waits on thus run at device speed, not datasync speed.
 * Every completed datasync is announced (`onSynced`): the reuse rule, the durable tail and group
 * commit all move on it.
 *
 * When a datasync is wanted as a unit write is issued and none is in flight, the flusher links one
 * after that write in the same submission (`IoOp.link`): a serial durable commit then costs one
 * device round trip and one wake-up. Such a datasync covers the units written before its
 * submission plus its own unit (which it starts after); `stableAddress` still moves only over
 * units whose write completion was seen, so the two completions may be reaped in either order.
 *
 * **No space after the commit.** The log's segments are allocated whole before any unit goes
 * into them (space.ts), so a unit write or datasync has nothing to allocate and should never find
 * the disk full. If one does (a copy-on-write or thin-provisioned filesystem that cannot keep its
 * allocation), the transactions in that unit are already applied: they can be neither
 * acknowledged nor failed alone (failing one and making it durable later would tell its caller a
 * lie). So durability *stalls*: waiters keep waiting while the same write (flusher.ts) or the
 * datasync is tried again, {@link RETRY_LIMIT} times over about a third of a second, which rides
 * out a transient shortage; if it still fails the log fails as on an I/O error (read-only until
 * reopened; recovery keeps exactly what is durable). A datasync is retried only on an O_DIRECT
 * file, where it only flushes what completed writes already put on the device: on a buffered
 * file the kernel may have dropped the dirty pages a failed writeback could not write, and a
 * later datasync would report success for data that is not on the disk.
 *
 * @module
 */
import type { FileHandle } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import { CorruptionError, IoError, NoSpaceError, type LssError } from "../errors.ts";
import { ECANCELED } from "../io/errno.ts";
import { asLssError, type LogLifecycle } from "./lifecycle.ts";

/** Written units that trigger a datasync even when nobody waits for durability yet. */
export const SYNC_EVERY_UNITS = 16;

/** First wait before a write or datasync that failed for lack of space is tried again (then doubling). */
export const RETRY_FIRST_MS = 10;
/** Tries again after a write or datasync failed for lack of space, before the log fails. */
export const RETRY_LIMIT = 5;

interface TrackedUnit {
  readonly end: number;
  written: boolean;
  durable: boolean;
  /** A datasync in flight covers it (taken from the unsynced list, or linked after its write). */
  syncing: boolean;
}

/** Tracks units from registration to durability (pure state, no I/O). */
export class StabilityTracker {
  private readonly units: TrackedUnit[] = [];
  private head = 0;
  private nextId = 0;
  private stable: number;
  /** Units written but not yet covered by a datasync (completed or in flight), by id. */
  private writtenUnsynced: number[] = [];

  constructor(startAddress: number) {
    this.stable = startAddress;
  }

  /** Every byte below this address is on stable storage. */
  get stableAddress(): number {
    return this.stable;
  }

  /** Units registered and not yet durable. */
  get pendingUnits(): number {
    return this.nextId - this.head;
  }

  /**
   * Whether a datasync issued now could make `address` durable: every unit below it has its
   * write completed (or is durable already). False while a unit write it needs is in flight (or
   * not yet issued), and when `address` lies past every registered unit.
   */
  reachableBy(address: number): boolean {
    if (address <= this.stable) return true;
    for (const unit of this.units) {
      if (!unit.written && !unit.durable) return false;
      if (unit.end >= address) return true;
    }
    return false;
  }

  /** Some registered unit's write has not completed: its completion will come (and look again). */
  get writesOutstanding(): boolean {
    return this.units.some((unit) => !unit.written);
  }

  /** Units written whose datasync has not been issued yet. */
  get unsyncedUnits(): number {
    return this.writtenUnsynced.length;
  }

  /** Register the next unit of the log, ending at `end`; returns its id. */
  register(end: number): number {
    const last = this.units[this.units.length - 1];
    if (end <= (last?.end ?? this.stable)) throw new Error(`unit end ${end} does not advance the log`);
    this.units.push({ end, written: false, durable: false, syncing: false });
    return this.nextId++;
  }

  /**
   * The unit's write completed. Not yet durable unless a datasync linked after the write already
   * completed (its completion may be reaped first); returns true when `stableAddress` moved.
   */
  markWritten(id: number): boolean {
    const unit = this.unit(id);
    if (unit.written) throw new Error(`unit ${id} written twice`);
    unit.written = true;
    if (unit.durable) return this.advance();
    if (!unit.syncing) this.writtenUnsynced.push(id);
    return false;
  }

  /** A datasync is being issued: it covers every unit written so far. Returns their ids. */
  beginSync(): number[] {
    const ids = this.writtenUnsynced;
    this.writtenUnsynced = [];
    for (const id of ids) this.unit(id).syncing = true;
    return ids;
  }

  /**
   * A datasync linked after unit `id`'s write is being issued (see IoOp.link): it starts only
   * once that write completed, so it covers the unit whether or not its completion was seen yet,
   * plus every unit written so far. Returns their ids (the linked one last).
   */
  beginLinkedSync(id: number): number[] {
    const unit = this.unit(id);
    if (unit.written || unit.syncing) throw new Error(`unit ${id} is already written or being synced`);
    const ids = this.beginSync();
    unit.syncing = true;
    ids.push(id);
    return ids;
  }

  /**
   * That datasync completed: its units are durable. `stableAddress` advances over the gap-free
   * prefix of units both durable and seen written (a linked unit whose write completion comes
   * later moves it then, in {@link markWritten}). Returns true when it moved.
   */
  completeSync(ids: readonly number[]): boolean {
    for (const id of ids) {
      const unit = this.unit(id);
      unit.durable = true;
      unit.syncing = false;
    }
    return this.advance();
  }

  /** A datasync failed: its written units go back to waiting for the next one. */
  failSync(ids: readonly number[]): void {
    const back: number[] = [];
    for (const id of ids) {
      const unit = this.unit(id);
      unit.syncing = false;
      if (unit.written) back.push(id);
    }
    this.writtenUnsynced = [...back, ...this.writtenUnsynced];
  }

  /** True when the byte at `address` is durable. */
  isDurable(address: number): boolean {
    return address < this.stable;
  }

  private advance(): boolean {
    let advanced = 0;
    while (this.head < this.nextId) {
      const unit = this.units[advanced] as TrackedUnit;
      if (!unit.durable || !unit.written) break;
      this.stable = unit.end;
      this.head += 1;
      advanced += 1;
    }
    if (advanced > 0) this.units.splice(0, advanced);
    return advanced > 0;
  }

  private unit(id: number): TrackedUnit {
    const unit = this.units[id - this.head];
    if (unit === undefined) throw new Error(`unknown unit ${id}`);
    return unit;
  }
}

/** Who else wants a datasync, and who hears that one completed. */
export interface DurabilityHooks {
  /** A group commit waits for the datasync in flight: sync what is written when it completes. */
  groupCommitPending(): boolean;
  /** A datasync completed (stableAddress may have moved). */
  onSynced(): void;
}

interface DurabilityWaiter {
  readonly address: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** The tracker, the datasync pipeline and the durability waiters of one log. */
export class Durability {
  private readonly queue: IoQueue;
  private readonly file: FileHandle;
  private readonly life: LogLifecycle;
  private readonly hooks: DurabilityHooks;
  private tracker: StabilityTracker;
  private syncing = false;
  /** A flush was asked for up to here: sync until stable reaches it, waiters or not. */
  private syncTarget = 0;
  private waiters: DurabilityWaiter[] = [];
  /** Datasyncs completed (a statistic). */
  datasyncs = 0;
  /** Of the datasyncs issued, those linked after a unit write in its submission (a statistic). */
  linkedDatasyncs = 0;
  /** A unit write failed for lack of space and waits to be tried again (flusher.ts). */
  private writeStall: NoSpaceError | undefined;
  /** A datasync failed for lack of space: the next one is tried after a wait. */
  private syncStall: NoSpaceError | undefined;
  private syncRetryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Datasyncs that failed for lack of space in a row. */
  private syncFailures = 0;

  constructor(queue: IoQueue, file: FileHandle, life: LogLifecycle, startAddress: number, hooks: DurabilityHooks) {
    this.queue = queue;
    this.file = file;
    this.life = life;
    this.hooks = hooks;
    this.tracker = new StabilityTracker(startAddress);
    life.onFailure((error) => this.rejectAll(error));
  }

  /** Recovery fixed where the log continues: everything before `address` is durable. */
  restart(address: number): void {
    if (this.tracker.pendingUnits !== 0) throw new Error(`restart with ${this.tracker.pendingUnits} units not durable`);
    this.tracker = new StabilityTracker(address);
  }

  /** Every log byte below this address is on stable storage. */
  get stableAddress(): number {
    return this.tracker.stableAddress;
  }

  isDurable(address: number): boolean {
    return this.tracker.isDurable(address);
  }

  /** Somebody waits for durability now (a commit, a flush): what a datasync issued now is for. */
  get awaited(): boolean {
    return this.waiters.length > 0;
  }

  /** A datasync is in flight. */
  get busy(): boolean {
    return this.syncing;
  }

  /** Why durability is held up for lack of space (see the module comment), while it is. */
  get stalled(): NoSpaceError | undefined {
    return this.writeStall ?? this.syncStall;
  }

  /** A unit write failed for lack of space and is being tried again (flusher.ts). */
  stallWrites(error: NoSpaceError): void {
    this.writeStall = error;
  }

  /** Every unit write that failed for lack of space has been written since. */
  writesResumed(): void {
    this.writeStall = undefined;
  }

  /** Stop trying stalled datasyncs (the log is closing). */
  stopRetrying(): void {
    this.clearSyncRetry();
  }

  private clearSyncRetry(): void {
    if (this.syncRetryTimer !== undefined) clearTimeout(this.syncRetryTimer);
    this.syncRetryTimer = undefined;
  }

  /** Register the next unit, ending at `end`; returns its id. */
  register(end: number): number {
    return this.tracker.register(end);
  }

  /**
   * The unit's write completed; a datasync issued from now on covers it (see {@link scheduleSync}).
   * If a datasync linked after the write already completed, the unit is durable now: waiters wake
   * and the hooks hear of it as of any completed datasync.
   */
  markWritten(id: number): void {
    if (this.tracker.markWritten(id)) this.announce();
  }

  /**
   * True when a datasync is wanted now (a durability waiter, a group commit, a flush target not
   * reached, or many unsynced units) and none is in flight: the flusher then links one after the
   * unit write it is about to issue ({@link syncLinked}) instead of waiting for its completion.
   */
  wantsLinkedSync(sealingForSync: boolean): boolean {
    if (this.syncing || this.life.failed !== undefined) return false;
    return (
      sealingForSync ||
      this.waiters.length > 0 ||
      this.hooks.groupCommitPending() ||
      this.tracker.stableAddress < this.syncTarget ||
      this.tracker.unsyncedUnits + 1 >= SYNC_EVERY_UNITS
    );
  }

  /**
   * Take over the datasync linked after unit `id`'s write (`synced` settles with it). It makes
   * durable the units written before its submission plus unit `id` itself: conservative, and
   * right whatever order the two completions are reaped in.
   */
  syncLinked(id: number, synced: Promise<void>): void {
    if (this.syncing) throw new Error("a linked datasync while another is in flight");
    const ids = this.tracker.beginLinkedSync(id);
    this.syncing = true;
    this.linkedDatasyncs += 1;
    this.settleSync(ids, synced);
  }

  /** Sync until the log is durable up to `address`, whether or not anybody waits for it. */
  syncUpTo(address: number): void {
    this.syncTarget = Math.max(this.syncTarget, address);
    this.scheduleSync();
  }

  /** Resolve once every log byte below `address` is durable; reject on a failure. */
  waitDurable(address: number): Promise<void> {
    if (address <= this.stableAddress) return Promise.resolve();
    const failure = this.life.failed;
    if (failure !== undefined) return Promise.reject(failure);
    const waiting = new Promise<void>((resolve, reject) => this.waiters.push({ address, resolve, reject }));
    this.scheduleSync();
    return waiting;
  }

  /**
   * Issue a datasync covering every unit written so far, if one is wanted and none is in flight.
   *
   * Wanted for a waiter or a flush target, it is held back while a unit write the nearest of
   * them needs is still in flight: issued now it could not reach that address, and a second
   * datasync would follow once the write is done. That write's completion calls this again. So a
   * commit whose records span several units (a 1 MiB value, a bulk load) costs one datasync
   * after its writes, not one per write: serial 1 MiB commits went from a write, a datasync, a
   * write and a datasync in a row to the writes side by side and one datasync.
   */
  scheduleSync(): void {
    const tracker = this.tracker;
    if (this.syncing || tracker.unsyncedUnits === 0 || this.life.failed !== undefined) return;
    const forced = this.syncStall !== undefined || this.hooks.groupCommitPending() || tracker.unsyncedUnits >= SYNC_EVERY_UNITS;
    const targeted = tracker.stableAddress < this.syncTarget;
    if (!forced) {
      if (this.waiters.length === 0 && !targeted) return; // nobody wants one
      // Held back only while writes are in flight (then the nearest address wanted is looked up).
      if (tracker.writesOutstanding && !tracker.reachableBy(this.nearestWanted(targeted))) return;
    }
    const ids = tracker.beginSync();
    this.syncing = true;
    this.settleSync(ids, this.queue.datasync(this.file));
  }

  /** The lowest address a waiter or the flush target wants durable. */
  private nearestWanted(targeted: boolean): number {
    let nearest = targeted ? this.syncTarget : Infinity;
    for (const waiter of this.waiters) if (waiter.address < nearest) nearest = waiter.address;
    return nearest;
  }

  private settleSync(ids: readonly number[], synced: Promise<void>): void {
    const tracker = this.tracker;
    synced.then(
      () => {
        this.syncing = false;
        this.datasyncs += 1;
        this.syncStall = undefined;
        this.syncFailures = 0;
        tracker.completeSync(ids);
        this.wakeWaiters();
        this.scheduleSync();
        this.hooks.onSynced();
      },
      (error: unknown) => {
        this.syncing = false;
        tracker.failSync(ids);
        const failure = asLssError(error, (message) => new CorruptionError(message));
        if (failure instanceof IoError && failure.errno === ECANCELED) {
          // Linked after a unit write that failed, it never ran: the write's own outcome decides
          // (flusher.ts), and the units it covered wait for the next datasync.
          this.scheduleSync();
          return;
        }
        if (failure instanceof NoSpaceError && this.file.direct && this.life.running && this.syncFailures < RETRY_LIMIT) {
          // Waiters keep waiting (see the module comment).
          this.syncStall = failure;
          this.scheduleSyncRetry();
          return;
        }
        this.life.fail(failure);
      },
    );
  }

  private scheduleSyncRetry(): void {
    if (this.syncRetryTimer !== undefined) return;
    const delay = RETRY_FIRST_MS * 2 ** this.syncFailures;
    this.syncFailures += 1;
    this.syncRetryTimer = setTimeout(() => {
      this.syncRetryTimer = undefined;
      if (this.life.running) this.scheduleSync();
    }, delay);
  }

  /** `stableAddress` moved outside a datasync's completion: tell whoever waits. */
  private announce(): void {
    this.wakeWaiters();
    this.hooks.onSynced();
  }

  private wakeWaiters(): void {
    if (this.waiters.length === 0) return;
    const stable = this.stableAddress;
    const still: DurabilityWaiter[] = [];
    for (const waiter of this.waiters) {
      if (waiter.address <= stable) waiter.resolve();
      else still.push(waiter);
    }
    this.waiters = still;
  }

  private rejectAll(error: LssError): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }
}
