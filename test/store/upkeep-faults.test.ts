/**
 * A transaction whose promise rejects is not applied; one that resolves is. Found by the power-cut
 * torture (`bun scripts/torture.ts --seed 634263 --seconds 300`, ~17,700 cycles in): growing the
 * file for the full-disk reserve after a commit (Store.afterCommit → keepSpaceReserve) met the
 * power cut, and the error rejected the promise of a transaction that was already committed and
 * durable — the next open had it, and a caller told it failed would retry it or report a loss that
 * did not happen.
 *
 * The second test makes exactly that happen (the upkeep after one commit fails the log and throws,
 * as LogStructuredStore.spaceStep does on an I/O error) and fails without the fix. The first sweeps
 * real `fallocate` failures (the fault backend, every call from the Nth on, for each N) under a
 * store that keeps growing, and checks every transaction's outcome against a reopen. Every wait has
 * a deadline.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import path from "node:path";
import { IoError, Store, type StoreOptions } from "../../src/index.ts";
import { openStore, storeInternals } from "../../src/store/store.ts";
import { EIO, FaultBackend } from "../../testing/fault-backend.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { scratchDir } from "../helpers.ts";

const OPTIONS: StoreOptions = { segmentSize: 256 << 10, bufferSize: 64 << 10, io: "portable" };
const TRANSACTIONS = 40;
const PER_TRANSACTION = 24;

let dir: string;
let cleanup: () => void;
beforeAll(() => {
  ({ dir, cleanup } = scratchDir("upkeep-faults"));
});
afterAll(() => cleanup());

function valueOf(tx: number, k: number): Uint8Array {
  const out = new Uint8Array(700 + ((tx * 31 + k * 7) % 900));
  out.fill((tx * 13 + k) & 0xff);
  return out;
}

test("fallocate failing at every point of a growing store: a rejected transaction is never applied, a resolved one always is", async () => {
  let runsWithRejections = 0;
  let injected = 0;
  for (let nth = 1; nth <= 14; nth++) {
    const file = path.join(dir, `n${nth}.lss`);
    const fault = new FaultBackend({ seed: nth, simulateSync: true, direct: false });
    const store = await openStore(file, OPTIONS, fault);
    fault.injectError({ nth, errno: EIO, sticky: true, sites: ["allocateSpace"] });
    const outcomes: Array<{ seids: bigint[]; ok: boolean }> = [];
    for (let tx = 0; tx < TRANSACTIONS; tx++) {
      const seids = Array.from({ length: PER_TRANSACTION }, () => store.allocateSeid());
      let ok = true;
      try {
        await withTimeout(
          store.transaction((t) => {
            seids.forEach((seid, k) => t.write(seid, valueOf(tx, k)));
          }),
          30_000,
          `transaction ${tx}`,
        );
      } catch {
        ok = false;
      }
      outcomes.push({ seids, ok });
      if (!ok) break;
    }
    // A rejection here can only come from a failed allocation: the run injected at least one.
    if (outcomes.some((o) => !o.ok)) {
      runsWithRejections += 1;
      expect(fault.counts.injectedErrors).toBeGreaterThan(0);
    }
    injected += fault.counts.injectedErrors;
    await withTimeout(store.close().catch(() => {}), 30_000, "close");
    fault.close();

    const reopened = await Store.open(file, OPTIONS);
    try {
      for (const [tx, outcome] of outcomes.entries()) {
        const present = await Promise.all(outcome.seids.map((seid) => reopened.read(seid)));
        if (outcome.ok) {
          present.forEach((value, k) => {
            expect(value !== undefined && Buffer.from(value).equals(Buffer.from(valueOf(tx, k)))).toBe(true);
          });
        } else {
          // Not one of its writes: a rejected transaction left nothing.
          const applied = present.filter((value) => value !== undefined).length;
          expect(`nth ${nth}: rejected transaction ${tx} has ${applied} of ${PER_TRANSACTION} writes after reopen`).toBe(`nth ${nth}: rejected transaction ${tx} has 0 of ${PER_TRANSACTION} writes after reopen`);
        }
      }
    } finally {
      await reopened.close();
    }
  }
  // The harness really failed allocations, and transactions with them.
  expect(injected).toBeGreaterThanOrEqual(runsWithRejections);
  expect(runsWithRejections).toBeGreaterThan(5);
}, 120_000);

test("the reserve's growth failing after a commit does not reject the committed transaction; the next one is refused; a reopen has it", async () => {
  const file = path.join(dir, "after-commit.lss");
  const store = await Store.open(file, { segmentSize: 256 << 10, bufferSize: 64 << 10 });
  const seid = store.allocateSeid();
  await store.transaction((t) => t.write(seid, valueOf(1, 0)));
  // The upkeep after the next commit meets an I/O error as growing the file would: the log fails
  // (as LogStructuredStore.spaceStep does) and the error is thrown to the caller of the upkeep.
  const log = storeInternals(store).core.log;
  const original = log.keepSpaceReserve.bind(log);
  let failed = 0;
  log.keepSpaceReserve = () => {
    failed += 1;
    const error = new IoError(5, "fallocate (injected after the commit)");
    (log as unknown as { life: { fail(e: Error): void } }).life.fail(error);
    throw error;
  };
  const committed = store.allocateSeid();
  await withTimeout(store.transaction((t) => t.write(committed, valueOf(2, 0))), 30_000, "the committed transaction");
  expect(failed).toBe(1);
  log.keepSpaceReserve = original;
  // The log has failed: the next transaction is refused, with a typed error.
  await expect(store.transaction((t) => t.write(store.allocateSeid(), valueOf(3, 0)))).rejects.toThrow();
  await withTimeout(store.close().catch(() => {}), 30_000, "close");
  const reopened = await Store.open(file, { segmentSize: 256 << 10, bufferSize: 64 << 10 });
  try {
    expect(Buffer.from((await reopened.read(committed)) as Uint8Array).equals(Buffer.from(valueOf(2, 0)))).toBe(true);
    expect(Buffer.from((await reopened.read(seid)) as Uint8Array).equals(Buffer.from(valueOf(1, 0)))).toBe(true);
  } finally {
    await reopened.close();
  }
}, 60_000);
