/**
 * Small reads through the kernel's page cache (LogReader.read): exact under overwrite, compaction
 * and segment reuse with caches too small to hold anything, and a record that fails its check as
 * read that way is read again from the disk (counted), while one bad on the disk too is an error.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import path from "node:path";
import { CorruptionError, Store } from "../../src/index.ts";
import { storeInternals } from "../../src/store/store.ts";
import { BACKENDS, fillPattern, scratchDir } from "../helpers.ts";
import { seededRandom } from "../../testing/prng.ts";

function valueOf(seid: bigint, round: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  fillPattern(bytes, Number(seid) * 1000 + round);
  return bytes;
}

for (const io of BACKENDS) {
  describe(`reads through the page cache: ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`page-cache-${io}`));
    });
    afterEach(() => cleanup());

    test("every read exact over rounds of overwrite and compact() while segments are reused (no value cache, the smallest block cache)", async () => {
      const file = path.join(dir, "p.lss");
      const store = await Store.open(file, { io, cacheBytes: 0, blockCacheBytes: 128 << 10, segmentSize: 256 << 10, bufferSize: 64 << 10, autoClean: false });
      expect(storeInternals(store).core.log.pageCacheReads).toBe(true);
      const random = seededRandom(17);
      const keys = Array.from({ length: 400 }, () => store.allocateSeid());
      const model = new Map<bigint, Uint8Array>();
      let cleaned = 0;
      for (let round = 0; round < 10; round++) {
        // Overwrite two thirds of the keys, so each round leaves garbage the compaction cleans.
        await store.transaction((tx) => {
          for (const seid of keys) {
            if (round > 0 && random() < 1 / 3) continue;
            const value = valueOf(seid, round, 200 + Math.floor(random() * 3000));
            tx.write(seid, value);
            model.set(seid, value);
          }
        });
        if (round % 2 === 1) cleaned += (await store.compact()).segmentsCleaned;
        for (const seid of keys) {
          // readSync first: it keeps nothing, so the read after it still misses.
          const backSync = store.readSync(seid);
          expect(backSync !== undefined && Buffer.from(backSync).equals(Buffer.from(model.get(seid) as Uint8Array))).toBe(true);
          const back = await store.read(seid);
          expect(back !== undefined && Buffer.from(back).equals(Buffer.from(model.get(seid) as Uint8Array))).toBe(true);
        }
      }
      const stats = store.stats();
      expect(stats.blockCache.misses).toBeGreaterThan(200); // hundreds of reads went to the file
      expect(storeInternals(store).core.log.bufferedReads).toBe(stats.blockCache.misses); // every one of them through the page cache
      expect(cleaned).toBeGreaterThan(0); // segments given back and written again
      expect(stats.pageCacheRetries).toBe(0);
      expect(storeInternals(store).syncReads.bufferedReads).toBeGreaterThan(200); // readSync's misses too
      await store.close();
    });

    test("a record that fails its check as read through the page cache is read again from the disk; bad on both is a CorruptionError", async () => {
      const file = path.join(dir, "r.lss");
      const store = await Store.open(file, { io, cacheBytes: 0, blockCacheBytes: 0 });
      const seid = store.allocateSeid();
      const value = valueOf(seid, 1, 1000);
      await store.transaction((tx) => tx.write(seid, value));
      const log = storeInternals(store).core.log;
      const read = log.read.bind(log);
      let spoiled = 0;
      let spoilDirect = false;
      // Stale bytes from the page cache (what a read racing an O_DIRECT write could keep).
      log.read = async (address: number, lengthBytes: number, direct = false) => {
        const bytes = await read(address, lengthBytes, direct);
        if (!direct || spoilDirect) {
          bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
          spoiled += 1;
        }
        return bytes;
      };
      expect(await store.read(seid)).toEqual(value);
      expect(spoiled).toBe(1);
      expect(store.stats().pageCacheRetries).toBe(1);
      spoilDirect = true;
      await expect(store.read(seid)).rejects.toBeInstanceOf(CorruptionError);
      expect(spoiled).toBe(3);
      expect(store.stats().pageCacheRetries).toBe(2);
      log.read = read;
      expect(await store.read(seid)).toEqual(value); // nothing was changed on the disk
      await store.close();
    });

    test("readSync: a miss reads through the page cache; a record that fails its check so is read again from the disk", async () => {
      const file = path.join(dir, "s.lss");
      const options = { io, cacheBytes: 0, blockCacheBytes: 0 } as const;
      const first = await Store.open(file, options);
      const seid = first.allocateSeid();
      const value = valueOf(seid, 1, 3000);
      await first.transaction((tx) => tx.write(seid, value));
      await first.close();
      const store = await Store.open(file, options); // nothing of it in memory now
      const sync = storeInternals(store).syncReads;
      expect(store.readSync(seid)).toEqual(value);
      expect(sync.bufferedReads).toBe(1);
      const read = sync.read.bind(sync);
      let spoiled = 0;
      let spoilDirect = false;
      sync.read = (address: number, lengthBytes: number, direct = false) => {
        const bytes = read(address, lengthBytes, direct);
        if (!direct || spoilDirect) {
          bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
          spoiled += 1;
        }
        return bytes;
      };
      expect(store.readSync(seid)).toEqual(value);
      expect(spoiled).toBe(1);
      expect(store.stats().pageCacheRetries).toBe(1);
      spoilDirect = true;
      expect(() => store.readSync(seid)).toThrow(CorruptionError);
      expect(spoiled).toBe(3);
      expect(store.stats().pageCacheRetries).toBe(2);
      sync.read = read;
      expect(store.readSync(seid)).toEqual(value);
      expect(sync.bufferedReads).toBe(4); // every read but the two direct ones
      await store.close();
    });

    test("misses with no locality stop reading whole blocks, locality brings it back; every read exact either way", async () => {
      const file = path.join(dir, "a.lss");
      const options = { io, cacheBytes: 0, blockCacheBytes: 256 << 10, segmentSize: 1 << 20, bufferSize: 64 << 10 } as const;
      const first = await Store.open(file, options);
      const seids: bigint[] = [];
      await first.transaction((tx) => {
        for (let i = 0; i < 4000; i++) {
          const seid = first.allocateSeid();
          seids.push(seid);
          tx.write(seid, valueOf(seid, 0, 1024));
        }
      });
      await first.close();
      // Reopened: nothing of it in the block cache, all of it on the disk.
      const store = await Store.open(file, options);
      const log = storeInternals(store).core.log;
      expect(log.readsAround).toBe(true); // the default, until misses say otherwise
      const random = seededRandom(7);
      for (let i = 0; i < 3000; i++) {
        const seid = seids[Math.floor(random() * seids.length)] as bigint;
        expect(Buffer.from((await store.read(seid)) as Uint8Array).equals(Buffer.from(valueOf(seid, 0, 1024)))).toBe(true);
      }
      expect(log.readsAround).toBe(false); // uniform over 4 MiB with a 256 KiB cache: neighbours are not read
      expect(log.noWaitReads).toBeGreaterThan(0); // pages read before came from the page cache at once
      for (const seid of [...seids, ...seids]) {
        expect(Buffer.from((await store.read(seid)) as Uint8Array).equals(Buffer.from(valueOf(seid, 0, 1024)))).toBe(true);
      }
      expect(log.readsAround).toBe(true); // in order: the next records are in the block just read
      await store.close();
    });
  });
}
