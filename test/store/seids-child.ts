// Child of seids.test.ts: write seids by hand (no allocation), make them durable, and exit without
// close(), so no checkpoint holds them: the next open finds them only by replaying the log.
// Arguments: <file> <seid>... (the portable backend: its lock goes with the process at once).
import { Store } from "../../src/index.ts";

const [file, ...seids] = process.argv.slice(2) as [string, ...string[]];
const store = await Store.open(file, { io: "portable", segmentSize: 256 << 10, bufferSize: 64 << 10 });
await store.transaction((tx) => {
  for (const text of seids) tx.write(BigInt(text), new TextEncoder().encode(`user's element ${text}`));
});
await store.flush();
process.exit(0);
