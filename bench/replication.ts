/**
 * Replication figures, in one run (issue 15's goals in brackets). The standby runs in a child
 * process (this file with the argument `standby`), the primary here; both on loopback TCP.
 *
 * 1. apply lag at a steady commit rate: from a commit being durable on the primary to the
 *    standby's acknowledgement that it is applied and durable there (p50 / p99) [p99 ≤ 10 ms at 5 k/s];
 * 2. commits/s with 64 in flight, 100 B each, `sync` durability: with no standby, and with the
 *    `durable` level (each commit waits for the standby's disk) [≥ 0.5×];
 * 3. promotion time (the standby's `promote()`, measured in its process) [≤ 1 s];
 * 4. seeding throughput (live bytes of a new standby's seed per second) against a raw sequential
 *    copy of as many bytes of the primary's file.
 *
 * Run alone: `bun bench/replication.ts` (BENCH_SCALE=0.2 for a quick look).
 *
 * @module
 */
import { Store } from "../src/index.ts";
import type { ReplicationServer } from "../src/replication/primary.ts";
import { dataPath, fmt, log, randomBytes, rawCopy, removeData, scaled } from "./common.ts";

const SECRET = "bench-replication-secret-0123456789";
const RATE = 5_000;
const LAG_MS = scaled(4_000, 800);
const THROUGHPUT_MS = scaled(3_000, 600);
const IN_FLIGHT = 64;
const SEED_ELEMENTS = scaled(25_000, 2_000);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;
}

// ───────────────────────────── the standby (child process) ─────────────────────────────

async function standbyMain(file: string, port: string): Promise<void> {
  const t0 = performance.now();
  const standby = await Store.openStandby(file, { primary: `127.0.0.1:${port}`, secret: SECRET, log: () => {} });
  await standby.caughtUp({ timeoutMs: 600_000 });
  console.log(`caught-up ${performance.now() - t0} ${standby.stats().replication.bytesReceived}`);
  for await (const chunk of Bun.stdin.stream()) {
    const text = new TextDecoder().decode(chunk);
    if (text.includes("promote")) {
      const t = performance.now();
      await standby.promote();
      console.log(`promoted ${performance.now() - t}`);
    }
    if (text.includes("exit")) break;
  }
  await standby.close();
  process.exit(0);
}

