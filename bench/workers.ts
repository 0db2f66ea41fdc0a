/**
 * Workers benchmark: reads scaling with Workers (no message per read), durable commits from
 * several Workers vs one thread, and the turn's hand-off latency between Workers.
 *
 *   node_modules/.bin/bun bench/workers.ts
 *
 * `BENCH_WORKERS_PARTS=handoff` (a comma list of reads, commits, handoff) runs only those parts.
 */
import path from "node:path";
import { Store } from "../src/index.ts";
import { scratchDir } from "../test/helpers.ts";
import { valueFor } from "../test/workers/model.ts";
import { startJob, withTimeout } from "../test/workers/util.ts";

/** Elements read (env BENCH_ELEMENTS): 20 000 of 16 B–3 KB overflow a Worker's default 16 MiB cache, 5 000 fit. */
const ELEMENTS = Number(process.env.BENCH_ELEMENTS ?? 20_000);
const READ_MS = 3_000;
const PARTS = new Set((process.env.BENCH_WORKERS_PARTS ?? "reads,commits,handoff").split(","));

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
    const COUNT = 100;
    let before = store.stats();
    let started = performance.now();
    const jobs = keys.map((seid) => startJob<unknown>(handle, { kind: "commit-loop", keys: [seid], count: COUNT, ack: false }));
    await withTimeout(Promise.all(jobs.map((j) => j.result)), 120_000, "worker commits");
    let seconds = (performance.now() - started) / 1000;
    let after = store.stats();
    console.log(`durable commits, 4 Workers at once: ${Math.round((4 * COUNT) / seconds)} commits/s, ${after.datasyncs - before.datasyncs} datasyncs for ${after.commits - before.commits} commits`);
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
} finally {
  cleanup();
}
