/**
 * Rotation: where the log writes next. Owns the writer's position — the unit each slot of the
 * ring holds (its extent is fixed when the slot is finalized), the next unit's place while no slot
 * is open yet, and where the last unit ended.
 *
 * A slot's life: free → **open** (here: {@link Rotation.openNext}, at the pending position, in
 * the segment it falls in) → sealed (by any thread: full, flushed, or a reservation that did not
 * fit) → **finalized** (here: {@link Rotation.finalizeSealed} fixes the unit's extent, registers
 * it with the durability tracker, and computes where the next unit goes) → flushing and written
 * (flusher.ts) → free. Only the owner thread opens and finalizes, one slot at a time, in ring
 * order; the ring counter of the open slot is published to every thread (ring.ts).
 *
 * Opening a slot in the next segment takes a new successor segment (space.ts). When none can be
 * had (a full disk, `maxFileBytes`), that is not a failure of the log: the slot stays unopened,
 * the reason is kept in {@link Rotation.spaceBlocked}, and the next attempt (the next pump, or a
 * reservation waiting for the rotation, perhaps one allowed to use the full-disk reserve) tries
 * again. Only the appends that needed the segment fail, with {@link NoSpaceError}.
 *
 * @module
 */
import { NoSpaceError } from "../errors.ts";
import type { LogGeometry } from "./address.ts";
import type { Durability } from "./durability.ts";
import { FLUSHING, FREE_STATE, OFFSET_MASK, SEALED, type FlushBuffer } from "./flush-buffer.ts";
import { UNIT_HEADER_BYTES, unitFileBytes, type LogPosition } from "./format.ts";
import { asLssError, type LogLifecycle } from "./lifecycle.ts";
import type { SegmentPrewriter } from "./prewrite.ts";
import type { OwnerRing } from "./ring.ts";
import type { SegmentSpace, SpaceUse } from "./space.ts";

/** The unit a slot holds, as the owner fixed it. */
export interface SlotUnit {
  /** Durability-tracker id of the unit; −1 when the slot was sealed empty (no unit). */
  unitId: number;
  segmentIndex: number;
  nextSegmentIndex: number;
  /** The unit's extent is fixed: its flush may start. */
  finalized: boolean;
}

/** The writer's position over the ring. */
export class Rotation {
  private readonly ring: OwnerRing;
  private readonly geometry: LogGeometry;
  private readonly space: SegmentSpace;
  private readonly durability: Durability;
  private readonly prewriter: SegmentPrewriter;
  private readonly life: LogLifecycle;
  private readonly units: SlotUnit[];
  /** Ring counter of the last finalized slot. */
  private finalizedCounter = -1;
  /** Where the next unit goes while no slot is open for it (the next slot is not free yet). */
  private pendingOpen: { base: number; prevEnd: number } | undefined;
  /** End of the last non-empty unit finalized. */
  private lastUnitEnd = 0;
  /** What the appends being made now are for (the log facade's current space use). */
  private readonly spaceUse: () => SpaceUse;
  /** Why the last attempt to open a slot in the next segment found no segment, until one opens. */
  spaceBlocked: NoSpaceError | undefined;

  constructor(
    ring: OwnerRing,
    geometry: LogGeometry,
    space: SegmentSpace,
    durability: Durability,
    prewriter: SegmentPrewriter,
    life: LogLifecycle,
    spaceUse: () => SpaceUse,
  ) {
    this.spaceUse = spaceUse;
    this.ring = ring;
    this.geometry = geometry;
    this.space = space;
    this.durability = durability;
    this.prewriter = prewriter;
    this.life = life;
    this.units = ring.slots.map(() => ({ unitId: -1, segmentIndex: 0, nextSegmentIndex: 0, finalized: false }));
  }

  /** Recovery ended at `end`: writing continues there. */
  startAt(end: LogPosition): void {
    this.lastUnitEnd = end.prevEnd;
  }

  /** Open the first slot at `end` (after the new epoch is durable). */
  openFirst(end: LogPosition): void {
    this.finalizedCounter = -1;
    this.pendingOpen = { base: end.address, prevEnd: end.prevEnd };
    this.openNext();
  }

  /** The unit slot `slot` holds. */
  unitOf(slot: number): Readonly<SlotUnit> {
    return this.units[slot] as SlotUnit;
  }

  /** The slot open for reservations (or the last one opened, while the next is pending). */
  get current(): FlushBuffer {
    return this.ring.slots[this.ring.currentCounter % this.ring.ringSize] as FlushBuffer;
  }

