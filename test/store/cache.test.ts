/**
 * The element cache (src/store/cache.ts): a typed-array table over chunked value storage with
 * chunk-granular second-chance eviction. Checked against a Map model: a hit is always exactly
 * the last value set (never a stale or torn one), held bytes never pass the limit, and the
 * bookkeeping (`bytes`, `size`) matches what can actually be read.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { ElementCache } from "../../src/store/cache.ts";

const MAX_SEID = (1n << 64n) - 1n;

function valueOf(length: number, seed: number): Uint8Array {
  const value = new Uint8Array(length);
  for (let i = 0; i < length; i++) value[i] = (seed * 31 + i * 7) & 0xff;
  return value;
}

/** Every seid of `universe` read back: hits must equal the model; returns bytes and count of hits. */
function checkAgainst(cache: ElementCache, model: Map<bigint, Uint8Array>, universe: readonly bigint[]): { bytes: number; hits: number } {
  let bytes = 0;
  let hits = 0;
  for (const seid of universe) {
    const got = cache.get(seid);
    if (got === undefined) continue;
    const expected = model.get(seid);
    expect(expected).toBeDefined();
    expect(Buffer.compare(got, expected as Uint8Array)).toBe(0);
    bytes += got.length;
    hits += 1;
  }
  return { bytes, hits };
}

