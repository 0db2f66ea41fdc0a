/**
 * How the disk's latency for one 4 KiB write + linked fdatasync depends on how long the device
 * sat idle before it: the same pair as the disk row of bench/store.ts (a), submitted after a
 * busy-wait of `gap` µs on the JS thread, waited for blocking in the kernel.
 *
 * Why it exists: a serial durable commit of bloom-lss spends ~45 µs of JS between one commit's
 * completion and the next one's submission (trace of 2026-12-01: ~28 µs before the submit, ~10–25
 * after the completion), sqlite ~15 µs, the bare disk loop ~5 µs. On this VM (virtio disk, PVM
 * guest) the pair's latency was flat up to a gap of ~50 µs and then grew: mean 172–196 µs at 0–25
 * µs, 242–274 at 100, 259–287 at 200, 368–418 at 400 (two runs). So the JS between commits
 * costs more than its own time once it passes ~50 µs (likely the host's side stops polling for
 * work, so the next request waits for a wake-up there): serial commits are then bound by the JS
 * path's length, not only the device's. Later the same day, with the disk slow (p50 250–600 µs
 * at every gap, swinging from one gap to the next), three reps showed no trend at all: the
 * effect shows at quiet times only, so run it several times before reading anything into it.
 *
 *   bun bench/disk-gap.ts [--pairs 1500] [--reps 2]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openBackend } from "../src/io/open.ts";
import type { IoCompletion } from "../src/io/backend.ts";
import { prefillFile, writeDatasyncPair } from "./io.ts";
import { dataPath, removeData } from "./common.ts";

const GAPS_US = [0, 25, 50, 100, 200, 400];
const KiB4 = 4096;
const REGION_BYTES = 32 << 20;

const { values } = parseArgs({ options: { pairs: { type: "string", default: "1500" }, reps: { type: "string", default: "2" } } });
const pairs = Number(values.pairs);
const reps = Number(values.reps);
if (!Number.isInteger(pairs) || pairs < 10 || !Number.isInteger(reps) || reps < 1) throw new Error("--pairs must be an integer ≥ 10, --reps ≥ 1");

const name = "disk-gap.dat";
const path = dataPath(name);
prefillFile(path, REGION_BYTES);
const backend = await openBackend({ io: "uring", queueDepth: 8 });
const file = backend.openFile(path, { direct: true });
const buffer = backend.alloc(KiB4);
buffer.bytes.fill(3);

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] as number;
}

async function measure(gapUs: number): Promise<string> {
  const out: IoCompletion[] = [];
  const latencies: number[] = [];
  for (let n = 0; n < pairs; n++) {
    const idleUntil = performance.now() + gapUs / 1000;
    while (performance.now() < idleUntil) {
      // busy: the JS thread working between two commits
    }
    const start = performance.now();
    await writeDatasyncPair(backend, file, buffer, (n % (REGION_BYTES / KiB4)) * KiB4, out);
    latencies.push((performance.now() - start) * 1000);
  }
  latencies.sort((a, b) => a - b);
  const mean = latencies.reduce((a, b) => a + b, 0) / latencies.length;
  return `p50 ${percentile(latencies, 0.5).toFixed(0)} µs, p90 ${percentile(latencies, 0.9).toFixed(0)} µs, mean ${mean.toFixed(0)} µs`;
}

try {
  console.log(`4 KiB write + linked fdatasync, ${pairs} pairs per gap, after an idle gap on the JS thread`);
  for (let rep = 0; rep < reps; rep++) {
    for (const gap of GAPS_US) console.log(`rep ${rep + 1} gap ${String(gap).padStart(3)} µs: ${await measure(gap)}`);
  }
} finally {
  backend.free(buffer);
  backend.closeFile(file);
  backend.close();
  removeData();
}