  /** No slot is open yet for the next unit. */
  get opening(): boolean {
    return this.pendingOpen !== undefined;
  }

  /** End of the last unit sealed so far. */
  get sealedEnd(): number {
    return this.lastUnitEnd;
  }

  /** Address just past everything reserved so far (the open buffer's fill included). */
  get appendedEnd(): number {
    if (this.pendingOpen !== undefined) return this.pendingOpen.base;
    const current = this.current;
    return current.baseAddress + UNIT_HEADER_BYTES + current.offsetBytes;
  }

  /** Position where the next unit will start, when the open buffer is empty; else undefined. */
  emptyTail(): LogPosition | undefined {
    const current = this.current;
    if (this.pendingOpen !== undefined || current.offsetBytes !== 0) return undefined;
    const unit = this.unitOf(current.slot);
    return { address: current.baseAddress, segmentIndex: unit.segmentIndex, nextSegmentIndex: unit.nextSegmentIndex, prevEnd: current.prevEnd };
  }

  /** The open buffer is sealed but its unit's extent is not fixed yet (see finalizeSealed). */
  get sealedUnfinalized(): boolean {
    if (this.pendingOpen !== undefined || this.ring.currentCounter <= this.finalizedCounter) return false;
    const current = this.current;
    return (current.state & SEALED) !== 0 && !current.isFree;
  }

  /** If the open buffer is sealed, fix its unit's extent and where the next unit goes. */
  finalizeSealed(): void {
    const counter = this.ring.currentCounter;
    if (counter <= this.finalizedCounter || this.pendingOpen !== undefined) return;
    const buffer = this.ring.slots[counter % this.ring.ringSize] as FlushBuffer;
    const state = buffer.state;
    if ((state & SEALED) === 0 || state === FREE_STATE || buffer.counter !== counter) return;
    // A reservation that overran the capacity lowers the fill limit only after its CAS (another
    // thread may be between the two): the fill is final once no writer is left (FLUSHING).
    if ((state & OFFSET_MASK) > buffer.capacityWords && (state & FLUSHING) === 0) return;
    const unit = this.units[buffer.slot] as SlotUnit;
    const fill = buffer.finalFillBytes;
    const base = buffer.baseAddress;
    let nextBase: number;
    if (fill > 0) {
      this.prewriter.noteUnit(fill, this.ring.bufferSize);
      const end = base + unitFileBytes(fill);
      unit.unitId = this.durability.register(end);
      this.lastUnitEnd = end;
      nextBase = end;
    } else {
      // Sealed empty: a reservation did not fit the room left in this segment (or advanceSegment).
      unit.unitId = -1;
      nextBase = this.geometry.nextSegmentStart(base);
    }
    unit.finalized = true;
    this.finalizedCounter = counter;
    this.pendingOpen = { base: nextBase, prevEnd: this.lastUnitEnd };
  }

  /** Open the next slot at the pending position once that slot is free. */
  openNext(): void {
    const pending = this.pendingOpen;
    if (pending === undefined) return;
    const counter = this.finalizedCounter + 1;
    const buffer = this.ring.slots[counter % this.ring.ringSize] as FlushBuffer;
    if (!buffer.isFree) return;
    const base = this.geometry.unitStartFrom(pending.base);
    const seq = this.geometry.seqOf(base);
    if (seq !== this.space.tailSeq) {
      // Invariant: the log moves one segment at a time (an empty seal skips at most one tail).
      if (seq !== this.space.tailSeq + 1) throw new Error(`log skipped from segment ${this.space.tailSeq} to ${seq}`);
      try {
        this.space.enter(seq, this.spaceUse());
      } catch (error) {
        const failure = asLssError(error, (message) => new NoSpaceError(message));
        // No space is the appender's problem, not the log's: nothing changed, try again later.
        if (failure instanceof NoSpaceError) this.spaceBlocked = failure;
        else this.life.fail(failure);
        return;
      }
      this.spaceBlocked = undefined;
    }
    const capacityBytes = Math.min(this.ring.bufferSize, this.geometry.nextSegmentStart(base) - base) - UNIT_HEADER_BYTES;
    const unit = this.units[buffer.slot] as SlotUnit;
    unit.finalized = false;
    unit.unitId = -1;
    unit.segmentIndex = this.space.tailIndex;
    unit.nextSegmentIndex = this.space.successorIndex;
    this.pendingOpen = undefined;
    buffer.open(base, capacityBytes, pending.prevEnd, counter);
    this.ring.publishCurrent(counter);
  }
}