describe("element cache", () => {
  test("model: hits are exactly the last value set; bytes stay under the limit and add up", () => {
    const universe = [0n, 1n, 2n, 3n, 7n, 255n, 1n << 32n, (1n << 32n) + 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, MAX_SEID - 1n, MAX_SEID];
    for (let i = 0; i < 40; i++) universe.push(BigInt(1000 + i));
    const seidArb = fc.constantFrom(...universe);
    const opArb = fc.oneof(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant("set" as const), seid: seidArb, length: fc.nat({ max: 40_000 }), seed: fc.nat() }) },
      { weight: 4, arbitrary: fc.record({ kind: fc.constant("get" as const), seid: seidArb }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("invalidate" as const), seid: seidArb }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("clear" as const) }) },
    );
    fc.assert(
      fc.property(fc.constantFrom(64 << 10, 200 << 10, 1 << 20), fc.array(opArb, { maxLength: 400 }), (limitBytes, ops) => {
        const cache = new ElementCache(limitBytes);
        const model = new Map<bigint, Uint8Array>();
        for (const op of ops) {
          if (op.kind === "set") {
            const value = valueOf(op.length, op.seed);
            cache.set(op.seid, value);
            model.set(op.seid, value);
            value.fill(0xee); // the cache keeps its own copy
            model.set(op.seid, valueOf(op.length, op.seed));
            const back = cache.get(op.seid);
            if (op.length <= cache.chunkBytes / 2 - 16) {
              // Just set and small enough: it must be there.
              expect(back).toBeDefined();
            } else {
              expect(back).toBeUndefined();
            }
          } else if (op.kind === "get") {
            const got = cache.get(op.seid);
            if (got !== undefined) expect(Buffer.compare(got, model.get(op.seid) as Uint8Array)).toBe(0);
          } else if (op.kind === "invalidate") {
            cache.invalidate(op.seid);
            model.delete(op.seid);
            expect(cache.get(op.seid)).toBeUndefined();
          } else {
            cache.clear();
          }
          expect(cache.bytes).toBeLessThanOrEqual(limitBytes);
        }
        const { bytes, hits } = checkAgainst(cache, model, universe);
        expect(cache.bytes).toBe(bytes);
        expect(cache.size).toBe(hits);
      }),
      { seed: 777, numRuns: 300 },
    );
  });

  test("second chance: entries read since they were written survive the compaction of their chunk", () => {
    const cache = new ElementCache(256 << 10); // 4 chunks of 64 KiB
    expect(cache.chunkBytes).toBe(64 << 10);
    const value = (i: number) => valueOf(1000, i);
    // Fill every chunk with 1000-byte values (about 64 per chunk).
    for (let i = 0; i < 240; i++) cache.set(BigInt(i), value(i));
    // Read every tenth of the oldest chunk's entries.
    for (let i = 0; i < 60; i += 10) expect(cache.get(BigInt(i))).toBeDefined();
    // Force the oldest chunk to be reused.
    for (let i = 240; i < 300; i++) cache.set(BigInt(i), value(i));
    for (let i = 0; i < 60; i++) {
      const got = cache.get(BigInt(i));
      if (i % 10 === 0) expect(got === undefined ? undefined : Buffer.compare(got, value(i))).toBe(0);
      else expect(got).toBeUndefined();
    }
    for (let i = 240; i < 300; i++) expect(cache.get(BigInt(i))).toBeDefined();
  });

  test("table: thousands of sets and invalidations with long probe runs equal a Map exactly (no eviction)", () => {
    const cache = new ElementCache(64 << 20);
    const model = new Map<bigint, Uint8Array>();
    // mulberry32: every bit well mixed (the keys must spread over the whole table).
    let state = 12345;
    const next = () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    };
    let removed = 0;
    for (let step = 0; step < 60_000; step++) {
      // Seids from a small dense range and from the whole 64-bit space, so runs collide and wrap.
      const seid = next() % 3 === 0 ? (BigInt(next()) << 32n) | BigInt(next()) : BigInt(next() % 6000);
      if (next() % 4 === 0) {
        cache.invalidate(seid);
        if (model.delete(seid)) removed += 1;
      } else {
        const value = valueOf(next() % 24, step);
        cache.set(seid, value);
        model.set(seid, value);
      }
    }
    expect(model.size).toBeGreaterThan(3000);
    expect(removed).toBeGreaterThan(1000); // deletions of present keys, which shift probe runs
    expect(cache.size).toBe(model.size);
    let bytes = 0;
    for (const [seid, value] of model) {
      const got = cache.get(seid);
      expect(got === undefined ? "miss" : Buffer.compare(got, value)).toBe(0);
      bytes += value.length;
    }
    expect(cache.bytes).toBe(bytes);
  });

  test("admission: a hot set that fits keeps hitting while a scan reads three times as many values once each", () => {
    const cache = new ElementCache(1 << 20); // 16 chunks of 64 KiB: about 1000 values of 1000 bytes
    const value = (i: number) => valueOf(1000, i);
    /** What the read path does: a hit, or a value read from the log offered to the cache. */
    const read = (seid: number): boolean => {
      const got = cache.get(BigInt(seid));
      if (got !== undefined) {
        expect(Buffer.compare(got, value(seid))).toBe(0);
        return true;
      }
      cache.admit(BigInt(seid), value(seid));
      return false;
    };
    const hot = 300;
    let state = 99;
    const nextHot = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % hot;
    };
    // Until the cache is full every value read is admitted: the hot set and the start of a scan.
    for (let round = 0; round < 4; round++) for (let i = 0; i < hot; i++) read(i);
    let scanned = 1_000_000;
    for (let i = 0; i < 2000; i++) read(scanned++);
    // Now the scan goes on, three of its reads for each hot read.
    let hotHits = 0;
    const hotReads = 6000;
    for (let i = 0; i < hotReads; i++) {
      if (read(nextHot())) hotHits += 1;
      for (let k = 0; k < 3; k++) read(scanned++);
    }
    // Plain CLOCK (every value read admitted) kept 67 % here: each hot value had to be read
    // again within one turn of the cache, which the scan drove round in ~1300 reads.
    expect(hotHits / hotReads).toBeGreaterThan(0.97);
    // A value read a second time soon after is admitted once the cache is full too.
    expect(read(5_000_000)).toBe(false);
    expect(read(5_000_000)).toBe(false);
    expect(read(5_000_000)).toBe(true);
    // And a value set by a write is cached at once, whatever the admission filter says.
    cache.set(6_000_000n, value(6_000_000));
    expect(read(6_000_000)).toBe(true);
  });

  test("admission: a cache full of values written and never read admits what is read, at its first read", () => {
    const cache = new ElementCache(1 << 20);
    const value = (i: number) => valueOf(1000, i);
    // A bulk load passes through: the cache fills (and compacts) with values nobody read.
    for (let i = 0; i < 3000; i++) cache.set(BigInt(i), value(i));
    // Nothing there is worth protecting, so the first read of a value caches it.
    for (let i = 10_000; i < 10_500; i++) {
      expect(cache.get(BigInt(i))).toBeUndefined();
      expect(cache.admit(BigInt(i), value(i))).toBe(true);
      expect(cache.get(BigInt(i))).toBeDefined();
    }
  });

  test("reads from log memory: a value is copied in at its second read, not its first; long-ago first reads are forgotten", () => {
    const cache = new ElementCache(1 << 20); // a window of 8192 seids (1 MiB / 128 B)
    const value = (i: number) => valueOf(100, i);
    // First reads: only remembered. (A false "seen before" needs both of a seid's bits set by
    // others: with 500 of 8192 remembered, none of these seids hits one; the hashes are fixed.)
    for (let i = 0; i < 500; i++) expect(cache.admitFromMemory(BigInt(i), value(i))).toBe(false);
    for (let i = 0; i < 500; i++) expect(cache.get(BigInt(i))).toBeUndefined();
    // Second reads: each is cached, with exactly its bytes.
    for (let i = 0; i < 500; i++) expect(cache.admitFromMemory(BigInt(i), value(i))).toBe(true);
    for (let i = 0; i < 500; i++) expect(Buffer.compare(cache.get(BigInt(i)) as Uint8Array, value(i))).toBe(0);
    // Seen once, then 20 000 other seids: the doorkeeper has started over since, so it is new again.
    expect(cache.admitFromMemory(1_000_000n, value(1))).toBe(false);
    let admittedByCollision = 0;
    for (let i = 0; i < 20_000; i++) if (cache.admitFromMemory(BigInt(2_000_000 + i), value(i))) admittedByCollision += 1;
    expect(admittedByCollision).toBeLessThan(2_000); // false "seen before" as the bit set fills: a few %, never most
    expect(cache.admitFromMemory(1_000_000n, value(1))).toBe(false);
    // A disabled cache takes nothing.
    const off = new ElementCache(0);
    expect(off.admitFromMemory(1n, value(1))).toBe(false);
    expect(off.admitFromMemory(1n, value(1))).toBe(false);
    expect(off.get(1n)).toBeUndefined();
  });

  test("tagged entries (a Worker's cache): a hit needs the same tag; tags survive compactions; values are copies", () => {
    // Small chunks, many values: compactions move entries (and their tags) many times.
    const cache = new ElementCache(256 << 10);
    const model = new Map<bigint, { tag: number; value: Uint8Array }>();
    let tagOf = 1;
    for (let round = 0; round < 20_000; round++) {
      const seid = BigInt(round % 700) * 0x1_0000_0001n;
      const known = model.get(seid);
      // Read most of the time (hits keep entries through compactions), write the rest.
      if (known !== undefined && round % 3 !== 0) {
        const hit = cache.getTagged(seid, known.tag);
        if (hit !== undefined) {
          expect(Buffer.from(hit).equals(Buffer.from(known.value))).toBe(true);
          hit.fill(0); // the caller's own copy: the cache's bytes do not change
        }
        if (round % 50 === 1) {
          // Another address (the element moved): never a hit, and the stale entry is dropped.
          expect(cache.getTagged(seid, known.tag + 0.5)).toBeUndefined();
          expect(cache.getTagged(seid, known.tag)).toBeUndefined();
          model.delete(seid);
        }
        continue;
      }
      const tag = tagOf++ * 4096 + 2 ** 40; // log addresses: beyond 32 bits too
      const value = valueOf(1 + (round % 900), round);
      cache.admitTagged(seid, tag, value);
      model.set(seid, { tag, value });
      // An earlier tag of the same seid never hits again.
      if (known !== undefined) expect(cache.getTagged(seid, known.tag)).toBeUndefined();
    }
    let hits = 0;
    for (const [seid, { tag, value }] of model) {
      const hit = cache.getTagged(seid, tag);
      if (hit === undefined) continue;
      hits += 1;
      expect(Buffer.from(hit).equals(Buffer.from(value))).toBe(true);
    }
    expect(hits).toBeGreaterThan(0);
    expect(cache.bytes).toBeLessThanOrEqual(256 << 10);
  });

  test("limits: a disabled cache holds nothing; a value over half a chunk is never cached", () => {
    const off = new ElementCache(0);
    off.set(1n, new Uint8Array(10));
    expect(off.get(1n)).toBeUndefined();
    expect(off.bytes).toBe(0);
    const cache = new ElementCache(1 << 20);
    cache.set(5n, new Uint8Array(100));
    cache.set(5n, new Uint8Array(cache.chunkBytes)); // too big: the old value must go too
    expect(cache.get(5n)).toBeUndefined();
    expect(cache.bytes).toBe(0);
  });
});
