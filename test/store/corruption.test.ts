/**
 * Corrupted files: 1,000 damaged copies of closed stores (bit flips, zeroed 4 KiB ranges,
 * truncation, garbage appended, at random places; see src/torture/corrupt.ts). Open recovers a
 * committed prefix or throws CorruptionError; a read returns that prefix's bytes or throws
 * CorruptionError; never wrong bytes, never a hang, never another error. Plus the root-block
 * cases by hand.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { CorruptionError, Store } from "../../src/index.ts";
import { runCorruptionTrials } from "../../testing/torture/corrupt.ts";
import { scratchDir } from "../helpers.ts";

describe("corrupted files", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("corruption"));
  });
  afterAll(() => cleanup());

  test("1,000 damaged copies: a committed prefix or CorruptionError, never wrong bytes", async () => {
    const report = await runCorruptionTrials({ seed: 1121, dir, trials: 1000 });
    console.log(
      `corruption: ${report.trials} files (${Object.entries(report.damage).map(([kind, n]) => `${n} ${kind}`).join(", ")}), ` +
        `${report.opened} opened (${report.recoveredWhole} whole, ${report.recoveredOlder} older prefix), ${report.openCorruption} CorruptionError at open, ` +
        `${report.reads} reads (${report.corruptReads} CorruptionError), ${report.writesAfterOpen} writes after open, ${report.checks} checks, ` +
        `${report.violations.length} violations, ${(report.elapsedMs / 1000).toFixed(1)}s`,
    );
    expect(report.violations).toEqual([]);
    expect(report.trials).toBe(1000);
    for (const kind of ["bitflip", "zero4k", "truncate", "append"]) expect(report.damage[kind] ?? 0).toBeGreaterThan(100);
    // Every outcome the rules allow actually happens, so the checks are exercised.
    expect(report.opened).toBeGreaterThan(500);
    expect(report.openCorruption).toBeGreaterThan(20);
    expect(report.recoveredOlder).toBeGreaterThan(5);
    expect(report.corruptReads).toBeGreaterThan(20);
    expect(report.writesAfterOpen).toBeGreaterThan(50);
  }, 120_000);

  test("root blocks: one damaged copy falls back to the other; both damaged is CorruptionError", async () => {
    const file = path.join(dir, "root.lss");
    const store = await Store.open(file, { io: "portable", segmentSize: 256 << 10, bufferSize: 64 << 10 });
    for (let k = 1; k <= 20; k++) await store.transaction((tx) => tx.write(BigInt(k), new Uint8Array(1000).fill(k)));
    await store.close();
    const good = fs.readFileSync(file);
    for (const copy of [0, 1]) {
      const damaged = Buffer.from(good);
      damaged[copy * 4096 + 100] = (damaged[copy * 4096 + 100] as number) ^ 0x10;
      const target = path.join(dir, `root-${copy}.lss`);
      fs.writeFileSync(target, damaged);
      const reopened = await Store.open(target, { io: "portable", readOnly: true });
      for (let k = 1; k <= 20; k++) expect((await reopened.read(BigInt(k)))?.[0]).toBe(k);
      await reopened.close();
    }
    const both = Buffer.from(good);
    both.fill(0, 0, 8192);
    const target = path.join(dir, "root-both.lss");
    fs.writeFileSync(target, both);
    await expect(Store.open(target, { io: "portable" })).rejects.toBeInstanceOf(CorruptionError);
  });

  test("a damaged element reads as CorruptionError while the others read fine", async () => {
    const file = path.join(dir, "element.lss");
    const store = await Store.open(file, { io: "portable", segmentSize: 256 << 10, bufferSize: 64 << 10, cacheBytes: 0 });
    const marker = new Uint8Array(3000).fill(0x5a);
    await store.transaction((tx) => {
      tx.write(1n, new Uint8Array(3000).fill(1));
      tx.write(2n, marker);
      tx.write(3n, new Uint8Array(600 << 10).fill(3)); // multi-part
    });
    await store.close();
    const bytes = fs.readFileSync(file);
    const at = bytes.indexOf(Buffer.from(marker));
    expect(at).toBeGreaterThan(0);
    bytes[at + 1500] = (bytes[at + 1500] as number) ^ 1;
    // One part of the multi-part element too.
    const part = bytes.indexOf(Buffer.alloc(4096, 3));
    bytes[part + 10] = 0;
    fs.writeFileSync(file, bytes);
    const reopened = await Store.open(file, { io: "portable", cacheBytes: 0 });
    expect((await reopened.read(1n))?.length).toBe(3000);
    await expect(reopened.read(2n)).rejects.toBeInstanceOf(CorruptionError);
    await expect(reopened.read(3n)).rejects.toBeInstanceOf(CorruptionError);
    expect(reopened.has(2n)).toBe(true);
    await reopened.close();
  });
});
