/**
 * Process kills: a real writer process ({@link WRITER}, on the io_uring backend by default) runs a
 * deterministic workload and prints `ack K` once transaction K is durable; it is SIGKILLed at a
 * random moment, the store is reopened, and its state must be the model after a prefix of the
 * workload that includes every ack read before the kill. Then the next writer continues.
 *
 * The workload is a pure function of the transaction number, so the model after any prefix can
 * be rebuilt; every transaction writes its number into {@link COUNTER_SEID}.
 *
 * @module
 */
import { forEachLine } from "./util.ts";
import path from "node:path";
import fs from "node:fs";
import { Store } from "../../src/store/store.ts";
import { seededRandom } from "../prng.ts";
import { COUNTER_SEID, decodeCounter, encodeCounter, FIXED_KEYS, makeValue, sameBytes, type State } from "./model.ts";

/** The writer script run as the child process. */
export const WRITER = path.resolve(import.meta.dir, "kill-writer.ts");

/** Store options shared by the writer and the checker (small, so segments roll over and reuse). */
export const KILL_STORE_OPTIONS = { segmentSize: 256 << 10, bufferSize: 64 << 10, numSegmentsPerCheckpoint: 2 } as const;

/** The operations of transaction k (k ≥ 1): a pure function of k. */
export function killWorkloadTx(k: number): Array<[bigint, Uint8Array | undefined]> {
  const random = seededRandom(k * 7919 + 17);
  const ops: Array<[bigint, Uint8Array | undefined]> = [];
  const count = Math.floor(random() * 5);
  for (let i = 0; i < count; i++) {
    const seid = BigInt(1 + Math.floor(random() * FIXED_KEYS));
    const r = random();
    if (r < 0.15) {
      ops.push([seid, undefined]);
      continue;
    }
    const length = r < 0.16 ? (520 << 10) + Math.floor(random() * (64 << 10)) : r < 0.25 ? 0 : r < 0.7 ? Math.floor(random() * 400) : Math.floor(random() * 20_000);
    ops.push([seid, makeValue(length, k * 16 + i)]);
  }
  ops.push([COUNTER_SEID, encodeCounter(k)]);
  return ops;
}

/** Apply transactions from+1 … to to `state` (in place). */
export function applyKillWorkload(state: State, from: number, to: number): void {
  for (let k = from + 1; k <= to; k++) {
    for (const [seid, value] of killWorkloadTx(k)) {
      if (value === undefined) state.delete(seid);
      else state.set(seid, value);
    }
  }
}

/** Options of {@link runKills}. */
export interface KillOptions {
  seed: number;
  dir: string;
  kills: number;
  io?: "uring" | "portable";
  /** Called after each kill. */
  onKill?: (kill: number, lastAck: number, recovered: number) => void;
}

/** What the kills did and found. */
export interface KillReport {
  kills: number;
  acks: number;
  /** Transactions recovered in total (the counter at the end). */
  recovered: number;
  checks: number;
  violations: string[];
  elapsedMs: number;
}

/** Run the writer and SIGKILL it `kills` times, checking the store after each. */
export async function runKills(options: KillOptions): Promise<KillReport> {
  const started = performance.now();
  const io = options.io ?? "uring";
  const rand = seededRandom(options.seed);
  fs.mkdirSync(options.dir, { recursive: true });
  const file = path.join(options.dir, `kills-${options.seed}.lss`);
  fs.rmSync(file, { force: true });
  const report: KillReport = { kills: 0, acks: 0, recovered: 0, checks: 0, violations: [], elapsedMs: 0 };
  const model: State = new Map();
  let modelAt = 0;
  for (let kill = 1; kill <= options.kills; kill++) {
    const delayMs = 5 + Math.floor(rand() * 150);
    const checkpointEvery = rand() < 0.3 ? 8 + Math.floor(rand() * 20) : 0;
    const child = Bun.spawn([process.execPath, WRITER, file, io, String(checkpointEvery)], { stdout: "pipe", stderr: "pipe" });
    let lastAck = 0;
    let started = false;
    let killed = false;
    let killAt: number | undefined;
    const readLoop = forEachLine(child.stdout, (line) => {
      if (line.startsWith("start")) {
        started = true;
        killAt = Date.now() + delayMs;
      } else if (line.startsWith("ack ") && !killed) {
        lastAck = Math.max(lastAck, Number(line.slice(4)));
        report.acks += 1;
      }
    });
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && (killAt === undefined || Date.now() < killAt) && child.exitCode === null) await Bun.sleep(2);
    killed = true;
    child.kill("SIGKILL");
    await child.exited;
    await readLoop;
    if (!started) {
      report.violations.push(`kill ${kill}: the writer never started: ${await new Response(child.stderr).text()}`);
      break;
    }
    report.kills += 1;
    let store: Store;
    try {
      store = await Store.open(file, { io, ...KILL_STORE_OPTIONS });
    } catch (error) {
      report.violations.push(`kill ${kill}: reopen failed: ${String(error)}`);
      break;
    }
    try {
      let counter: number;
      try {
        counter = decodeCounter(await store.read(COUNTER_SEID));
      } catch (error) {
        report.violations.push(`kill ${kill}: reading the counter after recovery threw ${String(error)}`);
        break;
      }
      report.checks += 1;
      if (!Number.isInteger(counter) || counter < lastAck || counter < modelAt) {
        report.violations.push(`kill ${kill}: recovered through ${counter}, but ${lastAck} was acknowledged (and ${modelAt} recovered before)`);
        break;
      }
      applyKillWorkload(model, modelAt, counter);
      modelAt = counter;
      for (let i = 1; i <= FIXED_KEYS; i++) {
        const seid = BigInt(i);
        const expected = model.get(seid);
        let got: Uint8Array | undefined;
        try {
          got = await store.read(seid);
        } catch (error) {
          report.violations.push(`kill ${kill}: after recovery through ${counter}, reading seid ${seid} threw ${String(error)}`);
          continue;
        }
        report.checks += 1;
        const ok = expected === undefined ? got === undefined : got !== undefined && sameBytes(got, expected);
        if (!ok) report.violations.push(`kill ${kill}: after recovery through ${counter}, seid ${seid} reads ${got?.length} bytes, expected ${expected?.length}`);
      }
      report.checks += 1;
      if (store.stats().elements !== model.size) report.violations.push(`kill ${kill}: ${store.stats().elements} elements, the model has ${model.size}`);
      report.recovered = counter;
      options.onKill?.(kill, lastAck, counter);
    } finally {
      await store.close();
    }
    if (report.violations.length > 0) break;
  }
  report.elapsedMs = performance.now() - started;
  if (report.violations.length === 0) fs.rmSync(file, { force: true });
  return report;
}
