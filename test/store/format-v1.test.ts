/**
 * A file written by format version 1 (before Commit records carried a time) still opens: its
 * checkpoint loads, its log after the checkpoint replays (version-1 Commit records have an empty
 * body), every value reads back exactly, and the first writable open upgrades its root block to
 * the current version while the old log stays readable.
 */
import { expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { FORMAT_VERSION } from "../../src/log/format.ts";
import { storeInternals } from "../../src/store/store.ts";
import { scratchDir } from "../helpers.ts";

const FIXTURE = path.join(import.meta.dir, "..", "fixtures", "format-v1.lss");

/** The generator's values (test/fixtures/make-format-v1.ts). */
function value(seed: number, size: number): Uint8Array {
  const v = new Uint8Array(size);
  for (let i = 0; i < size; i++) v[i] = (seed * 31 + i * 7) & 0xff;
  return v;
}

function expected(): Map<bigint, Uint8Array> {
  const seids = Array.from({ length: 20 }, (_, i) => (1n << 32n) | BigInt(i + 1));
  const model = new Map<bigint, Uint8Array>();
  for (let i = 0; i < 20; i++) model.set(seids[i]!, value(i, 10 + i * 50));
  const streamed = new Uint8Array(5 * 9000);
  for (let c = 0; c < 5; c++) streamed.set(value(100 + c, 9000), c * 9000);
  model.set(seids[0]!, streamed);
  model.delete(seids[1]!);
  model.set(seids[2]!, value(200, 777));
  model.delete(seids[3]!);
  model.set(seids[19]!, value(201, 3000));
  return model;
}

test("a format-version-1 file opens, replays and reads exactly; the first write upgrades it", async () => {
  const { dir, cleanup } = scratchDir("format-v1");
  const file = path.join(dir, "v1.lss");
  fs.copyFileSync(FIXTURE, file);
  try {
    const model = expected();
    {
      const store = await Store.open(file, { readOnly: true });
      expect(store.stats().recovery.checkpointLoaded).toBe(true);
      expect(store.stats().recovery.transactionsReplayed).toBe(2);
      expect(store.seids().length).toBe(model.size);
      for (const [seid, bytes] of model) expect(await store.read(seid)).toEqual(bytes);
      // Version-1 Commit records carry no time.
      expect(storeInternals(store).commits.lastCommitTime).toBeNull();
      await store.close();
    }
    const store = await Store.open(file);
    const seid = store.allocateSeid();
    const before = Date.now();
    await store.transaction((tx) => tx.write(seid, new Uint8Array([1, 2, 3])));
    expect(storeInternals(store).commits.lastCommitTime).toBeGreaterThanOrEqual(before);
    expect(storeInternals(store).core.log.rootBlock.formatVersion).toBe(FORMAT_VERSION);
    await store.close();
    const again = await Store.open(file);
    for (const [s, bytes] of model) expect(await again.read(s)).toEqual(bytes);
    expect(await again.read(seid)).toEqual(new Uint8Array([1, 2, 3]));
    await again.close();
  } finally {
    cleanup();
  }
});
