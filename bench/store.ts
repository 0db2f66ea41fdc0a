/**
 * bloom-lss Store beside bun:sqlite and lmdb, in one run, on equal durability.
 *
 * Durable ("sync") rows: bloom-lss `durability: "sync"`; sqlite WAL + `synchronous=FULL`; lmdb with
 * sync on, measured two ways (the default `overlappingSync`, durable once `db.flushed` resolves,
 * and `overlappingSync: false` with `putSync`, durable on return) — ratios use the faster.
 * Relaxed rows: bloom-lss `"relaxed"`; sqlite WAL + `synchronous=NORMAL`; lmdb `noSync: true`.
 *
 * Workloads: (a) serial commits of one 100 B write; (b) 64 transactions in flight (group
 * commit); (c) one transaction of 1 M writes; (d) hot random point reads over 1 M keys;
 * (e) open time after a crash (copy of an open store) with and without a recent checkpoint;
 * (f) RAM per seid at 1 M seids; (g) reading back what was just written (await read and readSync); (h) an empty store's
 * size on disk (file size and blocks allocated); (j) bytes on disk after steady overwrite churn with default
 * settings. Figures are medians of {@link REPS} interleaved reps.
 *
 * Run alone: `bun bench/store.ts` (`BENCH_STORE_SECTIONS=h` for some sections only).
 *
 * @module
 */
