/** Child for the SIGKILL-mid-stream test: streams forever into seid 5 until killed. Args: path io. */
import { Store } from "../../src/index.ts";

const [path, io] = process.argv.slice(2);
const store = await Store.open(path as string, { io: io as "uring" | "portable", segmentSize: 1 << 20, bufferSize: 64 << 10 });
const chunk = new Uint8Array(64 << 10).fill(0xee);
await store.transaction(async (tx) => {
  const writer = tx.writeStream(5n).getWriter();
  for (let i = 0; ; i++) {
    await writer.write(chunk);
    if (i === 20) process.stdout.write("streaming\n");
  }
});