class Child {
  readonly proc: ReturnType<typeof Bun.spawn<"pipe", "pipe", "inherit">>;
  private lines: string[] = [];
  private waiters: Array<() => void> = [];
  constructor(file: string, port: number) {
    this.proc = Bun.spawn([process.execPath, import.meta.path, "standby", file, String(port)], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    const stdout = this.proc.stdout;
    void (async () => {
      let pending = "";
      for await (const chunk of stdout) {
        pending += new TextDecoder().decode(chunk);
        const parts = pending.split("\n");
        pending = parts.pop() ?? "";
        this.lines.push(...parts);
        for (const w of this.waiters.splice(0)) w();
      }
    })();
  }
  async line(prefix: string, timeoutMs = 600_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.lines.findIndex((l) => l.startsWith(prefix));
      if (index >= 0) return (this.lines.splice(index, 1)[0] as string).split(" ").slice(1);
      if (Date.now() > deadline || this.proc.exitCode !== null) throw new Error(`standby child: no "${prefix}" line`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }
  send(text: string): void {
    this.proc.stdin.write(`${text}\n`);
    this.proc.stdin.flush();
  }
  async stop(): Promise<void> {
    try {
      this.send("exit");
      this.proc.stdin.end();
    } catch {
      // gone
    }
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    await this.proc.exited;
    clearTimeout(timer);
  }
}

// ───────────────────────────── the primary ─────────────────────────────

/** Times each commit from its local durability to the standby's durable acknowledgement. */
function lagProbe(server: ReplicationServer): { lags: number[]; stop: () => void } {
  const pending: Array<{ end: number; at: number }> = [];
  const lags: number[] = [];
  const afterCommit = server.afterCommit.bind(server);
  const acknowledge = server.sync.acknowledge.bind(server.sync);
  server.afterCommit = (end, level) => {
    pending.push({ end, at: performance.now() });
    return afterCommit(end, level);
  };
  server.sync.acknowledge = (received, durable) => {
    acknowledge(received, durable);
    const now = performance.now();
    while (pending.length > 0 && (pending[0] as { end: number }).end <= durable) lags.push(now - (pending.shift() as { at: number }).at);
  };
  return {
    lags,
    stop: () => {
      server.afterCommit = afterCommit;
      server.sync.acknowledge = acknowledge;
    },
  };
}

async function commitsPerSecond(store: Store, ms: number, level: "async" | "durable"): Promise<number> {
  const value = randomBytes(100, 3);
  const seids = Array.from({ length: IN_FLIGHT }, () => store.allocateSeid());
  let count = 0;
  const until = performance.now() + ms;
  await Promise.all(
    seids.map(async (seid) => {
      while (performance.now() < until) {
        await store.transaction((tx) => tx.write(seid, value), { replication: level });
        count += 1;
      }
    }),
  );
  return count / (ms / 1000);
}

async function main(): Promise<void> {
  removeData();
  const file = dataPath("repl-primary.lss");
  const store = await Store.open(file);
  log(`# Replication (io ${store.io}, standby in a child process, loopback TCP)`);

  // 2a. Throughput with no standby.
  const alone = await commitsPerSecond(store, THROUGHPUT_MS, "async");

  // 4. Seeding: live data first, then a new standby seeds from it.
  const seids = Array.from({ length: SEED_ELEMENTS }, () => store.allocateSeid());
  for (let i = 0; i < seids.length; i += 1000) {
    await store.transaction((tx) => {
      for (let j = i; j < Math.min(i + 1000, seids.length); j++) tx.write(seids[j] as bigint, randomBytes(4096, j));
    });
  }
  await store.flush();
  const liveBytes = store.stats().liveBytes;
  const server = await store.serveReplication({ port: 0, secret: SECRET, replicationTimeoutMs: 60_000, log: () => {} });
  const standbyFile = dataPath("repl-standby.lss");
  const child = new Child(standbyFile, server.port as number);
  try {
    const [seedMs] = (await child.line("caught-up")).map(Number) as [number];
    const copyMs = rawCopy(file, dataPath("repl-raw-copy.bin"), liveBytes);
    removeData("repl-raw-copy.bin");

    // 2b. Throughput with the durable level.
    const durable = await commitsPerSecond(store, THROUGHPUT_MS, "durable");

    // 1. Apply lag at a steady rate (async commits, ~RATE per second, not waiting for each).
    const probe = lagProbe(server);
    const value = randomBytes(100, 5);
    const lagSeids = Array.from({ length: 256 }, () => store.allocateSeid());
    const inFlight = new Set<Promise<void>>();
    const started = performance.now();
    let issued = 0;
    while (performance.now() - started < LAG_MS) {
      const due = Math.floor(((performance.now() - started) / 1000) * RATE);
      while (issued < due && inFlight.size < 4096) {
        const seid = lagSeids[issued % lagSeids.length] as bigint;
        const p = store.transaction((tx) => tx.write(seid, value)).then(() => void inFlight.delete(p));
        inFlight.add(p);
        issued += 1;
      }
      await Bun.sleep(1);
    }
    await Promise.all(inFlight);
    await Bun.sleep(200);
    probe.stop();
    const achieved = issued / (LAG_MS / 1000);
    const lags = probe.lags.sort((a, b) => a - b);

    // 3. Promotion, timed in the standby's process.
    child.send("promote");
    const [promoteMs] = (await child.line("promoted")).map(Number) as [number];

    log(`| figure | value | goal |`);
    log(`|---|---|---|`);
    log(`| apply lag at ${fmt(achieved, 3)} commits/s: p50 / p99 / max (${lags.length} commits) | ${fmt(percentile(lags, 0.5), 2)} / ${fmt(percentile(lags, 0.99), 2)} / ${fmt(lags.at(-1), 2)} ms | p99 ≤ 10 ms at 5 k/s |`);
    log(`| commits/s, ${IN_FLIGHT} in flight, no standby | ${fmt(alone, 3)} | — |`);
    log(`| commits/s, ${IN_FLIGHT} in flight, \`durable\` level | ${fmt(durable, 3)} (${fmt(durable / alone, 2)}×) | ≥ 0.5× |`);
    log(`| promotion | ${fmt(promoteMs, 1)} ms | ≤ 1 s |`);
    log(`| seed of ${fmt(liveBytes / 2 ** 20, 3)} MiB live (${SEED_ELEMENTS} elements) | ${fmt(liveBytes / 2 ** 20 / (seedMs / 1000), 1)} MiB/s (${fmt(seedMs, 3)} ms, open to caught up) | — |`);
    log(`| raw sequential copy of as many bytes | ${fmt(liveBytes / 2 ** 20 / (copyMs / 1000), 1)} MiB/s | — |`);
  } finally {
    await child.stop();
    await store.close();
    removeData();
  }
}

if (process.argv[2] === "standby") await standbyMain(process.argv[3] as string, process.argv[4] as string);
else await main();
