// Child of misuse.test.ts: a script as a user writes it, with `await using`, whose transaction
// callback awaits a store call that waits for that very transaction. Before the fix it printed
// nothing and never exited (the deadline in the test kills it); now the call rejects with a
// TransactionError, the callback throws it, `await using` closes the store, and the script
// ends with the error. Arguments: <file> <io> <call>.
import { Store } from "../../src/index.ts";

const [file, io, call] = process.argv.slice(2) as [string, "uring" | "portable", string];

await using store = await Store.open(file, { io, segmentSize: 256 << 10, bufferSize: 64 << 10 });
await store.transaction((tx) => tx.write(1n, new Uint8Array([1])));
await store.transaction(async (tx) => {
  tx.write(2n, new Uint8Array([2]));
  switch (call) {
    case "transaction":
      await store.transaction((inner) => inner.write(3n, new Uint8Array([3])));
      break;
    case "flush":
      await store.flush();
      break;
    case "checkpoint":
      await store.checkpoint();
      break;
    case "compact":
      await store.compact();
      break;
    case "close":
      await store.close();
      break;
    default:
      throw new Error(`unknown call ${call}`);
  }
});
console.log("the nested call returned: it should have thrown");
