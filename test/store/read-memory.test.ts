/**
 * Reads served from memory (flush buffers and the caching layer of log blocks) in the caller's
 * turn, for `read()` and `readSync()`: exact bytes, a private copy, and, racing commits and the
 * cleaner, always one whole committed version of the element (never a mix, never older than what
 * had committed when the read began).
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { CorruptionError, Store } from "../../src/index.ts";
import { BLOCK_BYTES } from "../../src/log/block-cache.ts";
import { BACKENDS, fillPattern, rng, scratchDir } from "../helpers.ts";

/** Version `version` of element `key`: [u32 version, u32 key, pattern], its length varying with both. */
function versionOf(key: number, version: number): Uint8Array {
  const bytes = new Uint8Array(400 + ((key * 31 + version * 97) % 1500));
  fillPattern(bytes, key * 100_000 + version);
  const words = new DataView(bytes.buffer);
  words.setUint32(0, version, true);
  words.setUint32(4, key, true);
  return bytes;
}

/** The version a value read back claims to be, after checking every byte is that version's. */
function checkWhole(key: number, bytes: Uint8Array | undefined): number {
  expect(bytes).toBeDefined();
  const view = new DataView((bytes as Uint8Array).buffer, (bytes as Uint8Array).byteOffset);
  expect(view.getUint32(4, true)).toBe(key);
  const version = view.getUint32(0, true);
  expect(Buffer.compare(bytes as Uint8Array, versionOf(key, version))).toBe(0);
  return version;
}

