/**
 * A fast-check property over random interleavings of reserve / write / release / flush / poll /
 * read from many async tasks on a real LogStructuredStore with small buffers (16 KiB) and small
 * segments (256 KiB), so units and segments roll over all the time.
 *
 * Checked: every payload reads back intact after flush and after close + reopen; each unit is
 * written exactly once (the recording backend sees every write); stableAddress never goes
 * backwards and never passes a byte whose write has not been released.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import path from "node:path";
import type { Reservation } from "../../src/log/ring.ts";
import { BACKENDS, failFast, scratchDir } from "../helpers.ts";
import { closeRecorded, expectDisjoint, expectIntact, KiB, openRecorded, payload, type Written } from "./util.ts";

const BUFFER = 16 * KiB;
const SEGMENT = 256 * KiB;
const MAX_PAYLOAD = BUFFER - 64;

type Op =
  | { kind: "append"; size: number; inPlace: boolean; hold: number }
  | { kind: "flush" }
  | { kind: "poll" }
  | { kind: "read"; pick: number }
  | { kind: "yield"; how: number };

const sizeArb = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 0, max: 64 }) },
  { weight: 4, arbitrary: fc.integer({ min: 65, max: 4096 }) },
  { weight: 2, arbitrary: fc.integer({ min: 4097, max: MAX_PAYLOAD }) },
  { weight: 1, arbitrary: fc.constant(MAX_PAYLOAD) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ kind: fc.constant("append" as const), size: sizeArb, inPlace: fc.boolean(), hold: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: "poll" as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("read" as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("yield" as const), how: fc.nat(2) }) },
);

const scenarioArb = fc.record({
  writeMode: fc.constantFrom("tailLocalized" as const, "serialized" as const),
  ringSize: fc.integer({ min: 2, max: 6 }),
  tasks: fc.array(fc.array(opArb, { minLength: 10, maxLength: 80, size: "max" }), { minLength: 3, maxLength: 10, size: "max" }),
});

function pause(how: number): Promise<void> {
  if (how === 0) return Promise.resolve();
  if (how === 1) return new Promise((resolve) => setImmediate(resolve));
  return Bun.sleep(0);
}

for (const io of BACKENDS) {
  describe(`log interleavings: ${io}`, () => {
    test("random interleavings of many tasks: intact, written once, stable never passes unreleased bytes", async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(scenarioArb, failFast(`log interleavings on ${io}`, async ({ writeMode, ringSize, tasks }) => {
          const { dir, cleanup } = scratchDir(`log-interleave-${io}`);
          const file = path.join(dir, `run-${run++}.lss`);
          try {
            const options = { writeMode, ringSize, bufferSize: BUFFER, segmentSize: SEGMENT };
            const { log, backend } = await openRecorded(file, io, options);
            const written: Written[] = [];
            const held = new Set<Reservation>();
            let lastStable = log.stableAddress;
            let nextSeed = 1;
            const check = (): void => {
              const stable = log.stableAddress;
              if (stable < lastStable) throw new Error(`stableAddress went back from ${lastStable} to ${stable}`);
              lastStable = stable;
              for (const r of held) {
                if (log.isDurable(r.address) || stable > r.address) {
                  throw new Error(`stableAddress ${stable} passed reservation ${r.address} that is not released`);
                }
              }
            };
            // Invariants are also checked on every reap, i.e. whenever completions reach the log.
            backend.onReap = check;

            const runTask = async (ops: Op[]): Promise<void> => {
              for (const op of ops) {
                switch (op.kind) {
                  case "append": {
                    const seed = nextSeed++;
                    const bytes = payload(op.size, seed);
                    const r = op.inPlace ? (log.tryReserve(op.size) ?? (await log.reserveSpace(op.size))) : await log.reserveSpace(op.size);
                    expect(r.lengthBytes).toBe(op.size);
                    held.add(r);
                    check();
                    for (let i = 0; i < op.hold; i++) {
                      await pause(i % 3);
                      check();
                    }
                    if (op.inPlace) {
                      r.bytes.set(bytes);
                      held.delete(r);
                      log.release(r);
                    } else {
                      held.delete(r);
                      log.writePayload(bytes, r);
                    }
                    written.push({ address: r.address, length: op.size, seed });
                    break;
                  }
                  case "flush": {
                    const reservedBefore = written.length;
                    const mark = written.slice(0, reservedBefore);
                    await log.flush();
                    // Everything released before the flush began is durable now.
                    for (const w of mark) expect(log.isDurable(w.address + Math.max(w.length, 1) - 1)).toBe(true);
                    break;
                  }
                  case "poll":
                    log.pollCompletions();
                    break;
                  case "read": {
                    if (written.length === 0) break;
                    const w = written[op.pick % written.length] as Written;
                    await expectIntact(log, [w]);
                    break;
                  }
                  case "yield":
                    await pause(op.how);
                    break;
                }
                check();
              }
            };
            const watchdog = process.env.LOG_TEST_DEBUG
              ? setTimeout(() => {
                  const l = log as unknown as { rotation: Record<string, unknown>; flusher: Record<string, unknown> };
                  console.log("STUCK", {
                    current: log.currentCounter,
                    finalized: l.rotation.finalizedCounter,
                    pendingOpen: l.rotation.pendingOpen,
                    ready: [...(l.flusher.readyToFlush as Set<number>)],
                    states: log.slots.map((b) => [b.counter, b.state.toString(16), b.offsetBytes, b.capacityWords * 8, b.baseAddress]),
                    held: [...held].map((r) => [r.address, r.slot]),
                    inFlight: backend.inFlight,
                  });
                }, 3000)
              : undefined;
            await Promise.all(tasks.map((ops) => runTask(ops)));
            clearTimeout(watchdog);
            if (process.env.LOG_TEST_DEBUG) console.log(writeMode, ringSize, tasks.length, written.length, backend.unitWrites.length, log.stableAddress);
            await log.flush();
            check();
            expect(held.size).toBe(0);
            expectDisjoint(written);
            for (const w of written) expect(w.address + w.length).toBeLessThanOrEqual(log.stableAddress);
            await expectIntact(log, written);

            // Each unit written exactly once, and every write the log counted went through the wrapper.
            const offsets = new Set(backend.unitWrites.map((w) => w.fileOffset));
            const addresses = new Set(backend.unitWrites.map((w) => w.header.address));
            expect(offsets.size).toBe(backend.unitWrites.length);
            expect(addresses.size).toBe(backend.unitWrites.length);
            expect(log.stats().unitsWritten).toBe(backend.unitWrites.length);
            if (writeMode === "serialized") expect(backend.maxUnitWritesInFlight).toBeLessThanOrEqual(1);
            const sealedEnd = log.sealedEnd;
            expect(log.stableAddress).toBe(sealedEnd);
            await closeRecorded(log, backend);

            // Reopen: the walk finds exactly the units written, and every payload is intact.
            const reopened = await openRecorded(file, io, { ...options, deferRecovery: true });
            const walked: number[] = [];
            await reopened.log.recover(undefined, (unit) => void walked.push(unit.header.address));
            expect(walked).toEqual(backend.unitWrites.map((w) => w.header.address).sort((a, b) => a - b));
            expect(reopened.log.stableAddress).toBe(sealedEnd);
            await expectIntact(reopened.log, written);
            expect(reopened.log.rootBlock.uncleanShutdowns).toBe(0);
            await closeRecorded(reopened.log, reopened.backend);
          } finally {
            cleanup();
          }
        })),
        { numRuns: Number(process.env.LOG_RUNS ?? 20), seed: Number(process.env.LOG_SEED ?? (io === "uring" ? 0xb100 : 0xb10f)), endOnFailure: process.env.LOG_SHRINK === undefined },
      );
    });
  });
}
