/**
 * Staging of large written values (src/store/staging.ts): the pool's rules, and through the store
 * that a reused staging buffer never leaks into what was committed, cached or read back.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { STAGE_MAX_BYTES, STAGE_MIN_BYTES, STAGE_RETAIN_BYTES, StagingPool } from "../../src/store/staging.ts";
import { BACKENDS, fillPattern, scratchDir } from "../helpers.ts";

function patterned(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  fillPattern(bytes, seed);
  return bytes;
}

describe("StagingPool", () => {
  test("a copy equals its source; a buffer given back is reused; giving back twice is refused", () => {
    const pool = new StagingPool();
    const source = patterned(STAGE_MIN_BYTES + 5, 1);
    const a = pool.copy(source);
    expect(Buffer.from(a).equals(Buffer.from(source))).toBe(true);
    expect(pool.holds(a)).toBe(true);
    source.fill(0); // the copy is its own
    expect(a[0]).not.toBe(0);
    const backing = a.buffer;
    pool.giveBack(a);
    expect(pool.holds(a)).toBe(false);
    expect(pool.freeBytesKept).toBe(backing.byteLength);
    expect(() => pool.giveBack(a)).toThrow();
    const b = pool.copy(patterned(STAGE_MIN_BYTES * 2 - 1, 2));
    expect(b.buffer).toBe(backing); // same size class: the same, already touched buffer
    expect(pool.freeBytesKept).toBe(0);
    expect(() => pool.giveBack(new Uint8Array(STAGE_MIN_BYTES))).toThrow();
  });

  test("only values of STAGE_MIN_BYTES to STAGE_MAX_BYTES are staged, and free buffers stay under STAGE_RETAIN_BYTES", () => {
    expect(StagingPool.stages(STAGE_MIN_BYTES - 1)).toBe(false);
    expect(StagingPool.stages(STAGE_MIN_BYTES)).toBe(true);
    expect(StagingPool.stages(STAGE_MAX_BYTES)).toBe(true);
    expect(StagingPool.stages(STAGE_MAX_BYTES + 1)).toBe(false);
    const pool = new StagingPool();
    expect(() => pool.copy(new Uint8Array(16))).toThrow(RangeError);
    const copies = [];
    for (let i = 0; i < STAGE_RETAIN_BYTES / STAGE_MAX_BYTES + 2; i++) copies.push(pool.copy(new Uint8Array(STAGE_MAX_BYTES)));
    for (const copy of copies) pool.giveBack(copy);
    expect(pool.freeBytesKept).toBeLessThanOrEqual(STAGE_RETAIN_BYTES);
    expect(pool.freeBytesKept).toBeGreaterThan(0);
  });
});

for (const io of BACKENDS) {
  describe(`staged writes through the store: ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`staging-${io}`));
    });
    afterEach(() => cleanup());

    test("reused staging buffers never change what was committed, cached or read inside the transaction", async () => {
      const file = path.join(dir, "s.lss");
      // A cache big enough to keep every value, so a cached reference to a staging buffer would show.
      let store = await Store.open(file, { io, cacheBytes: 256 << 20 });
      const model = new Map<bigint, Uint8Array>();
      const sizes = [STAGE_MIN_BYTES, STAGE_MIN_BYTES + 4097, 300_000, 1 << 20, (1 << 20) + 1];
      let seed = 10;
      for (let round = 0; round < 6; round++) {
        await store.transaction(async (tx) => {
          for (const size of sizes) {
            const seid = BigInt(1 + ((round * sizes.length + sizes.indexOf(size)) % 12));
            const value = patterned(size, seed++);
            const expected = value.slice();
            tx.write(seid, value);
            value.fill(0xee); // the caller reuses its buffer at once
            expect(Buffer.from((await tx.read(seid)) as Uint8Array).equals(Buffer.from(expected))).toBe(true);
            model.set(seid, expected);
          }
        });
        // An aborted transaction's staged buffers go back, and what it wrote is gone.
        await expect(
          store.transaction((tx) => {
            for (let i = 0; i < 3; i++) tx.write(BigInt(1 + i), patterned(1 << 20, 999 + i));
            throw new Error("abort");
          }),
        ).rejects.toThrow("abort");
        for (const [seid, value] of model) {
          const back = await store.read(seid);
          expect(back !== undefined && Buffer.from(back).equals(Buffer.from(value))).toBe(true);
        }
      }
      // One transaction past the spill threshold: its early values reach the log (their buffers
      // go back) and are reused by its later ones, while tx.read still returns each exactly.
      await store.transaction(async (tx) => {
        const written: Array<[bigint, Uint8Array]> = [];
        for (let i = 0; i < 48; i++) {
          const seid = BigInt(100 + i);
          // One-record values (the first few within the transaction's cache budget) and parts.
          const value = patterned(i % 8 === 7 ? 1 << 20 : 200_000, 5000 + i);
          tx.write(seid, value);
          written.push([seid, value]);
          if (i % 8 === 7) await new Promise((resolve) => setTimeout(resolve, 20)); // spills run
        }
        for (const [seid, value] of written) {
          expect(Buffer.from((await tx.read(seid)) as Uint8Array).equals(Buffer.from(value))).toBe(true);
          model.set(seid, value);
        }
      });
      for (const [seid, value] of model) {
        const back = await store.read(seid);
        expect(back !== undefined && Buffer.from(back).equals(Buffer.from(value))).toBe(true);
      }
      await store.close();
      store = await Store.open(file, { io });
      for (const [seid, value] of model) {
        const back = await store.read(seid);
        expect(back !== undefined && Buffer.from(back).equals(Buffer.from(value))).toBe(true);
      }
      await store.close();
    });
  });
}
