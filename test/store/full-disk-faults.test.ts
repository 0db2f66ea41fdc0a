/**
 * A full disk without a loop device: ENOSPC injected by the fault backend (testing/) where it can
 * arise — growing the file (fallocate), a unit write, a datasync — and `maxFileBytes` on the real
 * backends. And `close()` after an I/O failure with I/O still in flight, on the real backends.
 *
 * What must hold: a transaction that needs space it cannot have gets `NoSpaceError` and nothing
 * of it is applied; the store never turns read-only for lack of space where it could refuse
 * instead; deletes, `compact()` and checkpoints work in the full-disk reserve; writes resume once
 * space is back; a write or datasync that fails for lack of space after its transactions were
 * applied is tried again (and only if it never succeeds does the log fail, as on an I/O error);
 * `stats()` says which; `close()` returns and releases the file; a reopen finds every
 * acknowledged transaction. Every injected fault is counted and the counts are asserted.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import path from "node:path";
import { NoSpaceError, ReadOnlyError, Store, type StoreOptions } from "../../src/index.ts";
import { RETRY_LIMIT } from "../../src/log/durability.ts";
import { openStore } from "../../src/store/store.ts";
import { ENOSPC, FaultBackend } from "../../testing/fault-backend.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { BACKENDS, rng, scratchDir } from "../helpers.ts";

const OPTIONS: StoreOptions = { segmentSize: 64 << 10, bufferSize: 16 << 10, cacheBytes: 0, numSegmentsPerCheckpoint: 4 };
const DEADLINE_MS = 10_000;

/** Distinct bytes per (seid, version). */
function valueFor(seid: bigint, version: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = (Number(seid) * 2654435761 + version * 40503) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

/** What the store must hold: every acknowledged write not deleted since. */
type Model = Map<bigint, Uint8Array>;

async function expectModel(store: Store, model: Model): Promise<void> {
  for (const [seid, value] of model) {
    const got = await store.read(seid);
    if (got === undefined || Buffer.compare(got, value) !== 0) throw new Error(`seid ${seid}: ${got === undefined ? "missing" : "wrong bytes"}`);
  }
  expect(store.stats().elements).toBe(model.size);
}

/** Commit a write of `seids`; on NoSpaceError check nothing of it was applied. Returns the error. */
async function write(store: Store, model: Model, seids: bigint[], version: number, length: number): Promise<unknown> {
  const values = seids.map((seid) => valueFor(seid, version, length));
  const before = seids.map((seid) => store.has(seid));
  try {
    await store.transaction((tx) => seids.forEach((seid, i) => tx.write(seid, values[i] as Uint8Array)));
  } catch (error) {
    expect(error).toBeInstanceOf(NoSpaceError);
    seids.forEach((seid, i) => expect(store.has(seid)).toBe(before[i] as boolean));
    return error;
  }
  seids.forEach((seid, i) => model.set(seid, values[i] as Uint8Array));
  return undefined;
}

async function deleteAll(store: Store, model: Model, seids: bigint[]): Promise<void> {
  await store.transaction((tx) => seids.forEach((seid) => tx.delete(seid)));
  for (const seid of seids) model.delete(seid);
}

/** Reopen on a clean backend: the model holds; one more transaction commits. */
async function reopenAndCheck(file: string, model: Model): Promise<void> {
  const clean = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
  try {
    const store = await withTimeout(openStore(file, OPTIONS, clean), DEADLINE_MS, "reopen");
    try {
      await expectModel(store, model);
      expect(await write(store, model, [1_000_000n], 1, 100)).toBeUndefined();
    } finally {
      await withTimeout(store.close(), DEADLINE_MS, "close after reopen");
    }
  } finally {
    clean.close();
  }
}

describe("ENOSPC injected by the fault backend", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("full-disk-faults"));
  });
  afterAll(() => cleanup());

  test("fallocate fails from the Nth growth on: NoSpaceError for new data, never read-only; deletes, compact and checkpoint work; writes resume once cleared", async () => {
    let injected = 0;
    let refusedTotal = 0;
    for (const nth of [1, 5, 8, 13, 21]) {
      const file = path.join(dir, `growth-${nth}.lss`);
      const fault = new FaultBackend({ seed: nth, syncIo: true, simulateSync: true, direct: false });
      const model: Model = new Map();
      const next = rng(nth);
      let seid = 0n;
      const store = await openStore(file, OPTIONS, fault);
      try {
        fault.injectError({ nth, errno: ENOSPC, sticky: true, sites: ["allocateSpace"] });
        // Mostly new elements, so the file must grow; some deletes on the way.
        let refused = 0;
        for (let t = 0; t < 400 && refused < 5; t++) {
          if (t % 10 === 9 && model.size > 0) {
            await deleteAll(store, model, [[...model.keys()][Math.floor(next() * model.size)] as bigint]);
            continue;
          }
          const seids = [++seid, ++seid];
          const error = await write(store, model, seids, 1, 1000 + Math.floor(next() * 8000));
          if (error === undefined) continue;
          refused += 1;
          const stats = store.stats();
          expect(stats.readOnly).toBe(false);
          expect(stats.outOfSpace).toBe(true);
          expect(stats.lastError?.code).toBe("LSS_NO_SPACE");
        }
        expect(refused).toBe(5); // the fault made the store refuse new data
        refusedTotal += refused;
        await expectModel(store, model);

        // Still failing to grow: the store empties itself in its reserve.
        await deleteAll(store, model, [...model.keys()].filter((_, i) => i % 5 !== 0));
        await withTimeout(store.compact(), DEADLINE_MS, "compact on a full disk");
        await withTimeout(store.checkpoint(), DEADLINE_MS, "checkpoint on a full disk");
        if (nth > 1) {
          // It had grown past its reserve before the disk filled: emptied, it has room for data.
          expect(store.stats().outOfSpace).toBe(false);
          for (let t = 0; t < 5; t++) expect(await write(store, model, [++seid], 2, 4000)).toBeUndefined();
        } else {
          // Full from the start: only the reserve is there, and it is not for new data.
          expect(store.stats().outOfSpace).toBe(true);
        }
        await expectModel(store, model);

        // The disk has room again: writes that need new segments commit.
        injected += fault.counts.injectedErrors;
        fault.clearFaults();
        for (let t = 0; t < 60; t++) expect(await write(store, model, [++seid, ++seid], 3, 6000)).toBeUndefined();
        expect(store.stats().outOfSpace).toBe(false);
        expect(store.stats().readOnly).toBe(false);
        await expectModel(store, model);
      } finally {
        await withTimeout(store.close(), DEADLINE_MS, "close");
        fault.close();
      }
      await reopenAndCheck(file, model);
    }
    console.log(`growth faults: ${injected} fallocate calls failed with ENOSPC, ${refusedTotal} transactions refused`);
    expect(injected).toBeGreaterThanOrEqual(5 * 5);
  }, 60_000);

  test("ENOSPC once on a unit write or a datasync is ridden out: the same write is tried again, no transaction fails", async () => {
    let injected = 0;
    for (const site of ["write", "datasync"] as const) {
      for (const nth of [1, 2, 3, 5, 8]) {
        const file = path.join(dir, `transient-${site}-${nth}.lss`);
        // O_DIRECT: a datasync is tried again only where no page cache can have dropped data.
        const fault = new FaultBackend({ seed: nth, syncIo: true, simulateSync: true, direct: true });
        const model: Model = new Map();
        const store = await openStore(file, OPTIONS, fault);
        try {
          expect(store.stats().io).toBeDefined();
          fault.injectError({ nth, errno: ENOSPC, sites: [site] });
          for (let k = 1n; k <= 30n; k++) expect(await write(store, model, [k], 1, 3000)).toBeUndefined();
          expect(fault.counts.injectedErrors).toBe(1);
          injected += fault.counts.injectedErrors;
          const stats = store.stats();
          expect(stats.readOnly).toBe(false);
          expect(stats.outOfSpace).toBe(false);
          await expectModel(store, model);
        } finally {
          await withTimeout(store.close(), DEADLINE_MS, "close");
          fault.close();
        }
        await reopenAndCheck(file, model);
      }
    }
    expect(injected).toBe(10);
  }, 60_000);

  test("ENOSPC on every unit write: after a few tries the log fails as on an I/O error; stats say read-only; close returns; a reopen keeps what was acknowledged", async () => {
    for (const site of ["write", "datasync"] as const) {
      const file = path.join(dir, `persistent-${site}.lss`);
      const fault = new FaultBackend({ syncIo: true, simulateSync: true, direct: true });
      const model: Model = new Map();
      const store = await openStore(file, OPTIONS, fault);
      let failed: unknown;
      try {
        for (let k = 1n; k <= 10n; k++) expect(await write(store, model, [k], 1, 3000)).toBeUndefined();
        fault.injectError({ nth: 1, errno: ENOSPC, sticky: true, sites: [site] });
        // Applied before its write failed: it can neither be acknowledged nor failed alone, so it
        // waits while the write is tried again, then fails with the log.
        failed = await withTimeout(
          store.transaction((tx) => tx.write(11n, valueFor(11n, 1, 3000))).then(
            () => undefined,
            (error: unknown) => error,
          ),
          DEADLINE_MS,
          "the transaction whose write finds no space",
        );
        expect(failed).toBeInstanceOf(NoSpaceError);
        expect(fault.counts.injectedErrors).toBe(RETRY_LIMIT + 1);
        await expect(store.transaction((tx) => tx.write(12n, new Uint8Array(10)))).rejects.toBeInstanceOf(ReadOnlyError);
        const stats = store.stats();
        expect(stats.readOnly).toBe(true);
        expect(stats.lastError?.code).toBe("LSS_NO_SPACE");
        // Reads still work.
        await expectModel(store, new Map([...model, [11n, valueFor(11n, 1, 3000)]]));
      } finally {
        await withTimeout(store.close(), DEADLINE_MS, "close after the log failed");
        fault.close();
      }
      // Seid 11's outcome is unknown (not acknowledged): either way is right, the rest is exact.
      const clean = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
      const reopened = await withTimeout(openStore(file, OPTIONS, clean), DEADLINE_MS, "reopen");
      const eleven = await reopened.read(11n);
      if (eleven !== undefined) model.set(11n, valueFor(11n, 1, 3000));
      await expectModel(reopened, model);
      await reopened.close();
      clean.close();
    }
  }, 60_000);
});

