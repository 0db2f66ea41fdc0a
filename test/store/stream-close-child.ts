// Child of conveniences.test.ts (run with a deadline: before the fix, close() after an abandoned
// read stream blocked the event loop, so no in-process timer could catch it). For each backend:
// a read stream that hits a damaged part, and one cancelled early, then close() right after.
import fs from "node:fs";
import path from "node:path";
import { CorruptionError, Store } from "../../src/index.ts";

const dir = process.argv[2] as string;
const results: string[] = [];
for (const io of ["uring", "portable"] as const) {
  const file = path.join(dir, `${io}.lss`);
  let store = await Store.open(file, { io, segmentSize: 256 << 10, bufferSize: 64 << 10 });
  const damaged = store.allocateSeid();
  const sound = store.allocateSeid();
  await store.transaction((tx) => {
    tx.write(damaged, new Uint8Array(600_000).fill(0x5a));
    tx.write(sound, new Uint8Array(600_000).fill(0x33));
  });
  await store.close();
  const bytes = fs.readFileSync(file);
  bytes[bytes.indexOf(Buffer.alloc(1024, 0x5a)) + 10] = 0; // the first part of `damaged`
  fs.writeFileSync(file, bytes);
  for (let round = 0; round < 4; round++) {
    store = await Store.open(file, { io, readOnly: true, cacheBytes: 0 });
    let error = "none";
    try {
      for await (const _ of store.readStream(damaged)) void _;
    } catch (caught) {
      error = caught instanceof CorruptionError ? "corruption" : String(caught);
    }
    for await (const _ of store.readStream(sound)) break; // cancel with read-ahead in flight
    await store.close();
    results.push(`${io}:${error}`);
  }
}
console.log(JSON.stringify(results));
