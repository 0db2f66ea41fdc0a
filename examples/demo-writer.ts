/**
 * Child process of the demo: commits transactions in a loop until it is killed. Transaction k
 * writes three elements, each holding "k", and the counter element; it prints "ack k" once k's
 * commit is durable. Args: path.
 */
import { Store } from "../src/index.ts";
import { COUNTER, GROUP } from "./demo-shared.ts";

const path = process.argv[2];
if (path === undefined) throw new Error("usage: demo-writer.ts PATH");
const store = await Store.open(path);
const encoder = new TextEncoder();
let k = Number(new TextDecoder().decode((await store.read(COUNTER)) ?? encoder.encode("0")));
process.stdout.write("ready\n");
for (;;) {
  k += 1;
  const tag = encoder.encode(String(k));
  await store.transaction((tx) => {
    for (const seid of GROUP) tx.write(seid, tag);
    tx.write(COUNTER, tag);
  });
  process.stdout.write(`ack ${k}\n`);
}