import { Database } from "bun:sqlite";
import { copyFileSync, existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { open as openLmdb, type Database as LmdbDatabase } from "lmdb";
import { Store, type StoreOptions } from "../src/index.ts";
import {
  dataPath,
  fmt,
  fullGc,
  heading,
  log,
  prng,
  randomBytes,
  ratioOf,
  removeData,
  Report,
  REPS,
  Reps,
  rssBytes,
  scaled,
  SCALE,
} from "./common.ts";
import { measureWriteDatasyncRate } from "./io.ts";
import { withTimeout } from "../testing/torture/util.ts";

const VALUE = randomBytes(100, 42);

const SERIAL_COMMITS = scaled(2000, 50);
const SERIAL_MS = scaled(4000, 300);
const RELAXED_COMMITS = scaled(20000, 200);
const RELAXED_MS = scaled(2000, 200);
const GROUP_WIDTH = 64;
const GROUP_MS = scaled(2000, 300);
const BULK_WRITES = scaled(1_000_000, 1000);
const READS = scaled(200_000, 1000);
const OPEN_SIZES = [1_000, 100_000, 1_000_000].map((n) => scaled(n, 100));
const RAM_SEIDS = scaled(1_000_000, 1000);

const SECTION_A = "a. serial commits";
const SECTION_A_RELAXED = "a'. serial commits, relaxed";
const SECTION_B = "b. 64 in flight";
const SECTION_C = "c. bulk";
const SECTION_D = "d. point reads";
const SECTION_E = "e. open after crash";
const SECTION_F = "f. RAM per seid";
const SECTION_G = "g. read what was just written";
const SECTION_H = "h. empty store on disk";
const SECTION_I = "i. skewed reads, data 4× the cache";
const SECTION_J = "j. overwrite churn, default settings";
/** Elements bulk-written then read back in (g). */
const RAW_WRITES = scaled(200_000, 1000);
/** (i): 1 KiB values, 4× as many bytes as bloom-lss's cache and sqlite's page cache hold. */
const SKEW_VALUES = scaled(200_000, 2000);
const SKEW_VALUE_BYTES = 1024;
const SKEW_CACHE_BYTES = Math.floor((SKEW_VALUES * SKEW_VALUE_BYTES) / 4);
const SKEW_READS = scaled(100_000, 2000);
/** Zipf exponent of the key popularity (YCSB's default). */
const SKEW_THETA = 0.99;
/** (j) Live data of 1000 B values, overwritten CHURN_PASSES times at random in durable transactions of CHURN_BATCH writes. */
const CHURN_LIVE_BYTES = scaled(64 << 20, 256 << 10);
const CHURN_VALUE_BYTES = 1000;
const CHURN_PASSES = 5;
const CHURN_BATCH = 50;

// ─────────────────────────────── engines ───────────────────────────────

interface Sqlite {
  db: Database;
  insert: ReturnType<Database["prepare"]>;
  select: ReturnType<Database["prepare"]>;
  path: string;
}

function openSqlite(name: string, synchronous: "FULL" | "NORMAL"): Sqlite {
  const path = dataPath(name);
  rmSync(`${path}-wal`, { force: true });
  rmSync(`${path}-shm`, { force: true });
  const db = new Database(path, { create: true });
  db.exec("PRAGMA journal_mode=WAL");
  db.exec(`PRAGMA synchronous=${synchronous}`);
  // A warm cache for the read test: 256 MiB of pages (1 M rows of 100 B fit).
  db.exec("PRAGMA cache_size=-262144");
  db.exec("CREATE TABLE kv (k INTEGER PRIMARY KEY, v BLOB)");
  return {
    db,
    insert: db.prepare("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"),
    select: db.prepare("SELECT v FROM kv WHERE k = ?"),
    path,
  };
}

function closeSqlite(s: Sqlite): void {
  s.insert.finalize();
  s.select.finalize();
  s.db.close();
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${s.path}${suffix}`, { force: true });
}

type Lmdb = LmdbDatabase<Uint8Array, number>;

function openLmdbAt(name: string, options: { noSync?: boolean; overlappingSync?: boolean } = {}): { db: Lmdb; path: string } {
  const path = dataPath(name);
  rmSync(`${path}-lock`, { force: true });
  const db = openLmdb<Uint8Array, number>({ path, encoding: "binary", keyEncoding: "uint32", ...options });
  return { db, path };
}

async function closeLmdb(l: { db: Lmdb; path: string }): Promise<void> {
  await l.db.close();
  rmSync(l.path, { recursive: true, force: true });
  rmSync(`${l.path}-lock`, { force: true });
}

async function openBloom(name: string, options: StoreOptions = {}): Promise<{ store: Store; path: string }> {
  const path = dataPath(name);
  return { store: await Store.open(path, options), path };
}

/** Longest a bloom-lss close may take before the benchmark reports it and moves on. */
const CLOSE_TIMEOUT_MS = 60_000;


async function closeBloom(b: { store: Store; path: string }): Promise<void> {
  try {
    await withTimeout(b.store.close(), CLOSE_TIMEOUT_MS, `closing ${b.path}`);
  } finally {
    rmSync(b.path, { force: true });
  }
}

/** Run `step(i)` up to `max` times or until `ms` passed; returns operations per second. */
async function rate(max: number, ms: number, step: (i: number) => unknown): Promise<number> {
  const start = performance.now();
  const deadline = start + ms;
  let i = 0;
  while (i < max) {
    const r = step(i);
    if (r instanceof Promise) await r;
    i += 1;
    if ((i & 7) === 0 && performance.now() >= deadline) break;
  }
  return i / ((performance.now() - start) / 1000);
}

/** Run `fn`, recording a failure in the report instead of ending the run. */
async function attempt(report: Report, what: string, fn: () => Promise<void> | void): Promise<void> {
  try {
    await fn();
  } catch (error) {
    report.error(what, error);
  }
}

// ─────────────────────────────── a, a', b ───────────────────────────────

async function serialAndGroup(report: Report): Promise<void> {
  heading("store: (a) serial commits, (b) 64 in flight");
  const bloom = await openBloom("a-bloom.lss");
  const bloomRelaxed = await openBloom("a-bloom-relaxed.lss", { durability: "relaxed" });
  const sqlite = openSqlite("a-sqlite.db", "FULL");
  const sqliteRelaxed = openSqlite("a-sqlite-relaxed.db", "NORMAL");
  const lmdb = openLmdbAt("a-lmdb.mdb");
  const lmdbNoOverlap = openLmdbAt("a-lmdb-nooverlap.mdb", { overlappingSync: false });
  const lmdbRelaxed = openLmdbAt("a-lmdb-relaxed.mdb", { noSync: true, overlappingSync: false });
  let key = 1;
  const reps = new Reps();
  try {
    for (let rep = 0; rep < REPS; rep++) {
      log(`  rep ${rep + 1}/${REPS}`);
      await attempt(report, "a: disk write+datasync", async () => reps.push("disk", await measureWriteDatasyncRate("uring")));
      await attempt(report, "a: disk pwrite+fdatasync calls", async () => reps.push("diskCalls", await measureWriteDatasyncRate("uring", undefined, true)));
      await attempt(report, "a: bloom-lss", async () =>
        reps.push(
          "bloom",
          await rate(SERIAL_COMMITS, SERIAL_MS, () => {
            const seid = bloom.store.allocateSeid();
            return bloom.store.transaction((tx) => tx.write(seid, VALUE));
          }),
        ),
      );
      await attempt(report, "a: sqlite", async () => reps.push("sqlite", await rate(SERIAL_COMMITS, SERIAL_MS, () => sqlite.insert.run(key++, VALUE))));
      await attempt(report, "a: lmdb", async () =>
        reps.push(
          "lmdb",
          await rate(SERIAL_COMMITS, SERIAL_MS, async () => {
            await lmdb.db.put(key++, VALUE);
            await lmdb.db.flushed;
          }),
        ),
      );
      await attempt(report, "a: lmdb putSync", async () =>
        reps.push("lmdbSync", await rate(SERIAL_COMMITS, SERIAL_MS, () => lmdbNoOverlap.db.putSync(key++, VALUE))),
      );

      await attempt(report, "a': bloom-lss relaxed", async () =>
        reps.push(
          "bloomRelaxed",
          await rate(RELAXED_COMMITS, RELAXED_MS, () => {
            const seid = bloomRelaxed.store.allocateSeid();
            return bloomRelaxed.store.transaction((tx) => tx.write(seid, VALUE));
          }),
        ),
      );
      await attempt(report, "a': sqlite NORMAL", async () =>
        reps.push("sqliteRelaxed", await rate(RELAXED_COMMITS, RELAXED_MS, () => sqliteRelaxed.insert.run(key++, VALUE))),
      );
      await attempt(report, "a': lmdb noSync", async () =>
        reps.push("lmdbRelaxed", await rate(RELAXED_COMMITS, RELAXED_MS, () => lmdbRelaxed.db.putSync(key++, VALUE))),
      );

      // (b) 64 transactions in flight, repeated.
      await attempt(report, "b: bloom-lss", async () => {
        const start = performance.now();
        let commits = 0;
        while (performance.now() - start < GROUP_MS) {
          const batch: Promise<unknown>[] = [];
          for (let i = 0; i < GROUP_WIDTH; i++) {
            const seid = bloom.store.allocateSeid();
            batch.push(bloom.store.transaction((tx) => tx.write(seid, VALUE)));
          }
          await Promise.all(batch);
          commits += GROUP_WIDTH;
        }
        reps.push("bloomGroup", commits / ((performance.now() - start) / 1000));
      });
      await attempt(report, "b: lmdb", async () => {
        const start = performance.now();
        let commits = 0;
        while (performance.now() - start < GROUP_MS) {
          const batch: Promise<unknown>[] = [];
          for (let i = 0; i < GROUP_WIDTH; i++) batch.push(lmdb.db.put(key++, VALUE));
          await Promise.all(batch);
          await lmdb.db.flushed;
          commits += GROUP_WIDTH;
        }
        reps.push("lmdbGroup", commits / ((performance.now() - start) / 1000));
      });
    }
    const bloomStats = bloom.store.stats();
    report.note(
      `(a)/(b) bloom-lss sync store after the runs: ${bloomStats.commits} commits, ${bloomStats.datasyncs} datasyncs, ` +
        `write amplification ${fmt(bloomStats.writeAmplification)} (${fmt(bloomStats.bytesWritten / Math.max(1, bloomStats.commits))} B written per commit)`,
    );
  } finally {
    await attempt(report, "a: close bloom-lss sync store", () => closeBloom(bloom));
    await attempt(report, "a: close bloom-lss relaxed store", () => closeBloom(bloomRelaxed));
    await attempt(report, "a: close sqlite", () => {
      closeSqlite(sqlite);
      closeSqlite(sqliteRelaxed);
    });
    await attempt(report, "a: close lmdb", async () => {
      await closeLmdb(lmdb);
      await closeLmdb(lmdbNoOverlap);
      await closeLmdb(lmdbRelaxed);
    });
  }

  const diskLinked = report.figure(SECTION_A, "disk: 4 KiB write + linked fdatasync, one submission (uring, bench/io.ts)", reps.get("disk"), "pairs/s").value;
  const diskCalls = report.figure(SECTION_A, "disk: 4 KiB pwrite + fdatasync, system calls (bench/io.ts)", reps.get("diskCalls"), "pairs/s").value;
  // The faster of the two ways is what the disk can do for a serial commit.
  const disk = diskLinked === undefined ? diskCalls : diskCalls === undefined ? diskLinked : Math.max(diskLinked, diskCalls);
  const b = report.figure(SECTION_A, "bloom-lss sync", reps.get("bloom"), "commits/s").value;
  const s = report.figure(SECTION_A, "sqlite WAL FULL", reps.get("sqlite"), "commits/s").value;
  const l1 = report.figure(SECTION_A, "lmdb default (overlappingSync) put + flushed", reps.get("lmdb"), "commits/s").value;
  const l2 = report.figure(SECTION_A, "lmdb overlappingSync:false putSync", reps.get("lmdbSync"), "commits/s").value;
  const l = l1 === undefined ? l2 : l2 === undefined ? l1 : Math.max(l1, l2);
  report.ratio(SECTION_A, "bloom-lss ÷ sqlite FULL", ratioOf(b, s), 2);
  report.ratio(SECTION_A, "bloom-lss ÷ lmdb (faster durable variant)", ratioOf(b, l), 2);
  report.ratio(SECTION_A, "bloom-lss ÷ disk write+datasync (the faster way)", ratioOf(b, disk), 0.8);
  // Context for the targets: each durable commit needs at least one device flush, so no engine
  // can go far past the disk's own rate (sqlite's buffered write + fdatasync is one round trip).
  report.ratio(SECTION_A, "sqlite FULL ÷ disk write+datasync", ratioOf(s, disk));
  report.ratio(SECTION_A, "lmdb (faster durable variant) ÷ disk write+datasync", ratioOf(l, disk));

  const br = report.figure(SECTION_A_RELAXED, "bloom-lss relaxed", reps.get("bloomRelaxed"), "commits/s").value;
  const sr = report.figure(SECTION_A_RELAXED, "sqlite WAL NORMAL", reps.get("sqliteRelaxed"), "commits/s").value;
  const lr = report.figure(SECTION_A_RELAXED, "lmdb noSync putSync", reps.get("lmdbRelaxed"), "commits/s").value;
  report.ratio(SECTION_A_RELAXED, "bloom-lss relaxed ÷ sqlite NORMAL", ratioOf(br, sr));
  report.ratio(SECTION_A_RELAXED, "bloom-lss relaxed ÷ lmdb noSync", ratioOf(br, lr));

  const bg = report.figure(SECTION_B, "bloom-lss sync, Promise.all of 64 transactions", reps.get("bloomGroup"), "commits/s").value;
  const lg = report.figure(SECTION_B, "lmdb default, Promise.all of 64 puts + flushed", reps.get("lmdbGroup"), "commits/s").value;
  report.ratio(SECTION_B, "bloom-lss 64 in flight ÷ sqlite FULL serial", ratioOf(bg, s), 10);
  report.ratio(SECTION_B, "bloom-lss 64 in flight ÷ lmdb 64 in flight", ratioOf(bg, lg));
}

// ─────────────────────────────── c, d ───────────────────────────────

async function bulkAndReads(report: Report): Promise<void> {
  heading(`store: (c) bulk of ${BULK_WRITES.toLocaleString("en-US")} writes, (d) point reads`);
  if (BULK_WRITES !== 1_000_000) report.note(`(c)/(d) use ${BULK_WRITES} writes (BENCH_SCALE=${SCALE})`);
  const reps = new Reps();
  let kept: { bloom?: { store: Store; path: string }; seids?: bigint[]; sqlite?: Sqlite; lmdb?: { db: Lmdb; path: string } } = {};
  const release = async () => {
    const { bloom, sqlite, lmdb } = kept;
    kept = {};
    if (bloom) await attempt(report, "c: close bloom-lss", () => closeBloom(bloom));
    if (sqlite) closeSqlite(sqlite);
    if (lmdb) await closeLmdb(lmdb);
  };
  try {
    for (let rep = 0; rep < REPS; rep++) {
      log(`  rep ${rep + 1}/${REPS}`);
      await release();
      fullGc();
      await attempt(report, "c: bloom-lss", async () => {
        // A cache that holds every value, so (d) reads warm.
        const bloom = await openBloom("c-bloom.lss", { cacheBytes: 512 << 20 });
        kept.bloom = bloom;
        const seids: bigint[] = new Array(BULK_WRITES);
        const allocStart = performance.now();
        for (let i = 0; i < BULK_WRITES; i++) seids[i] = bloom.store.allocateSeid();
        reps.push("bloomAlloc", BULK_WRITES / ((performance.now() - allocStart) / 1000));
        kept.seids = seids;
        const start = performance.now();
        await bloom.store.transaction((tx) => {
          for (let i = 0; i < BULK_WRITES; i++) tx.write(seids[i] as bigint, VALUE);
        });
        reps.push("bloom", BULK_WRITES / ((performance.now() - start) / 1000));
      });
      fullGc();
      await attempt(report, "c: sqlite", async () => {
        const sqlite = openSqlite("c-sqlite.db", "FULL");
        kept.sqlite = sqlite;
        const start = performance.now();
        sqlite.db.transaction(() => {
          for (let i = 1; i <= BULK_WRITES; i++) sqlite.insert.run(i, VALUE);
        })();
        reps.push("sqlite", BULK_WRITES / ((performance.now() - start) / 1000));
      });
      fullGc();
      await attempt(report, "c: lmdb", async () => {
        const lmdb = openLmdbAt("c-lmdb.mdb");
        kept.lmdb = lmdb;
        const start = performance.now();
        lmdb.db.transactionSync(() => {
          for (let i = 1; i <= BULK_WRITES; i++) lmdb.db.putSync(i, VALUE);
        });
        await lmdb.db.flushed;
        reps.push("lmdb", BULK_WRITES / ((performance.now() - start) / 1000));
      });
    }
    const b = report.figure(SECTION_C, "bloom-lss sync, one transaction", reps.get("bloom"), "writes/s").value;
    const s = report.figure(SECTION_C, "sqlite WAL FULL, one transaction", reps.get("sqlite"), "writes/s").value;
    const l = report.figure(SECTION_C, "lmdb transactionSync + flushed", reps.get("lmdb"), "writes/s").value;
    report.figure(SECTION_C, "bloom-lss allocateSeid (not in the figure above)", reps.get("bloomAlloc"), "seids/s");
    report.ratio(SECTION_C, "bloom-lss ÷ sqlite", ratioOf(b, s), 1.5);
    report.ratio(SECTION_C, "bloom-lss ÷ lmdb", ratioOf(b, l));
    if (kept.bloom) {
      const st = kept.bloom.store.stats();
      report.note(
        `(c) bloom-lss after the bulk load: ${st.elements} elements, file ${fmt(st.fileBytes / 2 ** 20)} MiB, ` +
          `write amplification ${fmt(st.writeAmplification)}, space amplification ${fmt(st.spaceAmplification)}, mappingTableBytes ${st.mappingTableBytes}`,
      );
    }

    // (d) point reads over the stores of the last rep.
    const { bloom, seids, sqlite, lmdb } = kept;
    if (bloom === undefined || seids === undefined || sqlite === undefined || lmdb === undefined) {
      report.error(SECTION_D, "a store of (c) is missing: no read figures");
      return;
    }
    const n = seids.length;
    const next = prng(99);
    const picks = new Uint32Array(READS);
    for (let i = 0; i < READS; i++) picks[i] = Math.floor(next() * n);
    // Warm every engine: read every key once.
    await attempt(report, "d: warm", async () => {
      for (let i = 0; i < n; i++) if ((await bloom.store.read(seids[i] as bigint)) === undefined) throw new Error(`bloom-lss lost seid ${seids[i]}`);
      for (let i = 1; i <= n; i++) if (lmdb.db.getBinary(i) === undefined) throw new Error(`lmdb lost key ${i}`);
      for (let i = 1; i <= n; i++) if (sqlite.select.get(i) === null) throw new Error(`sqlite lost key ${i}`);
    });
    for (let rep = 0; rep < REPS; rep++) {
      await attempt(report, "d: bloom-lss", async () => {
        const start = performance.now();
        for (let i = 0; i < READS; i++) {
          const v = await bloom.store.read(seids[picks[i] as number] as bigint);
          if (v === undefined || v.length !== 100) throw new Error("bloom-lss read came back wrong");
        }
        reps.push("bloomRead", READS / ((performance.now() - start) / 1000));
      });
      await attempt(report, "d: bloom-lss readSync", async () => {
        const start = performance.now();
        for (let i = 0; i < READS; i++) {
          const v = bloom.store.readSync(seids[picks[i] as number] as bigint);
          if (v === undefined || v.length !== 100) throw new Error("bloom-lss readSync came back wrong");
        }
        reps.push("bloomReadSync", READS / ((performance.now() - start) / 1000));
      });
      await attempt(report, "d: lmdb", async () => {
        const start = performance.now();
        for (let i = 0; i < READS; i++) {
          const v = lmdb.db.getBinary((picks[i] as number) + 1);
          if (v === undefined || v.length !== 100) throw new Error("lmdb read came back wrong");
        }
        reps.push("lmdbRead", READS / ((performance.now() - start) / 1000));
      });
      await attempt(report, "d: sqlite", async () => {
        const start = performance.now();
        for (let i = 0; i < READS; i++) {
          const row = sqlite.select.get((picks[i] as number) + 1) as { v: Uint8Array } | null;
          if (row === null || row.v.length !== 100) throw new Error("sqlite read came back wrong");
        }
        reps.push("sqliteRead", READS / ((performance.now() - start) / 1000));
      });
    }
    const st = bloom.store.stats();
    const br = report.figure(SECTION_D, "bloom-lss await store.read (cacheBytes 512 MiB, warm)", reps.get("bloomRead"), "reads/s").value;
    const bs = report.figure(SECTION_D, "bloom-lss store.readSync (same cache, warm)", reps.get("bloomReadSync"), "reads/s").value;
    const lr = report.figure(SECTION_D, "lmdb getBinary", reps.get("lmdbRead"), "reads/s").value;
    const sr = report.figure(SECTION_D, "sqlite prepared SELECT (cache_size 256 MiB, warm)", reps.get("sqliteRead"), "reads/s").value;
    report.ratio(SECTION_D, "bloom-lss ÷ lmdb getBinary", ratioOf(br, lr), 1.5);
    report.ratio(SECTION_D, "bloom-lss ÷ sqlite", ratioOf(br, sr));
    report.ratio(SECTION_D, "bloom-lss readSync ÷ lmdb getBinary", ratioOf(bs, lr));
    report.note(`(d) bloom-lss cache: ${st.cacheHits} hits, ${st.cacheMisses} misses, ${fmt(st.cacheBytes / 2 ** 20)} MiB held (cacheBytes 512 MiB)`);
  } finally {
    await attempt(report, "c/d: close", release);
  }
}

// ─────────────────────────────── g, h ───────────────────────────────

/**
 * (g) What users do after a bulk load: read it back at once. Default store settings (a bulk
 * transaction hands at most 1 MiB to the value cache, so reads meet the caching layer of log
 * blocks, or the disk), every element read once in random order; lmdb and sqlite read the same
 * after their own bulk load (through the kernel's page cache).
 */
async function readAfterWrite(report: Report): Promise<void> {
  heading(`store: (g) ${RAW_WRITES.toLocaleString("en-US")} elements bulk-written, then each read once`);
  const reps = new Reps();
  const order = new Uint32Array(RAW_WRITES);
  const next = prng(7);
  for (let i = 0; i < RAW_WRITES; i++) order[i] = i;
  for (let i = RAW_WRITES - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  for (let rep = 0; rep < REPS; rep++) {
    log(`  rep ${rep + 1}/${REPS}`);
    fullGc();
    await attempt(report, "g: bloom-lss", async () => {
      const bloom = await openBloom("g-bloom.lss");
      try {
        await bloom.store.transaction((tx) => {
          for (let i = 1; i <= RAW_WRITES; i++) tx.write(BigInt(i), VALUE);
        });
        const start = performance.now();
        for (let i = 0; i < RAW_WRITES; i++) {
          const v = await bloom.store.read(BigInt((order[i] as number) + 1));
          if (v === undefined || v.length !== 100) throw new Error("bloom-lss read came back wrong");
        }
        reps.push("bloom", RAW_WRITES / ((performance.now() - start) / 1000));
        const st = bloom.store.stats();
        if (rep === 0) report.note(`(g) bloom-lss block cache: ${st.blockCache.hits} hits, ${st.blockCache.misses} misses; value cache ${st.cacheHits} hits`);
      } finally {
        await closeBloom(bloom);
      }
    });
    fullGc();
    // readSync on a store of its own: the reads above put every value in the value cache.
    await attempt(report, "g: bloom-lss readSync", async () => {
      const bloom = await openBloom("g-bloom-sync.lss");
      try {
        await bloom.store.transaction((tx) => {
          for (let i = 1; i <= RAW_WRITES; i++) tx.write(BigInt(i), VALUE);
        });
        const start = performance.now();
        for (let i = 0; i < RAW_WRITES; i++) {
          const v = bloom.store.readSync(BigInt((order[i] as number) + 1));
          if (v === undefined || v.length !== 100) throw new Error("bloom-lss readSync came back wrong");
        }
        reps.push("bloomSync", RAW_WRITES / ((performance.now() - start) / 1000));
        const st = bloom.store.stats();
        if (rep === 0) report.note(`(g) bloom-lss readSync: block cache ${st.blockCache.hits} hits, ${st.blockCache.misses} misses; value cache ${st.cacheHits} hits`);
      } finally {
        await closeBloom(bloom);
      }
    });
    fullGc();
    await attempt(report, "g: lmdb", async () => {
      const lmdb = openLmdbAt("g-lmdb.mdb");
      try {
        lmdb.db.transactionSync(() => {
          for (let i = 1; i <= RAW_WRITES; i++) lmdb.db.putSync(i, VALUE);
        });
        await lmdb.db.flushed;
        const start = performance.now();
        for (let i = 0; i < RAW_WRITES; i++) {
          const v = lmdb.db.getBinary((order[i] as number) + 1);
          if (v === undefined || v.length !== 100) throw new Error("lmdb read came back wrong");
        }
        reps.push("lmdb", RAW_WRITES / ((performance.now() - start) / 1000));
      } finally {
        await closeLmdb(lmdb);
      }
    });
    fullGc();
    await attempt(report, "g: sqlite", async () => {
      const sqlite = openSqlite("g-sqlite.db", "FULL");
      try {
        sqlite.db.transaction(() => {
          for (let i = 1; i <= RAW_WRITES; i++) sqlite.insert.run(i, VALUE);
        })();
        const start = performance.now();
        for (let i = 0; i < RAW_WRITES; i++) {
          const row = sqlite.select.get((order[i] as number) + 1) as { v: Uint8Array } | null;
          if (row === null || row.v.length !== 100) throw new Error("sqlite read came back wrong");
        }
        reps.push("sqlite", RAW_WRITES / ((performance.now() - start) / 1000));
      } finally {
        closeSqlite(sqlite);
      }
    });
  }
  const b = report.figure(SECTION_G, "bloom-lss await store.read, default settings", reps.get("bloom"), "reads/s").value;
  const bs = report.figure(SECTION_G, "bloom-lss store.readSync, default settings", reps.get("bloomSync"), "reads/s").value;
  const l = report.figure(SECTION_G, "lmdb getBinary", reps.get("lmdb"), "reads/s").value;
  const q = report.figure(SECTION_G, "sqlite prepared SELECT", reps.get("sqlite"), "reads/s").value;
  report.ratio(SECTION_G, "bloom-lss ÷ lmdb", ratioOf(b, l), 1.0);
  report.ratio(SECTION_G, "bloom-lss ÷ sqlite", ratioOf(b, q));
  report.ratio(SECTION_G, "bloom-lss readSync ÷ lmdb", ratioOf(bs, l));
}

/**
 * Bytes a database takes on disk: the file or directory at `path` plus its `-wal`/`-shm`/`-lock`
 * files, as their sizes say (`apparent`) and as blocks the filesystem allocated (`allocated`, what
 * `du` counts).
 */
function diskBytes(path: string): { apparent: number; allocated: number } {
  let apparent = 0;
  let allocated = 0;
  const add = (file: string): void => {
    const stat = statSync(file);
    apparent += stat.size;
    allocated += stat.blocks * 512;
  };
  for (const candidate of [path, `${path}-wal`, `${path}-shm`, `${path}-lock`]) {
    if (!existsSync(candidate)) continue;
    if (statSync(candidate).isDirectory()) for (const entry of readdirSync(candidate)) add(`${candidate}/${entry}`);
    else add(candidate);
  }
  return { apparent, allocated };
}

/** (h) What a new, empty store costs on disk (created, closed), beside the peers' empty databases. */
async function emptyStoreSize(report: Report): Promise<void> {
  heading("store: (h) an empty store on disk");
  const bloom = await openBloom("h-bloom.lss");
  await bloom.store.close();
  const bloomBytes = diskBytes(bloom.path);
  rmSync(bloom.path, { force: true });
  const sqlite = openSqlite("h-sqlite.db", "FULL");
  sqlite.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  const sqliteBytes = diskBytes(sqlite.path);
  closeSqlite(sqlite);
  const lmdb = openLmdbAt("h-lmdb.mdb");
  await lmdb.db.flushed;
  const lmdbBytes = diskBytes(lmdb.path);
  await closeLmdb(lmdb);
  report.figure(SECTION_H, "bloom-lss (default settings), file size", bloomBytes.apparent, "bytes");
  report.figure(SECTION_H, "bloom-lss (default settings), blocks allocated", bloomBytes.allocated, "bytes");
  report.figure(SECTION_H, "sqlite (table created, WAL checkpointed), file size", sqliteBytes.apparent, "bytes");
  report.figure(SECTION_H, "sqlite (table created, WAL checkpointed), blocks allocated", sqliteBytes.allocated, "bytes");
  report.figure(SECTION_H, "lmdb, file size", lmdbBytes.apparent, "bytes");
  report.figure(SECTION_H, "lmdb, blocks allocated", lmdbBytes.allocated, "bytes");
  const bloomLarger = Math.max(bloomBytes.apparent, bloomBytes.allocated);
  report.ratio(SECTION_H, "bloom-lss (the larger of size and allocation) ÷ 1 MiB", ratioOf(bloomLarger, 1 << 20), 1, { atMost: true });
  report.ratio(SECTION_H, "bloom-lss ÷ sqlite (file size)", ratioOf(bloomBytes.apparent, sqliteBytes.apparent), undefined, { atMost: true });
  report.ratio(SECTION_H, "bloom-lss ÷ lmdb (file size)", ratioOf(bloomBytes.apparent, lmdbBytes.apparent), undefined, { atMost: true });
}

// ─────────────────────────────── e, f ───────────────────────────────

async function buildStore(name: string, seids: number): Promise<{ store: Store; path: string }> {
  const b = await openBloom(name, { numSegmentsPerCheckpoint: 1 << 20, durability: "relaxed" });
  const perTx = 10_000;
  for (let done = 0; done < seids; done += perTx) {
    const count = Math.min(perTx, seids - done);
    const list: bigint[] = [];
    for (let i = 0; i < count; i++) list.push(b.store.allocateSeid());
    await b.store.transaction((tx) => {
      for (const seid of list) tx.write(seid, VALUE);
    });
  }
  await b.store.flush();
  return b;
}

/** What a child process reports after opening a store copy. */
interface OpenResult {
  ms: number;
  elements: number;
  mappingTableBytes: number;
  rssBefore: number;
  rssAfter: number;
  recovery: { checkpointLoaded: boolean; unitsReplayed: number; bytesReplayed: number; durationMs: number };
}

/** Longest a single crash-image open may take before it is reported as timed out. */
const OPEN_TIMEOUT_MS = Number(process.env.BENCH_OPEN_TIMEOUT_MS ?? 45_000);

/**
 * Open `path` in a fresh Bun process (so its RSS is not muddied by this one's heap), with
 * `cacheBytes: 0`, and report time, counts and RSS. The child exits without closing: the copy is
 * thrown away. `undefined` when it did not finish within {@link OPEN_TIMEOUT_MS}.
 */
async function openInChild(path: string): Promise<OpenResult | undefined> {
  const child = Bun.spawn([process.execPath, import.meta.path, "--open-child", path], { stdout: "pipe", stderr: "pipe" });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill(9);
  }, OPEN_TIMEOUT_MS);
  const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  clearTimeout(timer);
  if (timedOut) return undefined;
  const line = out.split("\n").find((l) => l.startsWith("RESULT "));
  if (child.exitCode !== 0 || line === undefined) throw new Error(`open child failed (exit ${child.exitCode}): ${err.trim() || out.trim()}`);
  return JSON.parse(line.slice(7)) as OpenResult;
}

/** The child side of {@link openInChild}. */
async function openChildMain(path: string): Promise<void> {
  fullGc();
  const rssBefore = rssBytes();
  const start = performance.now();
  const store = await Store.open(path, { cacheBytes: 0 });
  const ms = performance.now() - start;
  fullGc();
  const rssAfter = rssBytes();
  const st = store.stats();
  const result: OpenResult = {
    ms,
    elements: st.elements,
    mappingTableBytes: st.mappingTableBytes,
    rssBefore,
    rssAfter,
    recovery: st.recovery,
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}

async function openAfterCrash(report: Report): Promise<void> {
  heading("store: (e) open after a crash, (f) RAM per seid");
  report.note(`(e) each crash image is opened by a fresh bun process (cacheBytes 0); an open over ${OPEN_TIMEOUT_MS / 1000} s is stopped and reported as timed out`);
  /** RSS growth of the first checkpointed open, by store size: the slope is RAM per added seid. */
  const rssDeltaBySize = new Map<number, number>();
  for (const size of OPEN_SIZES) {
    const label = size.toLocaleString("en-US");
    log(`  ${label} seids`);
    let built: { store: Store; path: string } | undefined;
    const images = { noCkpt: dataPath(`e-${size}-nockpt.copy`), ckpt: dataPath(`e-${size}-ckpt.copy`) };
    const reps = new Reps();
    const first = new Map<string, OpenResult>();
    const timedOut = new Set<string>();
    try {
      const buildStart = performance.now();
      built = await buildStore(`e-${size}.lss`, size);
      const buildMs = performance.now() - buildStart;
      // Crash images: the file copied while the store is open, after a flush (and a checkpoint).
      copyFileSync(built.path, images.noCkpt);
      await built.store.checkpoint();
      copyFileSync(built.path, images.ckpt);
      const closing = built;
      built = undefined;
      await closeBloom(closing);
      log(`    built in ${fmt(buildMs)} ms, file ${fmt(statSync(images.noCkpt).size / 2 ** 20)} MiB`);

      for (let rep = 0; rep < REPS; rep++) {
        for (const kind of ["noCkpt", "ckpt"] as const) {
          if (timedOut.has(kind)) continue;
          await attempt(report, `e: open ${label} ${kind}`, async () => {
            const path = dataPath("e-open.lss");
            copyFileSync(images[kind], path);
            try {
              const r = await openInChild(path);
              if (r === undefined) {
                timedOut.add(kind);
                return;
              }
              if (r.elements !== size) throw new Error(`reopened copy has ${r.elements} elements, expected ${size}`);
              reps.push(kind, r.ms);
              if (!first.has(kind)) first.set(kind, r);
            } finally {
              rmSync(path, { force: true });
            }
          });
        }
      }
    } catch (error) {
      report.error(`${SECTION_E} ${label}`, error);
    } finally {
      if (built) await closeBloom(built).catch(() => {});
      rmSync(images.noCkpt, { force: true });
      rmSync(images.ckpt, { force: true });
    }
    const describe = (kind: string) => {
      const r = first.get(kind);
      if (timedOut.has(kind)) return `timed out after ${OPEN_TIMEOUT_MS / 1000} s${r ? " (later reps skipped)" : ""}`;
      if (!r) return undefined;
      return `${r.recovery.unitsReplayed} units / ${fmt(r.recovery.bytesReplayed / 2 ** 20)} MiB replayed, checkpoint loaded: ${r.recovery.checkpointLoaded}`;
    };
    report.figure(SECTION_E, `${label} seids, no checkpoint since creation`, reps.get("noCkpt"), "ms", describe("noCkpt"));
    report.figure(SECTION_E, `${label} seids, checkpoint() just before the crash`, reps.get("ckpt"), "ms", describe("ckpt"));

    const checkpointed = first.get("ckpt");
    if (checkpointed !== undefined) rssDeltaBySize.set(size, checkpointed.rssAfter - checkpointed.rssBefore);
    if (size === RAM_SEIDS) {
      const kind = first.has("ckpt") ? "ckpt" : "noCkpt";
      const r = first.get(kind);
      if (r === undefined) {
        report.error(SECTION_F, `no open of the ${label}-seid store finished: no RAM figures`);
      } else {
        const how = kind === "ckpt" ? "checkpointed image" : "image without checkpoint (the checkpointed one did not open in time)";
        report.figure(SECTION_F, `mappingTableBytes ÷ seids (${label} seids)`, r.mappingTableBytes / size, "B/seid");
        report.figure(SECTION_F, `RSS after − before Store.open ÷ seids (fresh process, cacheBytes 0, ${how})`, (r.rssAfter - r.rssBefore) / size, "B/seid");
        report.ratio(SECTION_F, "mappingTableBytes per seid", r.mappingTableBytes / size, 32, { atMost: true, unit: "B" });
        report.ratio(SECTION_F, "RSS delta per seid", (r.rssAfter - r.rssBefore) / size, 32, { atMost: true, unit: "B" });
        // The delta above includes what an open costs whatever the size (flush buffers, read
        // scratch, compiled code: about 11 MiB here). The slope between two sizes is per seid.
        const smaller = OPEN_SIZES.filter((n) => n < size && rssDeltaBySize.has(n)).at(-1);
        const atSize = rssDeltaBySize.get(size);
        if (smaller !== undefined && atSize !== undefined) {
          const slope = (atSize - (rssDeltaBySize.get(smaller) as number)) / (size - smaller);
          const range = `${smaller.toLocaleString("en-US")} → ${label} seids`;
          report.figure(SECTION_F, `RSS growth per added seid (checkpointed opens, ${range})`, slope, "B/seid");
          report.ratio(SECTION_F, `RSS per added seid (${range})`, slope, 32, { atMost: true, unit: "B" });
        }
        const replay = kind === "ckpt" ? first.get("noCkpt") : undefined;
        if (replay !== undefined) {
          report.figure(SECTION_F, `RSS after − before Store.open ÷ seids (fresh process, cacheBytes 0, image without checkpoint: replay)`, (replay.rssAfter - replay.rssBefore) / size, "B/seid");
        }
      }
    }
  }
}

/** Run the whole store benchmark into `report`. */
/**
 * Ranks 0..n-1 drawn with Zipf(θ) popularity, mapped through a random permutation so the hot keys
 * lie anywhere in the file (not clustered at the start of the load).
 */
function zipfianPicks(n: number, count: number, theta: number, seed: number): Uint32Array {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / (i + 1) ** theta;
  const next = prng(seed);
  const permutation = new Uint32Array(n);
  for (let i = 0; i < n; i++) permutation[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [permutation[i], permutation[j]] = [permutation[j] as number, permutation[i] as number];
  }
  const picks = new Uint32Array(count);
  for (let k = 0; k < count; k++) {
    const u = next() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] as number) < u) lo = mid + 1;
      else hi = mid;
    }
    picks[k] = permutation[lo] as number;
  }
  return picks;
}

/**
 * (i) What the issue calls reads of a working set larger than the cache: 1 KiB values, 4× the
 * bytes bloom-lss's `cacheBytes` and sqlite's `cache_size` hold, read with Zipf(0.99) popularity
 * after a warm-up of as many reads. lmdb reads through the kernel's page cache, which is not
 * limited here (the machine has far more RAM than the data): that is how lmdb runs for users.
 */
export async function skewedReads(report: Report): Promise<void> {
  heading(`store: (i) ${SKEW_VALUES.toLocaleString("en-US")} values of 1 KiB, caches of ${fmt(SKEW_CACHE_BYTES / 2 ** 20)} MiB, ${SKEW_READS.toLocaleString("en-US")} Zipf(${SKEW_THETA}) reads`);
  const reps = new Reps();
  const value = new Uint8Array(SKEW_VALUE_BYTES).fill(5);
  const warm = zipfianPicks(SKEW_VALUES, SKEW_READS, SKEW_THETA, 11);
  const picks = zipfianPicks(SKEW_VALUES, SKEW_READS, SKEW_THETA, 12);
  const syncPicks = zipfianPicks(SKEW_VALUES, SKEW_READS, SKEW_THETA, 13);
  const BATCH = 10_000;
  for (let rep = 0; rep < REPS; rep++) {
    log(`  rep ${rep + 1}/${REPS}`);
    fullGc();
    await attempt(report, "i: bloom-lss", async () => {
      const bloom = await openBloom("i-bloom.lss", { cacheBytes: SKEW_CACHE_BYTES });
      try {
        for (let first = 1; first <= SKEW_VALUES; first += BATCH) {
          await bloom.store.transaction((tx) => {
            for (let i = first; i < Math.min(SKEW_VALUES + 1, first + BATCH); i++) tx.write(BigInt(i), value);
          });
        }
        for (let i = 0; i < SKEW_READS; i++) await bloom.store.read(BigInt((warm[i] as number) + 1));
        const start = performance.now();
        for (let i = 0; i < SKEW_READS; i++) {
          const v = await bloom.store.read(BigInt((picks[i] as number) + 1));
          if (v === undefined || v.length !== SKEW_VALUE_BYTES) throw new Error("bloom-lss read came back wrong");
        }
        reps.push("bloom", SKEW_READS / ((performance.now() - start) / 1000));
        // The same with readSync (lmdb-style: a miss blocks on the page cache or the disk), over
        // picks of another seed (the pass above warmed the caches a little more).
        const syncStart = performance.now();
        for (let i = 0; i < SKEW_READS; i++) {
          const v = bloom.store.readSync(BigInt((syncPicks[i] as number) + 1));
          if (v === undefined || v.length !== SKEW_VALUE_BYTES) throw new Error("bloom-lss readSync came back wrong");
        }
        reps.push("bloomSync", SKEW_READS / ((performance.now() - syncStart) / 1000));
        const st = bloom.store.stats();
        if (rep === 0) report.note(`(i) bloom-lss: value cache ${st.cacheHits} hits / ${st.cacheMisses} misses; block cache ${st.blockCache.hits} hits / ${st.blockCache.misses} misses`);
      } finally {
        await closeBloom(bloom);
      }
    });
    fullGc();
    await attempt(report, "i: lmdb", async () => {
      const lmdb = openLmdbAt("i-lmdb.mdb");
      try {
        for (let first = 1; first <= SKEW_VALUES; first += BATCH) {
          lmdb.db.transactionSync(() => {
            for (let i = first; i < Math.min(SKEW_VALUES + 1, first + BATCH); i++) lmdb.db.putSync(i, value);
          });
        }
        await lmdb.db.flushed;
        for (let i = 0; i < SKEW_READS; i++) lmdb.db.getBinary((warm[i] as number) + 1);
        const start = performance.now();
        for (let i = 0; i < SKEW_READS; i++) {
          const v = lmdb.db.getBinary((picks[i] as number) + 1);
          if (v === undefined || v.length !== SKEW_VALUE_BYTES) throw new Error("lmdb read came back wrong");
        }
        reps.push("lmdb", SKEW_READS / ((performance.now() - start) / 1000));
      } finally {
        await closeLmdb(lmdb);
      }
    });
    fullGc();
    await attempt(report, "i: sqlite", async () => {
      const sqlite = openSqlite("i-sqlite.db", "FULL");
      try {
        sqlite.db.exec(`PRAGMA cache_size=-${Math.floor(SKEW_CACHE_BYTES / 1024)}`);
        for (let first = 1; first <= SKEW_VALUES; first += BATCH) {
          sqlite.db.transaction(() => {
            for (let i = first; i < Math.min(SKEW_VALUES + 1, first + BATCH); i++) sqlite.insert.run(i, value);
          })();
        }
        for (let i = 0; i < SKEW_READS; i++) sqlite.select.get((warm[i] as number) + 1);
        const start = performance.now();
        for (let i = 0; i < SKEW_READS; i++) {
          const row = sqlite.select.get((picks[i] as number) + 1) as { v: Uint8Array } | null;
          if (row === null || row.v.length !== SKEW_VALUE_BYTES) throw new Error("sqlite read came back wrong");
        }
        reps.push("sqlite", SKEW_READS / ((performance.now() - start) / 1000));
      } finally {
        closeSqlite(sqlite);
      }
    });
  }
  const b = report.figure(SECTION_I, `bloom-lss await store.read (cacheBytes ${fmt(SKEW_CACHE_BYTES / 2 ** 20)} MiB)`, reps.get("bloom"), "reads/s").value;
  const bs = report.figure(SECTION_I, `bloom-lss store.readSync, after the pass above (another seed)`, reps.get("bloomSync"), "reads/s").value;
  const l = report.figure(SECTION_I, "lmdb getBinary (page cache, unlimited)", reps.get("lmdb"), "reads/s").value;
  const q = report.figure(SECTION_I, `sqlite prepared SELECT (cache_size ${fmt(SKEW_CACHE_BYTES / 2 ** 20)} MiB; the OS page cache too)`, reps.get("sqlite"), "reads/s").value;
  report.ratio(SECTION_I, "bloom-lss ÷ best peer", ratioOf(b, Math.max(l ?? 0, q ?? 0)), 1.0);
  report.ratio(SECTION_I, "bloom-lss ÷ lmdb", ratioOf(b, l));
  report.ratio(SECTION_I, "bloom-lss ÷ sqlite", ratioOf(b, q));
  report.ratio(SECTION_I, "bloom-lss readSync ÷ lmdb", ratioOf(bs, l));
}

/**
 * (j) What steady overwrite churn leaves on disk with default settings (no `maxFileBytes`, so no
 * full disk ever presses the cleaner; 8 MiB segments): 64 MiB of 1000 B values, then every value
 * overwritten 5 times on average, at random, in durable transactions of 50 writes — the same in
 * the three engines. (Live data of a few segments cannot come to 1.5×: the segments being
 * written and emptied are a floor; `bun bench/cleaner.ts --churn-only` runs 8 MiB × 20 in 1 MiB
 * segments.) Each engine's bytes on disk at the end (the larger of file sizes and blocks allocated,
 * sqlite's WAL and lmdb's lock file included) over the live value bytes; bloom-lss's own goal is
 * its file over its live records (values with their 32-byte headers) ≤ 1.5, with the write
 * amplification beside it. One run: sizes, not rates.
 */
async function overwriteChurn(report: Report): Promise<void> {
  heading(`store: (j) ${fmt(CHURN_LIVE_BYTES / 2 ** 20)} MiB of ${CHURN_VALUE_BYTES} B values overwritten ${CHURN_PASSES}× in durable transactions of ${CHURN_BATCH}`);
  const recordBytes = Math.ceil((32 + CHURN_VALUE_BYTES) / 8) * 8;
  const keys = Math.floor(CHURN_LIVE_BYTES / recordBytes);
  const liveValueBytes = keys * CHURN_VALUE_BYTES;
  const value = new Uint8Array(CHURN_VALUE_BYTES).fill(9);
  const batches = Math.ceil((CHURN_PASSES * keys) / CHURN_BATCH);
  const picks = (seed: number) => {
    const next = prng(seed);
    return () => 1 + Math.floor(next() * keys);
  };
  const onDisk = (path: string) => {
    const bytes = diskBytes(path);
    return Math.max(bytes.apparent, bytes.allocated);
  };
  const rates = new Map<string, number>();
  const sizes = new Map<string, number>();
  await attempt(report, "j: bloom-lss", async () => {
    const bloom = await openBloom("j-bloom.lss");
    try {
      for (let first = 1; first <= keys; first += 500) {
        await bloom.store.transaction((tx) => {
          for (let k = first; k < Math.min(keys + 1, first + 500); k++) tx.write(BigInt(k), value);
        });
      }
      const before = bloom.store.stats();
      const pick = picks(31);
      const start = performance.now();
      for (let b = 0; b < batches; b++) {
        await bloom.store.transaction((tx) => {
          for (let j = 0; j < CHURN_BATCH; j++) tx.write(BigInt(pick()), value);
        });
      }
      rates.set("bloom", batches / ((performance.now() - start) / 1000));
      const after = bloom.store.stats();
      sizes.set("bloom", onDisk(bloom.path));
      report.figure(SECTION_J, "bloom-lss write amplification (log bytes written ÷ value bytes committed)", (after.bytesWritten - before.bytesWritten) / (after.userBytesWritten - before.userBytesWritten), "×");
      report.ratio(SECTION_J, "bloom-lss file ÷ live records", ratioOf(after.fileBytes, keys * recordBytes), 1.5, { atMost: true });
      report.note(
        `(j) bloom-lss: file ${after.fileBytes.toLocaleString("en-US")} B (whole ${fmt(after.segmentSize / 2 ** 20)} MiB segments and 8 KiB of root blocks), live records ${(keys * recordBytes).toLocaleString("en-US")} B`,
      );
    } finally {
      await closeBloom(bloom);
    }
  });
  await attempt(report, "j: sqlite", async () => {
    const sqlite = openSqlite("j-sqlite.db", "FULL");
    try {
      sqlite.db.transaction(() => {
        for (let k = 1; k <= keys; k++) sqlite.insert.run(k, value);
      })();
      const pick = picks(31);
      const write = sqlite.db.transaction(() => {
        for (let j = 0; j < CHURN_BATCH; j++) sqlite.insert.run(pick(), value);
      });
      const start = performance.now();
      for (let b = 0; b < batches; b++) write();
      rates.set("sqlite", batches / ((performance.now() - start) / 1000));
      sizes.set("sqlite", onDisk(sqlite.path));
    } finally {
      closeSqlite(sqlite);
    }
  });
  await attempt(report, "j: lmdb", async () => {
    const lmdb = openLmdbAt("j-lmdb.mdb", { overlappingSync: false });
    try {
      lmdb.db.transactionSync(() => {
        for (let k = 1; k <= keys; k++) lmdb.db.putSync(k, value);
      });
      const pick = picks(31);
      const start = performance.now();
      for (let b = 0; b < batches; b++) {
        lmdb.db.transactionSync(() => {
          for (let j = 0; j < CHURN_BATCH; j++) lmdb.db.putSync(pick(), value);
        });
      }
      rates.set("lmdb", batches / ((performance.now() - start) / 1000));
      sizes.set("lmdb", onDisk(lmdb.path));
    } finally {
      await closeLmdb(lmdb);
    }
  });
  const labels: Record<string, string> = { bloom: "bloom-lss sync", sqlite: "sqlite WAL FULL", lmdb: "lmdb overlappingSync:false transactionSync" };
  for (const engine of ["bloom", "sqlite", "lmdb"]) {
    report.figure(SECTION_J, `${labels[engine]}: durable transactions of ${CHURN_BATCH} overwrites`, rates.get(engine), "tx/s");
    report.figure(SECTION_J, `${labels[engine]}: on disk at the end ÷ live value bytes`, ratioOf(sizes.get(engine), liveValueBytes), "×");
  }
  report.ratio(SECTION_J, "bloom-lss ÷ sqlite, bytes on disk", ratioOf(sizes.get("bloom"), sizes.get("sqlite")), undefined, { atMost: true });
  report.ratio(SECTION_J, "bloom-lss ÷ lmdb, bytes on disk", ratioOf(sizes.get("bloom"), sizes.get("lmdb")), undefined, { atMost: true });
  report.ratio(SECTION_J, "bloom-lss ÷ sqlite, churn transactions/s", ratioOf(rates.get("bloom"), rates.get("sqlite")));
  report.ratio(SECTION_J, "bloom-lss ÷ lmdb, churn transactions/s", ratioOf(rates.get("bloom"), rates.get("lmdb")));
}

export async function runStoreBench(report: Report): Promise<void> {
  // `BENCH_STORE_SECTIONS=g,h` runs only those sections (default: all).
  const sections = new Set((process.env.BENCH_STORE_SECTIONS ?? "a,b,c,d,e,f,g,h,i,j").split(",").map((s) => s.trim()));
  const wanted = (...names: string[]) => names.some((name) => sections.has(name));
  const probe = await openBloom("probe.lss");
  report.note(`bloom-lss I/O backend in use: ${probe.store.io}${probe.store.stats().ioFallbackReason ? ` (${probe.store.stats().ioFallbackReason})` : ""}`);
  await closeBloom(probe);
  if (wanted("a", "b")) await attempt(report, "store (a)/(b)", () => serialAndGroup(report));
  if (wanted("c", "d")) await attempt(report, "store (c)/(d)", () => bulkAndReads(report));
  fullGc();
  if (wanted("e", "f")) await attempt(report, "store (e)/(f)", () => openAfterCrash(report));
  fullGc();
  if (wanted("g")) await attempt(report, "store (g)", () => readAfterWrite(report));
  if (wanted("h")) await attempt(report, "store (h)", () => emptyStoreSize(report));
  fullGc();
  if (wanted("i")) await attempt(report, "store (i)", () => skewedReads(report));
  fullGc();
  if (wanted("j")) await attempt(report, "store (j)", () => overwriteChurn(report));
}

if (import.meta.main && process.argv[2] === "--open-child") {
  await openChildMain(process.argv[3] as string);
} else if (import.meta.main) {
  const report = new Report();
  try {
    await runStoreBench(report);
  } finally {
    removeData();
  }
  heading("summary");
  for (const f of report.figures) log(`${f.section} | ${f.label}: ${fmt(f.value)} ${f.unit}`);
  for (const e of report.errors) log(`ERROR ${e}`);
  process.exit(0);
}
