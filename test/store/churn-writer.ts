/**
 * Child for "SIGKILL during cleaning": the deterministic workload of crash-workload.ts with small
 * segments and the cleaner on, so segments are cleaned and reused while it runs. Prints
 * `ack K` per durable transaction and appends the cumulative count of cleaned segments to
 * `PATH.cleaned`. Args: path.
 */
import fs from "node:fs";
import { Store } from "../../src/index.ts";
import { COUNTER_SEID, counterValue, workloadTx } from "./crash-workload.ts";

const path = process.argv[2] as string;
const ledger = `${path}.cleaned`;
const before = fs.existsSync(ledger) ? Number(fs.readFileSync(ledger, "utf8").trim().split("\n").pop() ?? "0") : 0;
const store = await Store.open(path, {
  segmentSize: 256 << 10,
  bufferSize: 32 << 10,
  numSegmentsPerCheckpoint: 6,
  cleanerHighWaterSegments: 4,
  cleanerLowWaterSegments: 2,
});
let k = counterValue(await store.read(COUNTER_SEID));
process.stdout.write(`start ${k}\n`);
let reported = -1;
for (;;) {
  k += 1;
  const id = k;
  await store.transaction((tx) => {
    for (const op of workloadTx(id)) {
      if (op.value === undefined) tx.delete(op.seid);
      else tx.write(op.seid, op.value);
    }
  });
  process.stdout.write(`ack ${id}\n`);
  const cleaned = store.stats().cleaner.segmentsCleaned;
  if (cleaned !== reported) {
    reported = cleaned;
    fs.appendFileSync(ledger, `${before + cleaned}\n`);
  }
}
