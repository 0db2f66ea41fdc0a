/**
 * Misuse never hangs, and a closed store says so.
 *
 * - A store call awaited inside a transaction's callback that waits for the transaction turn
 *   (`transaction`, `flush`, `checkpoint`, `compact`, `close`, `backup`, `serveReplication`) used
 *   to wait forever — for the transaction, which waited for the callback — and every later
 *   transaction with it. Now it rejects at once with a TransactionError, and the store goes on.
 * - The same calls from anywhere else (another async task) still wait their turn, in order.
 * - A script with `await using` doing it used to print nothing and never exit: now it exits with
 *   the error (a child process, killed at a deadline if it hangs).
 * - After `close()` every method throws StoreClosedError (`stats()` answered stale numbers).
 * - Opening under a missing directory names the directory (it said "create is false").
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { InvalidArgumentError, Store, StoreClosedError, TransactionError } from "../../src/index.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { BACKENDS, scratchDir } from "../helpers.ts";
import { SECRET, STORE_OPTIONS } from "../replication/util.ts";

const SMALL = { segmentSize: 256 << 10, bufferSize: 64 << 10 } as const;
/** Far beyond what a rejection "at once" takes, far below a test's timeout: a hang fails here. */
const DEADLINE_MS = 10_000;

function bytes(seid: bigint, length = 100): Uint8Array {
  return new Uint8Array(length).fill(Number(seid % 251n));
}

/** The calls that wait for the turn, as a callback would make them. */
const NESTED: ReadonlyArray<readonly [string, (store: Store, dir: string) => Promise<unknown>]> = [
  ["transaction", (store) => store.transaction((tx) => tx.write(99n, bytes(99n)))],
  ["flush", (store) => store.flush()],
  ["checkpoint", (store) => store.checkpoint()],
  ["compact", (store) => store.compact()],
  ["close", (store) => store.close()],
  ["backup", (store, dir) => store.backup(path.join(dir, "backup"))],
  ["serveReplication", (store, dir) => store.serveReplication({ unix: path.join(dir, "replication.sock"), secret: "a secret of enough bytes" })],
];

/** Open a store whose `await using` disposal closes it with a deadline: a hang fails the test at once. */
async function openStore(file: string, options: Parameters<typeof Store.open>[1]): Promise<Store> {
  const store = await Store.open(file, options);
  Object.defineProperty(store, Symbol.asyncDispose, { value: () => withTimeout(store.close(), DEADLINE_MS, `close of ${file}`) });
  return store;
}

async function settledError(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return undefined;
}

function expectTurnMisuse(error: unknown, call: string): void {
  expect(error).toBeInstanceOf(TransactionError);
  expect((error as TransactionError).code).toBe("LSS_TRANSACTION");
  expect((error as Error).message).toContain(`store.${call}()`);
  expect((error as Error).message).toContain("inside the callback of transaction");
}