for (const io of BACKENDS) {
  describe(`reads from memory on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    beforeEach(() => ({ dir, cleanup } = scratchDir(`read-memory-${io}`)));
    afterEach(() => cleanup());

    test("readSync of a value the caching layer holds: exact bytes from memory (a block-cache hit, no file read), the caller's own copy", async () => {
      // No value cache: every read below can only come from the block cache or the file.
      await using store = await Store.open(path.join(dir, "s.lss"), { io, cacheBytes: 0 });
      const count = 3_000;
      await store.transaction((tx) => {
        for (let key = 1; key <= count; key++) tx.write(BigInt(key), versionOf(key, 1));
      });
      await store.flush();
      const before = store.stats().blockCache;
      for (let key = 1; key <= count; key++) expect(checkWhole(key, store.readSync(BigInt(key)))).toBe(1);
      const after = store.stats().blockCache;
      // Before, readSync went around the caching layer to the file for every one of these.
      expect(after.hits - before.hits).toBe(count);
      expect(after.misses).toBe(before.misses);
      // The value handed out is not the scratch buffer the record was verified in, nor the cache.
      const first = store.readSync(1n) as Uint8Array;
      const second = store.readSync(2n) as Uint8Array;
      first.fill(0);
      checkWhole(2, second);
      checkWhole(1, store.readSync(1n));
      checkWhole(1, await store.read(1n));
    });

    test("a value read from the caching layer goes into the value cache at its second read, not its first (exact bytes every time)", async () => {
      // 4 MiB of value cache: a transaction keeps at most 512 KiB of its values there at commit,
      // so most of these are only in the log's memory (the block cache) after it.
      await using store = await Store.open(path.join(dir, "s.lss"), { io, cacheBytes: 4 << 20 });
      const count = 2_000;
      await store.transaction((tx) => {
        for (let key = 1; key <= count; key++) tx.write(BigInt(key), versionOf(key, 1));
      });
      await store.flush();
      const keys: number[] = [];
      for (let key = count; keys.length < 1_000; key--) keys.push(key); // the last written: not cached at commit
      const pass = async (sync: boolean) => {
        const before = store.stats();
        for (const key of keys) checkWhole(key, sync ? store.readSync(BigInt(key)) : await store.read(BigInt(key)));
        const after = store.stats();
        return { valueHits: after.cacheHits - before.cacheHits, blockHits: after.blockCache.hits - before.blockCache.hits, fileReads: after.blockCache.misses - before.blockCache.misses };
      };
      const first = await pass(true);
      expect(first).toEqual({ valueHits: 0, blockHits: keys.length, fileReads: 0 });
      // The second read copies each into the value cache (a few may have been taken at their first
      // read: a false "seen before" of the doorkeeper), so the third is a value-cache hit.
      const second = await pass(false);
      expect(second.valueHits).toBeLessThan(keys.length / 10);
      expect(second.valueHits + second.blockHits).toBe(keys.length);
      expect(second.fileReads).toBe(0);
      const third = await pass(true);
      expect(third).toEqual({ valueHits: keys.length, blockHits: 0, fileReads: 0 });
    });

    test("a damaged record in the caching layer is a CorruptionError from read() (rejected) and readSync(), never its bytes", async () => {
      const file = path.join(dir, "c.lss");
      {
        await using store = await Store.open(file, { io });
        await store.transaction((tx) => {
          for (let key = 1; key <= 50; key++) tx.write(BigInt(key), versionOf(key, 1));
        });
      }
      // Flip one byte of element 7's value on disk.
      const bytes = fs.readFileSync(file);
      const at = bytes.indexOf(Buffer.from(versionOf(7, 1)));
      expect(at).toBeGreaterThan(0);
      bytes[at + 100] = (bytes[at + 100] as number) ^ 0x01;
      fs.writeFileSync(file, bytes);
      await using store = await Store.open(file, { io, cacheBytes: 0 });
      // The first read goes to the file and keeps the block around it in the caching layer ...
      await expect(store.read(7n)).rejects.toThrow(CorruptionError);
      const hits = store.stats().blockCache.hits;
      // ... so these come from memory, verified there.
      await expect(store.read(7n)).rejects.toThrow(CorruptionError);
      expect(() => store.readSync(7n)).toThrow(CorruptionError);
      expect(store.stats().blockCache.hits).toBe(hits + 2);
      // Its neighbours in the same block are fine.
      checkWhole(6, await store.read(6n));
      checkWhole(8, store.readSync(8n));
    });

    test("reads racing commits and the cleaner: each returns one whole committed version, never older than what had committed when it began", async () => {
      const segment = 256 << 10;
      // A small block cache and no value cache: reads come from flush buffers, the block cache and
      // the file; a file that must stay small makes the cleaner move live values meanwhile.
      await using store = await Store.open(path.join(dir, "r.lss"), {
        io,
        segmentSize: segment,
        bufferSize: 64 << 10,
        cacheBytes: 0,
        blockCacheBytes: 4 * BLOCK_BYTES,
        maxFileBytes: 8192 + 40 * segment,
      });
      const keys = 400;
      /** Version of each key once its last commit resolved, and the newest version any commit carries. */
      const committed = new Array<number>(keys + 1).fill(1);
      const newest = new Array<number>(keys + 1).fill(1);
      await store.transaction((tx) => {
        for (let key = 1; key <= keys; key++) tx.write(BigInt(key), versionOf(key, 1));
      });
      const next = rng(5);
      const checks: Promise<void>[] = [];
      let reads = 0;
      const readAndCheck = (key: number, sync: boolean): void => {
        const floor = committed[key] as number;
        reads += 1;
        if (sync) {
          const version = checkWhole(key, store.readSync(BigInt(key)));
          expect(version).toBeGreaterThanOrEqual(floor);
          expect(version).toBeLessThanOrEqual(newest[key] as number);
          return;
        }
        checks.push(
          store.read(BigInt(key)).then((bytes) => {
            const version = checkWhole(key, bytes);
            expect(version).toBeGreaterThanOrEqual(floor);
            expect(version).toBeLessThanOrEqual(newest[key] as number);
          }),
        );
      };
      for (let round = 0; round < 250; round++) {
        const written = new Map<number, number>();
        for (let i = 0; i < 16; i++) {
          const key = 1 + Math.floor(next() * keys);
          written.set(key, (newest[key] as number) + 1);
        }
        for (const [key, version] of written) newest[key] = version;
        // Now and then the cleaner compacts meanwhile, moving live values under the reads.
        const compaction = round % 25 === 24 ? store.compact({ utilisationPercent: 99 }) : undefined;
        const commit = store.transaction((tx) => {
          for (const [key, version] of written) tx.write(BigInt(key), versionOf(key, version));
        });
        // Reads while the commit is in flight, then after it resolved.
        for (let i = 0; i < 8; i++) readAndCheck(1 + Math.floor(next() * keys), i % 2 === 0);
        await commit;
        await compaction;
        for (const [key, version] of written) committed[key] = Math.max(committed[key] as number, version);
        for (const key of [...written.keys()].slice(0, 4)) readAndCheck(key, round % 2 === 0);
      }
      await Promise.all(checks);
      const stats = store.stats();
      expect(stats.cleaner.segmentsCleaned).toBeGreaterThan(0); // the cleaner did move values under the reads
      expect(stats.blockCache.hits).toBeGreaterThan(0); // some reads were served from memory ...
      expect(stats.blockCache.misses).toBeGreaterThan(0); // ... and some from the file
      expect(reads).toBe(250 * 12);
      for (let key = 1; key <= keys; key++) expect(checkWhole(key, await store.read(BigInt(key)))).toBe(newest[key] as number);
    });
  });
}
