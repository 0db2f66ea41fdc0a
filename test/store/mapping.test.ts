import { describe, expect, test } from "bun:test";
import { MappingTable } from "../../src/store/state/mapping.ts";
import { rng } from "../helpers.ts";

describe("mapping table", () => {
  test("1 M seids take at most 32 bytes of RAM each", () => {
    const table = new MappingTable();
    Bun.gc(true);
    const before = process.memoryUsage().rss;
    for (let i = 1; i <= 1_000_000; i++) table.set((1n << 32n) | BigInt(i), { address: i * 136, sizeBytes: 100, multipart: false });
    Bun.gc(true);
    const rssPerSeid = (process.memoryUsage().rss - before) / 1_000_000;
    expect(table.size).toBe(1_000_000);
    expect(table.memoryBytes / 1_000_000).toBeLessThanOrEqual(32);
    // RSS agrees, roughly: arrays from before growth may not be returned to the OS at once, and
    // `bun test` runs every file in one process, so earlier files' garbage can be collected (or
    // not) inside this window. 64 B of slack failed once in a clean-clone run at 64.6 B: allow 96
    // (3x the table's own figure, which is asserted exactly above).
    expect(rssPerSeid).toBeLessThan(96);
    for (let i = 1; i <= 1_000_000; i += 9973) {
      expect(table.get((1n << 32n) | BigInt(i))).toEqual({ address: i * 136, sizeBytes: 100, multipart: false });
    }
  });

  test("random inserts, overwrites and deletes equal a Map", () => {
    const table = new MappingTable();
    const model = new Map<bigint, number>();
    const next = rng(99);
    for (let i = 0; i < 200_000; i++) {
      const seid = BigInt(1 + Math.floor(next() * 5000)) | (BigInt(Math.floor(next() * 3)) << 32n);
      if (next() < 0.3) {
        expect(table.delete(seid)?.address).toBe(model.get(seid));
        model.delete(seid);
      } else {
        const address = Math.floor(next() * 2 ** 40);
        table.set(seid, { address, sizeBytes: i, multipart: next() < 0.1 });
        model.set(seid, address);
      }
    }
    expect(table.size).toBe(model.size);
    for (const [seid, address] of model) expect(table.get(seid)?.address).toBe(address);
    let seen = 0;
    for (const [seid, location] of table.entries()) {
      expect(model.get(seid)).toBe(location.address);
      seen += 1;
    }
    expect(seen).toBe(model.size);
    // hasHalves (the seid allocator's lookup) agrees with has, high halves above 2^31 included.
    for (const space of [0, 1, 2, 0x8000_0001, 0xffff_ffff]) {
      for (let low = 1; low <= 5001; low += 7) {
        const seid = (BigInt(space) << 32n) | BigInt(low);
        expect(table.hasHalves(space, low)).toBe(model.has(seid));
      }
    }
    const high = (0xffff_ffffn << 32n) | 0xffff_fff0n;
    table.set(high, { address: 1, sizeBytes: 1, multipart: false });
    expect(table.hasHalves(0xffff_ffff, 0xffff_fff0)).toBe(true);
    expect(table.hasHalves(0xffff_ffff, 0xffff_fff1)).toBe(false);
  });

  test("reserving a little more again and again grows geometrically, not once per call", () => {
    // Each large commit reserves room for its writes; growing to exactly that each time would
    // rehash the whole table per commit (quadratic replay of a store written in large commits).
    const table = new MappingTable();
    const capacities = new Set<number>();
    for (let i = 1; i <= 200; i++) {
      table.reserve(i * 1000);
      capacities.add(table.memoryBytes);
    }
    expect(capacities.size).toBeLessThan(20);
    for (let i = 1; i <= 50_000; i++) table.set(BigInt(i), { address: i, sizeBytes: 1, multipart: false });
    expect(table.get(777n)).toEqual({ address: 777, sizeBytes: 1, multipart: false });
  });

  test("sizes of 4 GiB and more are kept exactly", () => {
    const table = new MappingTable();
    table.set(5n, { address: 1, sizeBytes: 2 ** 33 + 5, multipart: true });
    expect(table.sizeOf(5n)).toBe(2 ** 33 + 5);
    table.set(5n, { address: 2, sizeBytes: 7, multipart: false });
    expect(table.sizeOf(5n)).toBe(7);
  });

  test("addresses up to 2^53 − 1 and the multipart flag round-trip exactly; bad addresses are refused", () => {
    const table = new MappingTable();
    const cases = [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 40 + 12345, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER];
    cases.forEach((address, i) => {
      for (const multipart of [false, true]) {
        const seid = BigInt(i * 2 + (multipart ? 1 : 0) + 1) << 20n;
        table.set(seid, { address, sizeBytes: i, multipart });
        expect(table.get(seid)).toEqual({ address, sizeBytes: i, multipart });
      }
    });
    for (const bad of [-1, 0.5, Number.MAX_SAFE_INTEGER + 2, Number.NaN]) {
      expect(() => table.set(99n, { address: bad, sizeBytes: 1, multipart: false })).toThrow(RangeError);
    }
    expect(table.has(99n)).toBe(false);
  });

  test("detach / attach carry the whole table (big sizes too), and forEachLocation visits exactly its entries", () => {
    const table = new MappingTable();
    const model = new Map<bigint, { address: number; sizeBytes: number; multipart: boolean }>();
    const next = rng(11);
    for (let i = 1; i <= 5_000; i++) {
      const seid = (BigInt(Math.floor(next() * 4)) << 32n) | BigInt(i);
      const location = { address: Math.floor(next() * 2 ** 40), sizeBytes: i % 997 === 0 ? 2 ** 33 + i : Math.floor(next() * 10_000), multipart: i % 7 === 0 };
      table.set(seid, location);
      model.set(seid, location);
    }
    const visited = new Map<bigint, { address: number; sizeBytes: number; multipart: boolean }>();
    const halves = new Uint32Array(2);
    table.forEachLocation((lo, hi, address, sizeBytes, multipart) => {
      halves[0] = lo;
      halves[1] = hi;
      visited.set(new BigUint64Array(halves.buffer)[0] as bigint, { address, sizeBytes, multipart });
    });
    expect(visited).toEqual(model);

    const transfer = table.detach();
    expect(table.size).toBe(0);
    // Through a real structured clone with the slots transferred, as a backup posts it.
    const cloned = structuredClone(transfer, { transfer: [transfer.slots.buffer] });
    expect(transfer.slots.byteLength).toBe(0);
    const back = MappingTable.attach(cloned);
    expect(back.size).toBe(model.size);
    for (const [seid, location] of model) expect(back.get(seid)).toEqual(location);
    expect(() => MappingTable.attach({ ...cloned, capacity: cloned.capacity + 1 })).toThrow(RangeError);
  });
});
