/**
 * Write dispatch and stability under reordered completions.
 *
 * - tailLocalized with a large ring and small flush units, over a backend that hands completions
 *   back in a seeded shuffled order: stableAddress only ever sits at the end of a gap-free prefix
 *   of units whose writes have completed, and the shuffle really reordered completions.
 * - serialized: never more than one unit write in flight, even with shuffling and many buffers.
 */
import { describe, expect, test } from "bun:test";
import path from "node:path";
import type { LogStructuredStore } from "../../src/log/log.ts";
import { BACKENDS, rng, scratchDir } from "../helpers.ts";
import { append, closeRecorded, expectDisjoint, expectIntact, KiB, openRecorded, payload, type Written } from "./util.ts";

const BUFFER = 8 * KiB; // small flush units: many of them in flight at once
const SEGMENT = 256 * KiB;

/** Append `count` payloads of random sizes, with a flush every so often and a check after each. */
async function drive(
  log: LogStructuredStore,
  seed: number,
  count: number,
  check: () => void,
): Promise<Written[]> {
  const next = rng(seed);
  const written: Written[] = [];
  const flushes: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const length = next() < 0.1 ? BUFFER - 64 : Math.floor(next() * 3000);
    const r = await append(log, payload(length, seed * 100_000 + i));
    written.push({ address: r.address, length, seed: seed * 100_000 + i });
    check();
    if (next() < 0.02) flushes.push(log.flush()); // not awaited: the ring keeps filling meanwhile
    if (next() < 0.03) await new Promise((resolve) => setImmediate(resolve));
    check();
  }
  await Promise.all(flushes);
  await log.flush();
  check();
  return written;
}

for (const io of BACKENDS) {
  describe(`log ordering: ${io}`, () => {
    test("tailLocalized: shuffled completions never let stableAddress skip a gap", async () => {
      const { dir, cleanup } = scratchDir(`log-shuffle-${io}`);
      const file = path.join(dir, "a.lss");
      try {
        const options = { writeMode: "tailLocalized" as const, ringSize: 24, bufferSize: BUFFER, segmentSize: SEGMENT };
        const { log, backend } = await openRecorded(file, io, options, { shuffle: true, seed: 0xc0ffee, batch: 5 });
        const start = log.stableAddress;
        const stableSeen = new Set<number>();
        let last = start;
        let checks = 0;
        let islands = 0;
        const check = (): void => {
          checks += 1;
          const stable = log.stableAddress;
          expect(stable).toBeGreaterThanOrEqual(last);
          last = stable;
          const prefix = backend.completedPrefix(start);
          // Never past the first unit whose write has not completed...
          if (stable > prefix.end) throw new Error(`stableAddress ${stable} passed the completed prefix ending at ${prefix.end}`);
          // ...and always exactly at the end of a unit of that prefix.
          if (!prefix.ends.has(stable)) throw new Error(`stableAddress ${stable} is not the end of a completed unit`);
          // Stronger: at the end of a gap-free prefix of units each covered by a datasync issued
          // after its write completed (the wrapper sees both), never further.
          const durable = backend.durablePrefix(start);
          if (!durable.ends.has(stable)) throw new Error(`stableAddress ${stable} is not the end of a durable gap-free prefix (${durable.end})`);
          stableSeen.add(stable);
          // Durable islands: a unit durable past one that is not (the case that needs the rule).
          if (backend.unitWrites.some((w) => w.durable && w.header.address >= durable.end)) islands += 1;
        };
        backend.onReap = check;
        const written = await drive(log, 11, 1500, check);
        expectDisjoint(written);
        await expectIntact(log, written);

        // The shuffle really reordered completions, and several writes were in flight at once.
        expect(backend.inversions()).toBeGreaterThan(0);
        expect(islands).toBeGreaterThan(0);
        expect(backend.maxUnitWritesInFlight).toBeGreaterThan(1);
        // Flushes linked their datasync to a unit write, and the checks above held with them.
        expect(backend.linkedSyncsCompleted).toBeGreaterThan(0);
        expect(backend.unitWrites.length).toBeGreaterThan(100);
        expect(new Set(backend.unitWrites.map((w) => w.header.address)).size).toBe(backend.unitWrites.length);
        expect(stableSeen.size).toBeGreaterThan(10);
        expect(checks).toBeGreaterThan(1000);
        expect(log.stableAddress).toBe(log.sealedEnd);
        await closeRecorded(log, backend);

        const reopened = await openRecorded(file, io, options);
        await expectIntact(reopened.log, written);
        await closeRecorded(reopened.log, reopened.backend);
      } finally {
        cleanup();
      }
    });

    for (const shuffle of [false, true]) {
      test(`serialized: at most one unit write in flight (${shuffle ? "shuffled" : "in-order"} completions)`, async () => {
        const { dir, cleanup } = scratchDir(`log-serial-${io}`);
        const file = path.join(dir, "a.lss");
        try {
          const options = { writeMode: "serialized" as const, ringSize: 16, bufferSize: BUFFER, segmentSize: SEGMENT };
          const { log, backend } = await openRecorded(file, io, options, { shuffle, seed: 5, batch: 3 });
          let inFlightChecks = 0;
          const check = (): void => {
            inFlightChecks += 1;
            if (backend.unitWritesInFlight > 1) throw new Error(`${backend.unitWritesInFlight} unit writes in flight`);
          };
          backend.onReap = check;
          // Many tasks appending at once, so several buffers are sealed and waiting together.
          const tasks = Array.from({ length: 6 }, (_, t) => drive(log, 100 + t, 150, check));
          const written = (await Promise.all(tasks)).flat();
          expectDisjoint(written);
          await expectIntact(log, written);
          expect(backend.maxUnitWritesInFlight).toBe(1);
          expect(backend.unitWrites.length).toBeGreaterThan(50);
          expect(inFlightChecks).toBeGreaterThan(100);
          await closeRecorded(log, backend);
          const reopened = await openRecorded(file, io, options);
          await expectIntact(reopened.log, written);
          await closeRecorded(reopened.log, reopened.backend);
        } finally {
          cleanup();
        }
      });
    }
  });
}
