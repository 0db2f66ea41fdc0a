/**
 * Child process for the big-stream test: streams an element of SIZE bytes in (from a generator,
 * never held whole) and back out, hashing both sides, then prints JSON with the hashes, the
 * byte counts, the peak RSS (VmHWM) and the MiB/s of each direction. Args: path io sizeBytes
 * [reader]: `byob` (the default) reads into one reused 1 MiB buffer, as a program bounding its
 * memory does; `default` takes the stream's own chunks with `for await`, whose garbage the GC
 * reclaims when it decides.
 */
import fs from "node:fs";
import { Store } from "../../src/index.ts";

const [path, io, sizeArg, reader = "byob"] = process.argv.slice(2);
const sizeBytes = Number(sizeArg);
const CHUNK = 1 << 20;
const store = await Store.open(path as string, { io: io as "uring" | "portable", cacheBytes: 1 << 20 });
const base = new Uint8Array(CHUNK);
for (let i = 0; i < CHUNK; i++) base[i] = (i * 2654435761) >>> 24;
const inHash = new Bun.CryptoHasher("sha1");
let written = 0;
const source = new ReadableStream<Uint8Array>({
  pull(controller) {
    if (written >= sizeBytes) return controller.close();
    const length = Math.min(CHUNK, sizeBytes - written);
    const chunk = base.slice(0, length);
    new DataView(chunk.buffer).setFloat64(0, written, true);
    inHash.update(chunk);
    written += length;
    controller.enqueue(chunk);
  },
});
let started = performance.now();
await store.transaction(async (tx) => {
  await source.pipeTo(tx.writeStream(7n));
});
const writeMs = performance.now() - started;
started = performance.now();
const outHash = new Bun.CryptoHasher("sha1");
let read = 0;
if (reader === "byob") {
  const byob = store.readStream(7n).getReader({ mode: "byob" });
  let buffer = new Uint8Array(CHUNK);
  for (;;) {
    const { value, done } = await byob.read(buffer);
    if (done) break;
    outHash.update(value);
    read += value.length;
    buffer = new Uint8Array(value.buffer); // the read hands the (transferred) buffer back
  }
} else {
  for await (const chunk of store.readStream(7n)) {
    outHash.update(chunk);
    read += chunk.length;
  }
}
const readMs = performance.now() - started;
const status = fs.readFileSync("/proc/self/status", "utf8");
const peakKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? "0");
console.log(JSON.stringify({
  written, read, size: store.sizeOf(7n), inHash: inHash.digest("hex"), outHash: outHash.digest("hex"),
  peakRssBytes: peakKiB * 1024, writeMiBps: sizeBytes / 1048576 / (writeMs / 1000), readMiBps: sizeBytes / 1048576 / (readMs / 1000),
}));
await store.close();
