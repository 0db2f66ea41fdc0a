/**
 * Child process for the crash tests: appends seeded payloads to a log forever, flushing now and
 * then, and reports on stdout what it did, one line per event, until it is killed (SIGKILL):
 *
 *   ready <stableAddress>
 *   a <address> <length> <seed>     a payload was written into the log's buffers (not yet durable)
 *   d <count>                       flush() resolved: the first <count> payloads are durable
 *
 * Usage: bun test/log/crash-writer.ts <path> <io> <seed> <writeMode>
 */
import { LogStructuredStore, type WriteMode } from "../../src/log/log.ts";
import { rng } from "../helpers.ts";
import { payload } from "./util.ts";

const [file, io, seedText, writeMode] = process.argv.slice(2);
if (file === undefined || (io !== "portable" && io !== "uring")) throw new Error("usage: crash-writer <path> <io> <seed> <writeMode>");
const seed = Number(seedText ?? 1);
const log = await LogStructuredStore.open(file, {
  io,
  writeMode: (writeMode ?? "tailLocalized") as WriteMode,
  bufferSize: 16 << 10,
  segmentSize: 256 << 10,
  ringSize: 4,
});
const next = rng(seed);
const out = Bun.stdout.writer();
out.write(`ready ${log.stableAddress}\n`);
out.flush();
let count = 0;
let payloadSeed = seed * 1_000_000;
for (;;) {
  const burst = 1 + Math.floor(next() * 40);
  for (let i = 0; i < burst; i++) {
    const length = next() < 0.1 ? (16 << 10) - 64 : Math.floor(next() * 3000);
    const bytes = payload(length, ++payloadSeed);
    const r = log.tryReserve(length) ?? (await log.reserveSpace(length));
    log.writePayload(bytes, r);
    out.write(`a ${r.address} ${length} ${payloadSeed}\n`);
    count += 1;
  }
  out.flush();
  if (next() < 0.5) {
    const upTo = count;
    await log.flush();
    out.write(`d ${upTo}\n`);
    out.flush();
  } else {
    await new Promise((resolve) => setImmediate(resolve));
  }
}
