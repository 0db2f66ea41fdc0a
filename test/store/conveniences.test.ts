/**
 * The API conveniences: `store.entries()`, `store.spaces()`, `tx.read()` (read-your-writes),
 * `store.readSync()`, and the one-time warning when `io: "auto"` falls back to portable.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { CorruptionError, InvalidArgumentError, Store, TransactionError, type Transaction } from "../../src/index.ts";
import { BACKENDS, fillPattern, rng, scratchDir } from "../helpers.ts";

const SMALL = { segmentSize: 256 << 10, bufferSize: 64 << 10 } as const;
const text = (s: string) => new TextEncoder().encode(s);
const pattern = (size: number, seed: number) => {
  const bytes = new Uint8Array(size);
  fillPattern(bytes, seed);
  return bytes;
};

async function collect(iterable: AsyncIterable<[bigint, Uint8Array]>): Promise<Array<[bigint, string]>> {
  const out: Array<[bigint, string]> = [];
  for await (const [seid, value] of iterable) out.push([seid, new TextDecoder().decode(value)]);
  return out;
}

for (const io of BACKENDS) {
  describe(`conveniences on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    let file: string;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`conveniences-${io}`));
      file = path.join(dir, "s.lss");
    });
    afterEach(() => cleanup());

    test("spaces() lists 0, 1 and every created space, across a reopen", async () => {
      let store = await Store.open(file, { ...SMALL, io });
      expect(store.spaces()).toEqual([0, 1]);
      const a = store.createSeidSpace();
      const b = store.createSeidSpace();
      expect(store.spaces()).toEqual([0, 1, a, b]);
      await store.close();
      store = await Store.open(file, { io });
      expect(store.spaces()).toEqual([0, 1, a, b]);
      await store.close();
    });

    test("entries() yields [seid, bytes] in seid order, by space or range, lazily", async () => {
      await using store = await Store.open(file, { ...SMALL, io });
      const space = store.createSeidSpace();
      const inDefault: [bigint, bigint, bigint] = [store.allocateSeid(), store.allocateSeid(), store.allocateSeid()];
      const inSpace: [bigint, bigint] = [store.allocateSeid(space), store.allocateSeid(space)];
      await store.transaction((tx) => {
        // Written out of order: entries() sorts.
        for (const seid of [...inSpace].reverse()) tx.write(seid, text(`s${seid}`));
        for (const seid of [...inDefault].reverse()) tx.write(seid, text(`d${seid}`));
        tx.write(1n, text("root"));
      });
      const all = await collect(store.entries());
      expect(all.map(([seid]) => seid)).toEqual([1n, ...inDefault, ...inSpace]);
      expect(all[1]).toEqual([inDefault[0], `d${inDefault[0]}`]);
      expect((await collect(store.entries({ space }))).map(([s]) => s)).toEqual(inSpace);
      expect((await collect(store.entries({ space: 0 }))).map(([s]) => s)).toEqual([1n]);
      expect((await collect(store.entries({ from: inDefault[1], to: inSpace[0] }))).map(([s]) => s)).toEqual([inDefault[1], inDefault[2], inSpace[0]]);
      // Lazy: values are read when reached; an element deleted before that is skipped.
      const seen: bigint[] = [];
      for await (const [seid] of store.entries({ space: 1 })) {
        seen.push(seid);
        if (seen.length === 1) await store.transaction((tx) => tx.delete(inDefault[1]));
      }
      expect(seen).toEqual([inDefault[0], inDefault[2]]);
      expect(() => store.entries({ space: -1 }).next()).toThrow(InvalidArgumentError);
    });

    test("entries() verifies values and refuses elements over maxReadBytes", async () => {
      const store = await Store.open(file, { ...SMALL, io, maxReadBytes: 1000 });
      const small = store.allocateSeid();
      const large = store.allocateSeid();
      await store.transaction((tx) => {
        tx.write(small, text("small"));
        tx.write(large, new Uint8Array(2000));
      });
      const iterator = store.entries()[Symbol.asyncIterator]();
      expect((await iterator.next()).value?.[0]).toBe(small);
      await expect(iterator.next()).rejects.toThrow(InvalidArgumentError);
      await store.close();
    });

    test("tx.read, first called after thousands of writes, deletes and spills, sees the newest of each, and later operations too", async () => {
      await using store = await Store.open(file, { ...SMALL, io });
      const seids = Array.from({ length: 64 }, () => store.allocateSeid());
      await store.transaction((tx) => {
        for (const seid of seids) tx.write(seid, text(`committed ${seid}`));
      });
      const next = rng(3);
      const model = new Map<bigint, string | undefined>(seids.map((seid) => [seid, `committed ${seid}`]));
      const op = (tx: Transaction, i: number) => {
        const seid = seids[Math.floor(next() * seids.length)] as bigint;
        if (next() < 0.2) {
          tx.delete(seid);
          model.set(seid, undefined);
        } else {
          // Now and then a large value, so that pending writes spill to the log meanwhile.
          const value = i % 250 === 0 ? `${i}:${"x".repeat(600_000)}` : `${i}`;
          tx.write(seid, text(value));
          model.set(seid, value);
        }
      };
      const show = (bytes: Uint8Array | undefined) => (bytes === undefined ? undefined : new TextDecoder().decode(bytes));
      await store.transaction(async (tx) => {
        for (let i = 0; i < 5_000; i++) op(tx, i);
        for (const seid of seids) expect(show(await tx.read(seid))).toBe(model.get(seid));
        for (let i = 5_000; i < 6_000; i++) op(tx, i);
        for (const seid of seids) expect(show(await tx.read(seid))).toBe(model.get(seid));
      });
      for (const seid of seids) expect(show(await store.read(seid))).toBe(model.get(seid));
    });

    test("tx.read sees the transaction's own writes and deletes, else the committed value", async () => {
      await using store = await Store.open(file, { ...SMALL, io });
      const [a, b, c, d] = [store.allocateSeid(), store.allocateSeid(), store.allocateSeid(), store.allocateSeid()];
      await store.transaction((tx) => {
        tx.write(a, text("a0"));
        tx.write(b, text("b0"));
      });
      const seen: Record<string, string | undefined> = {};
      const show = (bytes: Uint8Array | undefined) => (bytes === undefined ? undefined : new TextDecoder().decode(bytes));
      await store.transaction(async (tx) => {
        seen.committed = show(await tx.read(a));
        seen.missing = show(await tx.read(c));
        tx.write(a, text("a1"));
        seen.own = show(await tx.read(a));
        tx.delete(b);
        seen.deleted = show(await tx.read(b));
        tx.write(b, text("b2"));
        seen.rewritten = show(await tx.read(b));
        const own = await tx.read(a);
        (own as Uint8Array)[0] = 0; // a copy: the pending write is unchanged
        seen.again = show(await tx.read(a));
        // Outside the transaction nothing is visible yet.
        seen.outside = show(await store.read(a));
      });
      expect(seen).toEqual({ committed: "a0", missing: undefined, own: "a1", deleted: undefined, rewritten: "b2", again: "a1", outside: "a0" });
      expect(show(await store.read(a))).toBe("a1");
      // An aborted transaction's writes were only ever its own.
      await expect(
        store.transaction(async (tx) => {
          tx.write(d, text("never"));
          expect(show(await tx.read(d))).toBe("never");
          throw new Error("abort");
        }),
      ).rejects.toThrow("abort");
      expect(await store.read(d)).toBeUndefined();
    });

    test("tx.read: streams count once closed; writes spilled past 4 MiB are read back from the log", async () => {
      await using store = await Store.open(file, { ...SMALL, io, cacheBytes: 0 });
      const streamed = store.allocateSeid();
      const spilled = store.allocateSeid();
      const later = store.allocateSeid();
      await store.transaction((tx) => tx.write(streamed, text("old")));
      const big = pattern(300_000, 1);
      let escaped: Transaction | undefined;
      await store.transaction(async (tx) => {
        escaped = tx;
        const writer = tx.writeStream(streamed).getWriter();
        await writer.write(big.subarray(0, 100_000));
        expect(new TextDecoder().decode(await tx.read(streamed))).toBe("old");
        await writer.write(big.subarray(100_000));
        await writer.close();
        expect(Buffer.compare((await tx.read(streamed)) as Uint8Array, big)).toBe(0);
        // 5 MiB of writes: the first ones go to the log before commit, and no longer sit in memory.
        const first = pattern(1 << 20, 2);
        tx.write(spilled, first);
        for (let i = 0; i < 5; i++) tx.write(later, pattern(1 << 20, 10 + i));
        expect(Buffer.compare((await tx.read(spilled)) as Uint8Array, first)).toBe(0);
        expect(Buffer.compare((await tx.read(later)) as Uint8Array, pattern(1 << 20, 14))).toBe(0);
        // A later write of a streamed seid wins over the stream.
        tx.write(streamed, text("after the stream"));
        expect(new TextDecoder().decode(await tx.read(streamed))).toBe("after the stream");
      });
      expect(new TextDecoder().decode(await store.read(streamed))).toBe("after the stream");
      await expect((escaped as Transaction).read(streamed)).rejects.toThrow(TransactionError);
    });

    test("readSync: a cache hit needs no promise; a miss reads verified bytes from a flush buffer or the file", async () => {
      const small = text("small value");
      const large = pattern(700_000, 3); // several parts, across flush buffers
      let store = await Store.open(file, { ...SMALL, io, cacheBytes: 0, durability: "relaxed" });
      const [a, b, missing] = [store.allocateSeid(), store.allocateSeid(), store.allocateSeid()];
      await store.transaction((tx) => {
        tx.write(a, small);
        tx.write(b, large);
      });
      // No cache: straight after a relaxed commit the record is still in a flush buffer, or already in the file.
      expect(store.readSync(a)).toEqual(small);
      expect(Buffer.compare(store.readSync(b) as Uint8Array, large)).toBe(0);
      expect(store.readSync(missing)).toBeUndefined();
      await store.close();

      store = await Store.open(file, { ...SMALL, io });
      // store.read counts one miss, then one hit (the cache is looked up once per read).
      const before = store.stats();
      expect(await store.read(b)).toEqual(large);
      expect(store.stats().cacheMisses).toBe(before.cacheMisses + 1);
      expect(await store.read(b)).toEqual(large);
      expect(store.stats().cacheMisses).toBe(before.cacheMisses + 1);
      expect(store.stats().cacheHits).toBe(before.cacheHits + 1);
      const misses = store.stats().cacheMisses;
      const blockHits = store.stats().blockCache.hits;
      const fromFile = store.readSync(a);
      expect(fromFile).toEqual(small);
      expect(store.stats().cacheMisses).toBe(misses + 1);
      // Read from the file, a value is cached at once; read from the log's memory (the block read
      // around b may hold a's record too), at its second read (ElementCache.admitFromMemory).
      const fromMemory = store.stats().blockCache.hits - blockHits;
      expect(fromMemory === 0 || fromMemory === 1).toBe(true);
      (fromFile as Uint8Array).fill(0); // the caller's copy
      const second = store.readSync(a);
      expect(second).toEqual(small);
      const missesAfterSecond = store.stats().cacheMisses;
      expect(missesAfterSecond).toBe(misses + 1 + fromMemory);
      const hitsBefore = store.stats().cacheHits;
      const hit = store.readSync(a);
      expect(hit).toEqual(small);
      expect(store.stats().cacheMisses).toBe(missesAfterSecond);
      expect(store.stats().cacheHits).toBe(hitsBefore + 1);
      expect(Buffer.compare(store.readSync(b) as Uint8Array, large)).toBe(0);
      await store.close();
      expect(() => store.readSync(a)).toThrow();

      // Damage the small value's bytes on disk: readSync says so instead of returning them.
      const bytes = fs.readFileSync(file);
      const at = bytes.indexOf(Buffer.from("small value"));
      expect(at).toBeGreaterThan(0);
      bytes[at + 3] = (bytes[at + 3] as number) ^ 0xff;
      fs.writeFileSync(file, bytes);
      store = await Store.open(file, { io, readOnly: true });
      expect(() => store.readSync(a)).toThrow(CorruptionError);
      await store.close();
    });

    test("a multipart read that fails a checksum leaves no part read in flight: close() right after returns (regression)", async () => {
      let store = await Store.open(file, { ...SMALL, io });
      const seid = store.allocateSeid();
      const value = new Uint8Array(300_000).fill(0x5a); // about ten parts, read four at a time
      await store.transaction((tx) => tx.write(seid, value));
      await store.close();
      const bytes = fs.readFileSync(file);
      const at = bytes.indexOf(Buffer.alloc(1024, 0x5a));
      bytes[at + 10] = 0x00; // the first part: its siblings are still being read when it fails
      fs.writeFileSync(file, bytes);
      // A race: a few rounds make it show (before the fix, close hung on uring and threw on portable).
      for (let round = 0; round < 6; round++) {
        store = await Store.open(file, { io, readOnly: true, cacheBytes: 0 });
        await expect(store.read(seid)).rejects.toThrow(CorruptionError);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const deadline = new Promise<string>((resolve) => (timer = setTimeout(() => resolve("close hung"), 10_000)));
        const closed = store.close().then(
          () => "closed",
          (error: unknown) => `close threw ${String(error)}`,
        );
        expect(await Promise.race([closed, deadline])).toBe("closed");
        clearTimeout(timer);
      }
    });
  });
}

describe("read streams left early (regression)", () => {
  test("an error or a cancel waits for the read-ahead in flight: close() right after returns", () => {
    const { dir, cleanup } = scratchDir("stream-close");
    try {
      const child = path.join(import.meta.dir, "stream-close-child.ts");
      const ran = spawnSync(process.execPath, [child, dir], { encoding: "utf8", timeout: 60_000, killSignal: "SIGKILL" });
      expect(ran.stderr).toBe("");
      expect(ran.status).toBe(0);
      expect(JSON.parse(ran.stdout)).toEqual([...Array(4).fill("uring:corruption"), ...Array(4).fill("portable:corruption")]);
    } finally {
      cleanup();
    }
  }, 90_000);
});

describe("io fallback warning", () => {
  const child = path.join(import.meta.dir, "fallback-child.ts");
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => ({ dir, cleanup } = scratchDir("fallback")));
  afterEach(() => cleanup());

  function runChild(env: Record<string, string>): { stdout: string; stderr: string } {
    const ran = spawnSync(process.execPath, [child, dir], { env: { ...process.env, ...env }, encoding: "utf8", timeout: 60_000, killSignal: "SIGKILL" });
    expect(ran.status).toBe(0);
    return { stdout: ran.stdout, stderr: ran.stderr };
  }

  test("io: auto that loses io_uring warns once on stderr, with the reason also in stats()", () => {
    const { stdout, stderr } = runChild({ BLOOM_LSS_SHIM: path.join(dir, "no-such-shim.so"), BLOOM_LSS_DISABLE_URING: "" });
    const result = JSON.parse(stdout);
    expect(result.io).toEqual(["portable", "portable"]);
    expect(result.reason).toContain("no-such-shim.so");
    expect(stderr.match(/io_uring is unavailable/g)?.length).toBe(1);
    expect(stderr).toContain('io: "portable"');
    // Run from this checkout, the advice is the checkout's (a binary's would be about TMPDIR).
    expect(stderr).not.toContain("reinstall");
  });

  test("a deliberate fallback (BLOOM_LSS_DISABLE_URING) does not warn", () => {
    const { stdout, stderr } = runChild({ BLOOM_LSS_DISABLE_URING: "1" });
    expect(JSON.parse(stdout).io).toEqual(["portable", "portable"]);
    expect(stderr).not.toContain("io_uring is unavailable");
  });
});
