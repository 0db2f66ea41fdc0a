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
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { NoSpaceError } from "../errors.ts";
import type { LogGeometry } from "./address.ts";
import type { Durability } from "./durability.ts";
import { FLUSHING, FREE_STATE, OFFSET_MASK, SEALED, WORD_BYTES, type FlushBuffer } from "./flush-buffer.ts";
import { UNIT_HEADER_BYTES, unitFileBytes, type LogPosition } from "./format.ts";
import { asLssError, type LogLifecycle } from "./lifecycle.ts";
import type { SegmentPrewriter } from "./prewrite.ts";
import type { OwnerRing } from "./ring.ts";
import { SKIP_SEGMENT, type SegmentSpace, type SpaceUse } from "./space.ts";

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
  /**
   * Where the next unit goes while no slot is open for it (the next slot is not free yet).
   * `leastBytes`: a reservation did not fit the smaller room the last slot got there (space.ts
   * grants less than a buffer while the file is small), so this one must get more (0: no need).
   */
  private pendingOpen: { base: number; prevEnd: number; leastBytes: number } | undefined;
  /** The next empty seal is advanceSegment's: move to the next segment, whatever the slot's room. */
  private advancing = false;
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
    this.pendingOpen = { base: end.address, prevEnd: end.prevEnd, leastBytes: 0 };
    this.openNext();
  }

  /** The next empty seal (advanceSegment's) moves the log to the next segment. */
  advanceOnEmptySeal(): void {
    this.advancing = true;
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
    // The successor the writer goes to if no unit is written here (space.ts: namedSuccessor).
    return { address: current.baseAddress, segmentIndex: unit.segmentIndex, nextSegmentIndex: this.space.namedSuccessor, prevEnd: current.prevEnd };
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
    let leastBytes = 0;
    if (fill > 0) {
      this.prewriter.noteUnit(fill, this.ring.bufferSize);
      const end = base + unitFileBytes(fill);
      unit.unitId = this.durability.register(end);
      // The successor is fixed now, not when the slot opened: the space may have named a free
      // segment instead of one the file does not hold yet (space.ts), and the segment's last
      // unit must name the one the writer enters.
      if (unit.segmentIndex !== this.space.tailIndex) throw new Error(`unit in segment ${unit.segmentIndex} finalized while the log writes ${this.space.tailIndex}`);
      unit.nextSegmentIndex = this.space.successorIndex;
      this.space.noteNamed(unit.nextSegmentIndex);
      this.lastUnitEnd = end;
      nextBase = end;
    } else if (!this.advancing && buffer.capacityWords * WORD_BYTES + UNIT_HEADER_BYTES < this.fullRoomAt(base)) {
      // Sealed empty because a reservation did not fit the smaller room this slot was granted:
      // open the next one here, with more room (the space skips to the next segment if it has
      // none to give here).
      unit.unitId = -1;
      nextBase = base;
      leastBytes = buffer.capacityWords * WORD_BYTES + UNIT_HEADER_BYTES + ALIGNMENT_BYTES;
    } else {
      // Sealed empty: a reservation did not fit the room left in this segment (or advanceSegment).
      unit.unitId = -1;
      nextBase = this.geometry.nextSegmentStart(base);
    }
    this.advancing = false;
    unit.finalized = true;
    this.finalizedCounter = counter;
    this.pendingOpen = { base: nextBase, prevEnd: this.lastUnitEnd, leastBytes };
  }

  /** Room a unit at `base` may have at most, header included: a buffer, or the segment's rest. */
  private fullRoomAt(base: number): number {
    return Math.min(this.ring.bufferSize, this.geometry.nextSegmentStart(base) - base);
  }

  /** Open the next slot at the pending position once that slot is free. */
  openNext(): void {
    const pending = this.pendingOpen;
    if (pending === undefined) return;
    const counter = this.finalizedCounter + 1;
    const buffer = this.ring.slots[counter % this.ring.ringSize] as FlushBuffer;
    if (!buffer.isFree) return;
    let base = this.geometry.unitStartFrom(pending.base);
    let granted = 0;
    // Twice at most: the space may answer "skip to the next segment" once (space.ts).
    for (let attempt = 0; ; attempt++) {
      const seq = this.geometry.seqOf(base);
      try {
        if (seq !== this.space.tailSeq) {
          // Invariant: the log moves one segment at a time (an empty seal skips at most one tail).
          if (seq !== this.space.tailSeq + 1) throw new Error(`log skipped from segment ${this.space.tailSeq} to ${seq}`);
          this.space.enter(seq);
        }
        const unitWritten = pending.prevEnd > this.geometry.segmentStart(seq);
        granted = this.space.grant(this.spaceUse(), base, this.fullRoomAt(base), pending.leastBytes, unitWritten);
      } catch (error) {
        const failure = asLssError(error, (message) => new NoSpaceError(message));
        // No space is the appender's problem, not the log's: nothing changed, try again later.
        if (failure instanceof NoSpaceError) this.spaceBlocked = failure;
        else this.life.fail(failure);
        return;
      }
      if (granted !== SKIP_SEGMENT) break;
      // The segment's allocated room is used up and the file cannot grow: go on in the successor.
      if (attempt > 0) throw new Error(`the space asked to skip two segments at ${base}`);
      base = this.geometry.nextSegmentStart(base);
      pending.leastBytes = 0;
    }
    this.spaceBlocked = undefined;
    const capacityBytes = granted - UNIT_HEADER_BYTES;
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
