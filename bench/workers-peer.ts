/**
 * One Worker of the Workers benchmark's side-by-side parts (bench/workers.ts): reads, or mixed
 * reads and durable writes, for a fixed time against bloom-lss (attached to the owner's store),
 * bun:sqlite (one connection per Worker, WAL, `synchronous=FULL`, `busy_timeout`) or lmdb-js (the
 * same environment opened in each Worker, `put` then `flushed`). Every read is checked against
 * the size the value must have, so a benchmark that reads nothing cannot look fast. Each Worker
 * first reads every key once (untimed).
 *
 * @module
 */
import { Store } from "../src/index.ts";
import { seededRandom } from "../testing/prng.ts";
import type { StoreHandle } from "../src/workers/handle.ts";

declare const self: Worker;

/** What one Worker runs. */
export interface PeerJob {
  /** `bloomSync`: bloom-lss read with `readSync` (as lmdb-js's `get` and bun:sqlite's are). */
  engine: "bloom" | "bloomSync" | "sqlite" | "lmdb";
  /** `reads`: reads only; `mixed`: each op a write transaction with probability `writeShare`, else a read. */
  mode: "reads" | "mixed";
  /** bloom-lss: the owner's handle; the peers: the database path. */
  handle?: StoreHandle;
  path?: string;
  /** Keys 0..count-1 (bloom-lss: `seids[i]`; the peers: integer key i + 1). */
  count: number;
  seids?: bigint[];
  ms: number;
  seed: number;
  writeShare: number;
}

/** What it reports. */
export interface PeerResult {
  reads: number;
  writes: number;
  bytes: number;
}

/** The size of value `i` (the same on every engine): 16 B to 3 KB. */
export function valueBytes(i: number): number {
  return 16 + ((i * 7919) % 3000);
}

interface Engine {
  read(i: number): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  write(i: number, value: Uint8Array): Promise<void> | void;
  close(): Promise<void> | void;
}

async function openEngine(job: PeerJob): Promise<Engine> {
  if (job.engine === "bloom" || job.engine === "bloomSync") {
    const store = await Store.attach(job.handle as StoreHandle);
    const seids = job.seids as bigint[];
    return {
      read: job.engine === "bloom" ? (i) => store.read(seids[i] as bigint) : (i) => store.readSync(seids[i] as bigint),
      write: (i, value) => store.transaction((tx) => tx.write(seids[i] as bigint, value)),
      close: () => store.close(),
    };
  }
  if (job.engine === "sqlite") {
    const { Database } = await import("bun:sqlite");
    const db = new Database(job.path as string);
    db.exec("PRAGMA busy_timeout=10000");
    db.exec("PRAGMA synchronous=FULL");
    const select = db.prepare<{ v: Uint8Array }, [number]>("SELECT v FROM kv WHERE k = ?");
    const insert = db.prepare("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)");
    return {
      read: (i) => select.get(i + 1)?.v,
      write: (i, value) => void insert.run(i + 1, value),
      close: () => db.close(),
    };
  }
  const { open: openLmdb } = await import("lmdb");
  const db = openLmdb<Uint8Array, number>({ path: job.path as string, encoding: "binary", keyEncoding: "uint32" });
  return {
    read: (i) => db.getBinary(i + 1),
    write: async (i, value) => {
      await db.put(i + 1, value);
      await db.flushed;
    },
    close: () => db.close(),
  };
}

async function run(job: PeerJob): Promise<PeerResult> {
  const engine = await openEngine(job);
  const next = seededRandom(job.seed);
  let reads = 0;
  let writes = 0;
  let bytes = 0;
  try {
    // Warm up as a long-lived Worker would be: every key read once (bloom-lss fills this Worker's
    // own cache as far as it holds; the peers' pages are in the kernel's page cache already).
    for (let i = 0; i < job.count; i++) await engine.read(i);
    const deadline = performance.now() + job.ms;
    while (performance.now() < deadline) {
      for (let k = 0; k < 64; k++) {
        const i = Math.floor(next() * job.count);
        if (job.mode === "mixed" && next() < job.writeShare) {
          await engine.write(i, new Uint8Array(valueBytes(i)).fill(writes & 0xff));
          writes += 1;
          continue;
        }
        const value = await engine.read(i);
        if (value === undefined || value.length !== valueBytes(i)) throw new Error(`${job.engine}: key ${i} read back ${value?.length} bytes, not ${valueBytes(i)}`);
        bytes += value.length;
        reads += 1;
      }
    }
  } finally {
    await engine.close();
  }
  return { reads, writes, bytes };
}

// Only as a Worker: bench/workers.ts imports this file for its types and valueBytes, and a
// message handler on the main thread's global would keep that process from exiting.
if (!Bun.isMainThread) self.onmessage = async (event: MessageEvent<PeerJob>) => {
  try {
    self.postMessage({ done: true, result: await run(event.data) });
  } catch (error) {
    self.postMessage({ error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
  }
};
