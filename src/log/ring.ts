/**
 * The ring of flush buffers: `ringSize` slots in one SharedArrayBuffer (state and metadata words,
 * see flush-buffer.ts) plus a few control words, over native buffers that every thread can view.
 *
 * Control words:
 * - CURRENT: ring counter of the buffer open for reservations (slot = counter mod ringSize);
 * - DOORBELL: bumped (and notified) whenever a thread seals a buffer or must have a flush started,
 *   so the owner thread, which alone touches the file, wakes up;
 * - FLUSH_MASK: bit i set = slot i is sealed, has no writers, and its flush must start;
 * - CLOSED: non-zero once the log is closed; waiting reservers give up.
 *
 * Only the owner opens slots (rotation) and submits I/O; any thread may reserve, write, release
 * and seal. {@link RingWriter} is that shared client logic; a Worker attaches one to a
 * {@link RingDescriptor}, and the owner holds an {@link OwnerRing} (a RingWriter whose hooks call
 * its {@link RingOwner} directly, plus the owner-only controls).
 *
 * @module
 */
import { toArrayBuffer } from "bun:ffi";
import { FlushBuffer, ReserveOutcome, SEALED, SLOT_WORDS, WORD_BYTES } from "./flush-buffer.ts";
import { RECORD_ALIGNMENT_BYTES, UNIT_HEADER_BYTES, roundUp } from "./format.ts";
import { InvalidArgumentError, StoreClosedError } from "../errors.ts";

export const MIN_RING_SIZE = 2;
/** FLUSH_MASK is one int32 of slot bits. */
export const MAX_RING_SIZE = 30;

const CONTROL_WORDS = 4;
const CURRENT = 0;
const DOORBELL = 1;
const FLUSH_MASK = 2;
const CLOSED = 3;

/** What a Worker needs to join the ring: postMessage-able. */
export interface RingDescriptor {
  readonly shared: SharedArrayBuffer;
  readonly ringSize: number;
  readonly bufferSize: number;
  /** Native addresses of the slots' buffers. */
  readonly bufferPtrs: readonly number[];
}

/** A claimed range of a flush buffer. `address` is the logical log address of its first byte. */
export interface Reservation {
  readonly address: number;
  readonly lengthBytes: number;
  readonly slot: number;
  /** Offset of the range inside the slot's native buffer. */
  readonly bufferOffset: number;
  /** The range itself, writable in place (then call `release`), or filled by `writePayload`. */
  readonly bytes: Uint8Array;
}

/** Shared words of a ring. */
export function createRingShared(ringSize: number): SharedArrayBuffer {
  return new SharedArrayBuffer((ringSize * SLOT_WORDS + CONTROL_WORDS) * 4);
}

/** Longest single wait for a rotation before the waiter checks again whether it can still come. */
const ROTATION_WAIT_STEP_MS = 100;

/**
 * Reserve / write / release / seal over a ring, from any thread. What "the flush must start" and
 * "a buffer was sealed" do is a hook: a Worker flags the slot and rings the owner's doorbell; the
 * owner's {@link OwnerRing} calls into its flusher directly.
 */
export class RingWriter {
  readonly ringSize: number;
  readonly bufferSize: number;
  /** Largest single reservation: a whole buffer's payload. */
  readonly maxReservationBytes: number;
  protected readonly words: Int32Array;
  protected readonly control: number;
  readonly slots: FlushBuffer[];
  protected readonly views: Uint8Array[];

  constructor(descriptor: RingDescriptor, views?: Uint8Array[]) {
    this.ringSize = descriptor.ringSize;
    this.bufferSize = descriptor.bufferSize;
    this.maxReservationBytes = descriptor.bufferSize - UNIT_HEADER_BYTES;
    this.words = new Int32Array(descriptor.shared);
    this.control = descriptor.ringSize * SLOT_WORDS;
    this.slots = Array.from({ length: descriptor.ringSize }, (_, slot) => new FlushBuffer(this.words, slot));
    this.views =
      views ??
      descriptor.bufferPtrs.map((address) => new Uint8Array(toArrayBuffer(address as never, 0, descriptor.bufferSize)));
  }

