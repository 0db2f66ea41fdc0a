/**
 * Full disk and I/O errors at every I/O call site in turn: a fixed workload (open, transactions
 * with small, empty and multi-part values, concurrent commits, a checkpoint, reads, a flush, a
 * close) runs once cleanly to count its I/O calls, then once per call N with that call failing
 * (EIO, then ENOSPC; then ENOSPC that stays until cleared, on writes). Each run checks:
 * - the first error anybody sees is the injected one, typed (IoError / NoSpaceError);
 * - once the fault clears, the store either works again or refuses writes with ReadOnlyError;
 * - nothing hangs (open, transactions, close);
 * - reopened on a clean backend, the store equals the model after a committed prefix holding
 *   every acknowledged transaction, and accepts new transactions.
 *
 * Plus regression tests for the bugs this harness found.
 */
import { openStore } from "../../src/store/store.ts";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { EIO, ENOSPC, FaultBackend, type FaultSite } from "../../testing/fault-backend.ts";
import { IoError, LogStructuredStore, LssError, NoSpaceError, ReadOnlyError, Store, type StoreOptions } from "../../src/index.ts";
import { checkRecovered } from "../../testing/torture/check.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { COUNTER_SEID, encodeCounter, History, makeValue } from "../../testing/torture/model.ts";
import { scratchDir } from "../helpers.ts";

const OPTIONS: StoreOptions = { segmentSize: 256 << 10, bufferSize: 64 << 10, ringSize: 2, cacheBytes: 0, numSegmentsPerCheckpoint: 1 };

interface RunResult {
  calls: number;
  injected: number;
  /** The error that stopped the workload. */
  firstError: unknown;
  /** Every error any operation saw, in the order they happened. */
  errors: unknown[];
  probe: "committed" | "readOnly" | "none";
  problems: string[];
}

type Effects = Array<[bigint, Uint8Array | undefined]>;

/** The workload; stops at the first error, clears the fault and probes with one transaction. */
async function runWorkload(file: string, fault: FaultBackend, history: History): Promise<RunResult> {
  const problems: string[] = [];
  const errors: unknown[] = [];
  let firstError: unknown;
  let probe: RunResult["probe"] = "none";
  let store: Store;
  try {
    store = await withTimeout(openStore(file, { ...OPTIONS }, fault), 10_000, "open");
  } catch (error) {
    return { calls: fault.calls, injected: fault.counts.injectedErrors, firstError: error, errors: [error], probe, problems };
  }
  const transaction = (effects: Effects): Promise<void> => {
    const number = history.takeNumber();
    const all: Effects = [...effects, [COUNTER_SEID, encodeCounter(number)]];
    const tx = history.add(number, all.map(([seid, value]) => ({ seid, value })), 0n);
    return store
      .transaction((t) => {
        for (const [seid, value] of all) {
          if (value === undefined) t.delete(seid);
          else t.write(seid, value);
        }
      })
      .then(
        () => {
          history.committed(tx);
          history.durableThrough(tx);
        },
        (error: unknown) => {
          tx.outcome = "unknown";
          errors.push(error);
          throw error;
        },
      );
  };
  const steps: Array<() => Promise<unknown>> = [
    () => transaction([[1n, makeValue(100, 1)], [2n, makeValue(3000, 2)], [3n, new Uint8Array(0)]]),
    () => transaction([[4n, makeValue(600 << 10, 4)]]), // multi-part, spans segments
    () => store.checkpoint(),
    async () => {
      const settled = await Promise.allSettled([
        transaction([[1n, makeValue(5000, 11)], [2n, undefined]]),
        transaction([[5n, makeValue(70_000, 5)]]),
        transaction([[3n, makeValue(10, 13)], [1n, makeValue(7, 12)]]),
      ]);
      for (const result of settled) if (result.status === "rejected") throw result.reason;
    },
    async () => {
      for (const seid of [1n, 2n, 3n, 4n, 5n]) await store.read(seid);
    },
    () => transaction([[4n, undefined], [6n, makeValue(200 << 10, 6)]]),
    () => store.flush(),
    () => transaction([[7n, makeValue(1, 7)]]),
  ];
  for (const step of steps) {
    try {
      await withTimeout(step(), 10_000, "a workload step");
    } catch (error) {
      firstError = error;
      if (!errors.includes(error)) errors.push(error);
      break;
    }
  }
  if (firstError !== undefined) {
    // Let every transaction of the failed step settle (a concurrent batch may hold several).
    await Bun.sleep(0);
    fault.clearFaults();
    try {
      await withTimeout(transaction([[8n, makeValue(50, 8)]]), 10_000, "the probe transaction");
      probe = "committed";
    } catch (error) {
      if (error instanceof ReadOnlyError) probe = "readOnly";
      else problems.push(`after the fault cleared, a transaction failed with ${String(error)} (expected success or ReadOnlyError)`);
    }
    if (probe === "readOnly") {
      // Reads still work on a store made read-only by a write failure.
      try {
        await withTimeout(store.read(1n), 10_000, "a read on the read-only store");
      } catch (error) {
        problems.push(`a read on the read-only store threw ${String(error)}`);
      }
    }
  }
  try {
    await withTimeout(store.close(), 10_000, "close");
  } catch (error) {
    if (!(error instanceof LssError)) problems.push(`close threw ${String(error)}`); // a HangError included
  }
  return { calls: fault.calls, injected: fault.counts.injectedErrors, firstError, errors, probe, problems };
}

