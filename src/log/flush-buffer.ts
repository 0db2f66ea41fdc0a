/**
 * One flush buffer's shared state: a packed 32-bit state word changed only by compare-and-swap,
 * plus the buffer's metadata words, all in a SharedArrayBuffer so Workers can reserve too.
 *
 * State word layout (Int32):
 * ```
 *  bit 31      bit 30     bits 24..29         bits 0..23
 *  FLUSHING    SEALED     active writers      write offset, in 8-byte words
 * ```
 * - `reserve(n)` adds n/8 to the offset and one writer in a single CAS, refused once SEALED.
 * - `release` drops the writer; if that was the last writer of a sealed buffer, the same CAS sets
 *   FLUSHING: that thread starts the flush.
 * - `seal` sets SEALED; if no writer is active, the same CAS sets FLUSHING: the sealer starts it.
 * So the flush of a buffer starts exactly once: only the CAS that sets FLUSHING starts it.
 * A free slot (flushed, not yet reopened) is SEALED|FLUSHING with no writers and the offset field
 * all ones, a value no live buffer reaches (offsets saturate one below it): a buffer sealed while
 * empty and idle is SEALED|FLUSHING with offset 0, and must not pass for a free slot.
 *
 * A reservation that does not fit seals the buffer in its CAS without adding its words, so the
 * offset at seal time is the fill. Capacity is checked again after a successful reserving CAS (a
 * slot reused between the read and the CAS could have fooled the first check); a reservation that
 * then does not fit has passed the capacity: it lowers `fillLimit` to its own start, seals the
 * buffer and releases. The buffer's final fill is `min(offset at seal, fillLimit)`, final once no
 * writer is left while the offset is past the capacity.
 *
 * @module
 */

export const OFFSET_BITS = 24;
export const OFFSET_MASK = (1 << OFFSET_BITS) - 1;
export const WRITER_SHIFT = 24;
export const WRITER_ONE = 1 << WRITER_SHIFT;
export const MAX_WRITERS = 63;
export const WRITER_MASK = MAX_WRITERS << WRITER_SHIFT;
export const SEALED = 1 << 30;
export const FLUSHING = 1 << 31; // the sign bit: state words are compared as int32
export const WORD_BYTES = 8;
/** Largest buffer the offset field can address: 2^24 words of 8 bytes = 128 MiB. */
export const MAX_BUFFER_BYTES = OFFSET_MASK * WORD_BYTES;

/** Int32 words per slot in the shared metadata array. */
export const SLOT_WORDS = 8;
const STATE = 0;
const BASE_LO = 1;
const BASE_HI = 2;
const CAPACITY_WORDS = 3;
const FILL_LIMIT_WORDS = 4;
const PREV_END_LO = 5;
const PREV_END_HI = 6;
const COUNTER = 7;

export const FREE_STATE = (SEALED | FLUSHING | OFFSET_MASK) | 0;

/** Decoded state word, for tests and assertions. */
export interface StateView {
  offsetWords: number;
  writers: number;
  sealed: boolean;
  flushing: boolean;
}

export function decodeState(word: number): StateView {
  return {
    offsetWords: word & OFFSET_MASK,
    writers: (word & WRITER_MASK) >>> WRITER_SHIFT,
    sealed: (word & SEALED) !== 0,
    flushing: (word & FLUSHING) !== 0,
  };
}

/** Outcome of {@link FlushBuffer.reserve}. */
export const enum ReserveOutcome {
  /** Reserved; `reservedOffsetWords` holds the start. */
  Ok = 0,
  /** Sealed or flushing: try the next buffer. */
  Sealed = 1,
  /** Did not fit: the buffer is now sealed; if `startFlush` is true, the caller must start its flush. */
  Full = 2,
  /** Too many writers at once: retry shortly. */
  Busy = 3,
}

/**
 * A view of one slot of the shared ring: the state word and the metadata of the buffer the slot
 * currently holds. Cheap to construct; all state lives in the shared Int32Array.
 */
export class FlushBuffer {
  readonly slot: number;
  private readonly words: Int32Array;
  private readonly at: number;
  /** Set by `reserve` on success: start of the reservation, in 8-byte words. */
  reservedOffsetWords = 0;
  /** Set by `reserve` on Full / `release` / `seal`: whether this caller must start the flush. */
  startFlush = false;

  constructor(words: Int32Array, slot: number) {
    this.words = words;
    this.slot = slot;
    this.at = slot * SLOT_WORDS;
  }

  get state(): number {
    return Atomics.load(this.words, this.at + STATE);
  }

  /** Claim `words` 8-byte words and count a writer, in one CAS. */
  reserve(words: number): ReserveOutcome {
    const index = this.at + STATE;
    for (;;) {
      const current = Atomics.load(this.words, index);
      if ((current & (SEALED | FLUSHING)) !== 0) return ReserveOutcome.Sealed;
      if ((current & WRITER_MASK) === WRITER_MASK) return ReserveOutcome.Busy;
      const offset = current & OFFSET_MASK;
      if (offset + words > this.capacityWords) {
        // Does not fit: seal in the same CAS, without adding the words, so the offset at seal
        // time is the final fill and the owner can fix the unit's extent at once, even while
        // other writers are still copying. (The capacity may be a newer incarnation's if the
        // slot was reused since the load above; then the CAS fails, or is the ABA case below.)
        const idle = (current & WRITER_MASK) === 0;
        const sealed = current | SEALED | (idle ? FLUSHING : 0);
        if (Atomics.compareExchange(this.words, index, current, sealed | 0) !== current) continue;
        this.startFlush = idle;
        return ReserveOutcome.Full;
      }
      // Saturate instead of overflowing into the writer bits; the capacity check below fails it.
      // One below OFFSET_MASK: an offset of all ones marks a free slot (FREE_STATE).
      const nextOffset = Math.min(offset + words, OFFSET_MASK - 1);
      const next = ((current & ~OFFSET_MASK) | nextOffset) + WRITER_ONE;
      if (Atomics.compareExchange(this.words, index, current, next | 0) !== current) continue;
      // We hold a writer: the slot cannot be flushed or reused, so its metadata is stable now.
      // Checked again: the slot may have been reused (same state word, ABA) since the check above.
      if (offset + words <= this.capacityWords) {
        this.reservedOffsetWords = offset;
        return ReserveOutcome.Ok;
      }
      this.lowerFillLimit(offset);
      this.seal();
      const sealerStarts = this.startFlush;
      this.release();
      this.startFlush = this.startFlush || sealerStarts;
      return ReserveOutcome.Full;
    }
  }

