import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import path from "node:path";
import { BLOCK_BYTES, BlockCache } from "../../src/log/block-cache.ts";
import { Store } from "../../src/index.ts";
import { BACKENDS, fillPattern, rng, scratchDir } from "../helpers.ts";

const PAGE = 4096;

/** A JS allocator for the model tests (the log passes its I/O backend). */
const jsAllocator = {
  alloc: (sizeBytes: number) => ({ ptr: 0, sizeBytes, bytes: new Uint8Array(sizeBytes) }),
  free: () => {},
};

describe("block cache (model)", () => {
  test("a hit returns exactly the bytes last put there; partial pages are misses; memory stays bounded", () => {
    const capacityBlocks = 8;
    const cache = new BlockCache(capacityBlocks * BLOCK_BYTES, jsAllocator);
    expect(cache.capacityBlocks).toBe(capacityBlocks);
    // The model: the log's bytes by page, and which pages the cache could hold.
    const log = new Map<number, Uint8Array>();
    const random = rng(7);
    const spanPages = 64 * (BLOCK_BYTES / PAGE); // 64 blocks of address space: far more than fit
    let hits = 0;
    for (let step = 0; step < 4000; step++) {
      if (random() < 0.5) {
        const firstPage = Math.floor(random() * spanPages);
        const pages = 1 + Math.floor(random() * 12);
        const bytes = new Uint8Array(pages * PAGE);
        fillPattern(bytes, step);
        cache.put(firstPage * PAGE, bytes);
        for (let p = 0; p < pages; p++) log.set(firstPage + p, bytes.subarray(p * PAGE, (p + 1) * PAGE));
      } else {
        const address = Math.floor(random() * spanPages * PAGE);
        const length = 1 + Math.floor(random() * 3 * PAGE);
        const got = cache.get(address, length);
        if (got === undefined) continue;
        hits += 1;
        // Every byte equals the last bytes put at that address.
        for (let at = address; at < address + length; at += PAGE - (at % PAGE)) {
          const page = log.get(Math.floor(at / PAGE));
          expect(page).toBeDefined();
          const end = Math.min(address + length, (Math.floor(at / PAGE) + 1) * PAGE);
          expect(got.subarray(at - address, end - address)).toEqual((page as Uint8Array).subarray(at % PAGE, at % PAGE + (end - at)));
        }
      }
      expect(cache.stats().bytes).toBeLessThanOrEqual(capacityBlocks * BLOCK_BYTES);
    }
    expect(hits).toBeGreaterThan(100); // the model really was exercised on hits
    expect(cache.stats().hits).toBe(hits);
  });

  test("never hands out a range whose pages it does not all hold", () => {
    const cache = new BlockCache(8 * BLOCK_BYTES, jsAllocator);
    cache.put(0, new Uint8Array(PAGE).fill(1));
    cache.put(2 * PAGE, new Uint8Array(PAGE).fill(3));
    expect(cache.get(0, PAGE)).toEqual(new Uint8Array(PAGE).fill(1));
    expect(cache.get(PAGE - 10, 20)).toBeUndefined(); // page 1 was never put
    expect(cache.get(BLOCK_BYTES, 10)).toBeUndefined(); // another block
    expect(() => cache.put(100, new Uint8Array(PAGE))).toThrow(RangeError);
  });

  test("a cache smaller than a few blocks is off", () => {
    const cache = new BlockCache(BLOCK_BYTES, jsAllocator);
    expect(cache.enabled).toBe(false);
    cache.put(0, new Uint8Array(PAGE));
    expect(cache.get(0, 10)).toBeUndefined();
  });
});

for (const io of BACKENDS) {
  describe(`block cache in a store on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    beforeEach(() => ({ dir, cleanup } = scratchDir(`block-cache-${io}`)));
    afterEach(() => cleanup());

    test("reading back what was just bulk-written comes from the caching layer, not the disk, and is exact", async () => {
      await using store = await Store.open(path.join(dir, "b.lss"), { io, cacheBytes: 0, segmentSize: 4 << 20, bufferSize: 256 << 10 });
      const count = 20_000;
      const value = (i: number) => {
        const bytes = new Uint8Array(50 + (i % 150));
        fillPattern(bytes, i);
        return bytes;
      };
      await store.transaction((tx) => {
        for (let i = 1; i <= count; i++) tx.write(BigInt(i), value(i));
      });
      const before = store.stats().blockCache;
      for (let i = 1; i <= count; i++) expect(await store.read(BigInt(i))).toEqual(value(i));
      const after = store.stats().blockCache;
      expect(after.misses - before.misses).toBe(0);
      expect(after.hits - before.hits).toBe(count);
    });

    test("after a reopen a miss reads the whole block around it: its neighbours are hits", async () => {
      const file = path.join(dir, "r.lss");
      const count = 4_000;
      {
        await using store = await Store.open(file, { io, cacheBytes: 0 });
        await store.transaction((tx) => {
          for (let i = 1; i <= count; i++) tx.write(BigInt(i), new Uint8Array(100).fill(i & 0xff));
        });
      }
      await using store = await Store.open(file, { io, cacheBytes: 0 });
      for (let i = 1; i <= count; i++) expect(await store.read(BigInt(i))).toEqual(new Uint8Array(100).fill(i & 0xff));
      const stats = store.stats().blockCache;
      // 4,000 records of 136 B span about 17 blocks: one miss per block, the rest hits.
      expect(stats.misses).toBeGreaterThan(0);
      expect(stats.misses).toBeLessThanOrEqual(Math.ceil((count * 136) / BLOCK_BYTES) + 2);
      expect(stats.hits + stats.misses).toBe(count);
    });

    test("with blockCacheBytes 0 every read goes to the file and bytes are still exact", async () => {
      await using store = await Store.open(path.join(dir, "z.lss"), { io, cacheBytes: 0, blockCacheBytes: 0 });
      await store.transaction((tx) => {
        for (let i = 1; i <= 100; i++) tx.write(BigInt(i), new Uint8Array(10).fill(i));
      });
      await store.flush();
      for (let i = 1; i <= 100; i++) expect(await store.read(BigInt(i))).toEqual(new Uint8Array(10).fill(i));
      expect(store.stats().blockCache).toEqual({ hits: 0, misses: 0, bytes: 0, capacityBytes: 0 });
    });
  });
}