for (const io of BACKENDS) {
  describe(`misuse on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    let file: string;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`misuse-${io}`));
      file = path.join(dir, "s.lss");
    });
    afterEach(() => cleanup());

    for (const [call, nested] of NESTED) {
      test(`store.${call}() awaited inside a transaction callback rejects at once; the store goes on`, async () => {
        const store = await Store.open(file, { io, ...SMALL });
        try {
          await store.transaction((tx) => tx.write(10n, bytes(10n)));

          // The callback catches the error and goes on: the transaction commits what it wrote.
          let caught: unknown;
          let elapsedMs = Number.POSITIVE_INFINITY;
          const committed = store.transaction(async (tx) => {
            tx.write(11n, bytes(11n));
            const started = performance.now();
            caught = await settledError(nested(store, dir));
            elapsedMs = performance.now() - started;
            tx.write(12n, bytes(12n));
            return "committed";
          });
          expect(await withTimeout(committed, DEADLINE_MS, `a transaction whose callback awaited store.${call}()`)).toBe("committed");
          expectTurnMisuse(caught, call);
          // At once: nothing was waited for (a loaded machine still answers well inside this).
          expect(elapsedMs).toBeLessThan(1_000);
          expect(await store.read(11n)).toEqual(bytes(11n));
          expect(await store.read(12n)).toEqual(bytes(12n));

          // The callback lets it through: the transaction rejects with it and applies nothing.
          const aborted = store.transaction(async (tx) => {
            tx.write(13n, bytes(13n));
            await nested(store, dir);
          });
          expectTurnMisuse(await withTimeout(settledError(aborted), DEADLINE_MS, `an aborted transaction (store.${call}())`), call);
          expect(store.has(13n)).toBe(false);

          // Still usable: not closing, later transactions commit, the call works from outside.
          expect(store.closed).toBe(false);
          await withTimeout(
            store.transaction((tx) => tx.write(14n, bytes(14n))),
            DEADLINE_MS,
            "a later transaction",
          );
          expect(await store.read(14n)).toEqual(bytes(14n));
          if (call !== "close" && call !== "serveReplication") await withTimeout(nested(store, dir), DEADLINE_MS, `store.${call}() outside`);
          expect(store.has(99n)).toBe(call === "transaction"); // only from the call made outside
        } finally {
          await withTimeout(store.close(), DEADLINE_MS, "close");
        }
        const reopened = await Store.open(file, { io, ...SMALL });
        try {
          for (const seid of [10n, 11n, 12n, 14n]) expect(await reopened.read(seid)).toEqual(bytes(seid));
          expect(reopened.has(13n)).toBe(false);
          expect(reopened.stats().uncleanShutdowns).toBe(0);
        } finally {
          await reopened.close();
        }
      });
    }

    test("calls from other async tasks while a callback runs wait their turn, in call order", async () => {
      await using store = await openStore(file, { io, ...SMALL });
      const order: string[] = [];
      let openGate!: () => void;
      const gate = new Promise<void>((resolve) => (openGate = resolve));
      let signalInside!: () => void;
      const inside = new Promise<void>((resolve) => (signalInside = resolve));
      // Another async task, started before the transaction: its call comes while the callback runs.
      let kick!: () => void;
      const kicked = new Promise<void>((resolve) => (kick = resolve));
      const otherTask = (async () => {
        await kicked;
        await store.transaction((tx) => {
          order.push("other task");
          tx.write(23n, bytes(23n));
        });
      })();
      let resolveFirstDone!: () => void;
      const firstDone = new Promise<void>((resolve) => (resolveFirstDone = resolve));
      let late: Promise<void> | undefined;

      const first = store.transaction(async (tx) => {
        order.push("first");
        tx.write(20n, bytes(20n));
        // Registered in the callback's context, run after the transaction ended: not misuse.
        void firstDone.then(() => {
          late = store.transaction((inner) => {
            order.push("late");
            inner.write(24n, bytes(24n));
          });
        });
        signalInside();
        await gate;
      });
      await withTimeout(inside, DEADLINE_MS, "the first callback");
      const second = store.transaction((tx) => {
        order.push("second");
        tx.write(21n, bytes(21n));
      });
      const flushed = store.flush();
      const checkpointed = store.checkpoint();
      const third = store.transaction((tx) => {
        order.push("third");
        tx.write(21n, bytes(22n));
      });
      kick();
      let settled = 0;
      for (const p of [second, flushed, checkpointed, third, otherTask]) void p.then(() => (settled += 1), () => (settled += 1));
      await Bun.sleep(100);
      // Nobody was refused and nobody ran: they wait for the turn the callback holds.
      expect(settled).toBe(0);
      expect(order).toEqual(["first"]);
      openGate();
      await withTimeout(Promise.all([first, second, flushed, checkpointed, third, otherTask]), DEADLINE_MS, "the queued calls");
      resolveFirstDone();
      await withTimeout(
        (async () => {
          while (late === undefined) await Bun.sleep(1);
          await late;
        })(),
        DEADLINE_MS,
        "a transaction started from the first callback's context after it ended",
      );
      expect(order).toEqual(["first", "second", "third", "other task", "late"]);
      expect(await store.read(21n)).toEqual(bytes(22n));
      for (const seid of [20n, 23n, 24n]) expect(await store.read(seid)).toEqual(bytes(seid));
    });

    test("an archive's stop() and a replication server's close() inside a callback are refused; they work after", async () => {
      const store = await Store.open(file, { io, ...SMALL });
      try {
        await store.transaction((tx) => tx.write(70n, bytes(70n)));
        const archive = await store.archive(path.join(dir, "archive"), { intervalMs: 60_000 });
        const server = await store.serveReplication({ unix: path.join(dir, "replication.sock"), secret: "a secret of enough bytes", log: () => {} });
        const errors = await withTimeout(
          store.transaction(async (tx) => {
            tx.write(71n, bytes(71n));
            return [await settledError(archive.stop()), await settledError(server.close())];
          }),
          DEADLINE_MS,
          "a transaction stopping the archive and closing the server",
        );
        for (const [error, name] of [[errors[0], "archive.stop()"], [errors[1], "server.close()"]] as const) {
          expect(error).toBeInstanceOf(TransactionError);
          expect((error as Error).message).toContain(`${name} inside the callback of transaction`);
        }
        expect(store.stats().archive?.state).toBe("running");
        await withTimeout(archive.stop(), DEADLINE_MS, "archive.stop() after");
        await withTimeout(server.close(), DEADLINE_MS, "server.close() after");
        expect(store.stats().archive?.state).toBe("stopped");
        // The last ship took both transactions of this new store, the refused calls' one included.
        expect(store.stats().archive?.shippedTransaction).toBe(2);
      } finally {
        await withTimeout(store.close(), DEADLINE_MS, "close");
      }
    });

    test("close() inside a callback while a close() from outside waits for it: refused, and the outside close completes", async () => {
      const store = await Store.open(file, { io, ...SMALL });
      let openGate!: () => void;
      const gate = new Promise<void>((resolve) => (openGate = resolve));
      let inner: unknown;
      let innerTransaction: unknown;
      const running = store.transaction(async (tx) => {
        tx.write(40n, bytes(40n));
        await gate;
        inner = await settledError(store.close());
        innerTransaction = await settledError(store.transaction(() => {}));
      });
      await Bun.sleep(10);
      const closing = store.close();
      openGate();
      await withTimeout(running, DEADLINE_MS, "the transaction");
      await withTimeout(closing, DEADLINE_MS, "the close from outside");
      expectTurnMisuse(inner, "close");
      // Closing already refuses new transactions, at once.
      expect(innerTransaction).toBeInstanceOf(StoreClosedError);
      await using reopened = await openStore(file, { io, ...SMALL });
      expect(await reopened.read(40n)).toEqual(bytes(40n));
    });

    test("a call to another store inside a callback is not refused", async () => {
      await using a = await openStore(file, { io, ...SMALL });
      await using b = await openStore(path.join(dir, "b.lss"), { io, ...SMALL });
      await withTimeout(
        a.transaction(async (tx) => {
          tx.write(50n, bytes(50n));
          await b.transaction((other) => other.write(51n, bytes(51n)));
          await b.flush();
          await b.checkpoint();
        }),
        DEADLINE_MS,
        "a transaction using another store",
      );
      expect(await a.read(50n)).toEqual(bytes(50n));
      expect(await b.read(51n)).toEqual(bytes(51n));
    });

    test("with a write stream open, the calls are refused, and the stream still completes its element", async () => {
      const value = new Uint8Array(900_000);
      for (let i = 0; i < value.length; i++) value[i] = (i * 7 + (i >> 11)) & 0xff;
      const store = await Store.open(file, { io, ...SMALL });
      try {
        const errors = await withTimeout(
          store.transaction(async (tx) => {
            const writer = tx.writeStream(30n).getWriter();
            await writer.write(value.subarray(0, 400_000));
            const refused: unknown[] = [];
            for (const [call, nested] of NESTED) {
              const error = await settledError(nested(store, dir));
              expectTurnMisuse(error, call);
              refused.push(error);
            }
            await writer.write(value.subarray(400_000));
            await writer.close();
            return refused;
          }),
          DEADLINE_MS,
          "a transaction with a write stream",
        );
        expect(errors.length).toBe(NESTED.length);
        expect(Buffer.compare((await store.read(30n)) as Uint8Array, value)).toBe(0);
        await withTimeout(store.transaction((tx) => tx.write(31n, bytes(31n))), DEADLINE_MS, "a later transaction");
      } finally {
        await withTimeout(store.close(), DEADLINE_MS, "close");
      }
      await using reopened = await openStore(file, { io, ...SMALL });
      expect(Buffer.compare((await reopened.read(30n)) as Uint8Array, value)).toBe(0);
      expect(await reopened.read(31n)).toEqual(bytes(31n));
    });

    test("a script with `await using` making a nested call exits with the error instead of hanging", async () => {
      const child = path.join(import.meta.dir, "misuse-child.ts");
      const calls = ["transaction", "flush", "checkpoint", "compact", "close"];
      const runs = calls.map(async (call) => {
        const target = path.join(dir, `${call}.lss`);
        const proc = Bun.spawn([process.execPath, child, target, io, call], { stdout: "pipe", stderr: "pipe" });
        const killer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
        const [exitCode, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
        clearTimeout(killer);
        return { call, target, exitCode, signal: proc.signalCode, stdout, stderr };
      });
      for (const run of await Promise.all(runs)) {
        // Killed at the deadline means it hung.
        expect({ call: run.call, signal: run.signal }).toEqual({ call: run.call, signal: null });
        expect(run.exitCode).not.toBe(0);
        expect(run.stdout).toBe("");
        expect(run.stderr).toContain("TransactionError");
        expect(run.stderr).toContain(`store.${run.call}()`);
        // `await using` closed the store: it reopens at once, clean, with the first commit only.
        const store = await Store.open(run.target, { io, ...SMALL });
        try {
          expect(store.stats().uncleanShutdowns).toBe(0);
          expect(await store.read(1n)).toEqual(new Uint8Array([1]));
          expect(store.has(2n)).toBe(false);
          expect(store.has(3n)).toBe(false);
        } finally {
          await store.close();
        }
      }
    }, 60_000);

    test("after close() every method throws StoreClosedError; close() again is fine", async () => {
      const store = await Store.open(file, { io, ...SMALL });
      const seid = store.allocateSeid();
      await store.transaction((tx) => tx.write(seid, bytes(seid)));
      expect(store.stats().elements).toBe(1);
      await store.close();
      expect(store.closed).toBe(true);
      const sync: Array<[string, () => unknown]> = [
        ["readSync", () => store.readSync(seid)],
        ["has", () => store.has(seid)],
        ["sizeOf", () => store.sizeOf(seid)],
        ["seids", () => store.seids()],
        ["spaces", () => store.spaces()],
        ["readStream", () => store.readStream(seid)],
        ["stats", () => store.stats()],
        ["createSeidSpace", () => store.createSeidSpace()],
        ["allocateSeid", () => store.allocateSeid()],
        ["share", () => store.share()],
      ];
      for (const [name, call] of sync) {
        let error: unknown;
        try {
          call();
        } catch (caught) {
          error = caught;
        }
        expect({ name, error: error instanceof StoreClosedError ? error.code : error }).toEqual({ name, error: "LSS_CLOSED" });
      }
      const async: Array<[string, () => Promise<unknown>]> = [
        ["read", () => store.read(seid)],
        ["entries", () => store.entries().next()],
        ["transaction", () => store.transaction((tx) => tx.write(seid, bytes(1n)))],
        ["flush", () => store.flush()],
        ["checkpoint", () => store.checkpoint()],
        ["compact", () => store.compact()],
        ["backup", () => store.backup(path.join(dir, "backup"))],
        ["archive", () => store.archive(path.join(dir, "archive"))],
        ["serveReplication", () => store.serveReplication({ unix: path.join(dir, "replication.sock"), secret: "a secret of enough bytes" })],
      ];
      for (const [name, call] of async) {
        const error = await withTimeout(settledError(call()), DEADLINE_MS, name);
        expect({ name, error: error instanceof StoreClosedError ? error.code : error }).toEqual({ name, error: "LSS_CLOSED" });
      }
      // Nothing was created by the refused calls.
      expect(fs.existsSync(path.join(dir, "backup"))).toBe(false);
      expect(fs.existsSync(path.join(dir, "archive"))).toBe(false);
      await withTimeout(store.close(), DEADLINE_MS, "close again");
      await withTimeout(store[Symbol.asyncDispose](), DEADLINE_MS, "dispose after close");
      await using reopened = await openStore(file, { io, ...SMALL });
      expect(await reopened.read(seid)).toEqual(bytes(seid));
    });

    test("opening under a missing directory names the directory, and creates nothing", async () => {
      const missing = path.join(dir, "no-such-dir", "deeper");
      for (const options of [{}, { create: true }, { create: false }, { readOnly: true }]) {
        const error = await settledError(Store.open(path.join(missing, "s.lss"), { io, ...SMALL, ...options }));
        expect(error).toBeInstanceOf(InvalidArgumentError);
        expect((error as InvalidArgumentError).code).toBe("LSS_INVALID_ARGUMENT");
        expect((error as Error).message).toContain(`the directory ${missing} does not exist`);
        expect((error as Error).message).not.toContain("create is false");
      }
      expect(fs.existsSync(path.join(dir, "no-such-dir"))).toBe(false);
      // A file where a directory should be.
      const plain = path.join(dir, "plain");
      fs.writeFileSync(plain, "not a directory");
      const notDirectory = await settledError(Store.open(path.join(plain, "s.lss"), { io, ...SMALL }));
      expect(notDirectory).toBeInstanceOf(InvalidArgumentError);
      expect((notDirectory as Error).message).toContain(`${plain} is not a directory`);
      expect(fs.readFileSync(plain, "utf8")).toBe("not a directory");
      // The directory exists, the file does not, create is false: that is what it says then.
      const absent = await settledError(Store.open(path.join(dir, "absent.lss"), { io, ...SMALL, create: false }));
      expect(absent).toBeInstanceOf(InvalidArgumentError);
      expect((absent as Error).message).toContain("does not exist and create is false");
    });
  });
}

test("a promoted standby's close() inside its transaction callback is refused; the standby goes on", async () => {
  const { dir, cleanup } = scratchDir("misuse-standby");
  const closers: Array<() => Promise<void>> = [];
  try {
    const primary = await Store.open(path.join(dir, "primary.lss"), STORE_OPTIONS);
    closers.push(() => primary.close());
    await primary.transaction((tx) => tx.write(60n, bytes(60n)));
    const socket = path.join(dir, "p.sock");
    const server = await primary.serveReplication({ unix: socket, secret: SECRET, log: () => {} });
    const standby = await Store.openStandby(path.join(dir, "standby.lss"), { primary: { unix: socket }, secret: SECRET, store: STORE_OPTIONS, log: () => {} });
    closers.push(() => standby.close());
    await standby.caughtUp({ timeoutMs: 20_000 });
    await server.close();
    await standby.promote();
    const error = await withTimeout(
      settledError(
        standby.transaction(async (tx) => {
          tx.write(61n, bytes(61n));
          await standby.close();
        }),
      ),
      DEADLINE_MS,
      "a promoted standby's transaction closing it",
    );
    expect(error).toBeInstanceOf(TransactionError);
    expect((error as Error).message).toContain("standby.close() inside the callback of transaction");
    await withTimeout(standby.transaction((tx) => tx.write(62n, bytes(62n))), DEADLINE_MS, "a later transaction");
    expect(standby.has(61n)).toBe(false);
    expect(await standby.read(62n)).toEqual(bytes(62n));
    expect(await standby.read(60n)).toEqual(bytes(60n));
    await withTimeout(standby.close(), DEADLINE_MS, "the standby's close");
  } finally {
    for (const close of closers.reverse()) await withTimeout(close(), DEADLINE_MS, "close").catch(() => {});
    cleanup();
  }
}, 60_000);
