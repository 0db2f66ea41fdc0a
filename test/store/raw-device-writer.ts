/**
 * Child of raw-device.test.ts: format the device given, commit `count` transactions (seid i gets
 * a 10 KiB value starting with `label`), and exit without closing the store — as a process that
 * dies would. Usage: bun raw-device-writer.ts <device> <io> <label> <count>
 */
import { Store } from "../../src/index.ts";

const [device, io, label, countText] = process.argv.slice(2) as [string, "uring" | "portable", string, string];
const count = Number(countText);
// Small segments, so that a few transactions span several of them.
const store = await Store.open(device, { io, format: true, segmentSize: 64 << 10, bufferSize: 64 << 10, autoClean: false });
for (let i = 1; i <= count; i++) {
  const bytes = new Uint8Array(10 << 10).fill(0x2e);
  bytes.set(new TextEncoder().encode(`${label} ${i} `.padEnd(8, " ")));
  await store.transaction((tx) => tx.write(BigInt(i), bytes));
}
console.log(`${label}: ${count} transactions`);
// No close: whatever is durable is what a crash leaves.
process.exit(0);
