/**
 * A new store is small on disk and grows as needed (issue 17: an empty store was ~33.5 MB, a
 * root region, one 8 MiB segment and three more allocated ahead as the full-disk reserve).
 *
 * With default options, a new store takes at most 1 MiB, counted both by its size and by the
 * blocks the filesystem allocated to it, open, closed and reopened. Written to, it grows with
 * what it holds, a piece at a time (not a segment at a time), and the full-disk reserve stays
 * allocated ahead of the log all along: the room the log can still append into without new
 * blocks is never less than the reserve. When the file cannot grow, writes are refused with
 * `NoSpaceError` while deletes and checkpoints go on in that reserve, and everything
 * acknowledged is there after a reopen.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { NoSpaceError, Store } from "../../src/index.ts";
import { DEFAULT_SEGMENT_BYTES } from "../../src/log/address.ts";
import { openStore, storeInternals } from "../../src/store/store.ts";
import { ENOSPC, FaultBackend } from "../../testing/fault-backend.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { BACKENDS, fillPattern, scratchDir } from "../helpers.ts";

const MiB = 1 << 20;
const DEADLINE_MS = 15_000;

const scratch = scratchDir("empty-size");
afterAll(() => scratch.cleanup());

/** The file's size and the bytes of blocks allocated to it (what `du` counts). */
function onDisk(file: string): { size: number; allocated: number } {
  const stat = fs.statSync(file);
  return { size: stat.size, allocated: stat.blocks * 512 };
}

function valueOf(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  fillPattern(bytes, seed);
  return bytes;
}

for (const io of BACKENDS) {
  describe(`store size on disk (${io})`, () => {
    test("a new store with default options is at most 1 MiB, by size and by blocks allocated, open, closed and reopened", async () => {
      const file = path.join(scratch.dir, `empty-${io}.lss`);
      const store = await Store.open(file, { io });
      try {
        expect(store.stats().segmentSize).toBe(DEFAULT_SEGMENT_BYTES);
        const open = onDisk(file);
        expect(open.size).toBeLessThanOrEqual(MiB);
        expect(open.allocated).toBeLessThanOrEqual(MiB);
        // Its reserve is there, allocated, inside that MiB.
        const reserve = store.stats().reserveBytes;
        expect(reserve).toBeGreaterThan(0);
        expect(storeInternals(store).core.log.roomBytes).toBeGreaterThanOrEqual(reserve);
      } finally {
        await store.close();
      }
      const closed = onDisk(file);
      expect(closed.size).toBeLessThanOrEqual(MiB);
      expect(closed.allocated).toBeLessThanOrEqual(MiB);
      const again = await Store.open(file, { io });
      await again.close();
      const reopened = onDisk(file);
      expect(reopened.size).toBeLessThanOrEqual(MiB);
      expect(reopened.allocated).toBeLessThanOrEqual(MiB);
      console.log(`empty store (${io}): ${closed.size} B, ${closed.allocated} B allocated; after a reopen ${reopened.size} B`);
      fs.rmSync(file);
    });

    test("it grows with what is written, a piece at a time, keeping the full-disk reserve allocated ahead of the log", async () => {
      const file = path.join(scratch.dir, `grow-${io}.lss`);
      const store = await Store.open(file, { io });
      const log = storeInternals(store).core.log;
      const written = new Map<bigint, Uint8Array>();
      let previous = onDisk(file).size;
      let grew = 0;
      try {
        // 3 MiB of 24 KiB values, in durable transactions of two values each.
        for (let t = 0; t < 64; t++) {
          await store.transaction((tx) => {
            for (let k = 0; k < 2; k++) {
              const seid = BigInt(t * 2 + k + 1);
              const value = valueOf(t * 2 + k, 24 << 10);
              tx.write(seid, value);
              written.set(seid, value);
            }
          });
          const now = onDisk(file);
          const stats = store.stats();
          // The file holds the log written so far and, beyond it, at least the reserve.
          expect(log.roomBytes).toBeGreaterThanOrEqual(stats.reserveBytes);
          expect(now.size).toBeGreaterThanOrEqual(log.stableAddress + stats.reserveBytes);
          // No holes: every byte of it is allocated (fallocate, never a sparse extension).
          expect(now.allocated).toBeGreaterThanOrEqual(now.size);
          if (now.size > previous) grew += 1;
          // A piece at a time, never a default segment (8 MiB) at once.
          expect(now.size - previous).toBeLessThan(DEFAULT_SEGMENT_BYTES / 4);
          previous = now.size;
        }
        const stats = store.stats();
        expect(grew).toBeGreaterThan(4);
        // Holds its 3 MiB and not much more: well under a segment beyond what was written.
        expect(stats.fileBytes).toBeGreaterThan(3 * MiB);
        expect(stats.fileBytes).toBeLessThan(log.stableAddress + stats.reserveBytes + 2 * MiB);
        console.log(`grown (${io}): ${stats.fileBytes} B file for ${log.stableAddress} B of log, reserve ${stats.reserveBytes} B, ${grew} growths`);
      } finally {
        await store.close();
      }
      const again = await Store.open(file, { io });
      try {
        for (const [seid, value] of written) expect(Buffer.compare((await again.read(seid)) as Uint8Array, value)).toBe(0);
      } finally {
        await again.close();
      }
      fs.rmSync(file);
    });
  });
}

