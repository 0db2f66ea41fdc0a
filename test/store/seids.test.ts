/**
 * `allocateSeid()` never hands out a seid that holds an element. Before, a seid written by hand
 * inside its range came out of the allocator, and the caller's next write silently replaced the
 * user's element. Checked live, after a reopen (from a checkpoint and from replay), in a created
 * space, for seids written by a standby's primary, and for the cost of stepping over many.
 * (Seids written by or allocated in Workers: test/workers/workers.test.ts.)
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { SECRET, STORE_OPTIONS } from "../replication/util.ts";
import { BACKENDS, scratchDir } from "../helpers.ts";

const SMALL = { segmentSize: 256 << 10, bufferSize: 64 << 10 } as const;

function seidOf(space: number, low: number): bigint {
  return (BigInt(space) << 32n) | BigInt(low);
}

function valueOf(seid: bigint): Uint8Array {
  return new TextEncoder().encode(`user's element ${seid}`);
}

/** Write `seids` by hand (no allocation), each with its own value. */
async function writeByHand(store: Store, seids: readonly bigint[]): Promise<void> {
  await store.transaction((tx) => {
    for (const seid of seids) tx.write(seid, valueOf(seid));
  });
}

async function expectIntact(store: Store, seids: readonly bigint[]): Promise<void> {
  for (const seid of seids) expect(await store.read(seid)).toEqual(valueOf(seid));
}

for (const io of BACKENDS) {
  describe(`allocateSeid on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    let file: string;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`seids-${io}`));
      file = path.join(dir, "s.lss");
    });
    afterEach(() => cleanup());

    test("steps over seids written by hand, and the user's elements stay", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const byHand = [seidOf(1, 1), seidOf(1, 2), seidOf(1, 4), seidOf(1, 5), seidOf(1, 6), seidOf(1, 9)];
      await writeByHand(store, byHand);
      const allocated = Array.from({ length: 5 }, () => store.allocateSeid());
      expect(allocated).toEqual([seidOf(1, 3), seidOf(1, 7), seidOf(1, 8), seidOf(1, 10), seidOf(1, 11)]);
      for (const seid of allocated) expect(store.has(seid)).toBe(false);
      // What the allocations are for: writing them leaves every user element as it was.
      await store.transaction((tx) => {
        for (const seid of allocated) tx.write(seid, new Uint8Array([0xee]));
      });
      await expectIntact(store, byHand);
      // A seid handed out and then deleted is not handed out again (the counter moved past it).
      await store.transaction((tx) => tx.delete(allocated[0] as bigint));
      expect(store.allocateSeid()).toBe(seidOf(1, 12));
    });

    test("in a created space, and ahead of the counter after a reopen (checkpoint and replay)", async () => {
      let store = await Store.open(file, { io, ...SMALL });
      const space = store.createSeidSpace();
      expect(store.allocateSeid(space)).toBe(seidOf(space, 1));
      await writeByHand(store, [seidOf(space, 2), seidOf(space, 3)]);
      expect(store.allocateSeid(space)).toBe(seidOf(space, 4));
      const counterBefore = store.allocateSeid(); // space 1: seidOf(1, 1)
      expect(counterBefore).toBe(seidOf(1, 1));
      // Ahead of the counters, then a clean close (a checkpoint holds the map).
      const ahead = [seidOf(1, 2), seidOf(1, 3), seidOf(space, 5)];
      await writeByHand(store, ahead);
      await store.close();
      store = await Store.open(file, { io, ...SMALL });
      expect(store.stats().recovery.checkpointLoaded).toBe(true);
      expect(store.allocateSeid()).toBe(seidOf(1, 4));
      expect(store.allocateSeid(space)).toBe(seidOf(space, 6));
      await store.close();
      // Written by a process that exits without close(): the next open replays them from the log.
      const replayed = [seidOf(1, 5), seidOf(1, 6), seidOf(space, 7)];
      const child = Bun.spawnSync([process.execPath, path.join(import.meta.dir, "seids-child.ts"), file, ...replayed.map(String)], { timeout: 30_000 });
      expect(child.exitCode).toBe(0);
      store = await Store.open(file, { io, ...SMALL });
      try {
        expect(store.stats().recovery.transactionsReplayed).toBe(1);
        expect(store.allocateSeid()).toBe(seidOf(1, 7));
        expect(store.allocateSeid(space)).toBe(seidOf(space, 8));
        await expectIntact(store, [seidOf(space, 2), seidOf(space, 3), ...ahead, ...replayed]);
      } finally {
        await store.close();
      }
    });

    test("stepping over many live seids is one lookup each, once", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const count = 50_000;
      await store.transaction((tx) => {
        for (let low = 1; low <= count; low++) tx.write(seidOf(1, low), new Uint8Array(1));
      });
      let started = performance.now();
      expect(store.allocateSeid()).toBe(seidOf(1, count + 1));
      const firstMs = performance.now() - started;
      started = performance.now();
      for (let i = 2; i <= 10_000; i++) expect(store.allocateSeid()).toBe(seidOf(1, count + i));
      const nextMs = performance.now() - started;
      // Bounds far above what it takes (≈6–10 ms and ≈30 ms here, expects included): they catch
      // a scan of the whole map per call (50 000 × 10 000 lookups), not a slow machine.
      expect(firstMs).toBeLessThan(2_000);
      expect(nextMs).toBeLessThan(5_000);
    });
  });
}

test("after promotion, a standby steps over the seids its primary wrote by hand", async () => {
  const { dir, cleanup } = scratchDir("seids-standby");
  const closers: Array<() => Promise<void>> = [];
  try {
    const primary = await Store.open(path.join(dir, "primary.lss"), STORE_OPTIONS);
    closers.push(() => primary.close());
    const allocated = primary.allocateSeid(); // seidOf(1, 1): the counter the standby gets
    const byHand = [seidOf(1, 2), seidOf(1, 3), seidOf(1, 5)];
    await primary.transaction((tx) => tx.write(allocated, new Uint8Array([1])));
    const server = await primary.serveReplication({ unix: path.join(dir, "p.sock"), secret: SECRET, log: () => {} });
    const standby = await Store.openStandby(path.join(dir, "standby.lss"), { primary: { unix: path.join(dir, "p.sock") }, secret: SECRET, store: STORE_OPTIONS, log: () => {} });
    closers.push(() => standby.close());
    await writeByHand(primary, byHand);
    await standby.caughtUp({ timeoutMs: 20_000 });
    await server.close();
    const promoted = await standby.promote();
    await expectIntact(promoted, byHand);
    expect([promoted.allocateSeid(), promoted.allocateSeid()]).toEqual([seidOf(1, 4), seidOf(1, 6)]);
  } finally {
    for (const close of closers.reverse()) await close().catch(() => {});
    cleanup();
  }
}, 60_000);
