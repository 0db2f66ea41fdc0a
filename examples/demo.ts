/**
 * The bloom-lss demo: a durable, crash-safe object store in one file.
 *
 *   bun examples/demo.ts [path]      (default: demo-data/demo.lss)
 *
 * 1. creates a store and writes a few thousand elements in transactions;
 * 2. overwrites and deletes some, reads everything back and verifies it byte for byte;
 * 3. starts a child process that commits transactions in a loop, SIGKILLs it mid-flight, reopens
 *    the store and shows that only whole transactions remain and none that was acknowledged is
 *    missing;
 * 4. prints stats and the I/O backend in use.
 */
import fs from "node:fs";
import path from "node:path";
import { Store } from "../src/index.ts";
import { COUNTER, GROUP } from "./demo-shared.ts";

const file = path.resolve(process.argv[2] ?? path.join(import.meta.dir, "..", "demo-data", "demo.lss"));
fs.mkdirSync(path.dirname(file), { recursive: true });
fs.rmSync(file, { force: true });
const decoder = new TextDecoder();
const say = (line: string) => console.log(line);
const check = (ok: boolean, what: string) => {
  if (!ok) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
};

function valueFor(seid: bigint, version: number): Uint8Array {
  const length = 16 + Number(seid % 997n);
  const value = new Uint8Array(length);
  for (let i = 0; i < length; i++) value[i] = (Number(seid % 251n) + i * 7 + version * 13) & 0xff;
  return value;
}

say(`bloom-lss demo — store at ${file}`);
let store = await Store.open(file);
say(`  I/O backend: ${store.io}${store.stats().ioFallbackReason ? ` (fell back: ${store.stats().ioFallbackReason})` : ""}`);

// 1. A few thousand elements, 100 per transaction.
const expected = new Map<bigint, Uint8Array>();
const seids: bigint[] = [];
let started = performance.now();
for (let t = 0; t < 40; t++) {
  await store.transaction((tx) => {
    for (let i = 0; i < 100; i++) {
      const seid = store.allocateSeid();
      const value = valueFor(seid, 0);
      tx.write(seid, value);
      expected.set(seid, value);
      seids.push(seid);
    }
  });
}
say(`  wrote ${seids.length} elements in 40 durable transactions (${(performance.now() - started).toFixed(0)} ms)`);

// 2. Overwrite every 3rd, delete every 7th, in one transaction.
await store.transaction((tx) => {
  seids.forEach((seid, i) => {
    if (i % 7 === 0) {
      tx.delete(seid);
      expected.delete(seid);
    } else if (i % 3 === 0) {
      const value = valueFor(seid, 1);
      tx.write(seid, value);
      expected.set(seid, value);
    }
  });
});
let verified = 0;
for (const seid of seids) {
  const got = await store.read(seid);
  const want = expected.get(seid);
  check(want === undefined ? got === undefined : got !== undefined && Buffer.compare(got, want) === 0, `element ${seid}`);
  verified += 1;
}
say(`  overwrote ${seids.filter((_, i) => i % 3 === 0 && i % 7 !== 0).length}, deleted ${seids.filter((_, i) => i % 7 === 0).length}; read back and verified ${verified} seids`);
await store.close();

// 3. A writer process killed mid-flight.
say("  starting a writer process that commits in a loop…");
const child = Bun.spawn([process.execPath, path.join(import.meta.dir, "demo-writer.ts"), file], { stdout: "pipe", stderr: "inherit" });
let lastAck = 0;
let acks = 0;
let ready = false;
const reader = (async () => {
  let pending = "";
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk);
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line === "ready") ready = true;
      if (line.startsWith("ack ") && !child.killed) {
        lastAck = Number(line.slice(4));
        acks += 1;
      }
      newline = pending.indexOf("\n");
    }
  }
})();
const until = Date.now() + 10_000;
while (!ready && Date.now() < until) await Bun.sleep(5);
await Bun.sleep(300);
child.kill("SIGKILL");
await child.exited;
await reader;
say(`  SIGKILLed it after ${acks} acknowledged transactions (last acknowledged: #${lastAck})`);

started = performance.now();
// At once, like a supervisor restarting it: a dead owner's lock is no lock.
store = await Store.open(file);
const stats = store.stats();
const committed = Number(decoder.decode((await store.read(COUNTER)) ?? new Uint8Array()));
const group = await Promise.all(GROUP.map(async (seid) => decoder.decode((await store.read(seid)) ?? new Uint8Array())));
say(`  reopened in ${(performance.now() - started).toFixed(1)} ms: recovery replayed ${stats.recovery.transactionsReplayed} transactions, discarded ${stats.recovery.transactionsDiscarded} cut off by the kill`);
check(committed >= lastAck, `acknowledged transaction #${lastAck} survived (found #${committed})`);
check(group.every((tag) => tag === String(committed)), `transaction #${committed} is whole (${group.join(", ")})`);
say(`  last committed transaction: #${committed} ≥ last acknowledged #${lastAck}; all its elements carry #${committed}: whole, nothing partial`);
for (const seid of seids) {
  const got = await store.read(seid);
  const want = expected.get(seid);
  check(want === undefined ? got === undefined : got !== undefined && Buffer.compare(got, want) === 0, `element ${seid} after the crash`);
}
say(`  the ${expected.size} elements of part 1 are all intact`);

// 4. Stats.
await store.checkpoint();
const final = store.stats();
say("  stats:");
for (const key of ["io", "elements", "liveBytes", "fileBytes", "segmentsUsed", "segmentsFree", "commits", "checkpoints", "datasyncs", "cacheHits", "cacheMisses", "uncleanShutdowns", "writeAmplification", "spaceAmplification"] as const) {
  const value = final[key];
  say(`    ${key.padEnd(20)} ${typeof value === "number" && !Number.isInteger(value) ? value.toFixed(2) : String(value)}`);
}
await store.close();
say("demo finished: every check passed");
