/**
 * Child of full-disk-faults.test.ts (a hang must not take the test runner with it): on a real
 * backend (argv[2]: "uring" | "portable"), fail a log with an I/O error (EIO growing the file, on
 * a rotation) while a unit write and its linked datasync are in flight, then close it.
 *
 * Before the fix, `close()` waited on the backend itself while the queue's pump waited for the
 * whole link chain: on io_uring its wait returned at once on the write's completion, which only
 * the pump reaps, so it looped in microtasks forever (95 % CPU, timers starved); on the portable
 * backend the second wait() threw, close() rejected and the file stayed locked.
 *
 * Prints `closed <ms>` and `reopened` and exits 0 when close returned and released the file.
 */
import path from "node:path";
import { IoError } from "../../src/errors.ts";
import type { IoBackend } from "../../src/io/backend.ts";
import { EIO } from "../../src/io/errno.ts";
import { PortableBackend } from "../../src/io/portable.ts";
import { UringBackend } from "../../src/io/uring.ts";
import { openLog } from "../../src/log/log.ts";

const io = process.argv[2];
const dir = process.argv[3] as string;
const file = path.join(dir, `close-${io}.lss`);
const backend: IoBackend = io === "uring" ? UringBackend.create() : new PortableBackend();
let failGrowth = false;
// The real backend (its own wait() and completions), with fallocate failing on demand.
const faulty = new Proxy(backend, {
  get(target, key) {
    if (key === "allocateSpace" && failGrowth) {
      return () => {
        throw new IoError(EIO, `fallocate ${file} (injected)`);
      };
    }
    const value = Reflect.get(target, key, target) as unknown;
    return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
  },
}) as IoBackend;

const SEGMENT = 64 << 10;
const BLOCK = 4096;
const log = await openLog(file, { segmentSize: SEGMENT, bufferSize: 16 << 10, ringSize: 4 }, faulty);
// One 4 KiB unit per flush, up to four blocks before the end of segment 0.
while (log.tailPosition().address < SEGMENT - 4 * BLOCK) {
  const reservation = await log.reserveSpace(64);
  log.writePayload(new Uint8Array(64).fill(1), reservation);
  await log.flush();
}
// A unit with a datasync linked to its write: both in flight, the queue's pump waiting for both.
const reservation = await log.reserveSpace(64);
log.writePayload(new Uint8Array(64).fill(2), reservation);
const flushed = log.flush().catch(() => undefined);
// The open buffer now has the three blocks left in segment 0: a larger reservation seals it
// empty, which moves the log to segment 1, which takes a new successor: the file grows, and fails.
failGrowth = true;
try {
  log.tryReserve(3 * BLOCK + 512);
} catch {
  // The log's failure, seen by the reserver.
}
if (log.failedReason === undefined) {
  console.log("setup: the log did not fail");
  process.exit(2);
}
const started = performance.now();
await log.close();
console.log(`closed ${(performance.now() - started).toFixed(0)}`);
await flushed;
failGrowth = false;
// Released: a second open of the file is not refused as locked.
const again = await openLog(file, {}, undefined);
await again.close();
backend.close();
console.log("reopened");