/** Reopen on a clean backend; check the model; commit one more transaction. */
async function reopenAndCheck(file: string, history: History): Promise<string[]> {
  const fault = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
  try {
    const store = await withTimeout(openStore(file, { ...OPTIONS }, fault), 10_000, "reopen");
    try {
      const check = await checkRecovered(store, history);
      if (check.problems.length > 0) return check.problems;
      await withTimeout(store.transaction((tx) => tx.write(9n, new Uint8Array([9]))), 10_000, "a transaction after reopen");
      const back = await store.read(9n);
      if (back?.[0] !== 9) return ["a transaction after reopen did not read back"];
      return [];
    } finally {
      await store.close();
    }
  } catch (error) {
    return [`reopen on a clean backend: ${String(error)}`];
  } finally {
    fault.close();
  }
}

describe("injected I/O errors at every call site", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("faults"));
  });
  afterAll(() => cleanup());

  test("EIO and ENOSPC at call N = 1..K, and a full disk until cleared: typed errors, nothing acknowledged lost", async () => {
    // A clean run counts the calls.
    const cleanFile = path.join(dir, "clean.lss");
    const clean = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
    const cleanHistory = new History();
    const baseline = await runWorkload(cleanFile, clean, cleanHistory);
    clean.close();
    expect(baseline.firstError).toBeUndefined();
    expect(await reopenAndCheck(cleanFile, cleanHistory)).toEqual([]);
    const K = baseline.calls;
    expect(K).toBeGreaterThan(40);

    const sites = new Map<string, number>();
    let runs = 0;
    let injected = 0;
    let readOnlyAfter = 0;
    let workedAfter = 0;
    const problems: string[] = [];
    const variants: Array<{ errno: number; sticky: boolean; sites?: readonly FaultSite[] }> = [
      { errno: EIO, sticky: false },
      { errno: ENOSPC, sticky: false },
      { errno: ENOSPC, sticky: true, sites: ["write", "allocateSpace"] },
    ];
    for (const variant of variants) {
      const limit = variant.sites === undefined ? K : Math.ceil(K / 2);
      for (let n = 1; n <= limit; n++) {
        const file = path.join(dir, `run-${runs}.lss`);
        const fault = new FaultBackend({ seed: n, syncIo: true, simulateSync: true, direct: false });
        let site = "";
        fault.onInject = (where) => {
          site ||= where;
        };
        fault.injectError({ nth: n, errno: variant.errno, sticky: variant.sticky, sites: variant.sites });
        const history = new History();
        const result = await runWorkload(file, fault, history);
        fault.close();
        runs += 1;
        injected += result.injected;
        if (result.injected === 0) continue; // past the workload's last matching call
        sites.set(site, (sites.get(site) ?? 0) + 1);
        const label = `${variant.errno === EIO ? "EIO" : "ENOSPC"}${variant.sticky ? " (sticky)" : ""} at call ${n} (${site})`;
        for (const problem of result.problems) problems.push(`${label}: ${problem}`);
        // The operation the fault hit rejects with it, typed; anything refused after it, with
        // ReadOnlyError (or the same error).
        if (result.firstError !== undefined) {
          const isInjected = (error: unknown) =>
            variant.errno === EIO ? error instanceof IoError && error.errno === EIO : error instanceof NoSpaceError;
          if (!result.errors.some(isInjected)) {
            problems.push(`${label}: no operation rejected with the injected ${variant.errno === EIO ? "IoError" : "NoSpaceError"} (errors: ${result.errors.map(String).join("; ")})`);
          }
          for (const error of result.errors) {
            if (!isInjected(error) && !(error instanceof ReadOnlyError)) problems.push(`${label}: an operation rejected with ${String(error)}`);
          }
        }
        if (result.probe === "readOnly") readOnlyAfter += 1;
        if (result.probe === "committed") workedAfter += 1;
        for (const problem of await reopenAndCheck(file, history)) problems.push(`${label}: ${problem}`);
        fs.rmSync(file, { force: true });
      }
    }
    console.log(
      `fault sweep: ${K} I/O calls per clean run, ${runs} runs, ${injected} errors injected ` +
        `(${[...sites].map(([site, n]) => `${site} ${n}`).join(", ")}); after the fault: ${readOnlyAfter} read-only, ${workedAfter} working`,
    );
    if (problems.length > 0) console.error(problems.slice(0, 30).join("\n"));
    expect(problems).toEqual([]);
    expect(injected).toBeGreaterThanOrEqual(200);
    // Both outcomes after a fault occur: read-only until reopened (write path), working (read path).
    expect(readOnlyAfter).toBeGreaterThan(0);
    expect(workedAfter).toBeGreaterThan(0);
    // Faults hit every kind of call the workload makes.
    for (const site of ["write", "read", "datasync", "allocateSpace", "openFile", "fileSizeBytes"]) expect(sites.get(site) ?? 0).toBeGreaterThan(0);
  }, 120_000);
});

