/**
 * The FlushBuffer state machine, tested directly on a SharedArrayBuffer-backed Int32Array:
 * refusals once sealed or flushing, exact-capacity fits, double seals, the flush starting exactly
 * once, and reservations that never overlap.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  decodeState,
  FlushBuffer,
  FREE_STATE,
  MAX_WRITERS,
  OFFSET_MASK,
  ReserveOutcome,
  SLOT_WORDS,
  WORD_BYTES,
} from "../../src/log/flush-buffer.ts";
import { staleCapacityOnce } from "./util.ts";

/** A fresh slot, opened with `capacityBytes` of payload room. */
function openBuffer(capacityBytes: number, base = 0x1_0000_2000, slots = 1): FlushBuffer {
  const words = new Int32Array(new SharedArrayBuffer(slots * SLOT_WORDS * 4));
  const buffer = new FlushBuffer(words, 0);
  buffer.markFree();
  buffer.open(base, capacityBytes, base - 4096, 7);
  return buffer;
}

describe("FlushBuffer state machine", () => {
  test("open publishes metadata; a free slot is sealed and flushing", () => {
    const buffer = openBuffer(4096);
    expect(buffer.state).toBe(0);
    expect(buffer.capacityWords).toBe(4096 / WORD_BYTES);
    expect(buffer.baseAddress).toBe(0x1_0000_2000);
    expect(buffer.prevEnd).toBe(0x1_0000_2000 - 4096);
    expect(buffer.counter).toBe(7);
    buffer.seal();
    expect(buffer.startFlush).toBe(true);
    buffer.markFree();
    expect(buffer.isFree).toBe(true);
    expect(buffer.state).toBe(FREE_STATE);
    expect(decodeState(FREE_STATE)).toEqual({ offsetWords: OFFSET_MASK, writers: 0, sealed: true, flushing: true });
    buffer.open(0, 4096, 0, 8); // a free slot reopens
    // Opening a slot that is not free is a programming error.
    expect(() => buffer.open(0, 4096, 0, 9)).toThrow(/not free/);
  });

  test("reserving on a sealed buffer is refused", () => {
    const buffer = openBuffer(4096);
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Ok);
    expect(buffer.seal()).toBe(true);
    expect(buffer.startFlush).toBe(false); // a writer is still active
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Sealed);
    const state = decodeState(buffer.state);
    expect(state).toEqual({ offsetWords: 1, writers: 1, sealed: true, flushing: false });
  });

  test("reserving on a flushing (or free) buffer is refused", () => {
    const buffer = openBuffer(4096);
    expect(buffer.seal()).toBe(true);
    expect(buffer.startFlush).toBe(true);
    expect(decodeState(buffer.state).flushing).toBe(true);
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Sealed);
    buffer.markFree();
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Sealed);
    expect(buffer.state).toBe(FREE_STATE); // the refusal changed nothing
  });

  test("an exact-capacity reservation succeeds and the next byte is refused", () => {
    const capacityBytes = 16384 - 64;
    const buffer = openBuffer(capacityBytes);
    const words = capacityBytes / WORD_BYTES;
    expect(buffer.reserve(words)).toBe(ReserveOutcome.Ok);
    expect(buffer.reservedOffsetWords).toBe(0);
    buffer.release();
    expect(buffer.startFlush).toBe(false);
    // One more word (the smallest reservation: 1..8 bytes round up to one word) does not fit.
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Full);
    expect(buffer.startFlush).toBe(true); // sealed with no writer left: this caller starts the flush
    const state = decodeState(buffer.state);
    expect(state.sealed).toBe(true);
    expect(state.flushing).toBe(true);
    expect(state.writers).toBe(0);
    expect(buffer.finalFillBytes).toBe(capacityBytes);
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Sealed);
  });

  test("exact fit from several reservations, then one word more is Full while a writer holds on", () => {
    const buffer = openBuffer(1024);
    expect(buffer.reserve(100)).toBe(ReserveOutcome.Ok);
    expect(buffer.reserve(28)).toBe(ReserveOutcome.Ok);
    expect(buffer.reservedOffsetWords).toBe(100);
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Full);
    expect(buffer.startFlush).toBe(false); // two writers still active
    expect(buffer.finalFillBytes).toBe(1024);
    buffer.release();
    expect(buffer.startFlush).toBe(false);
    buffer.release();
    expect(buffer.startFlush).toBe(true);
    expect(buffer.finalFillBytes).toBe(1024);
  });

  test("a reservation that does not fit seals the buffer without touching its offset", () => {
    const buffer = openBuffer(1024);
    expect(buffer.reserve(10)).toBe(ReserveOutcome.Ok);
    expect(buffer.reserve(1000)).toBe(ReserveOutcome.Full);
    expect(buffer.startFlush).toBe(false); // the first writer is still active
    expect(decodeState(buffer.state)).toEqual({ offsetWords: 10, writers: 1, sealed: true, flushing: false });
    expect(buffer.finalFillBytes).toBe(10 * WORD_BYTES); // final at seal time
    buffer.release();
    expect(buffer.startFlush).toBe(true);
    expect(buffer.reserve(0x7fffffff)).toBe(ReserveOutcome.Sealed);
  });

  test("a reservation too big for an empty, idle buffer seals it, and that is not the free state", () => {
    const buffer = openBuffer(1024);
    expect(buffer.reserve(129)).toBe(ReserveOutcome.Full);
    expect(buffer.startFlush).toBe(true); // nobody else will: the refused reserver starts it
    expect(decodeState(buffer.state)).toEqual({ offsetWords: 0, writers: 0, sealed: true, flushing: true });
    expect(buffer.isFree).toBe(false); // the owner must still finalize it (an empty unit)
    expect(buffer.finalFillBytes).toBe(0);
    buffer.markFree();
    expect(buffer.isFree).toBe(true);
  });

  test("fallback when the slot was reused between the capacity check and the CAS: fill limit lowered, offset saturates below the free marker", () => {
    const buffer = openBuffer(1024);
    expect(buffer.reserve(10)).toBe(ReserveOutcome.Ok);
    staleCapacityOnce(buffer, 1 << 30);
    expect(buffer.reserve(OFFSET_MASK - 5)).toBe(ReserveOutcome.Full); // passed the first check, failed the second
    const state = decodeState(buffer.state);
    expect(state).toEqual({ offsetWords: OFFSET_MASK - 1, writers: 1, sealed: true, flushing: false });
    expect(buffer.finalFillBytes).toBe(10 * WORD_BYTES); // the fill stops where the overrun began
    expect(buffer.startFlush).toBe(false);
    buffer.release();
    expect(buffer.startFlush).toBe(true);
    expect(buffer.state).not.toBe(FREE_STATE);
    expect(buffer.isFree).toBe(false);
  });

  test("sealing twice: the second seal returns false and never starts a flush", () => {
    const idle = openBuffer(4096);
    expect(idle.seal()).toBe(true);
    expect(idle.startFlush).toBe(true);
    expect(idle.seal()).toBe(false);
    expect(idle.startFlush).toBe(false);

    const busy = openBuffer(4096);
    expect(busy.reserve(3)).toBe(ReserveOutcome.Ok);
    expect(busy.seal()).toBe(true);
    expect(busy.startFlush).toBe(false);
    expect(busy.seal()).toBe(false);
    expect(busy.startFlush).toBe(false);
    busy.release();
    expect(busy.startFlush).toBe(true);
    expect(busy.seal()).toBe(false);
    expect(busy.startFlush).toBe(false);
  });

  test("release without a writer is an error", () => {
    const buffer = openBuffer(4096);
    expect(() => buffer.release()).toThrow(/release without a writer/);
  });

  test(`at most ${MAX_WRITERS} writers at once: then Busy, until one leaves`, () => {
    const buffer = openBuffer(4096);
    for (let i = 0; i < MAX_WRITERS; i++) expect(buffer.reserve(1)).toBe(ReserveOutcome.Ok);
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Busy);
    expect(decodeState(buffer.state)).toEqual({ offsetWords: MAX_WRITERS, writers: MAX_WRITERS, sealed: false, flushing: false });
    buffer.release();
    expect(buffer.reserve(1)).toBe(ReserveOutcome.Ok);
    expect(buffer.reservedOffsetWords).toBe(MAX_WRITERS);
  });

  test("slots of one ring share an array without touching each other", () => {
    const words = new Int32Array(new SharedArrayBuffer(3 * SLOT_WORDS * 4));
    const slots = [0, 1, 2].map((slot) => new FlushBuffer(words, slot));
    slots.forEach((s, i) => {
      s.markFree();
      s.open(i * 100_000, 4096, 0, i);
    });
    expect(slots[1]?.reserve(5)).toBe(ReserveOutcome.Ok);
    expect(slots[1]?.seal()).toBe(true);
    expect(slots[0]?.state).toBe(0);
    expect(slots[2]?.state).toBe(0);
    expect(slots[2]?.baseAddress).toBe(200_000);
    expect(slots[0]?.reserve(5)).toBe(ReserveOutcome.Ok);
    expect(slots[0]?.reservedOffsetWords).toBe(0);
  });

  type Op = { kind: "reserve"; words: number } | { kind: "release"; pick: number } | { kind: "seal" };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant("reserve" as const), words: fc.integer({ min: 1, max: 160 }) }) },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.constant({ kind: "seal" as const }) },
  );

  test("property: the flush starts exactly once, reservations never overlap and stay inside the fill", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 256 }), fc.array(opArb, { maxLength: 300 }), (capacityWords, ops) => {
        const buffer = openBuffer(capacityWords * WORD_BYTES);
        const held: number[] = [];
        const granted: Array<[number, number]> = [];
        let starts = 0;
        let sealedSeen = false;
        let sealTrue = 0;
        const run = (op: Op): void => {
          if (op.kind === "reserve") {
            const outcome = buffer.reserve(op.words);
            if (outcome === ReserveOutcome.Ok) {
              expect(sealedSeen).toBe(false);
              granted.push([buffer.reservedOffsetWords, buffer.reservedOffsetWords + op.words]);
              held.push(granted.length - 1);
            } else if (outcome === ReserveOutcome.Full) {
              sealedSeen = true;
              if (buffer.startFlush) starts += 1;
            } else if (outcome === ReserveOutcome.Sealed) {
              expect(sealedSeen).toBe(true);
            } else {
              expect(held.length).toBe(MAX_WRITERS);
            }
          } else if (op.kind === "release") {
            if (held.length === 0) return;
            held.splice(op.pick % held.length, 1);
            buffer.release();
            if (buffer.startFlush) starts += 1;
          } else {
            const first = buffer.seal();
            expect(first).toBe(!sealedSeen);
            if (first) sealTrue += 1;
            sealedSeen = true;
            if (buffer.startFlush) starts += 1;
          }
          const state = decodeState(buffer.state);
          expect(state.writers).toBe(held.length);
          expect(state.sealed).toBe(sealedSeen);
          expect(state.flushing).toBe(sealedSeen && held.length === 0);
          expect(starts).toBe(state.flushing ? 1 : 0);
        };
        for (const op of ops) run(op);
        // Finish: seal (if nobody did) and release everyone; the flush must have started once.
        run({ kind: "seal" });
        while (held.length > 0) run({ kind: "release", pick: 0 });
        expect(starts).toBe(1);
        expect(sealTrue).toBeLessThanOrEqual(1);
        // Granted ranges are disjoint, contiguous from 0 and inside the final fill.
        const fillWords = buffer.finalFillBytes / WORD_BYTES;
        expect(fillWords).toBeLessThanOrEqual(capacityWords);
        const sorted = [...granted].sort((a, b) => a[0] - b[0]);
        let expectedStart = 0;
        for (const [start, end] of sorted) {
          expect(start).toBe(expectedStart);
          expect(end).toBeLessThanOrEqual(fillWords);
          expectedStart = end;
        }
        expect(expectedStart).toBe(fillWords);
      }),
      { numRuns: 400, seed: 0x5eed },
    );
  });
});
