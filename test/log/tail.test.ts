/**
 * The durable tail (src/log/tail.ts) over real files, on both backends: followers see every
 * durable unit exactly once, in log order, only once it is durable, across segment rotations and
 * segment reuse; retention keeps segments a follower still needs from being reused; `readRange`
 * agrees with what followers saw; log that is gone gives a typed error; close and abort end a
 * follower. Every wait has a deadline.
 */
import { describe, expect, test } from "bun:test";
import path from "node:path";
import { InvalidArgumentError, LogTruncatedError } from "../../src/errors.ts";
import type { DurableUnit, LogStructuredStore } from "../../src/log/log.ts";
import { UNIT_HEADER_BYTES } from "../../src/log/format.ts";
import { BACKENDS, rng, scratchDir } from "../helpers.ts";
import { append, closeRecorded, KiB, openRecorded, payload } from "./util.ts";

const OPTIONS = { segmentSize: 64 * KiB, bufferSize: 8 * KiB, ringSize: 4 };
const DEADLINE_MS = 20_000;

/** A payload written to the log: where it landed and its bytes. */
interface Piece {
  address: number;
  bytes: Uint8Array;
}

/** `promise`, or a failure after `ms` naming what was awaited. */
async function within<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `condition` (cheaply, every few ms) until it holds, or fail after the deadline. */
async function until(condition: () => boolean, what: string, ms = DEADLINE_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(2);
  }
}

/** Append `count` payloads of random sizes, flushing now and then; returns what was written. */
async function writePieces(log: LogStructuredStore, count: number, seed: number): Promise<Piece[]> {
  const next = rng(seed);
  const pieces: Piece[] = [];
  for (let i = 0; i < count; i++) {
    const bytes = payload(1 + Math.floor(next() * 4000), seed * 100_000 + i);
    const reservation = await append(log, bytes);
    pieces.push({ address: reservation.address, bytes });
    if (i % 23 === 22) await log.flush();
    else if (i % 7 === 6) log.requestFlush();
  }
  await log.flush();
  return pieces;
}

/** A consumer of `log.durableUnits(from)` in the background, checking durability at each yield. */
function follow(log: LogStructuredStore, from: Parameters<LogStructuredStore["durableUnits"]>[0], signal?: AbortSignal, beforeDurable = false) {
  const units: DurableUnit[] = [];
  const notDurable: number[] = [];
  const iterator = log.durableUnits(from, { signal, beforeDurable });
  const done = (async () => {
    for await (const unit of iterator) {
      if (!log.isDurable(unit.endAddress - 1)) notDurable.push(unit.address);
      units.push(unit);
    }
  })();
  return { units, notDurable, iterator, done };
}

/** Units strictly in log order, each once, each chained to the one before. */
function expectInOrder(units: readonly DurableUnit[]): void {
  for (let i = 1; i < units.length; i++) {
    const prev = units[i - 1] as DurableUnit;
    const unit = units[i] as DurableUnit;
    expect(unit.address).toBeGreaterThanOrEqual(prev.endAddress);
    expect(unit.address === prev.endAddress || unit.segmentSeq === prev.segmentSeq + 1).toBe(true);
  }
}

/** Every piece lies inside exactly one unit, byte for byte. */
function expectPiecesIn(units: readonly DurableUnit[], pieces: readonly Piece[]): void {
  let u = 0;
  for (const piece of pieces) {
    while (u < units.length && (units[u] as DurableUnit).endAddress <= piece.address) u++;
    const unit = units[u];
    if (unit === undefined) throw new Error(`no unit holds the piece at ${piece.address}`);
    const start = piece.address - unit.address - UNIT_HEADER_BYTES;
    expect(start).toBeGreaterThanOrEqual(0);
    const got = unit.payload.subarray(start, start + piece.bytes.length);
    expect(got.length).toBe(piece.bytes.length);
    if (!Buffer.from(got).equals(Buffer.from(piece.bytes))) throw new Error(`piece at ${piece.address} differs in the unit at ${unit.address}`);
  }
}

