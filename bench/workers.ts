/**
 * Workers benchmark: reads scaling with Workers (no message per read), durable commits from
 * several Workers vs one thread, and the turn's hand-off latency between Workers.
 *
 *   node_modules/.bin/bun bench/workers.ts
 *
 * `BENCH_WORKERS_PARTS=handoff` (a comma list of reads, commits, handoff, peers, floor) runs only
 * those parts. `floor` times the two hops a hand-off is built of, alone (workers-floor.ts).
 *
 * The `peers` part puts the same 20 000 values (16 B–3 KB) in bloom-lss, bun:sqlite (WAL,
 * `synchronous=FULL`, one connection per Worker with `busy_timeout`) and lmdb-js (one environment,
 * opened in each Worker; writes `put` then `flushed`), and measures in Workers, interleaved,
 * medians of BENCH_REPS: reads with 1 and 2 Workers (and the scaling from 1 to 2), and 2 Workers
 * each doing 90 % reads and 10 % durable one-write transactions. bloom-lss is measured twice:
 * with `read` and with `readSync` (lmdb-js's `get` and bun:sqlite's are synchronous too).
 */
import path from "node:path";
import { Store } from "../src/index.ts";
import { scratchDir } from "../test/helpers.ts";
import { valueFor } from "../test/workers/model.ts";
import { startJob, withTimeout } from "../test/workers/util.ts";
import { Database } from "bun:sqlite";
import { open as openLmdb } from "lmdb";
import { valueBytes, type PeerJob, type PeerResult } from "./workers-peer.ts";
import type { FloorJob } from "./workers-floor.ts";

