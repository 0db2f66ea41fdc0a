/**
 * CPU time per write of a bulk load (1 M × 100 B in one transaction), for one or more source
 * roots, beside bun:sqlite and lmdb in the same run. process.cpuUsage (user + system, all
 * threads) around the transaction, and around the calls of `tx.write` alone; wall rates beside.
 * On a shared, noisy machine compare the CPU columns, alternating builds:
 *
 *   bun bench/bulk-cpu.ts [--root /work/main] [--root .] [--reps 3] [--writes 1000000] [--peers]
 *
 * @module
 */
import { Database } from "bun:sqlite";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import { open as openLmdb } from "lmdb";

const args = process.argv.slice(2);
const roots: string[] = [];
let reps = 3;
let n = 1_000_000;
let peers = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--root") roots.push(path.resolve(args[++i] as string));
  else if (args[i] === "--reps") reps = Number(args[++i]);
  else if (args[i] === "--writes") n = Number(args[++i]);
  else if (args[i] === "--peers") peers = true;
}
if (roots.length === 0) roots.push(path.resolve(import.meta.dir, ".."));
const base = path.join(import.meta.dir, ".data");
mkdirSync(base, { recursive: true });
const VALUE = new Uint8Array(100).fill(7);

async function bloom(root: string): Promise<string> {
  const { Store } = (await import(path.join(root, "src/index.ts"))) as typeof import("../src/index.ts");
  const dir = mkdtempSync(path.join(base, "bulk-cpu-"));
  const store = await Store.open(path.join(dir, "a.lss"), { create: true });
  try {
    const seids: bigint[] = new Array(n);
    for (let i = 0; i < n; i++) seids[i] = store.allocateSeid();
    Bun.gc(true);
    let bodyCpu = 0;
    const cpu = process.cpuUsage();
    const start = performance.now();
    await store.transaction((tx) => {
      const c = process.cpuUsage();
      for (let i = 0; i < n; i++) tx.write(seids[i] as bigint, VALUE);
      const used = process.cpuUsage(c);
      bodyCpu = used.user + used.system;
    });
    const wall = performance.now() - start;
    const used = process.cpuUsage(cpu);
    return `${root}: ${((n / wall) * 1000).toFixed(0)} writes/s, ${(((used.user + used.system) / n) * 1000).toFixed(0)} ns cpu/write (tx.write calls alone ${((bodyCpu / n) * 1000).toFixed(0)})`;
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (let rep = 0; rep < reps; rep++) for (const root of roots) console.log(await bloom(root));
if (peers) {
  const dir = mkdtempSync(path.join(base, "bulk-cpu-peers-"));
  try {
    const db = new Database(path.join(dir, "s.db"), { create: true });
    db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE kv (k INTEGER PRIMARY KEY, v BLOB)");
    const insert = db.prepare("INSERT INTO kv VALUES (?, ?)");
    let cpu = process.cpuUsage();
    let start = performance.now();
    db.transaction(() => {
      for (let i = 1; i <= n; i++) insert.run(i, VALUE);
    })();
    let used = process.cpuUsage(cpu);
    console.log(`sqlite WAL FULL: ${((n / (performance.now() - start)) * 1000).toFixed(0)} writes/s, ${(((used.user + used.system) / n) * 1000).toFixed(0)} ns cpu/write`);
    db.close();
    const lmdb = openLmdb({ path: path.join(dir, "l.mdb") });
    cpu = process.cpuUsage();
    start = performance.now();
    lmdb.transactionSync(() => {
      for (let i = 1; i <= n; i++) lmdb.putSync(i, VALUE);
    });
    await lmdb.flushed;
    used = process.cpuUsage(cpu);
    console.log(`lmdb transactionSync + flushed: ${((n / (performance.now() - start)) * 1000).toFixed(0)} writes/s, ${(((used.user + used.system) / n) * 1000).toFixed(0)} ns cpu/write`);
    await lmdb.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