function expectSameUnits(a: readonly DurableUnit[], b: readonly DurableUnit[]): void {
  expect(a.map((u) => [u.address, u.endAddress, u.epoch, u.segmentSeq])).toEqual(b.map((u) => [u.address, u.endAddress, u.epoch, u.segmentSeq]));
  for (let i = 0; i < a.length; i++) {
    expect(Buffer.from((a[i] as DurableUnit).payload).equals(Buffer.from((b[i] as DurableUnit).payload))).toBe(true);
  }
}

for (const io of BACKENDS) {
  describe(`durable tail: ${io}`, () => {
    test("a follower started before writing sees every unit once, in order, only once durable, across rotations", async () => {
      const { dir, cleanup } = scratchDir(`log-tail-follow-${io}`);
      try {
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, OPTIONS);
        try {
          const early = follow(log, 0);
          const pieces = await writePieces(log, 600, 1);
          expect(log.tailSegmentSeq).toBeGreaterThan(10); // many rotations
          await until(() => (early.units.at(-1)?.endAddress ?? -1) >= log.stableAddress, "the follower to catch up");
          expect(early.notDurable).toEqual([]);
          expect(early.units.length).toBe(log.stats().unitsWritten);
          expectInOrder(early.units);
          expectPiecesIn(early.units, pieces);

          // Late followers: from a unit's position (resume after it), from its address, from inside it.
          const k = Math.floor(early.units.length / 2);
          const mid = early.units[k] as DurableUnit;
          const fromPosition = follow(log, mid.position);
          const fromAddress = follow(log, mid.address);
          const fromInside = follow(log, mid.address + 1);
          const target = log.stableAddress;
          for (const late of [fromPosition, fromAddress, fromInside]) {
            await until(() => (late.units.at(-1)?.endAddress ?? -1) >= target, "a late follower to catch up");
          }
          expectSameUnits(fromPosition.units, early.units.slice(k + 1));
          expectSameUnits(fromAddress.units, early.units.slice(k));
          expectSameUnits(fromInside.units, early.units.slice(k + 1));

          // The raw range read agrees with the followers.
          expectSameUnits(await log.readRange(0, log.stableAddress), early.units);
          const a = early.units[3] as DurableUnit;
          const b = early.units[40] as DurableUnit;
          expectSameUnits(await log.readRange(a.address, b.address), early.units.slice(3, 40));
          expectSameUnits(await log.readRange(a.position, b.address), early.units.slice(4, 40));
          await expect(log.readRange(0, log.stableAddress + 4096)).rejects.toBeInstanceOf(InvalidArgumentError);

          // Close ends every follower, caught up and waiting.
          await closeRecorded(log, backend);
          await within(Promise.all([early.done, fromPosition.done, fromAddress.done, fromInside.done]), "followers to end at close");
        } finally {
          if (!log.closed) await closeRecorded(log, backend);
        }
      } finally {
        cleanup();
      }
    });

    test("beforeDurable: a follower gets each unit as its write is issued, before it is durable, in order, the bytes the file then holds", async () => {
      const { dir, cleanup } = scratchDir(`log-tail-early-${io}`);
      try {
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, OPTIONS);
        try {
          const { units: early, notDurable: notDurableAtReceipt, done: earlyDone } = follow(log, 0, undefined, true);
          const plain = follow(log, 0);
          // Units that fill up are written with no datasync while nobody waits for durability (and
          // fewer than SYNC_EVERY_UNITS are written): the early follower has them, the plain one not.
          const first: Piece[] = [];
          for (let i = 0; i < 24; i++) {
            const bytes = payload(1000, 900_000 + i);
            first.push({ address: (await append(log, bytes)).address, bytes });
          }
          await until(() => early.length >= 2, "units handed out before they are durable");
          expect(log.stableAddress).toBeLessThanOrEqual((early[0] as DurableUnit).address);
          expect(plain.units).toEqual([]);
          expect(notDurableAtReceipt.length).toBeGreaterThanOrEqual(2);

          const more = await writePieces(log, 400, 11);
          expect(log.tailSegmentSeq).toBeGreaterThan(5); // rotations, with copies kept across them
          for (const units of [early, plain.units]) {
            await until(() => (units.at(-1)?.endAddress ?? -1) >= log.stableAddress, "the followers to catch up");
          }
          expectInOrder(early);
          expectPiecesIn(early, [...first, ...more]);
          expectSameUnits(early, plain.units);
          expectSameUnits(early, await log.readRange(0, log.stableAddress));
          // Copies are kept only until durable (or every early follower is past them).
          expect((log as unknown as { tail: { submitted: { units: Map<number, Uint8Array> } } }).tail.submitted.units.size).toBe(0);

          await closeRecorded(log, backend);
          await within(Promise.all([earlyDone, plain.done]), "followers to end at close");
        } finally {
          if (!log.closed) await closeRecorded(log, backend);
        }
      } finally {
        cleanup();
      }
    });

    test("retention: a segment a follower still needs is not reused until it moves on; then `from` there is truncated", async () => {
      const { dir, cleanup } = scratchDir(`log-tail-retain-${io}`);
      try {
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, OPTIONS);
        try {
          const pieces = await writePieces(log, 200, 2);
          const released = log.tailSegmentSeq - 1; // segments 0 .. released-1 go back
          expect(released).toBeGreaterThanOrEqual(4);
          // A follower that has not read anything yet: it holds the log from address 0.
          const lagging = log.durableUnits(0);
          const handle = log.retain(log.segmentSize); // a caller-held retention from segment 1
          for (let seq = 0; seq < released; seq++) log.releaseSegment(seq);
          await log.flush();
          const checkpoint = log.tailPosition();
          await log.writeRoot({ checkpoint: { start: checkpoint, endAddress: checkpoint.address }, replayFrom: checkpoint });
          expect(log.pendingSegments).toBe(released);
          expect(log.freeSegments).toBe(0);

          // Writing on needs new segments: the pending ones are not reused.
          const fileSegmentsBefore = log.fileSegments;
          const more = await writePieces(log, 150, 3);
          expect(log.fileSegments).toBeGreaterThan(fileSegmentsBefore);
          expect(log.pendingSegments).toBe(released);

          // The follower reads the given-back (pending) segments intact.
          const seen: DurableUnit[] = [];
          const stable = log.stableAddress;
          await within(
            (async () => {
              while ((seen.at(-1)?.endAddress ?? -1) < stable) {
                const next = await lagging.next();
                if (next.done === true) throw new Error("the follower ended early");
                expect(log.isDurable(next.value.endAddress - 1)).toBe(true);
                seen.push(next.value);
                // Segment 0 goes free once the follower is past it; the handle holds segment 1 on.
                const pastSegment0 = next.value.endAddress >= log.segmentSize;
                expect(log.pendingSegments).toBe(pastSegment0 ? released - 1 : released);
              }
            })(),
            "the lagging follower to read everything",
          );
          expectInOrder(seen);
          expectPiecesIn(seen, [...pieces, ...more]);
          // Past them now, but the caller's handle still holds segment 1 on: only segment 0 went free.
          expect(log.freeSegments).toBe(1);
          expect(log.pendingSegments).toBe(released - 1);
          handle.advance(log.segmentSize * released);
          expect(log.freeSegments).toBe(released);
          expect(log.pendingSegments).toBe(0);
          handle.release();

          // Now they are reused: the file does not grow while free segments last.
          const fileSegmentsAfter = log.fileSegments;
          await writePieces(log, 80, 4);
          expect(log.fileSegments).toBe(fileSegmentsAfter);
          expect(log.freeSegments).toBeLessThan(released);

          // Log in a reused segment is gone: a typed error, never wrong bytes.
          const gone = log.durableUnits(0);
          const error = await within(gone.next().then(() => undefined, (e: unknown) => e), "the truncated follower's first next()");
          expect(error).toBeInstanceOf(LogTruncatedError);
          expect((error as LogTruncatedError).code).toBe("LSS_LOG_TRUNCATED");
          expect(await gone.next()).toEqual({ done: true, value: undefined });
          await expect(log.readRange(0, log.stableAddress)).rejects.toBeInstanceOf(LogTruncatedError);
          expect(() => log.retain(0)).toThrow(LogTruncatedError);
          // The follower still works from where it is.
          const rest = log.durableUnits((seen.at(-1) as DurableUnit).position);
          const first = await within(rest.next(), "the follower to resume");
          expect(first.done).toBe(false);
          await rest.return?.();
          await lagging.return?.();
        } finally {
          await closeRecorded(log, backend);
        }
      } finally {
        cleanup();
      }
    });

    test("fromMemory: units come from the caching layer while it holds them, from the file once evicted; the same units either way", async () => {
      const { dir, cleanup } = scratchDir(`log-tail-memory-${io}`);
      try {
        // A cache of 4 blocks (128 KiB): a follower at the tail finds its units there, one from
        // the start finds most evicted.
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, { ...OPTIONS, blockCacheBytes: 128 * KiB });
        try {
          const hits = () => log.stats().blockCache.hits;
          const before = hits();
          const live: DurableUnit[] = [];
          const liveIterator = log.durableUnits(0, { fromMemory: true });
          const liveDone = (async () => {
            for await (const unit of liveIterator) {
              expect(log.isDurable(unit.endAddress - 1)).toBe(true);
              live.push(unit);
            }
          })();
          const pieces = await writePieces(log, 600, 6);
          await until(() => (live.at(-1)?.endAddress ?? -1) >= log.stableAddress, "the in-memory follower to catch up");
          const liveHits = hits() - before;
          expect(liveHits).toBeGreaterThan(0);

          // From the file: the same units, and no cache hit.
          const fromFile = follow(log, 0);
          await until(() => (fromFile.units.at(-1)?.endAddress ?? -1) >= log.stableAddress, "the file follower to catch up");
          expect(hits() - before).toBe(liveHits);
          expect(fromFile.units.length).toBe(log.stats().unitsWritten);
          expectInOrder(live);
          expectPiecesIn(live, pieces);
          expectSameUnits(live, fromFile.units);

          // From the start with fromMemory: the evicted ones come from the file, the same bytes.
          const late: DurableUnit[] = [];
          const lateIterator = log.durableUnits(0, { fromMemory: true });
          await within(
            (async () => {
              while ((late.at(-1)?.endAddress ?? -1) < log.stableAddress) {
                const next = await lateIterator.next();
                if (next.done === true) throw new Error("the late follower ended early");
                late.push(next.value);
              }
            })(),
            "the late in-memory follower to catch up",
          );
          expectSameUnits(late, fromFile.units);
          await lateIterator.return?.();
          await closeRecorded(log, backend);
          await within(Promise.all([liveDone, fromFile.done]), "followers to end at close");
        } finally {
          if (!log.closed) await closeRecorded(log, backend);
        }
      } finally {
        cleanup();
      }
    });

    test("abort ends a waiting follower and releases what it held; close ends a waiting one", async () => {
      const { dir, cleanup } = scratchDir(`log-tail-abort-${io}`);
      try {
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, OPTIONS);
        try {
          await writePieces(log, 40, 5);
          const controller = new AbortController();
          const aborted = follow(log, 0, controller.signal);
          await until(() => (aborted.units.at(-1)?.endAddress ?? -1) >= log.stableAddress, "the follower to catch up");
          // Waiting now (nothing new is durable): abort ends it.
          controller.abort();
          await within(aborted.done, "the aborted follower to end");
          // A follower that waits for log not written yet ends at close.
          const waiting = follow(log, log.stableAddress + 10 * log.segmentSize);
          await Bun.sleep(20);
          expect(waiting.units).toEqual([]);
          await closeRecorded(log, backend);
          await within(waiting.done, "the waiting follower to end at close");
          expect(await waiting.iterator.next()).toEqual({ done: true, value: undefined });
        } finally {
          if (!log.closed) await closeRecorded(log, backend);
        }
      } finally {
        cleanup();
      }
    });
  });
}