/** Run one peer job in a fresh Worker (terminated after, also on failure). */
async function runPeer(job: PeerJob): Promise<PeerResult> {
  const worker = new Worker(new URL("./workers-peer.ts", import.meta.url).href);
  try {
    const result = new Promise<PeerResult>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent<{ done?: boolean; result?: PeerResult; error?: string }>) => {
        if (event.data.error !== undefined) reject(new Error(event.data.error));
        else resolve(event.data.result as PeerResult);
      };
      worker.onerror = (event) => reject(new Error(event.message));
    });
    worker.postMessage(job);
    return await withTimeout(result, job.ms + 60_000, `${job.engine} ${job.mode}`);
  } finally {
    worker.terminate();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

/** Elements read (env BENCH_ELEMENTS): 20 000 of 16 B–3 KB overflow a Worker's default 16 MiB cache, 5 000 fit. */
const ELEMENTS = Number(process.env.BENCH_ELEMENTS ?? 20_000);
const READ_MS = 3_000;
const PARTS = new Set((process.env.BENCH_WORKERS_PARTS ?? "reads,commits,handoff,peers,floor").split(","));
/** Repetitions of each side-by-side figure (medians are quoted). */
const PEER_REPS = Number(process.env.BENCH_REPS ?? 3);
const PEER_MS = 2_000;
/** Share of the mixed part's operations that are durable one-write transactions. */
const WRITE_SHARE = 0.1;

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

const { dir, cleanup } = scratchDir("bench-workers");
try {
  // ── reads ──
  if (PARTS.has("reads")) {
    const store = await Store.open(path.join(dir, "reads.lss"));
    const keys: bigint[] = [];
    for (let batch = 0; batch < ELEMENTS / 1000; batch++) {
      await store.transaction((tx) => {
        for (let i = 0; i < 1000; i++) {
          const seid = store.allocateSeid();
          keys.push(seid);
          tx.write(seid, valueFor(batch * 1000 + i, seid));
        }
      });
    }
    const handle = store.share();
    for (const workers of [1, 2]) {
      const jobs = Array.from({ length: workers }, (_, w) => startJob<{ reads: number; bytes: number }>(handle, { kind: "reads", keys, ms: READ_MS, seed: w + 1 }));
      const results = await withTimeout(Promise.all(jobs.map((j) => j.result)), 60_000, "reads");
      const reads = results.reduce((sum, r) => sum + r.reads, 0);
      console.log(`reads, ${workers} Worker(s): ${Math.round(reads / (READ_MS / 1000)).toLocaleString()} reads/s (${ELEMENTS} elements of 16–3 KB, each Worker's own cache)`);
      for (const j of jobs) j.worker.terminate();
    }
    // The owner thread alone, for reference (its cache warmed first, like the Workers' caches).
    for (const seid of keys) await store.read(seid);
    let reads = 0;
    const deadline = performance.now() + READ_MS;
    let i = 0;
    while (performance.now() < deadline) {
      for (let k = 0; k < 256; k++) await store.read(keys[(i++ * 7919) % keys.length] as bigint);
      reads += 256;
    }
    console.log(`reads, owner thread: ${Math.round(reads / (READ_MS / 1000)).toLocaleString()} reads/s`);
    await store.close({ detachWorkers: true });
  }
  // ── durable commits ──
  if (PARTS.has("commits")) {
    const store = await Store.open(path.join(dir, "commits.lss"));
    const keys = Array.from({ length: 4 }, () => store.allocateSeid());
    const handle = store.share();
    const COUNT = 2000;
    const jobs = keys.map((seid) => startJob<unknown>(handle, { kind: "commit-loop", keys: [seid], count: COUNT, ack: "first" }));
    // Timed from the moment every Worker has committed once: starting a Worker (its module load,
    // attach, JIT) is not a commit's cost, and it took most of a 100-commit run. Only the first
    // commit is reported (a message per commit was the owner's to handle, on the clock).
    await withTimeout(Promise.all(jobs.map((j) => j.message((data) => data.ack === 1))), 60_000, "worker commits start");
    let before = store.stats();
    let started = performance.now();
    await withTimeout(Promise.all(jobs.map((j) => j.result)), 120_000, "worker commits");
    let seconds = (performance.now() - started) / 1000;
    let after = store.stats();
    console.log(`durable commits, 4 Workers at once: ${Math.round((after.commits - before.commits) / seconds)} commits/s, ${after.datasyncs - before.datasyncs} datasyncs for ${after.commits - before.commits} commits`);
    for (const j of jobs) j.worker.terminate();
    before = store.stats();
    started = performance.now();
    await Promise.all(
      keys.map(async (seid) => {
        for (let i = 0; i < COUNT; i++) await store.transaction((tx) => tx.write(seid, valueFor(i, seid)));
      }),
    );
    seconds = (performance.now() - started) / 1000;
    after = store.stats();
    console.log(`durable commits, one thread with 4 in flight: ${Math.round((4 * COUNT) / seconds)} commits/s, ${after.datasyncs - before.datasyncs} datasyncs`);
    await store.close({ detachWorkers: true });
  }
  // ── hand-off latency ──
  if (PARTS.has("handoff")) {
    const store = await Store.open(path.join(dir, "handoff.lss"), { durability: "relaxed" });
    const keys = Array.from({ length: 2 }, () => store.allocateSeid());
    const handle = store.share();
    const jobs = keys.map((seid) => startJob<{ spans: Array<[number, number, number]> }>(handle, { kind: "timed-loop", keys: [seid], count: 2000 }));
    const results = await withTimeout(Promise.all(jobs.map((j) => j.result)), 120_000, "hand-off");
    const spans = results.flatMap((r, worker) => r.spans.map(([txId, start, end]) => ({ txId, start, end, worker })));
    spans.sort((a, b) => a.txId - b.txId);
    const gaps: number[] = [];
    for (let i = 1; i < spans.length; i++) {
      const prev = spans[i - 1] as (typeof spans)[number];
      const cur = spans[i] as (typeof spans)[number];
      if (cur.worker !== prev.worker && cur.txId === prev.txId + 1) gaps.push((cur.start - prev.end) * 1000);
    }
    gaps.sort((a, b) => a - b);
    console.log(`turn hand-off Worker → Worker (callback end → next callback start, relaxed; includes the commit on the owner): p50 ${pct(gaps, 0.5).toFixed(0)} µs, p99 ${pct(gaps, 0.99).toFixed(0)} µs over ${gaps.length} hand-offs`);
    for (const j of jobs) j.worker.terminate();
    await store.close({ detachWorkers: true });
  }
  // ── side by side: bun:sqlite and lmdb-js in the same Workers ──
  if (PARTS.has("peers")) {
    const count = ELEMENTS;
    const valueOf = (i: number) => new Uint8Array(valueBytes(i)).fill(i & 0xff);
    const store = await Store.open(path.join(dir, "peers.lss"));
    const seids: bigint[] = [];
    for (let first = 0; first < count; first += 1000) {
      await store.transaction((tx) => {
        for (let i = first; i < Math.min(count, first + 1000); i++) {
          const seid = store.allocateSeid();
          seids.push(seid);
          tx.write(seid, valueOf(i));
        }
      });
    }
    const sqlitePath = path.join(dir, "peers.db");
    const sqlite = new Database(sqlitePath, { create: true });
    sqlite.exec("PRAGMA journal_mode=WAL");
    sqlite.exec("CREATE TABLE kv (k INTEGER PRIMARY KEY, v BLOB)");
    const insert = sqlite.prepare("INSERT INTO kv (k, v) VALUES (?, ?)");
    sqlite.transaction(() => {
      for (let i = 0; i < count; i++) insert.run(i + 1, valueOf(i));
    })();
    sqlite.close();
    const lmdbPath = path.join(dir, "peers.mdb");
    const lmdb = openLmdb<Uint8Array, number>({ path: lmdbPath, encoding: "binary", keyEncoding: "uint32" });
    lmdb.transactionSync(() => {
      for (let i = 0; i < count; i++) lmdb.putSync(i + 1, valueOf(i));
    });
    await lmdb.flushed;
    const handle = store.share();
    const engines = ["bloom", "bloomSync", "sqlite", "lmdb"] as const;
    const runs = [
      { label: "reads, 1 Worker", mode: "reads", workers: 1 },
      { label: "reads, 2 Workers", mode: "reads", workers: 2 },
      { label: `2 Workers, ${100 - WRITE_SHARE * 100} % reads + ${WRITE_SHARE * 100} % durable writes`, mode: "mixed", workers: 2 },
    ] as const;
    const figures = new Map<string, number[]>();
    for (let rep = 0; rep < PEER_REPS; rep++) {
      for (const run of runs) {
        for (const engine of engines) {
          const results = await Promise.all(
            Array.from({ length: run.workers }, (_, w) =>
              runPeer({
                engine,
                mode: run.mode,
                handle: engine.startsWith("bloom") ? handle : undefined,
                path: engine === "sqlite" ? sqlitePath : engine === "lmdb" ? lmdbPath : undefined,
                seids: engine.startsWith("bloom") ? seids : undefined,
                count,
                ms: PEER_MS,
                seed: rep * 100 + w + 1,
                writeShare: WRITE_SHARE,
              }),
            ),
          );
          const ops = results.reduce((sum, r) => sum + r.reads + r.writes, 0) / (PEER_MS / 1000);
          const key = `${run.label}|${engine}`;
          figures.set(key, [...(figures.get(key) ?? []), ops]);
        }
      }
    }
    console.log(`\nside by side in Workers (${count} values of 16 B–3 KB; medians of ${PEER_REPS} interleaved reps of ${PEER_MS / 1000} s):`);
    console.log("| workload | bloom-lss `read` ops/s | bloom-lss `readSync` ops/s | bun:sqlite ops/s | lmdb-js ops/s | bloom ÷ sqlite | bloom ÷ lmdb | readSync ÷ lmdb |");
    console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
    const at = (label: string, engine: string) => median(figures.get(`${label}|${engine}`) ?? [0]);
    const ops = (n: number) => Math.round(n).toLocaleString();
    for (const run of runs) {
      const [b, s, q, l] = engines.map((engine) => at(run.label, engine)) as [number, number, number, number];
      console.log(`| ${run.label} | ${ops(b)} | ${ops(s)} | ${ops(q)} | ${ops(l)} | ${(b / q).toFixed(2)}× | ${(b / l).toFixed(2)}× | ${(s / l).toFixed(2)}× |`);
    }
    const scaling = engines.map((engine) => `${engine} ${(at(runs[1].label, engine) / at(runs[0].label, engine)).toFixed(2)}×`).join(", ");
    console.log(`read scaling from 1 to 2 Workers (goal ≥ 1.7×): ${scaling}`);
    await lmdb.close();
    await store.close({ detachWorkers: true });
  }
  // ── the floor under a hand-off: a waitAsync wake-up, and a socket write from a Worker ──
  if (PARTS.has("floor")) {
    const rounds = 2000;
    const runFloor = async (job: FloorJob, drive: (shared: SharedArrayBuffer, done: () => boolean) => Promise<void>): Promise<number[]> => {
      const worker = new Worker(new URL("./workers-floor.ts", import.meta.url).href);
      try {
        let finished = false;
        const result = new Promise<number[]>((resolve, reject) => {
          worker.onmessage = (event: MessageEvent<{ latencies?: number[]; error?: string }>) => {
            finished = true;
            if (event.data.error !== undefined) reject(new Error(event.data.error));
            else resolve(event.data.latencies ?? []);
          };
          worker.onerror = (event) => reject(new Error(event.message));
        });
        worker.postMessage(job);
        await withTimeout(drive(job.shared, () => finished), 60_000, `floor ${job.kind}`);
        return await withTimeout(result, 60_000, `floor ${job.kind} result`);
      } finally {
        worker.terminate();
      }
    };
    const describe = (what: string, latencies: number[]) => {
      const sorted = [...latencies].sort((a, b) => a - b);
      console.log(`${what}: p50 ${Math.round(pct(sorted, 0.5) * 1000)} µs, p99 ${Math.round(pct(sorted, 0.99) * 1000)} µs over ${sorted.length}`);
    };
    // waitAsync: the main thread notifies once the Worker waits (and has had time to sleep).
    const wakeShared = new SharedArrayBuffer(16);
    const wakes = await runFloor({ kind: "wake", shared: wakeShared, rounds }, async (shared, done) => {
      const words = new Int32Array(shared, 0, 2);
      const sentAt = new Float64Array(shared, 8, 1);
      while (!done()) {
        await new Promise((resolve) => setTimeout(resolve, 0.2));
        if (Atomics.load(words, 1) !== 1) continue;
        await new Promise((resolve) => setTimeout(resolve, 0.3));
        Atomics.store(words, 1, 0);
        sentAt[0] = performance.timeOrigin + performance.now();
        Atomics.add(words, 0, 1);
        Atomics.notify(words, 0);
      }
    });
    describe("floor: Atomics.waitAsync wake-up of a Worker (main thread notifies)", wakes);
    // A 64-byte write on a Unix socket from a Worker to the main thread, which echoes it.
    const unix = path.join(dir, "floor.sock");
    const socketShared = new SharedArrayBuffer(16);
    const sentAt = new Float64Array(socketShared, 8, 1);
    const arrivals: number[] = [];
    const listener = Bun.listen({
      unix,
      socket: {
        data(conn, bytes) {
          arrivals.push(performance.timeOrigin + performance.now() - (sentAt[0] as number));
          conn.write(bytes);
        },
      },
    });
    try {
      await runFloor({ kind: "socket", unix, shared: socketShared, rounds }, async (_shared, done) => {
        while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
      });
    } finally {
      listener.stop(true);
    }
    describe("floor: 64-byte Unix-socket write, Worker → main thread", arrivals);
  }
} finally {
  cleanup();
}
