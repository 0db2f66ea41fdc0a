/**
 * Child process of kill.test.ts: opens the store, shares it with Workers that commit in loops,
 * and prints "ack <worker> <n>" once transaction n of that Worker resolved (durable). The parent
 * SIGKILLs this whole process at a random moment.
 */
import { Store } from "../../src/index.ts";
import { valueFor } from "./model.ts";
import { startJob } from "./util.ts";

const [file, workersArg, baseArg] = process.argv.slice(2) as [string, string, string];
/** Tags of this round start above every earlier round's, so an old value never passes for an ack. */
const base = Number(baseArg);
const workers = Number(workersArg);
const store = await Store.open(file, { segmentSize: 256 << 10, bufferSize: 64 << 10 });
const handle = store.share();
process.stdout.write("ready\n");
for (let w = 0; w < workers; w++) {
  const seid = BigInt(100 + w);
  const running = startJob<unknown>(handle, { kind: "commit-loop", keys: [seid], count: 1_000_000, ack: true, base });
  running.worker.addEventListener("message", (event: MessageEvent<Record<string, unknown>>) => {
    if (typeof event.data.ack === "number") process.stdout.write(`ack ${w} ${event.data.ack}\n`);
  });
}
// The main thread commits too.
for (let n = 1; ; n++) {
  await store.transaction((tx) => tx.write(99n, valueFor(base + n, 99n)));
  process.stdout.write(`ack main ${n}\n`);
}
