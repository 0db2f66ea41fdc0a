/**
 * A test Worker: attaches to the store it is handed and runs one job, posting what it observed.
 * Every value written is `valueFor(tag, seid)`, so any read can be checked byte for byte.
 */
import { Store } from "../../src/index.ts";
import type { AttachedStore } from "../../src/workers/attached.ts";
import type { StoreHandle } from "../../src/workers/handle.ts";
import { seededRandom } from "../../testing/prng.ts";
import { bigValue, decodeValue, randomWorkload, valueFor, type DriverJob } from "./model.ts";

declare const self: Worker;

async function run(job: DriverJob, store: AttachedStore): Promise<unknown> {
  switch (job.kind) {
    case "random":
      return randomWorkload(store, job);
    case "stripe": {
      // Write every key with the transaction's id as tag, in key order, until the time is up.
      const deadline = Date.now() + job.ms;
      let commits = 0;
      while (Date.now() < deadline) {
        await store.transaction((tx) => {
          for (const seid of job.keys) tx.write(seid, valueFor(tx.id, seid));
        });
        commits += 1;
      }
      return { commits };
    }
    case "hold": {
      // Open a transaction with writes and an open write stream, say so, and never finish it.
      await store.transaction(async (tx) => {
        for (const seid of job.keys) tx.write(seid, valueFor(999_999, seid));
        const writer = tx.writeStream(job.streamSeid).getWriter();
        await writer.write(new Uint8Array(3 << 20).fill(7));
        self.postMessage({ inside: true, txId: tx.id });
        await new Promise(() => {});
      });
      return undefined;
    }
    case "queue": {
      // Take a turn behind whoever holds it, and say so once the ticket is taken.
      const done = store.transaction((tx) => {
        for (const seid of job.keys) tx.write(seid, valueFor(888_888, seid));
      });
      self.postMessage({ queued: true });
      await done;
      return undefined;
    }
    case "commit-loop": {
      // Commit `count` transactions as fast as the turn allows (for group commit and SIGKILL),
      // saying so after each (SIGKILL: what was acknowledged), after the first, or never.
      for (let i = 1; i <= job.count; i++) {
        await store.transaction((tx) => tx.write(job.keys[0] as bigint, valueFor((job.base ?? 0) + i, job.keys[0] as bigint)));
        if (job.ack === true || (job.ack === "first" && i === 1)) self.postMessage({ ack: i });
      }
      return undefined;
    }
    case "scan": {
      // Read keys in order until told to stop: a transaction writes them all with one tag, in the
      // same order, so a later key must never show an older tag than an earlier key.
      let scans = 0;
      let violations = 0;
      const deadline = Date.now() + job.ms;
      while (Date.now() < deadline) {
        let previous = -1;
        // Every other scan with readSync when asked: its steps must see whole commits as well.
        const sync = job.sync === true && scans % 2 === 1;
        for (const seid of job.keys) {
          const tag = decodeValue(sync ? store.readSync(seid) : await store.read(seid)) ?? -1;
          const size = store.sizeOf(seid) ?? -1;
          if (tag < previous) violations += 1;
          if (tag >= 0 && size < 0) violations += 1;
          previous = tag;
        }
        scans += 1;
      }
      return { scans, violations };
    }
    case "tags": {
      // The tag of every key (each value checked byte for byte by decodeValue).
      const tags: Array<number | null> = [];
      for (const seid of job.keys) tags.push(decodeValue(job.sync === true ? store.readSync(seid) : await store.read(seid)));
      return { tags, hits: store.stats().worker.cacheHits };
    }
    case "both-ways": {
      // Each key read with read() and with readSync(): a sha-256 of the bytes, "none", or the error's name.
      const outcome = async (read: () => Uint8Array | undefined | Promise<Uint8Array | undefined>): Promise<string> => {
        try {
          const value = await read();
          return value === undefined ? "none" : new Bun.CryptoHasher("sha256").update(value).digest("hex");
        } catch (error) {
          return (error as Error).name;
        }
      };
      const streamed = async (seid: bigint): Promise<string> => {
        try {
          const hasher = new Bun.CryptoHasher("sha256");
          for await (const chunk of store.readStream(seid)) hasher.update(chunk);
          return hasher.digest("hex");
        } catch (error) {
          return (error as Error).name;
        }
      };
      const results: Array<{ read: string; readSync: string; stream?: string }> = [];
      for (const seid of job.keys) {
        const result: { read: string; readSync: string; stream?: string } = { readSync: await outcome(() => store.readSync(seid)), read: await outcome(() => store.read(seid)) };
        if (job.stream === true) result.stream = await streamed(seid);
        results.push(result);
      }
      return { results, directRetries: store.stats().worker.directRetries };
    }
    case "pins-full": {
      // Every pin of the store is held (by the test): readSync gives up with a typed error after
      // its bound; read() waits, saying so, until the pins are released.
      const started = performance.now();
      let syncError = "none";
      try {
        store.readSync(job.seid);
      } catch (error) {
        syncError = (error as Error).name;
      }
      const syncMs = performance.now() - started;
      const reading = store.read(job.seid);
      self.postMessage({ waiting: true });
      const value = await reading;
      return { syncError, syncMs, readBytes: value?.length ?? -1 };
    }
    case "entries": {
      // What entries() visits for each option: [seid, sha-256 of the bytes].
      const lists: Array<Array<[string, string]>> = [];
      for (const options of job.options) {
        const list: Array<[string, string]> = [];
        for await (const [seid, bytes] of store.entries(options)) list.push([String(seid), new Bun.CryptoHasher("sha256").update(bytes).digest("hex")]);
        lists.push(list);
      }
      // The store's seid spaces as this Worker sees them, before and after it creates one.
      const spacesBefore = store.spaces();
      const created = await store.createSeidSpaceAsync();
      return { lists, spacesBefore, created, spacesAfter: store.spaces(), io: store.io };
    }
    case "misuse": {
      // Each call that waits for the turn, awaited inside this Worker's own transaction callback;
      // then the transaction commits, and a later one commits and reads back.
      const errors: string[] = [];
      const calls = [() => store.transaction(() => {}), () => store.flush(), () => store.checkpoint(), () => store.compact(), () => store.close()];
      await store.transaction(async (tx) => {
        for (const call of calls) {
          const started = performance.now();
          try {
            await call();
            errors.push("no error");
          } catch (error) {
            errors.push(`${(error as Error).name} in ${(performance.now() - started).toFixed(1)} ms`);
          }
        }
        tx.write(job.seid, valueFor(1, job.seid));
      });
      await store.transaction((tx) => tx.write(job.seid, valueFor(2, job.seid)));
      await store.flush();
      return { errors, after: decodeValue(await store.read(job.seid)) };
    }
    case "backup": {
      // Write, then back up from this Worker (the owner runs it), counting progress reports here;
      // a second backup into the same target is an increment with this Worker's later commit.
      await store.transaction((tx) => {
        for (const seid of job.keys) tx.write(seid, valueFor(7, seid));
      });
      const reports: Array<{ phase: string; bytesDone: number; bytesTotal: number }> = [];
      const first = await store.backup(job.target, { onProgress: (p) => reports.push({ ...p }) });
      await store.transaction((tx) => tx.write(job.keys[0] as bigint, valueFor(8, job.keys[0] as bigint)));
      const second = await store.backup(job.target);
      let insideError = "";
      await store.transaction(async () => {
        insideError = await store.backup(job.target).then(
          () => "none",
          (error: unknown) => (error as { code?: string }).code ?? String(error),
        );
      });
      return { first: { kind: first.kind, transaction: first.transaction }, second: { kind: second.kind, transaction: second.transaction }, reports, insideError };
    }
    case "levels": {
      // One transaction at each kind of replication level; what each outcome was, and how long it took.
      const outcome = async (options: { replication?: unknown }, seid: bigint, tag: number) => {
        const started = performance.now();
        try {
          await store.transaction((tx) => tx.write(seid, valueFor(tag, seid)), options as { replication?: "async" });
          return { code: "ok", ms: performance.now() - started };
        } catch (error) {
          return { code: (error as { code?: string }).code ?? String(error), ms: performance.now() - started };
        }
      };
      const [a, b, c] = job.keys as [bigint, bigint, bigint];
      return {
        byDefault: await outcome({}, a, 1),
        async: await outcome({ replication: "async" }, b, 2),
        bogus: await outcome({ replication: "bogus" }, c, 3),
      };
    }
    case "flush": {
      // Ask the owner for a flush (from outside any transaction of this Worker), and say so.
      const flushed = store.flush();
      self.postMessage({ asking: true });
      await flushed;
      return { flushed: true };
    }
    case "closed": {
      // Close this Worker's store, then call every method: each must throw StoreClosedError.
      await store.close();
      const outcomes: Record<string, string> = {};
      const calls: Record<string, () => unknown> = {
        read: () => store.read(job.seid),
        readStream: () => store.readStream(job.seid),
        readSync: () => store.readSync(job.seid),
        entries: () => store.entries().next(),
        spaces: () => store.spaces(),
        has: () => store.has(job.seid),
        sizeOf: () => store.sizeOf(job.seid),
        seids: () => store.seids(),
        stats: () => store.stats(),
        allocateSeid: () => store.allocateSeid(),
        reserveSeids: () => store.reserveSeids(),
        createSeidSpace: () => store.createSeidSpace(),
        createSeidSpaceAsync: () => store.createSeidSpaceAsync(),
        transaction: () => store.transaction(() => {}),
        flush: () => store.flush(),
        checkpoint: () => store.checkpoint(),
        compact: () => store.compact(),
        share: () => store.share(),
      };
      for (const [name, call] of Object.entries(calls)) {
        try {
          await call();
          outcomes[name] = "no error";
        } catch (error) {
          outcomes[name] = (error as Error).name;
        }
      }
      await store.close(); // twice is fine
      return { outcomes };
    }
    case "alloc": {
      // Write some seids by hand, then allocate from this Worker's lease.
      if (job.byHand.length > 0) {
        await store.transaction((tx) => {
          for (const seid of job.byHand) tx.write(seid, valueFor(7, seid));
        });
      }
      await store.reserveSeids();
      const allocated = Array.from({ length: job.count }, () => store.allocateSeid());
      return { allocated };
    }
    case "big": {
      // Read a large element whole and as a stream; write one through a stream and one whole.
      const whole = await store.read(job.read);
      const chunks: Uint8Array[] = [];
      for await (const chunk of store.readStream(job.read)) chunks.push(chunk);
      const streamed = Buffer.concat(chunks);
      // A byte stream, as on the owner: a BYOB reader fills its own (odd-sized, reused) buffer.
      const byobHash = async (seid: bigint): Promise<string> => {
        const reader = store.readStream(seid).getReader({ mode: "byob" });
        const hasher = new Bun.CryptoHasher("sha256");
        let buffer = new ArrayBuffer(65_537);
        for (;;) {
          const { done, value } = await reader.read(new Uint8Array(buffer));
          if (done) break;
          hasher.update(value);
          buffer = value.buffer as ArrayBuffer;
        }
        return hasher.digest("hex");
      };
      const byob = await byobHash(job.read);
      const byobSmall = await byobHash(job.small);
      await store.transaction(async (tx) => {
        const writer = tx.writeStream(job.streamed).getWriter();
        const value = bigValue(job.sizes[0], 11);
        for (let offset = 0; offset < value.length; offset += 100_003) await writer.write(value.subarray(offset, offset + 100_003));
        await writer.close();
        tx.write(job.whole, bigValue(job.sizes[1], 12));
      });
      return { wholeHash: Bun.hash(whole ?? new Uint8Array(0)).toString(), streamedHash: Bun.hash(streamed).toString(), byob, byobSmall, size: store.sizeOf(job.read) };
    }
    case "timed-loop": {
      // Commits whose callbacks note when they start and end (one clock across threads).
      const spans: Array<[number, number, number]> = [];
      for (let i = 0; i < job.count; i++) {
        await store.transaction((tx) => {
          const start = performance.timeOrigin + performance.now();
          tx.write(job.keys[0] as bigint, valueFor(i, job.keys[0] as bigint));
          spans.push([tx.id, start, performance.timeOrigin + performance.now()]);
        });
      }
      return { spans };
    }
    case "reads": {
      // Read throughput: random reads of `keys` for `ms`. Not `rng`: its period (~4 k draws)
      // would read only ~4 k distinct keys, all of them in the cache.
      const next = seededRandom(job.seed);
      let reads = 0;
      let bytes = 0;
      const deadline = performance.now() + job.ms;
      while (performance.now() < deadline) {
        for (let i = 0; i < 256; i++) {
          const value = await store.read(job.keys[Math.floor(next() * job.keys.length)] as bigint);
          bytes += value?.length ?? 0;
          reads += 1;
        }
      }
      return { reads, bytes };
    }
  }
}

self.onmessage = async (event: MessageEvent<{ handle: StoreHandle; job: DriverJob; close?: boolean }>) => {
  try {
    const store = await Store.attach(event.data.handle);
    const result = await run(event.data.job, store);
    if (event.data.close !== false) await store.close();
    self.postMessage({ done: true, result });
  } catch (error) {
    self.postMessage({ error: error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error) });
  }
};