describe("regressions found by the fault harness", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("fault-regressions"));
  });
  afterAll(() => cleanup());

  test("a transaction waiting for a flush buffer when a write fails rejects at once; close does not hang", async () => {
    for (const nth of [2, 3, 4]) {
      const file = path.join(dir, `hang-${nth}.lss`);
      const fault = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
      const store = await openStore(file, { ...OPTIONS }, fault);
      await store.transaction((tx) => tx.write(1n, new Uint8Array(10)));
      // A unit write fails (not a zero-fill of fresh file space, whose failure costs nothing).
      fault.injectError({ nth, sites: ["write"], skipZeroFills: true });
      // 600 KiB through 2 buffers of 64 KiB: the writer waits for rotations while the write fails.
      const outcome = await withTimeout(
        store.transaction((tx) => tx.write(2n, new Uint8Array(600 << 10))).then(
          () => "committed",
          (error: unknown) => error,
        ),
        5000,
        "the transaction",
      );
      expect(outcome).toBeInstanceOf(IoError);
      expect(fault.counts.injectedErrors).toBe(1); // the one unit write that failed
      await expect(store.transaction((tx) => tx.write(3n, new Uint8Array(1)))).rejects.toBeInstanceOf(ReadOnlyError);
      await withTimeout(store.close(), 5000, "close");
      fault.close();
    }
  });

  test("an I/O error while recovery reads the log fails the open instead of cutting the log short", async () => {
    const file = path.join(dir, "recovery-eio.lss");
    const fault = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
    const store = await openStore(file, { ...OPTIONS }, fault);
    for (let k = 1; k <= 30; k++) await store.transaction((tx) => tx.write(BigInt(k), new Uint8Array(5000).fill(k)));
    await fault.powerCut(); // a crash: the log since the last checkpoint must be replayed
    await store.close().catch(() => {});
    fault.close();
    let injected = 0;
    for (let nth = 2; nth <= 12; nth++) {
      const faulty = new FaultBackend({ syncIo: true, simulateSync: true, direct: false });
      faulty.injectError({ nth, sites: ["read"] });
      await expect(openStore(file, { ...OPTIONS }, faulty)).rejects.toBeInstanceOf(IoError);
      injected += faulty.counts.injectedErrors;
      faulty.close();
    }
    expect(injected).toBe(11); // one read error per open, each one the open's failure
    const reopened = await Store.open(file, { ...OPTIONS, io: "portable" });
    for (let k = 1; k <= 30; k++) expect((await reopened.read(BigInt(k)))?.[0]).toBe(k);
    await reopened.close();
  });

  test("reopening with a smaller bufferSize replays units written with a larger one", async () => {
    const file = path.join(dir, "buffer-size.lss");
    const store = await Store.open(file, { io: "portable", segmentSize: 1 << 20, bufferSize: 256 << 10 });
    await store.checkpoint();
    for (let k = 1; k <= 30; k++) await store.transaction((tx) => tx.write(BigInt(k), new Uint8Array(100_000).fill(k)));
    await store.flush();
    const crashed = path.join(dir, "buffer-size-crashed.lss");
    fs.copyFileSync(file, crashed); // as a crash leaves it: the log after the checkpoint to replay
    await store.close();
    const reopened = await Store.open(crashed, { io: "portable", bufferSize: 64 << 10 });
    expect(reopened.stats().recovery.unitsReplayed).toBeGreaterThan(0);
    for (let k = 1; k <= 30; k++) expect((await reopened.read(BigInt(k)))?.length).toBe(100_000);
    await reopened.close();
  });

  test("an aborted transaction's records already in the log never commit with the next transaction", async () => {
    const file = path.join(dir, "abort-spill.lss");
    const store = await Store.open(file, { io: "portable", segmentSize: 1 << 20, bufferSize: 64 << 10, autoClean: false, cleanerLowWaterSegments: 0 } as StoreOptions);
    await store.transaction((tx) => tx.write(1n, new Uint8Array([1])));
    await store.checkpoint();
    await expect(
      store.transaction(async (tx) => {
        tx.write(2n, new Uint8Array(5 << 20).fill(2)); // past the spill threshold: written before commit
        await Bun.sleep(20);
        throw new Error("abort");
      }),
    ).rejects.toThrow("abort");
    await store.transaction((tx) => tx.write(3n, new Uint8Array([3])));
    await store.flush();
    const crashed = path.join(dir, "abort-spill-crashed.lss");
    fs.copyFileSync(file, crashed);
    await store.close();
    const reopened = await Store.open(crashed, { io: "portable" });
    expect(await reopened.read(2n)).toBeUndefined();
    expect((await reopened.read(3n))?.[0]).toBe(3);
    await reopened.close();
  });

  test("records of a transaction cut off by a power cut never commit with a transaction after the reopen", async () => {
    // Find a power cut that leaves transaction B's data durable but not its Commit: B writes
    // seid 1 = [] and a multi-part seid 2, after A wrote seid 1 = [0xaa].
    let reproduced = 0;
    for (let nth = 1; nth <= 24; nth++) {
      const file = path.join(dir, `cut-${nth}.lss`);
      const first = new FaultBackend({ syncIo: true, simulateSync: true, direct: false, powerCut: { keep: 1, drop: 0, torn: 0 } });
      let store = await openStore(file, { ...OPTIONS }, first);
      await store.transaction((tx) => tx.write(1n, new Uint8Array([0xaa])));
      first.cutPowerAtCall(nth);
      await store
        .transaction((tx) => {
          tx.write(1n, new Uint8Array(0));
          tx.write(2n, new Uint8Array(300 << 10).fill(2));
        })
        .catch(() => {});
      await first.powerCut();
      await store.close().catch(() => {});
      first.close();
      // Reopen, commit C (same position in the log B's commit would have had), crash again.
      const second = new FaultBackend({ syncIo: true, simulateSync: true, direct: false, powerCut: { keep: 1, drop: 0, torn: 0 } });
      store = await openStore(file, { ...OPTIONS }, second);
      const discarded = store.stats().recovery.transactionsDiscarded;
      const bCommitted = (await store.read(2n)) !== undefined;
      await store.transaction((tx) => tx.write(3n, new Uint8Array([3])));
      await second.powerCut();
      await store.close().catch(() => {});
      second.close();
      const reopened = await Store.open(file, { ...OPTIONS, io: "portable" });
      if (!bCommitted) {
        // B never committed: seid 1 is still A's, seid 2 absent, C present.
        expect(Array.from((await reopened.read(1n)) ?? [])).toEqual([0xaa]);
        expect(await reopened.read(2n)).toBeUndefined();
        expect((await reopened.read(3n))?.[0]).toBe(3);
        if (discarded > 0) reproduced += 1;
      }
      await reopened.close();
    }
    // Some cut points left B's records without their Commit (the case that used to merge).
    expect(reproduced).toBeGreaterThan(0);
  });
});

