/**
 * A primary ships each log unit as its write is issued, before it is durable there (so the
 * standby's flush overlaps the primary's). The price: a crash of the primary can lose units a
 * standby already holds. These tests restart a primary under a following standby:
 *
 * - cleanly: the standby's last unit is in the reopened log (written by the earlier open): it
 *   resumes, no seed, exactly the transactions committed since;
 * - after a power cut that lost a unit the standby had applied (the primary's datasyncs fail,
 *   the unit is shipped anyway, then the power is cut with every write not yet durable dropped):
 *   the primary sees that the standby's last unit is not in its log, re-seeds it, and the standby
 *   converges to exactly the primary's state, without the lost transaction.
 *
 * Every wait has a deadline.
 */
import { afterEach, expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import type { StandbyStore } from "../../src/replication/standby.ts";
import { openStore } from "../../src/store/store.ts";
import type { ReplicationServer } from "../../src/replication/primary.ts";
import { ENOSPC, FaultBackend } from "../../testing/fault-backend.ts";
import { scratchDir } from "../helpers.ts";
import { expectSameState, SECRET, STORE_OPTIONS, until, valueOf } from "./util.ts";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

const quiet = { log: () => {} };

function setup(name: string): { primaryPath: string; standbyPath: string; socket: string } {
  const d = scratchDir(`repl-diverge-${name}`);
  cleanups.push(d.cleanup);
  return { primaryPath: path.join(d.dir, "primary.lss"), standbyPath: path.join(d.dir, "standby.lss"), socket: path.join(d.dir, "repl.sock") };
}

async function openFollowing(standbyPath: string, socket: string): Promise<StandbyStore> {
  const standby = await Store.openStandby(standbyPath, { primary: { unix: socket }, secret: SECRET, store: STORE_OPTIONS, log: () => {}, reconnectMaxMs: 200 });
  cleanups.push(() => standby.close());
  return standby;
}

/** Commits writing `count` transactions of 3 elements each over `seids`, versions from `from`. */
async function commitSome(store: Store, seids: readonly bigint[], from: number, count: number): Promise<number> {
  for (let v = from; v < from + count; v++) {
    await store.transaction((tx) => {
      for (let k = 0; k < 3; k++) tx.write(seids[(v + k * 7) % seids.length] as bigint, valueOf(v, k, 50 + (v % 300)));
    });
  }
  return from + count;
}

function divergedSeeds(server: ReplicationServer): number {
  return server.stats().divergedSeeds;
}

test("a cleanly restarted primary: the standby's units are in its log, it resumes with no seed and no gap", async () => {
  const { primaryPath, standbyPath, socket } = setup("clean");
  let primary = await Store.open(primaryPath, STORE_OPTIONS);
  let server = await primary.serveReplication({ unix: socket, secret: SECRET, ...quiet });
  const seids = Array.from({ length: 40 }, () => primary.allocateSeid());
  let v = await commitSome(primary, seids, 1, 60);
  const standby = await openFollowing(standbyPath, socket);
  await standby.caughtUp({ timeoutMs: 20_000 });
  v = await commitSome(primary, seids, v, 60);
  await standby.caughtUp({ timeoutMs: 20_000 });
  const appliedBefore = standby.stats().replication.transactionsApplied;
  expect(standby.stats().replication.seeds).toBe(1);

  await server.close();
  await primary.close();
  primary = await Store.open(primaryPath, STORE_OPTIONS);
  cleanups.push(() => primary.close());
  server = await primary.serveReplication({ unix: socket, secret: SECRET, ...quiet });
  v = await commitSome(primary, seids, v, 80);
  await until(() => standby.stats().replication.connected, 20_000, "the standby to reconnect");
  await standby.caughtUp({ timeoutMs: 20_000 });

  expect(standby.stats().replication.seeds).toBe(1);
  expect(divergedSeeds(server)).toBe(0);
  expect(server.stats().seeds).toBe(0);
  // Exactly the 80 transactions of the new open: none twice, none missing.
  expect(standby.stats().replication.transactionsApplied - appliedBefore).toBe(80);
  await expectSameState(primary, standby, [1]);
}, 60_000);

test("a unit shipped before it was durable, then lost by a power cut of the primary: the standby is re-seeded and converges without it", async () => {
  const { primaryPath, standbyPath, socket } = setup("lost");
  // Every write not durable at the cut is dropped.
  const fault = new FaultBackend({ seed: 11, powerCut: { keep: 0, drop: 1, torn: 0 } });
  const primary = await openStore(primaryPath, STORE_OPTIONS, fault);
  const server = await primary.serveReplication({ unix: socket, secret: SECRET, ...quiet });
  const seids = Array.from({ length: 40 }, () => primary.allocateSeid());
  let v = await commitSome(primary, seids, 1, 100);
  const standby = await openFollowing(standbyPath, socket);
  await standby.caughtUp({ timeoutMs: 20_000 });
  expect(standby.stats().replication.seeds).toBe(1);

  // From now on no datasync of the primary succeeds (ENOSPC: durability stalls and retries for
  // about a third of a second before the log fails), so the next commit never becomes durable
  // there, while its unit is shipped as its write is issued.
  const lostSeid = primary.allocateSeid();
  const lostValue = valueOf(999_999, 1, 321);
  fault.injectError({ nth: 1, errno: ENOSPC, sticky: true, sites: ["datasync"] });
  let outcome: "pending" | "resolved" | "rejected" = "pending";
  const lost = primary.transaction((tx) => tx.write(lostSeid, lostValue)).then(
    () => void (outcome = "resolved"),
    () => void (outcome = "rejected"),
  );
  await until(async () => (await standby.read(lostSeid)) !== undefined, 10_000, "the standby to apply the transaction not durable on the primary");
  expect(Buffer.from((await standby.read(lostSeid)) as Uint8Array).equals(Buffer.from(lostValue))).toBe(true);
  expect(outcome).toBe("pending"); // never acknowledged by the primary
  expect(fault.counts.injectedErrors).toBeGreaterThanOrEqual(1);

  fault.cutPower();
  await fault.powerCut();
  await lost;
  expect(outcome as string).toBe("rejected");
  expect(fault.counts.droppedWrites).toBeGreaterThanOrEqual(1);
  await server.close().catch(() => {});
  await primary.close().catch(() => {});

  // The reopened primary holds everything up to the last durable transaction, not the lost one.
  const reopened = await Store.open(primaryPath, STORE_OPTIONS);
  cleanups.push(() => reopened.close());
  expect(await reopened.read(lostSeid)).toBeUndefined();
  const server2 = await reopened.serveReplication({ unix: socket, secret: SECRET, ...quiet });
  v = await commitSome(reopened, seids, v, 30);
  await until(() => standby.stats().replication.seeds === 2, 20_000, "the standby to be re-seeded");
  await standby.caughtUp({ timeoutMs: 20_000 });
  expect(divergedSeeds(server2)).toBe(1);
  expect(await standby.read(lostSeid)).toBeUndefined();
  await expectSameState(reopened, standby, [1]);

  // And it follows on from the seed.
  await commitSome(reopened, seids, v, 30);
  await standby.caughtUp({ timeoutMs: 20_000 });
  await expectSameState(reopened, standby, [1]);
  expect(divergedSeeds(server2)).toBe(1);
}, 60_000);