for (const io of BACKENDS) {
  describe(`maxFileBytes as a full disk on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    beforeAll(() => {
      ({ dir, cleanup } = scratchDir(`max-file-${io}`));
    });
    afterAll(() => cleanup());

    test("full at maxFileBytes: NoSpaceError, then delete and compact make room, writes go on, in the same process and after a reopen", async () => {
      const file = path.join(dir, "max.lss");
      const options: StoreOptions = { ...OPTIONS, io, maxFileBytes: 8192 + 48 * (64 << 10) };
      const model: Model = new Map();
      let seid = 0n;
      const fill = async (store: Store): Promise<number> => {
        let committed = 0;
        while ((await write(store, model, [++seid, ++seid], 1, 6000)) === undefined) committed += 1;
        // Refused, not read-only: the next one is refused the same way.
        expect(await write(store, model, [++seid], 1, 6000)).toBeInstanceOf(NoSpaceError);
        expect(store.stats().readOnly).toBe(false);
        expect(store.stats().outOfSpace).toBe(true);
        expect(store.stats().fileBytes).toBeLessThanOrEqual(options.maxFileBytes as number);
        return committed;
      };
      const emptyMost = async (store: Store): Promise<void> => {
        await deleteAll(store, model, [...model.keys()].filter((_, i) => i % 10 !== 0));
        await store.compact();
        expect(store.stats().outOfSpace).toBe(false);
        for (let t = 0; t < 20; t++) expect(await write(store, model, [++seid], 2, 6000)).toBeUndefined();
      };
      let store = await Store.open(file, options);
      try {
        expect(await fill(store)).toBeGreaterThan(100);
        await expectModel(store, model);
        await emptyMost(store);
        await fill(store);
        await withTimeout(store.close(), DEADLINE_MS, "close when full");
        store = await Store.open(file, options);
        await expectModel(store, model);
        expect(await write(store, model, [++seid], 1, 6000)).toBeInstanceOf(NoSpaceError);
        await emptyMost(store);
        await expectModel(store, model);
      } finally {
        await withTimeout(store.close(), DEADLINE_MS, "close");
      }
    }, 60_000);

    test("close() after an I/O failure with a write and its linked datasync in flight returns and releases the file", async () => {
      // In a child: before the fix this hung for good (io_uring) or rejected and kept the lock.
      const child = Bun.spawn([process.execPath, path.join(import.meta.dir, "close-after-failure-child.ts"), io, dir], { stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => child.kill(), 20_000);
      const [code, out, err] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
      clearTimeout(timer);
      if (code !== 0) console.error(`child (${io}) exited ${code}:\n${out}\n${err}`);
      expect(code).toBe(0);
      expect(out).toContain("closed");
      expect(out).toContain("reopened");
    }, 30_000);
  });
}
