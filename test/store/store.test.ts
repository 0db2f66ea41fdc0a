import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { checkInvariants } from "../../testing/invariants.ts";
import fc from "fast-check";
import fs from "node:fs";
import path from "node:path";
import {
  CorruptionError,
  InvalidArgumentError,
  InvalidSeidError,
  NULL_SEID,
  ReadOnlyError,
  ROOT_SEID,
  Store,
  StoreClosedError,
  StoreLockedError,
  TransactionError,
} from "../../src/index.ts";
import { BACKENDS, failFast, scratchDir } from "../helpers.ts";
import { storeInternals } from "../../src/store/store.ts";

const SMALL = { segmentSize: 256 << 10, bufferSize: 64 << 10 } as const;

async function expectEqualsModel(store: Store, model: Map<bigint, Uint8Array>, universe: Iterable<bigint>): Promise<void> {
  for (const seid of universe) {
    const expected = model.get(seid);
    const got = await store.read(seid);
    if (expected === undefined) {
      expect(got).toBeUndefined();
      expect(store.has(seid)).toBe(false);
    } else {
      expect(got).toBeDefined();
      expect(Buffer.compare(got as Uint8Array, expected)).toBe(0);
      expect(store.sizeOf(seid)).toBe(expected.length);
    }
  }
  expect(store.stats().elements).toBe(model.size);
}