  /** Ring counter of the open buffer. */
  get currentCounter(): number {
    return Atomics.load(this.words, this.control + CURRENT);
  }

  /** Bytes the open buffer can still take (a hint: see {@link FlushBuffer.roomBytes}). */
  get openRoomBytes(): number {
    return (this.slots[this.currentCounter % this.ringSize] as FlushBuffer).roomBytes;
  }

  get isClosed(): boolean {
    return Atomics.load(this.words, this.control + CLOSED) !== 0;
  }

  /**
   * Try to reserve `lengthBytes` without waiting: a Reservation, or `undefined` when the caller
   * must wait for the owner to open the next buffer (see {@link waitForRotation}).
   */
  tryReserve(lengthBytes: number): Reservation | undefined {
    this.checkLength(lengthBytes);
    const words = roundUp(Math.max(lengthBytes, 1), RECORD_ALIGNMENT_BYTES) / WORD_BYTES;
    for (let attempt = 0; attempt < 64; attempt++) {
      if (this.isClosed) throw new StoreClosedError("the log is closed");
      const counter = this.currentCounter;
      const buffer = this.slots[counter % this.ringSize] as FlushBuffer;
      const outcome = buffer.reserve(words);
      if (outcome === ReserveOutcome.Ok) {
        const bufferOffset = UNIT_HEADER_BYTES + buffer.reservedOffsetWords * WORD_BYTES;
        const view = this.views[buffer.slot] as Uint8Array;
        return {
          address: buffer.baseAddress + bufferOffset,
          lengthBytes,
          slot: buffer.slot,
          bufferOffset,
          bytes: view.subarray(bufferOffset, bufferOffset + lengthBytes),
        };
      }
      if (outcome === ReserveOutcome.Busy) continue;
      if (outcome === ReserveOutcome.Full) {
        if (buffer.startFlush) this.onFlushReady(buffer.slot);
        this.onSealed(buffer.slot);
      } else if (buffer.seal()) {
        // Sealed (by someone) but maybe nobody told the owner yet: sealing twice is harmless.
        if (buffer.startFlush) this.onFlushReady(buffer.slot);
        this.onSealed(buffer.slot);
      }
      if (this.currentCounter === counter) return undefined;
    }
    return undefined;
  }

  /** Copy `bytes` into the reservation and release it. */
  writePayload(bytes: Uint8Array, reservation: Reservation): void {
    if (bytes.length !== reservation.lengthBytes) {
      throw new InvalidArgumentError(`payload of ${bytes.length} bytes for a reservation of ${reservation.lengthBytes}`);
    }
    reservation.bytes.set(bytes);
    this.release(reservation);
  }

  /** Drop the reservation's writer; the last writer of a sealed buffer hands it to the owner. */
  release(reservation: Reservation): void {
    const buffer = this.slots[reservation.slot] as FlushBuffer;
    buffer.release();
    if (buffer.startFlush) this.onFlushReady(buffer.slot);
  }

  /**
   * Resolve once the open buffer is no longer `counter` (or the ring closed). Cross-thread. Waits
   * in bounded steps and checks {@link assertCanReserve} before each: a rotation that will never
   * come (the log failed) must throw, not hang.
   */
  async waitForRotation(counter: number): Promise<void> {
    const index = this.control + CURRENT;
    while (Atomics.load(this.words, index) === counter && !this.isClosed) {
      this.assertCanReserve();
      const result = Atomics.waitAsync(this.words, index, counter, ROTATION_WAIT_STEP_MS);
      if (result.async) await result.value;
    }
  }

  /**
   * Hook: checked before every attempt of {@link reserve}; throwing gives up the wait. The owner
   * throws once its log can no longer take writes (an I/O failure stops rotation for good).
   */
  protected assertCanReserve(): void {}

  /** Owner: wake reservers waiting for a rotation, so they check {@link assertCanReserve} now. */
  protected wakeReservers(): void {
    Atomics.notify(this.words, this.control + CURRENT);
  }

