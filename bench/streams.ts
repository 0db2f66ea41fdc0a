/**
 * Streams benchmark: MiB/s writing and reading one big element through `tx.writeStream` and
 * `store.readStream`, and 1 MiB values through `tx.write` / `store.read`, beside raw O_DIRECT
 * figures of the same device measured in the same run (1 MiB, QD16, io_uring).
 *
 * Which raw figure each is held against: writes against sequential writes into fresh space (a
 * file grown with fallocate ahead of them), because the store's writes here go into fresh space
 * too — its file grows — and on this VM's ext4 that costs half the bandwidth of writing over
 * written blocks (~2.0 against ~3.9 GB/s: each write converts an unwritten extent); reads against
 * sequential reads (the device reads at ~1.1 GB/s, a third of its write rate). Until 2026-12-01
 * every figure was held against writes over written blocks, which no store growing its file can
 * reach and which reads have nothing to do with; that figure is still reported.
 *
 *   bun bench/streams.ts                       (4 GiB; BENCH_STREAM_GIB=64 for the long run)
 *
 * Each figure is the median of BENCH_REPS (default 3) reps, each on a fresh store, with its own
 * raw figure. `bun bench/run.ts` runs it too (section "streams", BENCH_ONLY=streams alone). The source is a
 * generator of 1 MiB chunks (no hashing, no files), so the figure is the store's own path: part
 * records, checksums, flush units, O_DIRECT writes and reads.
 */
import fs from "node:fs";
import path from "node:path";
import { Store } from "../src/index.ts";
import { Report, REPS, Reps } from "./common.ts";
import { measureRawFreshWriteMiBps, measureRawSequentialMiBps, measureRawSequentialReadMiBps } from "./io.ts";

const GIB = Number(process.env.BENCH_STREAM_GIB ?? "4");
const CHUNK_BYTES = 1 << 20;
/** 1 MiB values written and read back (256 MiB in all). */
const VALUE_COUNT = 256;
const SECTION = "6. big values";

function mibPerSecond(bytes: number, startedMs: number): number {
  return bytes / 2 ** 20 / ((performance.now() - startedMs) / 1000);
}

/** A stream of `sizeBytes` made of one reused, patterned 1 MiB chunk. */
function source(sizeBytes: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(CHUNK_BYTES);
  for (let i = 0; i < CHUNK_BYTES; i++) chunk[i] = (i * 2654435761) >>> 24;
  let written = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (written >= sizeBytes) return controller.close();
      const length = Math.min(CHUNK_BYTES, sizeBytes - written);
      written += length;
      controller.enqueue(length === CHUNK_BYTES ? chunk : chunk.subarray(0, length));
    },
  });
}

/** One element of `sizeBytes` streamed in then out (`for await`, then a BYOB reader into one reused 1 MiB buffer): MiB/s. */
async function measureStream(store: Store, sizeBytes: number): Promise<{ writeMiBps: number; readMiBps: number; byobMiBps: number }> {
  let started = performance.now();
  await store.transaction(async (tx) => {
    await source(sizeBytes).pipeTo(tx.writeStream(1n));
  });
  const writeMiBps = mibPerSecond(sizeBytes, started);
  started = performance.now();
  let read = 0;
  for await (const part of store.readStream(1n)) read += part.length;
  const readMiBps = mibPerSecond(sizeBytes, started);
  if (read !== sizeBytes) throw new Error(`read ${read} bytes, wrote ${sizeBytes}`);
  started = performance.now();
  const byob = store.readStream(1n).getReader({ mode: "byob" });
  let buffer = new Uint8Array(CHUNK_BYTES);
  read = 0;
  for (;;) {
    const { value, done } = await byob.read(buffer);
    if (done) break;
    read += value.length;
    buffer = new Uint8Array(value.buffer); // handed back (transferred) by the read
  }
  const byobMiBps = mibPerSecond(sizeBytes, started);
  if (read !== sizeBytes) throw new Error(`BYOB read ${read} bytes, wrote ${sizeBytes}`);
  return { writeMiBps, readMiBps, byobMiBps };
}

/** Transactions (or reads) kept in flight in the concurrent rows of 1 MiB values. */
const VALUES_IN_FLIGHT = 16;

/** Run `op(0 … count-1)` with `width` in flight at a time. */
async function inFlight(count: number, width: number, op: (i: number) => Promise<unknown>): Promise<void> {
  for (let first = 0; first < count; first += width) {
    const batch: Array<Promise<unknown>> = [];
    for (let i = first; i < Math.min(count, first + width); i++) batch.push(op(i));
    await Promise.all(batch);
  }
}

/**
 * {@link VALUE_COUNT} values of 1 MiB, one durable transaction each, then read back (cache off):
 * with `width` transactions / reads in flight (1 = serial). Seids from `firstSeid` on are new:
 * this measures inserts, not overwrites (overwrite churn is the cleaner benchmark's subject).
 */
