import { describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { BACKENDS, forEachLine, rng, scratchDir } from "../helpers.ts";
import { COUNTER_SEID, counterValue, modelAfter, WORKLOAD_KEYS } from "./crash-workload.ts";

const WRITER = path.resolve(import.meta.dir, "crash-writer.ts");
const KILLS_PER_BACKEND = 16;

/** Reopen, check the state is the model after a committed prefix covering every ack; return n. */
async function checkPrefix(file: string, io: "uring" | "portable", lastAck: number): Promise<number> {
  const store = await Store.open(file, { io });
  try {
    const n = counterValue(await store.read(COUNTER_SEID));
    expect(n).toBeGreaterThanOrEqual(lastAck);
    const model = modelAfter(n);
    for (let i = 1; i <= WORKLOAD_KEYS; i++) {
      const seid = BigInt(i);
      const expected = model.get(seid);
      const got = await store.read(seid);
      if (expected === undefined) expect(got).toBeUndefined();
      else expect(Buffer.compare(got as Uint8Array, expected)).toBe(0);
    }
    expect(store.stats().elements).toBe(model.size);
    return n;
  } finally {
    await store.close();
  }
}

/** Run the writer until it has acked a few transactions, SIGKILL it, return the last ack. */
async function runAndKill(file: string, io: string, delayMs: number, checkpointEvery: number): Promise<{ lastAck: number; acks: number; killedBySignal: boolean }> {
  const child = Bun.spawn([process.execPath, WRITER, file, io, String(checkpointEvery)], { stdout: "pipe", stderr: "pipe" });
  let lastAck = 0;
  let acks = 0;
  let started = false;
  let killAt: number | undefined;
  const readLoop = forEachLine(child.stdout, (line) => {
    if (line.startsWith("start")) {
      started = true;
      killAt = Date.now() + delayMs;
    } else if (line.startsWith("ack ") && !child.killed) {
      // Only acks read before the kill count as acknowledged.
      lastAck = Math.max(lastAck, Number(line.slice(4)));
      acks += 1;
    }
  });
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && (killAt === undefined || Date.now() < killAt)) await Bun.sleep(2);
  child.kill("SIGKILL");
  await child.exited;
  await readLoop;
  if (!started) throw new Error(`writer never started: ${await new Response(child.stderr).text()}`);
  return { lastAck, acks, killedBySignal: child.signalCode === "SIGKILL" };
}

for (const io of BACKENDS) {
  describe(`crash recovery on ${io}`, () => {
    test(`SIGKILL at random moments (${KILLS_PER_BACKEND} kills): a committed prefix with every ack survives`, async () => {
      const { dir, cleanup } = scratchDir(`crash-${io}`);
      try {
        const file = path.join(dir, "crash.lss");
        const next = rng(io === "uring" ? 11 : 22);
        let kills = 0;
        let previous = 0;
        let totalAcks = 0;
        for (let i = 0; i < KILLS_PER_BACKEND; i++) {
          const { lastAck, acks, killedBySignal } = await runAndKill(file, io, 5 + Math.floor(next() * 120), i % 3 === 0 ? 24 : 0);
          // Count only writers that really died of the SIGKILL (not ones that exited on their own).
          if (killedBySignal) kills += 1;
          totalAcks += acks;
          const n = await checkPrefix(file, io, lastAck);
          expect(n).toBeGreaterThanOrEqual(previous);
          previous = n;
        }
        expect(kills).toBe(KILLS_PER_BACKEND);
        expect(totalAcks).toBeGreaterThan(KILLS_PER_BACKEND);
        const store = await Store.open(file, { io });
        expect(store.stats().uncleanShutdowns).toBeGreaterThanOrEqual(KILLS_PER_BACKEND);
        await store.close();
      } finally {
        cleanup();
      }
    }, 180_000);
  });
}

describe("torn tails", () => {
  for (const io of BACKENDS) {
    test(`truncating or zeroing the last flush units recovers a committed prefix (${io})`, async () => {
      const { dir, cleanup } = scratchDir(`torn-${io}`);
      try {
        const base = path.join(dir, "base.lss");
        // Build a store with a checkpoint in the middle, then more transactions after it.
        let store = await Store.open(base, { io, segmentSize: 256 << 10, bufferSize: 64 << 10 });
        const { workloadTx } = await import("./crash-workload.ts");
        const commit = async (k: number) =>
          store.transaction((tx) => {
            for (const op of workloadTx(k)) {
              if (op.value === undefined) tx.delete(op.seid);
              else tx.write(op.seid, op.value);
            }
          });
        for (let k = 1; k <= 60; k++) await commit(k);
        await store.checkpoint();
        for (let k = 61; k <= 140; k++) await commit(k);
        // Crash: copy the file while the store is still open (nothing more is written).
        await store.flush();
        fs.copyFileSync(base, path.join(dir, "crashed.lss"));
        await store.close();
        const crashed = fs.readFileSync(path.join(dir, "crashed.lss"));
        const next = rng(io === "uring" ? 5 : 6);
        const tail = Math.min(crashed.length - 16384, 200_000);
        let survivors = 0;
        for (let trial = 0; trial < 24; trial++) {
          const target = path.join(dir, `t${trial}.lss`);
          const cut = crashed.length - Math.floor(next() * tail);
          const damaged = Buffer.from(crashed);
          let bytes: Buffer;
          if (trial % 2 === 0) {
            bytes = damaged.subarray(0, cut);
          } else {
            const at = Math.floor(cut / 4096) * 4096;
            damaged.fill(0, Math.max(0, at - 4096), at);
            bytes = damaged;
          }
          fs.writeFileSync(target, bytes);
          const n = await checkPrefix(target, io, 60);
          expect(n).toBeLessThanOrEqual(140);
          if (n > 60) survivors += 1;
          fs.rmSync(target);
        }
        expect(survivors).toBeGreaterThan(0);
      } finally {
        cleanup();
      }
    }, 120_000);
  }
});
