/**
 * The child process of the kill torture (see kills.ts): opens the store, continues the
 * deterministic workload after the committed counter, keeps a few transactions in flight (group
 * commit), and prints `ack K` once transaction K resolved (durable). Killed at a random moment.
 * Args: PATH uring|portable [checkpointEvery].
 */
import { Store } from "../../src/store/store.ts";
import { COUNTER_SEID, decodeCounter } from "./model.ts";
import { KILL_STORE_OPTIONS, killWorkloadTx } from "./kills.ts";

const [file, io, checkpointEveryArg] = process.argv.slice(2);
if (file === undefined || (io !== "uring" && io !== "portable")) {
  console.error("usage: kill-writer.ts PATH uring|portable [checkpointEvery]");
  process.exit(2);
}
const checkpointEvery = Number(checkpointEveryArg ?? "0");
const store = await Store.open(file, { io, ...KILL_STORE_OPTIONS });
let k = decodeCounter(await store.read(COUNTER_SEID));
process.stdout.write(`start ${k}\n`);
for (;;) {
  const batch: Promise<void>[] = [];
  for (let j = 0; j < 4; j++) {
    const id = ++k;
    const ops = killWorkloadTx(id);
    batch.push(
      store
        .transaction((tx) => {
          for (const [seid, value] of ops) {
            if (value === undefined) tx.delete(seid);
            else tx.write(seid, value);
          }
        })
        .then(() => void process.stdout.write(`ack ${id}\n`)),
    );
  }
  await Promise.all(batch);
  if (checkpointEvery > 0 && k % checkpointEvery < 4) await store.checkpoint();
}
