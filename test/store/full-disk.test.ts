/**
 * A full disk, for real: a 96 MiB ext4 filesystem on a loop device, a store on it, on both
 * backends. Filling it ends in `NoSpaceError` for the transactions that needed space (nothing of
 * them applied, everything acknowledged intact), never in a store that refuses everything; the
 * store's own deletes and `compact()` make room again (the full-disk reserve is there for them),
 * writes go on in the same process and after a reopen on the still-full disk, `stats()` tells the
 * truth meanwhile, and `close()` returns and releases the lock. Space freed by deleting another
 * file on the filesystem is used again too, without a reopen.
 *
 * Needs root and a loop device (testing/loop-fs.ts); without them every test here is skipped,
 * with the reason printed.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { LssError, NoSpaceError, Store, type StoreOptions } from "../../src/index.ts";
import { commitFilesystem, makeLoopFs, type LoopFs } from "../../testing/loop-fs.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { BACKENDS, scratchDir } from "../helpers.ts";

const FS_BYTES = 96 << 20;
/** Small segments, so a 96 MiB disk holds many and the reserve is a small part of it. */
const OPTIONS: StoreOptions = { segmentSize: 1 << 20, bufferSize: 128 << 10, cacheBytes: 0, blockCacheBytes: 0 };
const CLOSE_DEADLINE_MS = 15_000;

const scratch = scratchDir("full-disk");
const made = makeLoopFs(scratch.dir, FS_BYTES);
const loop: LoopFs | undefined = "skip" in made ? undefined : made;
const skipReason = "skip" in made ? made.skip : undefined;
if (skipReason !== undefined) {
  console.log(`full-disk tests skipped: ${skipReason}`);
  scratch.cleanup();
}

afterAll(() => {
  loop?.cleanup();
  scratch.cleanup();
});

/** The bytes of version `version` of `seid`: a pattern no other seid or version has. */
function valueFor(seid: bigint, version: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  const words = new Uint32Array(bytes.buffer, 0, length >> 2);
  let x = (Number(seid) * 2654435761 + version * 40503) >>> 0;
  for (let i = 0; i < words.length; i++) {
    x = (x + 0x9e3779b9) >>> 0;
    words[i] = x;
  }
  return bytes;
}

interface Model {
  /** seid → [version, length] of every element acknowledged and not deleted. */
  readonly live: Map<bigint, [number, number]>;
  next: number;
}

/**
 * Commit transactions (eight at a time, one 64–96 KiB element each) until some fail. Every
 * failure must be a NoSpaceError, and what failed must not be there. Returns how many committed.
 */
async function fillUntilFull(store: Store, model: Model): Promise<number> {
  let committed = 0;
  for (;;) {
    const batch = Array.from({ length: 8 }, () => {
      const seid = BigInt(++model.next);
      const length = (64 << 10) + (Number(seid) % 5) * (8 << 10);
      return store.transaction((tx) => tx.write(seid, valueFor(seid, 1, length))).then(
        () => ({ seid, length, error: undefined }),
        (error: unknown) => ({ seid, length, error }),
      );
    });
    const results = await Promise.all(batch);
    const refused: bigint[] = [];
    for (const { seid, length, error } of results) {
      if (error === undefined) {
        model.live.set(seid, [1, length]);
        committed += 1;
        continue;
      }
      expect(error).toBeInstanceOf(NoSpaceError);
      expect((error as LssError).code).toBe("LSS_NO_SPACE");
      refused.push(seid);
    }
    if (refused.length === 0) continue;
    // Nothing of a refused transaction was applied.
    for (const seid of refused) expect(store.has(seid)).toBe(false);
    // And the store keeps refusing new data with NoSpaceError, never with ReadOnlyError.
    for (let i = 0; i < 3; i++) {
      const seid = BigInt(++model.next);
      const error = await store.transaction((tx) => tx.write(seid, valueFor(seid, 1, 64 << 10))).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(NoSpaceError);
      expect(store.has(seid)).toBe(false);
    }
    return committed;
  }
}

/** Every acknowledged element reads back exactly, and nothing else is there. */
async function expectModel(store: Store, model: Model): Promise<void> {
  for (const [seid, [version, length]] of model.live) {
    const bytes = await store.read(seid);
    if (bytes === undefined || Buffer.compare(bytes, valueFor(seid, version, length)) !== 0) {
      throw new Error(`seid ${seid}: ${bytes === undefined ? "missing" : `${bytes.length} bytes that differ`}, expected version ${version} of ${length} bytes`);
    }
  }
  expect(store.stats().elements).toBe(model.live.size);
}

/** Delete nine in ten elements (one transaction that only deletes), then compact. */
async function deleteMostAndCompact(store: Store, model: Model): Promise<{ segmentsCleaned: number }> {
  const doomed = [...model.live.keys()].filter((_, i) => i % 10 !== 0);
  await store.transaction((tx) => {
    for (const seid of doomed) tx.delete(seid);
  });
  for (const seid of doomed) model.live.delete(seid);
  return store.compact();
}

/** Write `count` new elements; each must commit. */
async function writeMore(store: Store, model: Model, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const seid = BigInt(++model.next);
    const length = 48 << 10;
    await store.transaction((tx) => tx.write(seid, valueFor(seid, 2, length)));
    model.live.set(seid, [2, length]);
  }
}