describe("stale units at the replay start", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("fault-stale"));
  });
  afterAll(() => cleanup());

  test("a unit of an older epoch right at replayFrom is not replayed (found by the long torture, seed 1)", async () => {
    // Epoch 1 writes U0, U1, U2; a crash loses U1 but U2 lands (a hole before a surviving unit).
    // Epoch 2 recovers up to U1's address, writes one unit of U1's size there and checkpoints:
    // replayFrom is now U2's address, and the stale U2 (epoch 1) has a matching prevEnd.
    const file = path.join(dir, "stale.lss");
    const options = { io: "portable" as const, segmentSize: 256 << 10, bufferSize: 64 << 10 };
    const put = async (log: LogStructuredStore, bytes: number, fill: number) => {
      const reservation = await log.reserveSpace(bytes);
      log.writePayload(new Uint8Array(bytes).fill(fill), reservation);
      await log.flush();
    };
    let log = await LogStructuredStore.open(file, options);
    await put(log, 1000, 1); // U0: 4 KiB
    const u1 = log.tailPosition().address;
    await put(log, 5000, 2); // U1: 8 KiB
    const u2 = log.tailPosition().address;
    await put(log, 1000, 3); // U2: 4 KiB
    await log.close();
    expect(u2 - u1).toBe(8192);
    const bytes = fs.readFileSync(file);
    bytes.fill(0, 8192 + u1, 8192 + u1 + 4096); // U1 lost
    fs.writeFileSync(file, bytes);
    log = await LogStructuredStore.open(file, options);
    const start = log.tailPosition();
    expect(start.address).toBe(u1);
    await put(log, 5000, 4); // U1' (epoch 2), ends where U2 starts
    const replayFrom = log.tailPosition();
    expect(replayFrom.address).toBe(u2);
    await log.writeRoot({ checkpoint: { start, endAddress: replayFrom.address }, replayFrom });
    await log.close();
    log = await LogStructuredStore.open(file, { ...options, deferRecovery: true });
    await log.readCheckpoint();
    const replayed: number[] = [];
    await log.recover(undefined, (unit) => void replayed.push(unit.payload[0] as number));
    await log.close();
    expect(replayed).toEqual([]); // U2 (fill 3, epoch 1) must not come back
  });
});