/**
 * Write 20 KB values at seids `from`.. (before `to`) until `refusals` writes were refused, each
 * with NoSpaceError and nothing of it applied; the others join `model`. Returns the refusals.
 */
async function writeUntilRefused(store: Store, model: Map<bigint, Uint8Array>, from: bigint, to: bigint, refusals: number): Promise<number> {
  let refused = 0;
  for (let k = from; k < to && refused < refusals; k++) {
    const value = valueOf(Number(k), 20_000);
    try {
      await store.transaction((tx) => tx.write(k, value));
      model.set(k, value);
    } catch (error) {
      expect(error).toBeInstanceOf(NoSpaceError);
      expect((error as NoSpaceError).code).toBe("LSS_NO_SPACE");
      expect(store.has(k)).toBe(false);
      refused += 1;
    }
  }
  return refused;
}

describe("a small store that cannot grow (ENOSPC injected on every growth)", () => {
  test("new data gets NoSpaceError; deletes and checkpoints go on in the reserve; writes resume once it can grow; a reopen has everything acknowledged", async () => {
    const file = path.join(scratch.dir, "no-growth.lss");
    const fault = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
    const model = new Map<bigint, Uint8Array>();
    let refused = 0;
    try {
      const store = await openStore(file, {}, fault);
      try {
        for (let k = 1n; k <= 8n; k++) {
          const value = valueOf(Number(k), 20_000);
          await store.transaction((tx) => tx.write(k, value));
          model.set(k, value);
        }
        fault.injectError({ nth: 1, errno: ENOSPC, sticky: true, sites: ["allocateSpace"] });
        // Writes until refused: what the file holds beyond the reserve runs out.
        refused = await writeUntilRefused(store, model, 100n, 400n, 3);
        expect(refused).toBe(3);
        expect(fault.counts.injectedErrors).toBeGreaterThan(0);
        let stats = store.stats();
        expect(stats.outOfSpace).toBe(true);
        expect(stats.readOnly).toBe(false);
        // The file did not grow past the point where the disk filled, and the reserve is intact.
        expect(storeInternals(store).core.log.roomBytes).toBeGreaterThanOrEqual(stats.reserveBytes);
        // Deletes (one transaction each) and checkpoints use the reserve.
        for (const seid of [...model.keys()].slice(0, 6)) {
          await withTimeout(store.transaction((tx) => tx.delete(seid)), DEADLINE_MS, "a delete on a full disk");
          model.delete(seid);
        }
        await withTimeout(store.checkpoint(), DEADLINE_MS, "a checkpoint on a full disk");
        stats = store.stats();
        expect(stats.readOnly).toBe(false);
        // Less data needs a smaller reserve: some writes fit again, and then they are refused
        // again, the reserve still whole.
        expect(await writeUntilRefused(store, model, 400n, 700n, 1)).toBe(1);
        expect(storeInternals(store).core.log.roomBytes).toBeGreaterThanOrEqual(store.stats().reserveBytes);
        // The disk has room again: writes go on.
        fault.clearFaults();
        for (let k = 500n; k < 520n; k++) {
          const value = valueOf(Number(k), 20_000);
          await store.transaction((tx) => tx.write(k, value));
          model.set(k, value);
        }
        expect(store.stats().outOfSpace).toBe(false);
      } finally {
        await withTimeout(store.close(), DEADLINE_MS, "close");
      }
    } finally {
      fault.close();
    }
    const again = await Store.open(file, { io: "portable" });
    try {
      expect(again.stats().elements).toBe(model.size);
      for (const [seid, value] of model) expect(Buffer.compare((await again.read(seid)) as Uint8Array, value)).toBe(0);
    } finally {
      await again.close();
    }
  });
});