for (const io of BACKENDS) {
  describe(`store on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    let file: string;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`store-${io}`));
      file = path.join(dir, "s.lss");
    });
    afterEach(() => cleanup());

    test("reports the backend in use", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      expect(store.io).toBe(io === "uring" ? "io_uring" : "portable");
      expect(store.stats().io).toBe(store.io);
    });

    test("model: random transactions, reads, checkpoints and reopens equal a Map", async () => {
      const seidArb = fc.bigInt({ min: 1n, max: 24n });
      const valueArb = fc.oneof(
        fc.uint8Array({ minLength: 0, maxLength: 0 }),
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.uint8Array({ minLength: 4000, maxLength: 9000 }),
      );
      const opArb = fc.oneof(
        fc.record({ kind: fc.constant("write" as const), seid: seidArb, value: valueArb }),
        fc.record({ kind: fc.constant("delete" as const), seid: seidArb }),
      );
      const stepArb = fc.oneof(
        { weight: 6, arbitrary: fc.record({ kind: fc.constant("tx" as const), ops: fc.array(opArb, { maxLength: 8 }), fail: fc.boolean() }) },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant("checkpoint" as const) }) },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant("reopen" as const) }) },
      );
      const universe = Array.from({ length: 24 }, (_, i) => BigInt(i + 1));
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 25 }), failFast(`model on ${io}`, async (steps) => {
          const target = path.join(dir, `model-${run++}.lss`);
          const model = new Map<bigint, Uint8Array>();
          let store = await Store.open(target, { io, ...SMALL, cacheBytes: 16 << 10 });
          try {
            for (const step of steps) {
              if (step.kind === "tx") {
                const attempt = store.transaction(async (tx) => {
                  for (const op of step.ops) {
                    if (op.kind === "write") tx.write(op.seid, op.value);
                    else tx.delete(op.seid);
                    await Promise.resolve();
                  }
                  if (step.fail) throw new Error("abort");
                });
                if (step.fail) {
                  await expect(attempt).rejects.toThrow("abort");
                } else {
                  await attempt;
                  for (const op of step.ops) {
                    if (op.kind === "write") model.set(op.seid, op.value);
                    else model.delete(op.seid);
                  }
                }
              } else if (step.kind === "checkpoint") {
                await store.checkpoint();
              } else {
                await store.close();
                store = await Store.open(target, { io, cacheBytes: 16 << 10 });
              }
              await expectEqualsModel(store, model, universe);
            }
            await store.close();
            store = await Store.open(target, { io });
            await expectEqualsModel(store, model, universe);
          } finally {
            await store.close();
          }
        })),
        { numRuns: 25, seed: 4242 },
      );
    });

    test("large elements span parts and segments and read back whole", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const sizes = [0, 1, 4095, 4096, 4097, (64 << 10) - 97, (64 << 10) + 1, (256 << 10) + 7, 3 * (256 << 10) + 7];
      const values = sizes.map((size, i) => {
        const value = new Uint8Array(size);
        for (let j = 0; j < size; j++) value[j] = (j * 13 + i) & 0xff;
        return value;
      });
      await store.transaction((tx) => values.forEach((value, i) => tx.write(BigInt(i + 1), value)));
      for (let i = 0; i < values.length; i++) {
        const got = await store.read(BigInt(i + 1));
        expect(got?.length).toBe(sizes[i]);
        expect(Buffer.compare(got as Uint8Array, values[i] as Uint8Array)).toBe(0);
      }
      await store.checkpoint();
      await store.close();
      await using again = await Store.open(file, { io });
      for (let i = 0; i < values.length; i++) {
        expect(Buffer.compare((await again.read(BigInt(i + 1))) as Uint8Array, values[i] as Uint8Array)).toBe(0);
      }
    });

    test("atomic visibility: readers never see part of a transaction", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const seids = [10n, 11n, 12n, 13n];
      const versioned = (v: number) => new Uint8Array(64).fill(v);
      await store.transaction((tx) => seids.forEach((s) => tx.write(s, versioned(0))));
      let stop = false;
      let observations = 0;
      const reader = (async () => {
        while (!stop) {
          const values = await Promise.all(seids.map((s) => store.read(s)));
          const versions = new Set(values.map((v) => v?.[0]));
          expect(versions.size).toBe(1);
          observations += 1;
          await new Promise((r) => setImmediate(r));
        }
      })();
      for (let version = 1; version <= 20; version++) {
        await store.transaction(async (tx) => {
          for (const s of seids) {
            tx.write(s, versioned(version));
            await new Promise((r) => setTimeout(r, 1));
          }
        });
      }
      stop = true;
      await reader;
      expect(observations).toBeGreaterThan(10);
    });

    test("group commit: 64 concurrent committers share datasyncs", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      await store.transaction((tx) => tx.write(1n, new Uint8Array(1)));
      const before = store.stats().datasyncs;
      await Promise.all(
        Array.from({ length: 64 }, (_, i) => store.transaction((tx) => tx.write(BigInt(100 + i), new Uint8Array(100).fill(i)))),
      );
      const used = store.stats().datasyncs - before;
      expect(used).toBeGreaterThan(0);
      expect(used).toBeLessThan(16);
      for (let i = 0; i < 64; i++) expect((await store.read(BigInt(100 + i)))?.[0]).toBe(i);
    });

    test("relaxed durability resolves when applied and flush() makes it durable", async () => {
      let store = await Store.open(file, { io, ...SMALL, durability: "relaxed", flushTimeMs: 20 });
      for (let i = 1; i <= 50; i++) await store.transaction((tx) => tx.write(BigInt(i), new Uint8Array([i])));
      await store.flush();
      await store.close();
      store = await Store.open(file, { io });
      for (let i = 1; i <= 50; i++) expect((await store.read(BigInt(i)))?.[0]).toBe(i);
      await store.close();
    });

    test("seid spaces and allocation survive reopen and never repeat", async () => {
      let store = await Store.open(file, { io, ...SMALL });
      const space = store.createSeidSpace();
      expect(space).toBeGreaterThan(1);
      const first = new Set<bigint>();
      for (let i = 0; i < 100; i++) first.add(store.allocateSeid());
      for (let i = 0; i < 100; i++) first.add(store.allocateSeid(space));
      expect(first.size).toBe(200);
      expect(first.has(0n)).toBe(false);
      const used = store.allocateSeid(space);
      await store.transaction((tx) => tx.write(used, new Uint8Array([1])));
      await store.close();
      store = await Store.open(file, { io });
      const again = store.allocateSeid(space);
      expect(again > used).toBe(true);
      expect(first.has(store.allocateSeid())).toBe(false);
      expect(store.createSeidSpace()).toBeGreaterThan(space);
      expect(store.seids(space)).toEqual([used]);
      await store.close();
    });

    test("segment utilisation stays exact through overwrites and deletes", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      for (let round = 0; round < 5; round++) {
        await store.transaction((tx) => {
          for (let i = 1; i <= 30; i++) {
            if ((i + round) % 4 === 0) tx.delete(BigInt(i));
            else tx.write(BigInt(i), new Uint8Array(100 * ((i + round) % 7)));
          }
        });
      }
      const stats = store.stats();
      let expected = 0;
      for (let i = 1n; i <= 30n; i++) {
        const size = store.sizeOf(i);
        if (size !== undefined) expected += Math.ceil((32 + size) / 8) * 8;
      }
      expect(stats.liveRecordBytes).toBe(expected);
      await store.transaction((tx) => {
        for (let i = 1; i <= 30; i++) tx.delete(BigInt(i));
      });
      expect(store.stats().liveRecordBytes).toBe(0);
      expect(store.stats().liveBytes).toBe(0);
    });

    test("deleting everything then checkpointing gives segments back", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const value = new Uint8Array(30_000).fill(7);
      for (let t = 0; t < 20; t++) await store.transaction((tx) => { for (let i = 0; i < 5; i++) tx.write(BigInt(t * 5 + i + 1), value); });
      const used = store.stats().segmentsUsed;
      expect(used).toBeGreaterThan(4);
      await store.transaction((tx) => { for (let i = 1; i <= 100; i++) tx.delete(BigInt(i)); });
      await store.checkpoint();
      await store.checkpoint();
      const after = store.stats();
      expect(after.segmentsFree).toBeGreaterThan(used - 4);
      const fileBefore = after.fileBytes;
      for (let t = 0; t < 10; t++) await store.transaction((tx) => tx.write(BigInt(500 + t), value));
      // Reused, not grown (the cleaner may even give some of that free room back meanwhile).
      expect(store.stats().fileBytes).toBeLessThanOrEqual(fileBefore);
    });

    test("every error is typed and leaves the store usable and unchanged", async () => {
      const store = await Store.open(file, { io, ...SMALL });
      await store.transaction((tx) => tx.write(ROOT_SEID, new Uint8Array([9])));
      await expect(store.read(NULL_SEID)).rejects.toBeInstanceOf(InvalidSeidError);
      await expect(store.read(-1n)).rejects.toBeInstanceOf(InvalidSeidError);
      await expect(store.read(1n << 64n)).rejects.toBeInstanceOf(InvalidSeidError);
      await expect(store.read(5 as never)).rejects.toBeInstanceOf(InvalidSeidError);
      expect(() => store.has(0n)).toThrow(InvalidSeidError);
      await expect(store.transaction((tx) => tx.write(2n, "text" as never))).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(store.transaction((tx) => tx.write(2n, [1, 2] as never))).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(store.transaction((tx) => { tx.write(3n, new Uint8Array(1)); tx.write(0n, new Uint8Array(1)); })).rejects.toBeInstanceOf(InvalidSeidError);
      expect(store.has(3n)).toBe(false);
      let leaked: import("../../src/index.ts").Transaction | undefined;
      await store.transaction((tx) => { leaked = tx; });
      expect(() => leaked?.write(4n, new Uint8Array(1))).toThrow(TransactionError);
      expect(() => store.allocateSeid(77)).toThrow(InvalidArgumentError);
      await expect(Store.open(file, { io })).rejects.toBeInstanceOf(StoreLockedError);
      await expect(Store.open(path.join(dir, "x.lss"), { io, cacheBytes: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
      // Still usable and unchanged.
      expect((await store.read(ROOT_SEID))?.[0]).toBe(9);
      await store.transaction((tx) => tx.write(2n, new ArrayBuffer(3)));
      await store.transaction((tx) => tx.write(5n, new Uint16Array([1, 2])));
      expect(store.sizeOf(2n)).toBe(3);
      expect(store.sizeOf(5n)).toBe(4);
      await store.close();
      await expect(store.read(1n)).rejects.toBeInstanceOf(StoreClosedError);
      await expect(store.transaction(() => {})).rejects.toBeInstanceOf(StoreClosedError);
      const readOnly = await Store.open(file, { io, readOnly: true });
      expect((await readOnly.read(ROOT_SEID))?.[0]).toBe(9);
      await expect(readOnly.transaction((tx) => tx.write(1n, new Uint8Array(1)))).rejects.toBeInstanceOf(ReadOnlyError);
      await readOnly.close();
      fs.writeFileSync(path.join(dir, "junk.lss"), Buffer.alloc(20_000, 0x41));
      await expect(Store.open(path.join(dir, "junk.lss"), { io })).rejects.toBeInstanceOf(CorruptionError);
      await expect(Store.open(path.join(dir, "missing.lss"), { io, create: false })).rejects.toBeInstanceOf(InvalidArgumentError);
    });

    test("an unknown format version is a clear CorruptionError", async () => {
      const store = await Store.open(file, { io, ...SMALL });
      await store.close();
      const bytes = fs.readFileSync(file);
      for (const copy of [0, 4096]) {
        bytes.writeUInt32LE(99, copy + 8);
        const crc = Bun.hash.crc32(bytes.subarray(copy, copy + 4092)) >>> 0;
        bytes.writeUInt32LE(crc, copy + 4092);
      }
      fs.writeFileSync(file, bytes);
      await expect(Store.open(file, { io })).rejects.toThrow(/format version 99/);
    });

    test("a flipped bit in an element gives CorruptionError, never wrong bytes", async () => {
      let store = await Store.open(file, { io, ...SMALL, cacheBytes: 0 });
      const value = new Uint8Array(5000).fill(0x5a);
      await store.transaction((tx) => tx.write(7n, value));
      await store.transaction((tx) => tx.write(8n, new Uint8Array(100).fill(1)));
      await store.close();
      const bytes = fs.readFileSync(file);
      const at = bytes.indexOf(Buffer.alloc(64, 0x5a));
      expect(at).toBeGreaterThan(0);
      bytes[at + 100] = (bytes[at + 100] as number) ^ 0x10;
      fs.writeFileSync(file, bytes);
      store = await Store.open(file, { io, cacheBytes: 0 });
      await expect(store.read(7n)).rejects.toBeInstanceOf(CorruptionError);
      expect((await store.read(8n))?.[0]).toBe(1);
      await store.close();
    });
  });
}

describe("commitWaitBlockUs", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("store-block"));
  });
  afterEach(() => cleanup());

  test("out of range is an InvalidArgumentError and creates nothing", async () => {
    for (const bad of [-1, 1001, 1.5, Number.NaN, Infinity]) {
      const file = path.join(dir, "bad.lss");
      await expect(Store.open(file, { commitWaitBlockUs: bad })).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(fs.existsSync(file)).toBe(false);
    }
  });

  test("serial durable commits with and without it read back exactly; serving standbys turns it off", async () => {
    for (const blockUs of [undefined, 0, 1000]) {
      const file = path.join(dir, `s-${String(blockUs)}.lss`);
      const store = await Store.open(file, blockUs === undefined ? {} : { commitWaitBlockUs: blockUs });
      const log = storeInternals(store).core.log;
      expect(log.commitWaitBlockUs).toBe(blockUs ?? 1000);
      const values = new Map<bigint, Uint8Array>();
      for (let i = 0; i < 50; i++) {
        const seid = store.allocateSeid();
        const value = new Uint8Array(1 + ((i * 37) % 300)).fill(i);
        await store.transaction((tx) => tx.write(seid, value));
        values.set(seid, value);
      }
      if (blockUs === undefined) {
        store.share(); // no Worker attached: nothing changes (test/workers covers an attached one)
        expect(log.commitWaitBlockUs).toBe(1000);
      } else if (blockUs === 1000) {
        const server = await store.serveReplication({ port: 0, secret: "0123456789abcdef0123456789abcdef", log: () => {} });
        expect(log.commitWaitBlockUs).toBe(0);
        await server.close();
      }
      await store.close();
      const reopened = await Store.open(file);
      for (const [seid, value] of values) expect(await reopened.read(seid)).toEqual(value);
      await reopened.close();
    }
  });
});

describe("commits spanning several units", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("store-multiunit"));
  });
  afterEach(() => cleanup());

  for (const io of BACKENDS) {
    test(`${io}: a serial commit of a value larger than a flush buffer costs one datasync, and reads back exactly`, async () => {
      const file = path.join(dir, `m-${io}.lss`);
      const store = await Store.open(file, { io, bufferSize: 256 << 10, cacheBytes: 0 });
      const values = new Map<bigint, Uint8Array>();
      const commits = 12;
      const before = store.stats().datasyncs;
      for (let i = 0; i < commits; i++) {
        const seid = store.allocateSeid();
        // 3–4 units of 256 KiB each: the parts fill units whose writes are in flight when the
        // commit record's unit is sealed.
        const value = new Uint8Array((700 << 10) + i * 4099);
        for (let j = 0; j < value.length; j += 4096) value[j] = (i * 31 + j) & 0xff;
        await store.transaction((tx) => tx.write(seid, value));
        values.set(seid, value);
      }
      // One datasync per commit once its writes are done (two or more when each filled unit got
      // its own); a little slack for a datasync forced by SYNC_EVERY_UNITS.
      expect(store.stats().datasyncs - before).toBeLessThanOrEqual(commits + 2);
      await store.close();
      const reopened = await Store.open(file, { io });
      for (const [seid, value] of values) expect(Buffer.from((await reopened.read(seid)) as Uint8Array).equals(Buffer.from(value))).toBe(true);
      await reopened.close();
    });
  }
});

describe("store locking across processes", () => {
  test("a second opener in another process gets StoreLockedError", async () => {
    const { dir, cleanup } = scratchDir("lock");
    try {
      const file = path.join(dir, "l.lss");
      await using store = await Store.open(file, SMALL);
      const script = path.join(dir, "open.ts");
      const entry = path.resolve(import.meta.dir, "../../src/index.ts");
      fs.writeFileSync(
        script,
        `import { Store } from ${JSON.stringify(entry)};\n` +
          `try { await Store.open(${JSON.stringify(file)}); console.log("opened"); } catch (e) { console.log(e.constructor.name, e.code); }\n`,
      );
      const child = Bun.spawnSync([process.execPath, script]);
      expect(child.stdout.toString().trim()).toBe("StoreLockedError LSS_STORE_LOCKED");
      expect(store.has(1n)).toBe(false);
    } finally {
      cleanup();
    }
  });
});

describe("recovery cost and close", () => {
  test("recovery replays only the log since the last checkpoint", async () => {
    const { dir, cleanup } = scratchDir("replay-cost");
    try {
      const file = path.join(dir, "r.lss");
      const store = await Store.open(file, { ...SMALL, numSegmentsPerCheckpoint: 1000, autoClean: false });
      for (let t = 0; t < 300; t++) await store.transaction((tx) => { for (let i = 0; i < 10; i++) tx.write(BigInt(t * 10 + i + 1), new Uint8Array(200).fill(t & 255)); });
      await store.checkpoint();
      for (let t = 0; t < 3; t++) await store.transaction((tx) => tx.write(BigInt(90_000 + t), new Uint8Array(10)));
      await store.flush();
      fs.copyFileSync(file, path.join(dir, "crashed.lss"));
      await store.close();
      const crashed = await Store.open(path.join(dir, "crashed.lss"));
      const report = crashed.stats().recovery;
      expect(report.checkpointLoaded).toBe(true);
      expect(report.transactionsReplayed).toBe(3);
      expect(report.unitsReplayed).toBeLessThanOrEqual(4);
      expect(crashed.stats().elements).toBe(3003);
      expect(crashed.stats().uncleanShutdowns).toBe(1);
      expect((await crashed.read(1234n))?.[0]).toBe(123);
      await crashed.close();
    } finally {
      cleanup();
    }
  });

  test("close() waits for transactions in flight", async () => {
    const { dir, cleanup } = scratchDir("close-wait");
    try {
      const file = path.join(dir, "c.lss");
      const store = await Store.open(file, SMALL);
      const pending = Array.from({ length: 20 }, (_, i) => store.transaction(async (tx) => {
        await Bun.sleep(1);
        tx.write(BigInt(i + 1), new Uint8Array([i]));
      }));
      await store.close();
      await Promise.all(pending);
      const again = await Store.open(file);
      for (let i = 0; i < 20; i++) expect((await again.read(BigInt(i + 1)))?.[0]).toBe(i);
      expect(again.stats().uncleanShutdowns).toBe(0);
      await again.close();
    } finally {
      cleanup();
    }
  });
});

describe("aborted transactions and replay", () => {
  test("an aborted transaction's background spill never interleaves with the next transaction (regression)", async () => {
    const { dir, cleanup } = scratchDir("abort-spill");
    try {
      const file = path.join(dir, "a.lss");
      const store = await Store.open(file, { ...SMALL, autoClean: false, numSegmentsPerCheckpoint: 1000 });
      await store.transaction((tx) => tx.write(7n, new Uint8Array([7])));
      await store.checkpoint();
      for (let round = 0; round < 5; round++) {
        const aborted = store.transaction((tx) => {
          // Past the spill threshold: records start going to the log while the function runs.
          for (let i = 0; i < 6; i++) tx.write(BigInt(100 + i), new Uint8Array(900_000).fill(0xaa));
          throw new Error("abort");
        });
        const next = store.transaction((tx) => {
          tx.write(7n, new Uint8Array([round]));
          tx.write(BigInt(200 + round), new Uint8Array(300_000).fill(round));
        });
        await expect(aborted).rejects.toThrow("abort");
        await next;
      }
      await store.flush();
      fs.copyFileSync(file, path.join(dir, "crashed.lss"));
      await store.close();
      const crashed = await Store.open(path.join(dir, "crashed.lss"));
      expect((await crashed.read(7n))?.[0]).toBe(4);
      for (let round = 0; round < 5; round++) expect((await crashed.read(BigInt(200 + round)))?.[299_999]).toBe(round);
      for (let i = 0; i < 6; i++) expect(crashed.has(BigInt(100 + i))).toBe(false);
      expect(checkInvariants(crashed)).toEqual([]);
      await crashed.close();
    } finally {
      cleanup();
    }
  });
});
