// Child of conveniences.test.ts: opens two stores with io: "auto" and prints what each used.
import path from "node:path";
import { Store } from "../../src/index.ts";

const dir = process.argv[2] as string;
const io: string[] = [];
let reason: string | undefined;
for (const name of ["a.lss", "b.lss"]) {
  const store = await Store.open(path.join(dir, name));
  io.push(store.io);
  reason = store.stats().ioFallbackReason;
  await store.close();
}
console.log(JSON.stringify({ io, reason }));