  /** Reserve, waiting for a free buffer when every buffer is sealed or flushing. */
  async reserve(lengthBytes: number): Promise<Reservation> {
    for (;;) {
      this.assertCanReserve();
      const counter = this.currentCounter;
      const reservation = this.tryReserve(lengthBytes);
      if (reservation !== undefined) return reservation;
      const slot = this.slots[counter % this.ringSize] as FlushBuffer;
      if (this.currentCounter === counter && (slot.state & SEALED) === 0) {
        // Refused only because every writer place of the open buffer is taken (Busy): no
        // rotation may ever come, so retry shortly, once a writer has left.
        await Bun.sleep(1);
        continue;
      }
      await this.waitForRotation(counter);
    }
  }

  protected checkLength(lengthBytes: number): void {
    if (!Number.isInteger(lengthBytes) || lengthBytes < 0 || lengthBytes > this.maxReservationBytes) {
      throw new InvalidArgumentError(
        `reservation of ${lengthBytes} bytes: must be an integer in [0, ${this.maxReservationBytes}] (bufferSize minus the unit header)`,
      );
    }
  }

  /** Hook: slot's flush must start. Default (Workers): flag it and ring the owner's doorbell. */
  protected onFlushReady(slot: number): void {
    Atomics.or(this.words, this.control + FLUSH_MASK, 1 << slot);
    this.ringDoorbell();
  }

  /** Hook: a buffer was sealed, so the owner should rotate. Default: ring the doorbell. */
  protected onSealed(_slot: number): void {
    this.ringDoorbell();
  }

  protected ringDoorbell(): void {
    Atomics.add(this.words, this.control + DOORBELL, 1);
    Atomics.notify(this.words, this.control + DOORBELL);
  }

  /** Owner: take the set of slots whose flush must start. */
  takeFlushMask(): number {
    return Atomics.exchange(this.words, this.control + FLUSH_MASK, 0);
  }

  /** Owner: current doorbell value (wait for it to change to hear from Workers). */
  get doorbell(): number {
    return Atomics.load(this.words, this.control + DOORBELL);
  }

  /** Owner: wait until the doorbell differs from `seen`, or the timeout. */
  async waitDoorbell(seen: number, timeoutMs: number): Promise<void> {
    const result = Atomics.waitAsync(this.words, this.control + DOORBELL, seen, timeoutMs);
    if (result.async) await result.value;
  }

  /** Owner: publish the newly opened buffer and wake waiting reservers in every thread. */
  protected publishCurrent(counter: number): void {
    Atomics.store(this.words, this.control + CURRENT, counter);
    Atomics.notify(this.words, this.control + CURRENT);
  }

  /** Owner: close the ring; waiters in every thread give up. */
  protected markClosed(): void {
    Atomics.store(this.words, this.control + CLOSED, 1);
    Atomics.notify(this.words, this.control + CURRENT);
    this.ringDoorbell();
  }
}

/** What the owner does when its own thread seals a buffer or must start a flush. */
export interface RingOwner {
  /** Slot `slot` is sealed with no writer left: its flush must start. */
  flushReady(slot: number): void;
  /** A buffer was sealed: the owner should rotate. */
  sealed(slot: number): void;
  /** Throws once a reservation can no longer succeed (the log failed or closed). */
  assertCanReserve(): void;
}

/**
 * The owner thread's ring: the same reserve/write/release client as a Worker's, but its hooks
 * call the owner at once instead of ringing a doorbell, and it exposes the owner-only controls
 * (publishing the open buffer, closing, waking reservers). Held by the log, not inherited by it.
 */
export class OwnerRing extends RingWriter {
  private readonly owner: RingOwner;

  constructor(descriptor: RingDescriptor, views: Uint8Array[], owner: RingOwner) {
    super(descriptor, views);
    this.owner = owner;
  }

  /** The native buffer of `slot`, as bytes. */
  view(slot: number): Uint8Array {
    return this.views[slot] as Uint8Array;
  }

  protected override assertCanReserve(): void {
    this.owner.assertCanReserve();
  }

  protected override onFlushReady(slot: number): void {
    this.owner.flushReady(slot);
  }

  protected override onSealed(slot: number): void {
    this.owner.sealed(slot);
  }

  override publishCurrent(counter: number): void {
    super.publishCurrent(counter);
  }

  override wakeReservers(): void {
    super.wakeReservers();
  }

  override markClosed(): void {
    super.markClosed();
  }
}