/** Close within the deadline; the lock is released (a second open of the file succeeds). */
async function closeAndReopen(store: Store, file: string, options: StoreOptions): Promise<Store> {
  await withTimeout(store.close(), CLOSE_DEADLINE_MS, "close on a full disk");
  return withTimeout(Store.open(file, options), CLOSE_DEADLINE_MS, "reopen");
}

/** Fill the rest of the filesystem with a file of zeros (until ENOSPC). Returns its size. */
function fillWithBallast(file: string): number {
  const chunk = new Uint8Array(1 << 20);
  const fd = fs.openSync(file, "w");
  let written = 0;
  try {
    for (;;) {
      try {
        written += fs.writeSync(fd, chunk);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOSPC") break;
        throw error;
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return written;
}

for (const io of BACKENDS) {
  describe(`a full disk (${FS_BYTES >> 20} MiB ext4 on a loop device) on ${io}`, () => {
    const options: StoreOptions = { ...OPTIONS, io };

    test.skipIf(loop === undefined)("fill until NoSpaceError; delete and compact make room; writes go on; close returns; after a reopen on the full disk the same again", async () => {
      const file = path.join((loop as LoopFs).dir, `${io}.lss`);
      const model: Model = { live: new Map(), next: 0 };
      let store = await Store.open(file, options);
      try {
        const first = await fillUntilFull(store, model);
        expect(first).toBeGreaterThan(800); // ~80 MiB of the 96 MiB disk
        await expectModel(store, model);
        let stats = store.stats();
        expect(stats.readOnly).toBe(false);
        expect(stats.outOfSpace).toBe(true);
        expect(stats.lastError?.code).toBe("LSS_NO_SPACE");
        expect(stats.segmentsReserved).toBeGreaterThan(0);

        // The store's own deletes and compaction make room, in the same process.
        const compacted = await deleteMostAndCompact(store, model);
        stats = store.stats();
        expect(stats.outOfSpace).toBe(false);
        expect(stats.segmentsFree).toBeGreaterThan(stats.segmentsReserved + 10);
        await writeMore(store, model, 50);
        await expectModel(store, model);

        // Full again, then closed on the full disk: close returns and unlocks.
        const second = await fillUntilFull(store, model);
        expect(second).toBeGreaterThan(400);
        store = await closeAndReopen(store, file, options);
        await expectModel(store, model);
        stats = store.stats();
        expect(stats.readOnly).toBe(false);
        expect(stats.outOfSpace).toBe(true); // still full: the reopen's growth found no room
        const refusedSeid = BigInt(++model.next);
        await expect(store.transaction((tx) => tx.write(refusedSeid, valueFor(refusedSeid, 1, 64 << 10)))).rejects.toBeInstanceOf(NoSpaceError);

        // After the reopen, deletes and compaction work on the full disk, then writes again.
        await deleteMostAndCompact(store, model);
        expect(store.stats().outOfSpace).toBe(false);
        await writeMore(store, model, 50);
        await expectModel(store, model);
        console.log(
          `full disk (${io}): ${first} commits until full, ${compacted.segmentsCleaned} segments cleaned, ${second} commits until full again; ` +
            `reserve ${stats.segmentsReserved} segments of ${stats.segmentSize} B; file ${store.stats().fileBytes} B`,
        );
        store = await closeAndReopen(store, file, options);
        await expectModel(store, model);
      } finally {
        try {
          await withTimeout(store.close(), CLOSE_DEADLINE_MS, "close");
        } finally {
          fs.rmSync(file, { force: true });
        }
      }
    }, 120_000);

    test.skipIf(loop === undefined)("space freed by deleting another file is used again, in the same process and after a reopen", async () => {
      const dir = (loop as LoopFs).dir;
      const file = path.join(dir, `${io}-ballast.lss`);
      const ballast = path.join(dir, "ballast");
      const model: Model = { live: new Map(), next: 0 };
      // Half the disk taken by another file; the store fills the rest.
      const chunk = new Uint8Array(1 << 20);
      const fd = fs.openSync(ballast, "w");
      for (let i = 0; i < 40; i++) fs.writeSync(fd, chunk);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      let store = await Store.open(file, options);
      try {
        await fillUntilFull(store, model);
        expect(store.stats().outOfSpace).toBe(true);
        fs.rmSync(ballast);
        commitFilesystem(dir);
        // No delete in the store: its next write finds the room the other file left.
        await writeMore(store, model, 200); // ~10 MiB
        expect(store.stats().outOfSpace).toBe(false);
        await expectModel(store, model);

        // Closed with the disk full again, reopened, then the other file goes.
        const taken = fillWithBallast(ballast);
        expect(taken).toBeGreaterThan(0);
        await fillUntilFull(store, model);
        store = await closeAndReopen(store, file, options);
        const refusedSeid = BigInt(++model.next);
        await expect(store.transaction((tx) => tx.write(refusedSeid, valueFor(refusedSeid, 1, 64 << 10)))).rejects.toBeInstanceOf(NoSpaceError);
        fs.rmSync(ballast);
        commitFilesystem(dir);
        await writeMore(store, model, 200);
        expect(store.stats().outOfSpace).toBe(false);
        await expectModel(store, model);
      } finally {
        try {
          await withTimeout(store.close(), CLOSE_DEADLINE_MS, "close");
        } finally {
          fs.rmSync(file, { force: true });
          fs.rmSync(ballast, { force: true });
        }
      }
    }, 120_000);
  });
}
