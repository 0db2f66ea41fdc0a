/**
 * One store shared by real Bun Workers: FIFO transactions through the one commit path, reads in
 * Workers without messages, a Worker's death mid-transaction, group commit across Workers, misuse
 * and the closing rule. Every wait has a deadline; every value is checked byte for byte.
 */
import { describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { Store, StoreClosedError } from "../../src/index.ts";
import { SEID_LEASE } from "../../src/workers/host.ts";
import { PIN_ENTRIES, SharedPins } from "../../src/workers/shared-state.ts";
import { openStore, storeInternals } from "../../src/store/store.ts";
import { openBackend } from "../../src/io/open.ts";
import { ShufflingBackend } from "../../testing/shuffling-backend.ts";
import { scratchDir } from "../helpers.ts";
import { bigValue, decodeValue, randomWorkload, valueFor, type RandomResult, type TxRecord } from "./model.ts";
import { inScene, startJob, withTimeout, type Running } from "./util.ts";

/** Replay records in turn (txId) order; every read inside a transaction must match the model. */
function replay(records: TxRecord[]): { final: Map<string, number | null>; history: Map<string, Array<[number, number | null]>> } {
  const sorted = [...records].sort((a, b) => a.txId - b.txId);
  expect(new Set(sorted.map((r) => r.txId)).size).toBe(sorted.length);
  const state = new Map<string, number | null>();
  const history = new Map<string, Array<[number, number | null]>>();
  for (const record of sorted) {
    for (const [seid, tag] of record.reads) {
      if ((state.get(seid) ?? null) !== tag) {
        throw new Error(`tx ${record.txId} (thread ${record.thread}) read ${seid} = ${tag}, but in turn order it is ${state.get(seid) ?? null}`);
      }
    }
    for (const [seid, tag] of record.writes) {
      state.set(seid, tag);
      const list = history.get(seid) ?? [];
      list.push([record.txId, tag]);
      history.set(seid, list);
    }
  }
  return { final: state, history };
}

/** A read made after transaction `afterTx` committed must show that state or a later one. */
function checkOutsideRead(history: Map<string, Array<[number, number | null]>>, read: { seid: string; tag: number | null; afterTx: number }): void {
  const versions = history.get(read.seid) ?? [];
  let atOrBefore: number | null = null;
  const later: Array<number | null> = [];
  for (const [txId, tag] of versions) {
    if (txId <= read.afterTx) atOrBefore = tag;
    else later.push(tag);
  }
  if (read.tag !== atOrBefore && !later.includes(read.tag)) {
    throw new Error(`read of ${read.seid} after tx ${read.afterTx} saw ${read.tag}: never its value at or after that point`);
  }
}

describe("workers", () => {
  test("4 Workers and the main thread: every read and the final state match one serial order in turn order", async () => {
    const { dir, cleanup } = scratchDir("workers-model");
    const file = path.join(dir, "a.lss");
    const running: Array<Running<RandomResult>> = [];
    try {
      const store = await Store.open(file, { segmentSize: 256 << 10, bufferSize: 64 << 10 });
      const keys = Array.from({ length: 12 }, () => store.allocateSeid());
      const handle = store.share();
      for (let thread = 1; thread <= 4; thread++) {
        running.push(startJob<RandomResult>(handle, { kind: "random", thread, seed: 1000 + thread, transactions: 60, keys }));
      }
      // The main thread runs its own workload at the same time, plus bursts of transactions
      // opened without waiting: their ids must follow the order of the calls (FIFO).
      const mine = randomWorkload(store, { thread: 0, seed: 7, transactions: 60, keys });
      const burstIds: number[] = [];
      for (let round = 0; round < 5; round++) {
        const calls = Array.from({ length: 5 }, (_, i) =>
          store.transaction((tx) => {
            tx.write(keys[i] as bigint, valueFor(tx.id * 16 + 15, keys[i] as bigint));
            return tx.id;
          }),
        );
        const ids = await withTimeout(Promise.all(calls), 30_000, "burst");
        burstIds.push(...ids);
        for (let i = 1; i < ids.length; i++) expect(ids[i] as number).toBeGreaterThan(ids[i - 1] as number);
      }
      const results = await withTimeout(Promise.all([mine, ...running.map((r) => r.result)]), 120_000, "workloads");
      const records = results.flatMap((r) => r.records);
      // The bursts' writes are part of the history too.
      burstIds.forEach((txId, n) => records.push({ txId, thread: -1, reads: [], writes: [[`${keys[n % 5]}`, txId * 16 + 15]] }));
      const { final, history } = replay(records);
      for (const result of results) for (const read of result.outside) checkOutsideRead(history, read);
      expect(records.length).toBe(5 * 60 + 25);
      for (const seid of keys) expect(decodeValue(await store.read(seid))).toBe(final.get(`${seid}`) ?? null);
      await withTimeout(store.close(), 30_000, "close");
      const reopened = await Store.open(file);
      for (const seid of keys) expect(decodeValue(await reopened.read(seid))).toBe(final.get(`${seid}`) ?? null);
      await reopened.close();
    } finally {
      for (const r of running) r.worker.terminate();
      cleanup();
    }
  }, 180_000);

  test("a lone commit blocks the owner's thread only while no Worker is attached (commitWaitBlockUs)", async () => {
    await inScene("workers-block", async ({ file, running }) => {
      const store = await Store.open(file, { commitWaitBlockUs: 700 });
      const log = storeInternals(store).core.log;
      const keys = Array.from({ length: 2 }, () => store.allocateSeid());
      const handle = store.share();
      expect(log.commitWaitBlockUs).toBe(700); // shared, nobody attached yet
      const holder = startJob<unknown>(handle, { kind: "hold", keys, streamSeid: store.allocateSeid() });
      running.push(holder);
      await withTimeout(holder.message((m) => m.inside === true), 20_000, "holder inside its transaction");
      expect(log.commitWaitBlockUs).toBe(0); // a Worker's messages need this thread mid-commit
      holder.worker.terminate();
      const deadline = performance.now() + 20_000;
      while (log.commitWaitBlockUs !== 700) {
        if (performance.now() > deadline) throw new Error("commitWaitBlockUs not restored after the Worker went away");
        await Bun.sleep(10);
      }
      // The dead Worker's transaction is gone; the owner commits and reads back exactly.
      await withTimeout(store.transaction((tx) => tx.write(keys[0] as bigint, valueFor(5, keys[0] as bigint))), 20_000, "owner commit");
      expect(await store.read(keys[0] as bigint)).toEqual(valueFor(5, keys[0] as bigint));
      expect(await store.read(keys[1] as bigint)).toBeUndefined();
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 60_000);

  test("a Worker terminated inside its transaction (writes and an open write stream): gone, the next runs at once, reopen shows a committed prefix", async () => {
    await inScene("workers-death", async ({ file, running }) => {
      // No background cleaning: the commits counted at the end are the transactions' (the dead
      // Worker's stream leaves garbage the cleaner would otherwise move, in commits of its own).
      const store = await Store.open(file, { segmentSize: 1 << 20, bufferSize: 256 << 10, autoClean: false });
      const keys = Array.from({ length: 4 }, () => store.allocateSeid());
      const streamSeid = store.allocateSeid();
      await store.transaction((tx) => {
        for (const seid of keys) tx.write(seid, valueFor(1, seid));
      });
      const handle = store.share();
      const holder = startJob<unknown>(handle, { kind: "hold", keys, streamSeid });
      running.push(holder);
      await withTimeout(holder.message((m) => m.inside === true), 20_000, "holder inside its transaction");
      // A second Worker queues behind it and dies waiting; the main thread queues last.
      const queued = startJob<unknown>(handle, { kind: "queue", keys });
      running.push(queued);
      await withTimeout(queued.message((m) => m.queued === true), 20_000, "queued");
      const mainTx = store.transaction((tx) => {
        tx.write(keys[0] as bigint, valueFor(2, keys[0] as bigint));
        return tx.id;
      });
      await Bun.sleep(50);
      const killedAt = performance.now();
      holder.worker.terminate();
      queued.worker.terminate();
      const mainId = await withTimeout(mainTx, 10_000, "the next transaction after the death");
      const handOffMs = performance.now() - killedAt;
      expect(handOffMs).toBeLessThan(2_000);
      // Nothing of the dead transactions is visible, and the stream's element never appeared.
      expect(decodeValue(await store.read(keys[0] as bigint))).toBe(2);
      for (const seid of keys.slice(1)) expect(decodeValue(await store.read(seid))).toBe(1);
      expect(store.has(streamSeid)).toBe(false);
      // The store goes on: another Worker commits, the main thread reads it.
      const after = startJob<unknown>(handle, { kind: "commit-loop", keys: [keys[1] as bigint], count: 3, ack: false });
      running.push(after);
      await withTimeout(after.result, 20_000, "a Worker after the death");
      expect(decodeValue(await store.read(keys[1] as bigint))).toBe(3);
      await withTimeout(store.close(), 20_000, "close after deaths");
      const reopened = await Store.open(file);
      expect(decodeValue(await reopened.read(keys[0] as bigint))).toBe(2);
      expect(decodeValue(await reopened.read(keys[1] as bigint))).toBe(3);
      for (const seid of keys.slice(2)) expect(decodeValue(await reopened.read(seid))).toBe(1);
      expect(reopened.has(streamSeid)).toBe(false);
      expect(reopened.stats().commits).toBe(1 + 1 + 3);
      await reopened.close();
      console.log(`hand-off after a terminated holder: ${handOffMs.toFixed(1)} ms (main tx ${mainId})`);
    });
  }, 60_000);

  test("a reader Worker never sees part of a transaction while the main thread and a Worker commit (read and readSync)", async () => {
    await inScene("workers-atomic", async ({ file, running }) => {
      // Small buffers and segments: commits rotate buffers and segments while the reader reads.
      const store = await Store.open(file, { segmentSize: 128 << 10, bufferSize: 32 << 10, durability: "relaxed", cacheBytes: 1 << 20 });
      const keys = Array.from({ length: 8 }, () => store.allocateSeid());
      const handle = store.share();
      const reader = startJob<{ scans: number; violations: number }>(handle, { kind: "scan", keys, ms: 2_000, sync: true });
      const writer = startJob<{ commits: number }>(handle, { kind: "stripe", keys, ms: 2_000 });
      running.push(reader, writer);
      let mine = 0;
      const deadline = Date.now() + 2_000;
      while (Date.now() < deadline) {
        await store.transaction((tx) => {
          for (const seid of keys) tx.write(seid, valueFor(tx.id, seid));
        });
        mine += 1;
      }
      const [scan, stripes] = await withTimeout(Promise.all([reader.result, writer.result]), 30_000, "reader and writer");
      console.log(`atomic visibility: ${scan.scans} scans of 8 keys, ${mine} + ${stripes.commits} commits, ${scan.violations} violations`);
      expect(scan.violations).toBe(0);
      expect(scan.scans).toBeGreaterThan(10);
      expect(stripes.commits).toBeGreaterThan(5);
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 60_000);

  test("a Worker's reads through the page cache stay exact while the cleaner gives segments back and they are written again", async () => {
    await inScene("workers-page-cache", async ({ file, running }) => {
      // No value cache anywhere: every read of a Worker goes to a flush buffer or the file (through
      // the kernel's page cache, which the owner's O_DIRECT writes must keep coherent).
      const store = await Store.open(file, { segmentSize: 128 << 10, bufferSize: 32 << 10, cacheBytes: 0 });
      const keys = Array.from({ length: 96 }, () => store.allocateSeid());
      // Over 64 KiB, one multipart (over a 32 KiB buffer): what the synchronous fast path leaves
      // to the read's steps, run by both drivers (read and readSync).
      const large = [store.allocateSeid(), store.allocateSeid()];
      const largeValue = (round: number, i: number) => bigValue(100_003 + 50_000 * i, round * 10 + i);
      const sha = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
      const handle = store.share();
      let cleaned = 0;
      const ROUNDS = 12;
      for (let round = 1; round <= ROUNDS; round++) {
        await store.transaction((tx) => {
          for (const seid of keys) tx.write(seid, valueFor(round, seid));
          large.forEach((seid, i) => tx.write(seid, largeValue(round, i)));
        });
        await store.flush();
        // Earlier rounds' segments are all garbage now: cleaning gives them back for reuse.
        cleaned += (await store.compact()).segmentsCleaned;
        const sync = round % 2 === 0;
        const reader = startJob<{ tags: Array<number | null>; hits: number }>(handle, { kind: "tags", keys, sync });
        const both = startJob<{ results: Array<{ read: string; readSync: string }> }>(handle, { kind: "both-ways", keys: large });
        running.push(reader, both);
        const { tags, hits } = await withTimeout(reader.result, 30_000, `round ${round} reads`);
        expect(hits).toBe(0);
        expect(tags).toEqual(keys.map(() => round));
        const { results } = await withTimeout(both.result, 30_000, `round ${round} large reads`);
        expect(results).toEqual(large.map((_, i) => ({ read: sha(largeValue(round, i)), readSync: sha(largeValue(round, i)) })));
      }
      // Segments were given back and written again: the log written is well past the file's size
      // (so later rounds' Workers read offsets that earlier rounds' Workers had read).
      const { bytesWritten, fileBytes } = store.stats();
      expect(cleaned).toBeGreaterThan(0);
      expect(bytesWritten).toBeGreaterThan(2 * fileBytes);
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 120_000);

  test("group commit across Workers: 8 Workers committing at once share flushes", async () => {
    await inScene("workers-group", async ({ file, running }) => {
      // Every completion is held until the device is idle and it has waited 5 ms: a slow disk.
      // On the real one a datasync could finish before the next Worker's commit arrived (108 of
      // 200 commits had their own on a loaded machine), so the count measured the machine's load;
      // a slow flush shows whether the turn moves on while one is in flight, and commits join it.
      const slow = new ShufflingBackend(await openBackend({ io: "auto" }), { shuffle: true, batch: 1_000, holdMs: 5 });
      const store = await openStore(file, {}, slow);
      const keys = Array.from({ length: 8 }, () => store.allocateSeid());
      const handle = store.share();
      await store.flush();
      const before = store.stats();
      for (const seid of keys) running.push(startJob<unknown>(handle, { kind: "commit-loop", keys: [seid], count: 25, ack: false }));
      await withTimeout(Promise.all(running.map((r) => r.result)), 60_000, "commit loops");
      const after = store.stats();
      const commits = after.commits - before.commits;
      const datasyncs = after.datasyncs - before.datasyncs;
      console.log(`group commit: ${commits} durable commits from 8 Workers took ${datasyncs} datasyncs`);
      expect(commits).toBe(200);
      expect(datasyncs).toBeLessThan(commits / 2);
      for (const seid of keys) expect(decodeValue(await store.read(seid))).toBe(25);
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 90_000);

  test("large elements across threads: a Worker reads one whole, as a stream and through a BYOB reader, writes one through a stream and one of 20 MiB whole", async () => {
    const { dir, cleanup } = scratchDir("workers-big");
    const file = path.join(dir, "a.lss");
    type Result = { wholeHash: string; streamedHash: string; byob: string; byobSmall: string; size: number };
    const running: Array<Running<unknown>> = [];
    try {
      const store = await Store.open(file, { segmentSize: 4 << 20, bufferSize: 1 << 20 });
      const [read, small, streamed, whole] = [store.allocateSeid(), store.allocateSeid(), store.allocateSeid(), store.allocateSeid()];
      const big = bigValue(5_000_011, 10);
      const little = bigValue(70_001, 13);
      await store.transaction((tx) => {
        tx.write(read, big);
        tx.write(small, little);
      });
      const handle = store.share();
      const job = startJob<Result>(handle, { kind: "big", read, small, streamed, whole, sizes: [6_000_007, 20 << 20] });
      running.push(job);
      const result = await withTimeout(job.result, 60_000, "big");
      // readSync in a Worker: the multipart element and the single part over 64 KiB, exact.
      const both = startJob<{ results: Array<{ read: string; readSync: string }> }>(handle, { kind: "both-ways", keys: [read, small] });
      running.push(both);
      const { results } = await withTimeout(both.result, 60_000, "both ways");
      expect(result.size).toBe(big.length);
      expect(result.wholeHash).toBe(Bun.hash(big).toString());
      expect(result.streamedHash).toBe(Bun.hash(big).toString());
      const sha = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
      expect(result.byob).toBe(sha(big));
      expect(result.byobSmall).toBe(sha(little));
      expect(results).toEqual([
        { read: sha(big), readSync: sha(big) },
        { read: sha(little), readSync: sha(little) },
      ]);
      expect(Buffer.compare(Buffer.from((await store.read(streamed)) as Uint8Array), Buffer.from(bigValue(6_000_007, 11)))).toBe(0);
      expect(Buffer.compare(Buffer.from((await store.read(whole)) as Uint8Array), Buffer.from(bigValue(20 << 20, 12)))).toBe(0);
      await withTimeout(store.close(), 20_000, "close");
    } finally {
      for (const r of running) r.worker.terminate();
      cleanup();
    }
  }, 90_000);

  test("a damaged element in a Worker: read, readSync and readStream throw CorruptionError after reading it again with O_DIRECT; the others read exactly", async () => {
    await inScene("workers-damaged", async ({ file, running }) => {
      const store = await Store.open(file, { segmentSize: 256 << 10, bufferSize: 64 << 10, cacheBytes: 0 });
      const [good, damaged, multipart] = [store.allocateSeid(), store.allocateSeid(), store.allocateSeid()];
      const marker = new Uint8Array(3000).fill(0x5a);
      const partBytes = new Uint8Array(600 << 10).fill(3);
      await store.transaction((tx) => {
        tx.write(good, valueFor(1, good));
        tx.write(damaged, marker);
        tx.write(multipart, partBytes);
      });
      // Enough after them that no flush buffer still holds their bytes: reads go to the file.
      for (let i = 0; i < 16; i++) {
        await store.transaction((tx) => {
          for (let j = 0; j < 40; j++) tx.write(store.allocateSeid(), valueFor(100 + j, BigInt(j)));
        });
      }
      await store.flush();
      // Damage both on disk (written through the page cache and synced: an O_DIRECT read sees it too).
      const fd = fs.openSync(file, "r+");
      try {
        const bytes = fs.readFileSync(file);
        const at = bytes.indexOf(Buffer.from(marker));
        const part = bytes.indexOf(Buffer.alloc(4096, 3));
        expect(at).toBeGreaterThan(0);
        expect(part).toBeGreaterThan(0);
        fs.writeSync(fd, Buffer.from([0x5b]), 0, 1, at + 1500);
        fs.writeSync(fd, Buffer.from([0]), 0, 1, part + 10);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      const job = startJob<{ results: Array<{ read: string; readSync: string; stream: string }>; directRetries: number }>(store.share(), {
        kind: "both-ways",
        keys: [good, damaged, multipart],
        stream: true,
      });
      running.push(job);
      const { results, directRetries } = await withTimeout(job.result, 30_000, "damaged reads");
      const sha = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
      expect(results).toEqual([
        { read: sha(valueFor(1, good)), readSync: sha(valueFor(1, good)), stream: sha(valueFor(1, good)) },
        { read: "CorruptionError", readSync: "CorruptionError", stream: "CorruptionError" },
        { read: "CorruptionError", readSync: "CorruptionError", stream: "CorruptionError" },
      ]);
      // Each of the six failing reads (read, readSync and a stream, of two elements) went on with
      // O_DIRECT once before giving up.
      expect(directRetries).toBe(6);
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 60_000);

  test("a full pin table: a Worker's readSync throws InvalidArgumentError after its 1 s bound, read() waits for a pin and then reads exactly", async () => {
    await inScene("workers-pins-full", async ({ file, running }) => {
      const store = await Store.open(file, { cacheBytes: 0 });
      const seid = store.allocateSeid();
      const value = bigValue(100_003, 21); // over 64 KiB: never the synchronous fast path
      await store.transaction((tx) => tx.write(seid, value));
      const handle = store.share();
      // Hold every entry of the shared pin table, as 16 k open streams would.
      const pins = new SharedPins(handle.pins);
      const held: number[] = [];
      for (let entry = pins.tryPin(9_999, 1); entry >= 0; entry = pins.tryPin(9_999, 1)) held.push(entry);
      expect(held.length).toBe(PIN_ENTRIES);
      const job = startJob<{ syncError: string; syncMs: number; readBytes: number }>(handle, { kind: "pins-full", seid });
      running.push(job);
      await withTimeout(job.message((data) => data.waiting === true), 30_000, "readSync gave up, read() waits");
      await Bun.sleep(50);
      expect(job.messages.some((data) => data.done === true)).toBe(false); // still waiting
      for (const entry of held) pins.unpin(entry);
      const result = await withTimeout(job.result, 30_000, "read() after the pins were released");
      expect(result.syncError).toBe("InvalidArgumentError");
      expect(result.syncMs).toBeGreaterThanOrEqual(900);
      expect(result.readBytes).toBe(value.length);
      expect(Buffer.compare(Buffer.from((await store.read(seid)) as Uint8Array), Buffer.from(value))).toBe(0);
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 60_000);

  test("entries() in a Worker visits what the owner's does: every space, one space, a seid range; spaces() and io are the owner's", async () => {
    await inScene("workers-entries", async ({ file, running }) => {
      const store = await Store.open(file);
      const space = store.createSeidSpace();
      const inDefault = Array.from({ length: 30 }, () => store.allocateSeid());
      const inSpace = Array.from({ length: 20 }, () => store.allocateSeid(space));
      await store.transaction((tx) => {
        for (const seid of [...inDefault, ...inSpace]) tx.write(seid, valueFor(Number(seid % 1000n), seid));
        tx.write(inSpace[5] as bigint, bigValue(200_000, 5)); // one multipart among them
      });
      await store.transaction((tx) => {
        tx.delete(inDefault[3] as bigint);
        tx.delete(inSpace[7] as bigint);
      });
      const options = [{}, { space }, { space, from: inSpace[2], to: inSpace[9] }, { from: inDefault[10], to: inSpace[1] }];
      const sha = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
      const expected: Array<Array<[string, string]>> = [];
      for (const option of options) {
        const list: Array<[string, string]> = [];
        for await (const [seid, bytes] of store.entries(option)) list.push([String(seid), sha(bytes)]);
        expected.push(list);
      }
      expect(expected.map((list) => list.length)).toEqual([48, 19, 7, 22]);
      const job = startJob<{ lists: Array<Array<[string, string]>>; spacesBefore: number[]; created: number; spacesAfter: number[]; io: string }>(store.share(), { kind: "entries", options });
      running.push(job);
      const { lists, spacesBefore, created, spacesAfter, io } = await withTimeout(job.result, 30_000, "entries");
      expect(lists).toEqual(expected);
      // spaces() and io as the owner has them; a space the Worker created is in both lists at once.
      expect(spacesBefore).toEqual([0, 1, space]);
      expect(spacesAfter).toEqual([0, 1, space, created]);
      expect(store.spaces()).toEqual(spacesAfter);
      expect(io).toBe(store.io);
      await withTimeout(store.close(), 20_000, "close");
    });
  }, 60_000);

  test("a Worker's transaction waits for the standbys as its replication level asks, as the owner's does; a bad level is refused before anything is applied", async () => {
    await inScene("workers-levels", async ({ dir, running }) => {
      const store = await Store.open(path.join(dir, "a.lss"));
      // "durable" by default, and nobody to confirm it: a commit fails after 300 ms.
      const server = await store.serveReplication({ port: 0, secret: "s".repeat(32), replication: "durable", replicationTimeoutMs: 300, onReplicationTimeout: "fail", log: () => {} });
      try {
        const keys = [store.allocateSeid(), store.allocateSeid(), store.allocateSeid()];
        type Outcome = { code: string; ms: number };
        const job = startJob<{ byDefault: Outcome; async: Outcome; bogus: Outcome }>(store.share(), { kind: "levels", keys });
        running.push(job);
        const result = await withTimeout(job.result, 30_000, "levels");
        expect(result.byDefault.code).toBe("LSS_REPLICATION_TIMEOUT");
        expect(result.byDefault.ms).toBeGreaterThanOrEqual(250);
        expect(result.async.code).toBe("ok");
        expect(result.bogus.code).toBe("LSS_INVALID_ARGUMENT");
        // The first two committed on the primary (the timeout is about the standby only); the bogus one never ran.
        expect(await store.has(keys[0] as bigint)).toBe(true);
        expect(await store.has(keys[1] as bigint)).toBe(true);
        expect(await store.has(keys[2] as bigint)).toBe(false);
        // The owner refuses a bad level up front too, with nothing applied.
        const seid = store.allocateSeid();
        await expect(store.transaction((tx) => tx.write(seid, new Uint8Array(1)), { replication: "bogus" as "async" })).rejects.toMatchObject({ code: "LSS_INVALID_ARGUMENT" });
        expect(store.has(seid)).toBe(false);
      } finally {
        await server.close();
        await withTimeout(store.close(), 20_000, "close");
      }
    });
  }, 90_000);

  test("allocateSeid never hands out a live seid: a Worker steps over seids in its lease written by hand, the owner over those a Worker wrote", async () => {
    await inScene("workers-alloc", async ({ dir, running }) => {
      const store = await Store.open(path.join(dir, "a.lss"));
      const seid = (low: number) => (1n << 32n) | BigInt(low);
      // Written by hand where the allocators will look: the start of the space (the first lease
      // starts past these) and a seid inside that lease.
      const ownerByHand = [seid(1), seid(2), seid(3), seid(5)];
      await store.transaction((tx) => {
        for (const s of ownerByHand) tx.write(s, valueFor(3, s));
      });
      const handle = store.share();
      // The Worker's lease is [4, 4 + SEID_LEASE); it writes the two seids after it by hand.
      const workerByHand = [seid(4 + SEID_LEASE), seid(5 + SEID_LEASE)];
      const job = startJob<{ allocated: bigint[] }>(handle, { kind: "alloc", byHand: workerByHand, count: 3 });
      running.push(job);
      const { allocated } = await withTimeout(job.result, 20_000, "allocations in a Worker");
      expect(allocated).toEqual([seid(4), seid(6), seid(7)]);
      expect(store.allocateSeid()).toBe(seid(6 + SEID_LEASE));
      for (const s of ownerByHand) expect(decodeValue(await store.read(s))).toBe(3);
      for (const s of workerByHand) expect(decodeValue(await store.read(s))).toBe(7);
      await withTimeout(store.close(), 10_000, "close");
    });
  }, 60_000);

  test("a Worker's flush() while the owner's transaction that called share() runs waits its turn: it is not that callback's call", async () => {
    await inScene("workers-share-inside", async ({ dir, running }) => {
      const store = await Store.open(path.join(dir, "a.lss"));
      const seid = store.allocateSeid();
      let job!: Running<{ flushed: boolean }>;
      let settledInside: string | undefined;
      await withTimeout(
        store.transaction(async (tx) => {
          tx.write(seid, valueFor(1, seid));
          // The Worker host starts here, inside this callback.
          job = startJob<{ flushed: boolean }>(store.share(), { kind: "flush" });
          running.push(job);
          job.result.then(
            () => (settledInside ??= "resolved"),
            (error: unknown) => (settledInside ??= String(error)),
          );
          await withTimeout(job.message((m) => m.asking === true), 20_000, "the Worker's flush request");
          await Bun.sleep(200);
          // Not refused (it is another thread's call) and not run (this transaction holds the turn).
          expect(settledInside).toBeUndefined();
        }),
        30_000,
        "the owner's transaction",
      );
      expect(await withTimeout(job.result, 20_000, "the Worker's flush")).toEqual({ flushed: true });
      expect(decodeValue(await store.read(seid))).toBe(1);
      await withTimeout(store.close(), 10_000, "close");
    });
  }, 60_000);

  test("a Worker backs the store up (run by the owner, progress reported in the Worker): full then an increment, verified and restored exactly", async () => {
    await inScene("workers-backup", async ({ dir, running }) => {
      const store = await Store.open(path.join(dir, "a.lss"));
      const keys = Array.from({ length: 200 }, () => store.allocateSeid());
      // The main thread commits meanwhile: the backups are consistent at a transaction all the same.
      let stop = false;
      const mine = store.allocateSeid();
      let n = 0;
      const writer = (async () => {
        while (!stop) {
          await store.transaction((tx) => tx.write(mine, valueFor(++n, mine)));
          await Bun.sleep(1);
        }
      })();
      const target = path.join(dir, "backups");
      const job = startJob<{
        first: { kind: string; transaction: number };
        second: { kind: string; transaction: number };
        reports: Array<{ phase: string; bytesDone: number; bytesTotal: number }>;
        insideError: string;
      }>(store.share(), { kind: "backup", target, keys });
      running.push(job);
      const result = await withTimeout(job.result, 60_000, "the Worker's backups");
      stop = true;
      await writer;
      expect(result.first.kind).toBe("full");
      expect(result.second.kind).toBe("incremental");
      expect(result.second.transaction).toBeGreaterThan(result.first.transaction);
      expect(result.reports.length).toBeGreaterThan(0);
      const last = result.reports.at(-1)!;
      expect(last.bytesDone).toBe(last.bytesTotal);
      expect(result.insideError).toBe("LSS_TRANSACTION");
      const verified = await Store.verifyBackup(target);
      expect(verified.objects).toBeGreaterThan(0);
      const restoredPath = path.join(dir, "restored.lss");
      await Store.restore(target, restoredPath, { transaction: result.second.transaction });
      const restored = await Store.open(restoredPath);
      try {
        for (const seid of keys) expect(decodeValue(await restored.read(seid))).toBe(seid === keys[0] ? 8 : 7);
      } finally {
        await restored.close();
      }
      await withTimeout(store.close(), 10_000, "close");
    });
  }, 90_000);

  test("after close() in a Worker, every method of its store throws StoreClosedError; close() again is fine", async () => {
    await inScene("workers-closed", async ({ dir, running }) => {
      const store = await Store.open(path.join(dir, "a.lss"));
      const seid = store.allocateSeid();
      await store.transaction((tx) => tx.write(seid, valueFor(1, seid)));
      const job = startJob<{ outcomes: Record<string, string> }>(store.share(), { kind: "closed", seid }, { close: false });
      running.push(job);
      const { outcomes } = await withTimeout(job.result, 20_000, "a closed Worker store");
      expect(Object.keys(outcomes).length).toBe(18);
      for (const [name, outcome] of Object.entries(outcomes)) expect({ name, outcome }).toEqual({ name, outcome: "StoreClosedError" });
      // The owner's store is not closed by it.
      expect(decodeValue(await store.read(seid))).toBe(1);
      await withTimeout(store.close(), 10_000, "close");
    });
  }, 60_000);

  test("misuse never hangs; the last holder's close closes the store; a terminated Worker leaves the file unlocked", async () => {
    await inScene("workers-close", async ({ file, running }) => {
      const store = await Store.open(file);
      const handle = store.share();
      const misused = store.allocateSeid();
      const misuse = startJob<{ errors: string[]; after: number | undefined }>(handle, { kind: "misuse", seid: misused });
      running.push(misuse);
      const { errors, after } = await withTimeout(misuse.result, 20_000, "misuse");
      expect(errors.length).toBe(5);
      for (const error of errors) expect(error).toMatch(/^TransactionError in \d+\.\d ms$/);
      // The Worker's store went on: both its transactions committed.
      expect(after).toBe(2);
      expect(decodeValue(await store.read(misused))).toBe(2);
      // A Worker that stays attached keeps the store open past the owner's close().
      const seid = store.allocateSeid();
      const stays = startJob<unknown>(handle, { kind: "commit-loop", keys: [seid], count: 1, ack: false }, { close: false });
      running.push(stays);
      await withTimeout(stays.result, 20_000, "attached worker");
      let closed = false;
      const closing = store.close().then(() => (closed = true));
      await Bun.sleep(300);
      expect(closed).toBe(false);
      expect(store.transaction(() => {})).rejects.toBeInstanceOf(StoreClosedError);
      expect(decodeValue(await store.read(seid))).toBe(1);
      // Its death detaches it: the store closes and the file is free for this process.
      stays.worker.terminate();
      await withTimeout(closing, 10_000, "close after the last Worker died");
      const reopened = await withTimeout(Store.open(file), 10_000, "reopen");
      expect(decodeValue(await reopened.read(seid))).toBe(1);
      await reopened.close();
    });
  }, 60_000);
});