describe("native memory after close", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("fault-uaf"));
  });
  afterAll(() => cleanup());

  test("closing after a datasync failure never writes into freed flush buffers (serialized writes still queued)", async () => {
    let damaged = 0;
    let injected = 0;
    for (let seed = 1; seed <= 30; seed++) {
      const file = path.join(dir, `uaf-${seed}.lss`);
      // Real asynchronous completions (the thread pool): the race needs their timing.
      const fault = new FaultBackend({ seed, simulateSync: true, direct: false, quarantineFrees: true });
      const store = await openStore(file, { ...OPTIONS, ringSize: 4, writeMode: "serialized" }, fault);
      await store.transaction((tx) => tx.write(1n, new Uint8Array(10)));
      fault.injectError({ nth: 1, sites: ["datasync"] });
      // Several units queued behind one another; the commit's datasync fails; close at once.
      await Promise.all(
        [2n, 3n, 4n].map((seid) => store.transaction((tx) => tx.write(seid, new Uint8Array(90 << 10).fill(Number(seid)))).catch(() => {})),
      );
      await withTimeout(store.close().catch(() => {}), 5000, "close");
      await Bun.sleep(1);
      fault.close();
      damaged += fault.counts.useAfterFree;
      injected += fault.counts.injectedErrors;
    }
    expect(injected).toBe(30); // every run's commit datasync really failed
    expect(damaged).toBe(0);
  });
});