  /** Drop one writer; sets `startFlush` when this was the last writer of a sealed buffer. */
  release(): void {
    const index = this.at + STATE;
    for (;;) {
      const current = Atomics.load(this.words, index);
      if ((current & WRITER_MASK) === 0) throw new Error(`flush buffer ${this.slot}: release without a writer`);
      let next = current - WRITER_ONE;
      const last = (next & WRITER_MASK) === 0 && (next & SEALED) !== 0 && (next & FLUSHING) === 0;
      if (last) next |= FLUSHING;
      if (Atomics.compareExchange(this.words, index, current, next | 0) !== current) continue;
      this.startFlush = last;
      return;
    }
  }

  /** Close the buffer to new reservations. Returns false if it was sealed already. */
  seal(): boolean {
    const index = this.at + STATE;
    for (;;) {
      const current = Atomics.load(this.words, index);
      if ((current & SEALED) !== 0) {
        this.startFlush = false;
        return false;
      }
      let next = current | SEALED;
      const idle = (current & WRITER_MASK) === 0;
      if (idle) next |= FLUSHING;
      if (Atomics.compareExchange(this.words, index, current, next | 0) !== current) continue;
      this.startFlush = idle;
      return true;
    }
  }

  /** Bytes of payload the sealed buffer holds (valid once sealed). */
  get finalFillBytes(): number {
    const offset = this.state & OFFSET_MASK;
    return Math.min(offset, Atomics.load(this.words, this.at + FILL_LIMIT_WORDS)) * WORD_BYTES;
  }

  /**
   * Bytes this buffer can still take while it is open; 0 once sealed or flushing. A hint for
   * sizing a reservation (another writer may take the room first; `reserve` decides).
   */
  get roomBytes(): number {
    const state = this.state;
    if ((state & (SEALED | FLUSHING)) !== 0) return 0;
    return Math.max(0, this.capacityWords - (state & OFFSET_MASK)) * WORD_BYTES;
  }

  /** Bytes reserved so far (may exceed capacity transiently). */
  get offsetBytes(): number {
    return (this.state & OFFSET_MASK) * WORD_BYTES;
  }

  private lowerFillLimit(offsetWords: number): void {
    const index = this.at + FILL_LIMIT_WORDS;
    for (;;) {
      const current = Atomics.load(this.words, index);
      if (current <= offsetWords) return;
      if (Atomics.compareExchange(this.words, index, current, offsetWords) === current) return;
    }
  }

  get capacityWords(): number {
    return Atomics.load(this.words, this.at + CAPACITY_WORDS);
  }

  /** Logical address of the buffer's unit (its header). */
  get baseAddress(): number {
    return Atomics.load(this.words, this.at + BASE_HI) * 0x100000000 + (Atomics.load(this.words, this.at + BASE_LO) >>> 0);
  }

  get prevEnd(): number {
    return Atomics.load(this.words, this.at + PREV_END_HI) * 0x100000000 + (Atomics.load(this.words, this.at + PREV_END_LO) >>> 0);
  }

  /** Ring counter of the incarnation this slot holds. */
  get counter(): number {
    return Atomics.load(this.words, this.at + COUNTER);
  }

  get isFree(): boolean {
    return this.state === FREE_STATE;
  }

  /** Owner only: mark the slot free (its flush write has completed). */
  markFree(): void {
    Atomics.store(this.words, this.at + STATE, FREE_STATE);
  }

  /**
   * Owner only: open the slot for a new unit. Metadata is stored before the state word, and
   * Atomics stores are sequentially consistent, so a reserver whose CAS succeeds sees it.
   */
  open(baseAddress: number, capacityBytes: number, prevEnd: number, counter: number): void {
    if (!this.isFree) throw new Error(`flush buffer ${this.slot}: open while not free`);
    const capacityWords = Math.floor(capacityBytes / WORD_BYTES);
    Atomics.store(this.words, this.at + BASE_LO, baseAddress >>> 0);
    Atomics.store(this.words, this.at + BASE_HI, Math.floor(baseAddress / 0x100000000));
    Atomics.store(this.words, this.at + PREV_END_LO, prevEnd >>> 0);
    Atomics.store(this.words, this.at + PREV_END_HI, Math.floor(prevEnd / 0x100000000));
    Atomics.store(this.words, this.at + CAPACITY_WORDS, capacityWords);
    Atomics.store(this.words, this.at + FILL_LIMIT_WORDS, capacityWords);
    Atomics.store(this.words, this.at + COUNTER, counter);
    Atomics.store(this.words, this.at + STATE, 0);
  }
}
