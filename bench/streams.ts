/**
 * Streams benchmark: MiB/s writing and reading one big element through `tx.writeStream` and
 * `store.readStream`, beside the raw sequential write figure of the I/O bench in the same run.
 *
 *   bun bench/streams.ts                       (4 GiB; BENCH_STREAM_GIB=64 for the long run)
 *
 * The source is a generator of 1 MiB chunks (no hashing, no files), so the figure is the
 * store's own path: part records, checksums, flush units, O_DIRECT writes and reads.
 */
import fs from "node:fs";
import path from "node:path";
import { Store } from "../src/index.ts";
import { measureRawSequentialMiBps } from "./io.ts";

const GIB = Number(process.env.BENCH_STREAM_GIB ?? "4");
const sizeBytes = Math.round(GIB * 2 ** 30);
const CHUNK = 1 << 20;
const dir = path.join(import.meta.dir, ".data", `streams-${process.pid}`);
fs.mkdirSync(dir, { recursive: true });
const file = path.join(dir, "streams.lss");

try {
  const rawMiBps = await measureRawSequentialMiBps("uring");
  const store = await Store.open(file, { cacheBytes: 0 });
  const chunk = new Uint8Array(CHUNK);
  for (let i = 0; i < CHUNK; i++) chunk[i] = (i * 2654435761) >>> 24;
  let written = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (written >= sizeBytes) return controller.close();
      const length = Math.min(CHUNK, sizeBytes - written);
      written += length;
      controller.enqueue(length === CHUNK ? chunk : chunk.subarray(0, length));
    },
  });
  let started = performance.now();
  await store.transaction(async (tx) => {
    await source.pipeTo(tx.writeStream(1n));
  });
  const writeMiBps = sizeBytes / 2 ** 20 / ((performance.now() - started) / 1000);
  started = performance.now();
  let read = 0;
  for await (const part of store.readStream(1n)) read += part.length;
  const readMiBps = sizeBytes / 2 ** 20 / ((performance.now() - started) / 1000);
  if (read !== sizeBytes) throw new Error(`read ${read} bytes, wrote ${sizeBytes}`);
  await store.close();
  console.log(`raw sequential (uring, 1 MiB O_DIRECT, QD16): ${rawMiBps.toFixed(0)} MiB/s`);
  console.log(`writeStream ${GIB} GiB: ${writeMiBps.toFixed(0)} MiB/s = ${(writeMiBps / rawMiBps).toFixed(2)}× raw (target ≥ 0.6×)`);
  console.log(`readStream  ${GIB} GiB: ${readMiBps.toFixed(0)} MiB/s = ${(readMiBps / rawMiBps).toFixed(2)}× raw (target ≥ 0.6×)`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