async function measureMiBValues(store: Store, width: number, firstSeid: number): Promise<{ writeMiBps: number; readMiBps: number }> {
  const value = new Uint8Array(CHUNK_BYTES).fill(7);
  let started = performance.now();
  await inFlight(VALUE_COUNT, width, (i) => store.transaction((tx) => tx.write(BigInt(firstSeid + i), value)));
  const writeMiBps = mibPerSecond(VALUE_COUNT * CHUNK_BYTES, started);
  started = performance.now();
  await inFlight(VALUE_COUNT, width, async (i) => {
    const back = await store.read(BigInt(firstSeid + i));
    if (back?.length !== CHUNK_BYTES) throw new Error(`1 MiB value ${i} came back as ${back?.length} bytes`);
  });
  return { writeMiBps, readMiBps: mibPerSecond(VALUE_COUNT * CHUNK_BYTES, started) };
}

/** Median of each figure over {@link REPS} reps, each on a fresh store (no cleaning in the figures). */
export async function runStreamsBench(report: Report, gib = GIB): Promise<void> {
  const dir = path.join(import.meta.dir, ".data", `streams-${process.pid}`);
  fs.mkdirSync(dir, { recursive: true });
  const reps = new Reps();
  try {
    for (let rep = 0; rep < REPS; rep++) {
      reps.push("raw", await measureRawSequentialMiBps("uring"));
      reps.push("rawFresh", await measureRawFreshWriteMiBps("uring"));
      reps.push("rawRead", await measureRawSequentialReadMiBps("uring"));
      const file = path.join(dir, `streams-${rep}.lss`);
      const store = await Store.open(file, { cacheBytes: 0 });
      try {
        for (const width of [1, VALUES_IN_FLIGHT]) {
          const values = await measureMiBValues(store, width, 100 + width * VALUE_COUNT);
          reps.push(`values${width}Write`, values.writeMiBps);
          reps.push(`values${width}Read`, values.readMiBps);
        }
        const stream = await measureStream(store, Math.round(gib * 2 ** 30));
        reps.push("streamWrite", stream.writeMiBps);
        reps.push("streamRead", stream.readMiBps);
        reps.push("streamByob", stream.byobMiBps);
      } finally {
        await store.close();
        fs.rmSync(file, { force: true });
      }
    }
    report.figure(SECTION, "raw sequential write over written blocks (uring, 1 MiB O_DIRECT, QD16)", reps.get("raw"), "MiB/s");
    const rawWrite = report.figure(SECTION, "raw sequential write into fresh space (fallocated ahead; uring, 1 MiB O_DIRECT, QD16)", reps.get("rawFresh"), "MiB/s").value;
    const rawRead = report.figure(SECTION, "raw sequential read (uring, 1 MiB O_DIRECT, QD16)", reps.get("rawRead"), "MiB/s").value;
    const ratio = (mibps: number | undefined, raw: number | undefined) => (mibps === undefined || raw === undefined ? undefined : mibps / raw);
    for (const width of [1, VALUES_IN_FLIGHT]) {
      const how = width === 1 ? "serial" : `${width} in flight`;
      const write = report.figure(SECTION, `1 MiB values, one durable transaction each, ${how}: write`, reps.get(`values${width}Write`), "MiB/s").value;
      const read = report.figure(SECTION, `1 MiB values, ${how}: read (cache off)`, reps.get(`values${width}Read`), "MiB/s").value;
      const target = width === 1 ? undefined : 0.7;
      report.ratio(SECTION, `1 MiB values ${how}: write ÷ raw write into fresh space`, ratio(write, rawWrite), target);
      report.ratio(SECTION, `1 MiB values ${how}: read ÷ raw sequential read`, ratio(read, rawRead), target);
    }
    const write = report.figure(SECTION, `writeStream of one ${gib} GiB element`, reps.get("streamWrite"), "MiB/s").value;
    const read = report.figure(SECTION, `readStream of one ${gib} GiB element`, reps.get("streamRead"), "MiB/s").value;
    report.ratio(SECTION, `${gib} GiB writeStream ÷ raw write into fresh space`, ratio(write, rawWrite), 0.8);
    const byob = report.figure(SECTION, `readStream of one ${gib} GiB element, BYOB reader`, reps.get("streamByob"), "MiB/s").value;
    report.ratio(SECTION, `${gib} GiB readStream ÷ raw sequential read`, ratio(read, rawRead), 0.8);
    report.ratio(SECTION, `${gib} GiB readStream (BYOB) ÷ raw sequential read`, ratio(byob, rawRead), 0.8);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  // The report prints every figure and ratio as it is measured.
  await runStreamsBench(new Report());
}
