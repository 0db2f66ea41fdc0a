/**
 * The serial durable commit path, counted as well as timed: what one `store.transaction` of one
 * 100 B write costs in device round trips, submissions to the kernel, wake-ups of the JS thread
 * and CPU time. The machine these benches run on is shared and noisy, so wall-clock rates alone
 * cannot tell two builds apart; the counts can (they do not depend on the CPU's speed).
 *
 * A counting wrapper sits between the store and the io_uring backend and counts, per commit:
 * - `submits`: calls of `backend.submit` (each is one io_uring_enter, or one node:fs round);
 * - `ops`: operations submitted (a unit write, a datasync, …);
 * - `wakeups`: reaps that returned completions (each is one wake-up of the JS thread by I/O);
 * - `completions`: completions reaped.
 * `cpu µs/commit` is process.cpuUsage (user + system) over the run, divided by the commits.
 *
 * It takes the source root to measure, so two builds can be compared turn by turn in one run:
 *   bun bench/commit-path.ts [--root /work/main] [--root .] [--commits 2000] [--reps 5]
 * (default: this checkout only). `--strace` also counts io_uring_enter syscalls per commit in a
 * child process under `strace -f -c` (needs strace).
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

interface Counts {
  submits: number;
  ops: number;
  wakeups: number;
  completions: number;
}

interface Run {
  commitsPerSecond: number;
  cpuMicrosPerCommit: number;
  perCommit: Counts;
  datasyncsPerCommit: number;
}

type Backend = {
  submit(ops: readonly unknown[]): void;
  reap(out: unknown[], max?: number): number;
  [key: string]: unknown;
};

/** Wrap `inner` so every call is forwarded and the commit path's events are counted. */
function counting(inner: Backend, counts: Counts): Backend {
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property === "submit") {
        return (ops: readonly unknown[]) => {
          counts.submits += 1;
          counts.ops += ops.length;
          return target.submit(ops);
        };
      }
      if (property === "reap") {
        return (out: unknown[], max?: number) => {
          const got = target.reap(out, max);
          if (got > 0) {
            counts.wakeups += 1;
            counts.completions += got;
          }
          return got;
        };
      }
      const value = Reflect.get(target, property, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function measure(root: string, commits: number): Promise<Run> {
  const { openStore } = (await import(path.join(root, "src/store/store.ts"))) as {
    openStore: (file: string, options: object, backend: unknown) => Promise<{
      allocateSeid(): bigint;
      transaction(fn: (tx: { write(seid: bigint, value: Uint8Array): void }) => unknown): Promise<unknown>;
      stats(): { datasyncs: number };
      close(): Promise<void>;
    }>;
  };
  const { UringBackend } = (await import(path.join(root, "src/io/uring.ts"))) as { UringBackend: { create(): Backend } };
  const dir = mkdtempSync(path.join(process.env.BENCH_DIR ?? path.join(import.meta.dir, ".data"), "commit-path-"));
  const counts: Counts = { submits: 0, ops: 0, wakeups: 0, completions: 0 };
  const store = await openStore(path.join(dir, "a.lss"), { create: true }, counting(UringBackend.create(), counts));
  try {
    const value = new Uint8Array(100).fill(7);
    // Warm up (JIT, the segment's first units), then count from zero.
    for (let i = 0; i < 200; i++) {
      const seid = store.allocateSeid();
      await store.transaction((tx) => tx.write(seid, value));
    }
    const before = { ...counts };
    const syncsBefore = store.stats().datasyncs;
    const cpu = process.cpuUsage();
    const start = performance.now();
    for (let i = 0; i < commits; i++) {
      const seid = store.allocateSeid();
      await store.transaction((tx) => tx.write(seid, value));
    }
    const elapsed = performance.now() - start;
    const used = process.cpuUsage(cpu);
    const per = (key: keyof Counts): number => (counts[key] - before[key]) / commits;
    return {
      commitsPerSecond: commits / (elapsed / 1000),
      cpuMicrosPerCommit: (used.user + used.system) / commits,
      perCommit: { submits: per("submits"), ops: per("ops"), wakeups: per("wakeups"), completions: per("completions") },
      datasyncsPerCommit: (store.stats().datasyncs - syncsBefore) / commits,
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

/** io_uring_enter syscalls per commit, counted by strace in a child process. */
function straceEnters(root: string, commits: number): number | undefined {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), "strace-")), "s.txt");
  const result = spawnSync(
    "strace",
    ["-f", "-c", "-e", "trace=io_uring_enter", "-o", out, process.execPath, import.meta.path, "--child", root, String(commits)],
    { encoding: "utf8" },
  );
  if (result.status !== 0) return undefined;
  const text = require("node:fs").readFileSync(out, "utf8") as string;
  const line = text.split("\n").find((l) => l.includes("io_uring_enter"));
  const calls = line === undefined ? 0 : Number(line.trim().split(/\s+/)[3]);
  // The child runs 200 warm-up commits plus `commits` (close and open add a handful).
  return calls / (commits + 200);
}

const args = process.argv.slice(2);
if (args[0] === "--child") {
  await measure(path.resolve(args[1] as string), Number(args[2]));
  process.exit(0);
}
const roots: string[] = [];
let commits = 2000;
let reps = 5;
let strace = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--root") roots.push(path.resolve(args[++i] as string));
  else if (args[i] === "--commits") commits = Number(args[++i]);
  else if (args[i] === "--reps") reps = Number(args[++i]);
  else if (args[i] === "--strace") strace = true;
}
if (roots.length === 0) roots.push(path.resolve(import.meta.dir, ".."));
require("node:fs").mkdirSync(process.env.BENCH_DIR ?? path.join(import.meta.dir, ".data"), { recursive: true });

const runs = new Map<string, Run[]>(roots.map((root) => [root, []]));
for (let rep = 0; rep < reps; rep++) {
  for (const root of roots) (runs.get(root) as Run[]).push(await measure(root, commits));
}
for (const root of roots) {
  const list = runs.get(root) as Run[];
  const m = (f: (r: Run) => number): string => median(list.map(f)).toFixed(2);
  console.log(
    `${root}: ${m((r) => r.commitsPerSecond)} commits/s, ${m((r) => r.cpuMicrosPerCommit)} cpu µs/commit; per commit: ` +
      `${m((r) => r.perCommit.submits)} submits, ${m((r) => r.perCommit.ops)} ops, ${m((r) => r.perCommit.wakeups)} wake-ups, ` +
      `${m((r) => r.perCommit.completions)} completions, ${m((r) => r.datasyncsPerCommit)} datasyncs ` +
      `(medians of ${reps} × ${commits} commits; rates per rep: ${list.map((r) => r.commitsPerSecond.toFixed(0)).join(" ")})`,
  );
  if (strace) {
    const enters = straceEnters(root, Math.min(commits, 1000));
    console.log(`${root}: io_uring_enter syscalls per commit (strace -f -c): ${enters === undefined ? "strace failed" : enters.toFixed(2)}`);
  }
}
