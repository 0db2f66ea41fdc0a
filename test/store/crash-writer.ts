/**
 * Child process for the crash tests: opens the store, continues the deterministic workload from
 * the committed counter, and prints `ack K` after transaction K's promise resolves (durable).
 * The parent SIGKILLs it at a random moment. Args: path io [checkpointEvery].
 */
import { Store } from "../../src/index.ts";
import { COUNTER_SEID, counterValue, workloadTx } from "./crash-workload.ts";

const [path, io, checkpointEveryArg] = process.argv.slice(2);
if (path === undefined || (io !== "uring" && io !== "portable")) {
  console.error("usage: crash-writer.ts PATH uring|portable [checkpointEvery]");
  process.exit(2);
}
const checkpointEvery = Number(checkpointEveryArg ?? "0");
const store = await Store.open(path, { io, segmentSize: 256 << 10, bufferSize: 64 << 10, numSegmentsPerCheckpoint: 4 });
let k = counterValue(await store.read(COUNTER_SEID));
process.stdout.write(`start ${k}\n`);
for (;;) {
  k += 1;
  const ops = workloadTx(k);
  // A few transactions in flight at once, so group commit is exercised under the kill too.
  const batch: Promise<void>[] = [];
  const first = k;
  for (let j = 0; j < 4; j++) {
    const id = first + j;
    const txOps = j === 0 ? ops : workloadTx(id);
    batch.push(
      store.transaction((tx) => {
        for (const op of txOps) {
          if (op.value === undefined) tx.delete(op.seid);
          else tx.write(op.seid, op.value);
        }
      }).then(() => void process.stdout.write(`ack ${id}\n`)),
    );
  }
  k = first + 3;
  await Promise.all(batch);
  if (checkpointEvery > 0 && k % checkpointEvery < 4) await store.checkpoint();
}
