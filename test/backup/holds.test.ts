/**
 * The log kept for the next increment (src/backup/holds.ts): after a backup, churn that makes the
 * cleaner reuse the log would force the next backup to be full; with the hold it is an increment
 * (and restores to exactly the store's state); with `retainLogBytes: 0`, or past the cap, the hold
 * is let go and the next backup is full, saying why.
 */
import { afterEach, expect, test } from "bun:test";
import path from "node:path";
import { InvalidArgumentError, Store } from "../../src/index.ts";
import { fillPattern, scratchDir } from "../helpers.ts";

const OPTIONS = {
  segmentSize: 256 << 10,
  bufferSize: 64 << 10,
  numSegmentsPerCheckpoint: 2,
  cleanerUtilisationPercent: 60,
  cleanerLowWaterSegments: 2,
  cleanerHighWaterSegments: 4,
} as const;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function setup(): Promise<{ dir: string; store: Store; seids: bigint[] }> {
  const { dir, cleanup } = scratchDir("backup-holds");
  cleanups.push(cleanup);
  const store = await Store.open(path.join(dir, "s.lss"), OPTIONS);
  cleanups.push(() => store.close());
  const seids = Array.from({ length: 40 }, () => store.allocateSeid());
  return { dir, store, seids };
}

/** Overwrite the same few elements until `bytes` of values were written: the cleaner reuses the log. */
async function churn(store: Store, seids: bigint[], bytes: number, seed: number): Promise<void> {
  let written = 0;
  for (let i = 0; written < bytes; i++) {
    const value = new Uint8Array(2_000 + (i % 7) * 1_000);
    fillPattern(value, seed + i);
    await store.transaction((tx) => tx.write(seids[i % seids.length]!, value));
    written += value.length;
    if (i % 200 === 199) await store.checkpoint();
  }
  await store.checkpoint();
  await store.compact();
}

async function expectRestoresTo(store: Store, target: string, dir: string, name: string, seids: bigint[]): Promise<void> {
  const restoredPath = path.join(dir, name);
  await Store.restore(target, restoredPath);
  const restored = await Store.open(restoredPath);
  try {
    for (const seid of seids) {
      const want = await store.read(seid);
      const got = await restored.read(seid);
      expect(got === undefined ? undefined : Buffer.from(got).toString("hex")).toBe(want === undefined ? undefined : Buffer.from(want).toString("hex"));
    }
  } finally {
    await restored.close();
  }
}

test("after a backup the log is held: churn that reuses the log still gives an increment, which restores exactly", async () => {
  // Control, in a store of its own (holds are of the log, so any target's hold keeps it for all):
  // without a hold the churn makes the cleaner reuse the log since the backup, and the next is full.
  {
    const { dir, store, seids } = await setup();
    const target = path.join(dir, "unheld");
    expect((await store.backup(target, { retainLogBytes: 0 })).kind).toBe("full");
    await churn(store, seids, 3 << 20, 1);
    const again = await store.backup(target, { retainLogBytes: 0 });
    expect(again.kind).toBe("full");
    expect(again.reason).toContain("reused");
  }
  const { dir, store, seids } = await setup();
  const target = path.join(dir, "held");
  expect((await store.backup(target)).kind).toBe("full");
  await churn(store, seids, 3 << 20, 1);
  const inc = await store.backup(target);
  expect(inc.kind).toBe("incremental");
  await expectRestoresTo(store, target, dir, "restored.lss", seids);
}, 120_000);

test("past retainLogBytes the hold is let go and the next backup is full; a bad value is refused before anything is done", async () => {
  const { dir, store, seids } = await setup();
  const target = path.join(dir, "capped");
  await expect(store.backup(target, { retainLogBytes: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
  expect((await store.backup(target, { retainLogBytes: 512 << 10 })).kind).toBe("full");
  await churn(store, seids, 3 << 20, 2);
  // Holds are checked against their cap every 250 ms: once let go, more churn reuses the log.
  await Bun.sleep(600);
  await churn(store, seids, 3 << 20, 3);
  const next = await store.backup(target);
  expect(next.kind).toBe("full");
  expect(next.reason).toContain("reused");
  await expectRestoresTo(store, target, dir, "restored.lss", seids);
}, 120_000);
