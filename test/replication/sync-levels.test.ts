/**
 * The waiting commits of a primary (src/replication/sync-levels.ts) with their one timer: under
 * `fail` each waiter times out at its own deadline (the later ones later, not all at the first
 * one's), under `degrade` the first late one lets every waiter go and counts them, and an
 * acknowledgement that confirms every waiter stops the timer (no timeout afterwards). Every wait
 * has a deadline.
 */
import { expect, test } from "bun:test";
import { ReplicationTimeoutError } from "../../src/index.ts";
import { SyncWaiters } from "../../src/replication/sync-levels.ts";

function settled(promise: Promise<void>): { state: () => "pending" | "resolved" | "rejected"; error: () => unknown } {
  let state: "pending" | "resolved" | "rejected" = "pending";
  let error: unknown;
  promise.then(
    () => (state = "resolved"),
    (e: unknown) => ((state = "rejected"), (error = e)),
  );
  return { state: () => state, error: () => error };
}

async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(2);
  }
}

test("fail: each waiter times out at its own deadline; the confirmed ones never", async () => {
  const events: string[] = [];
  // Long enough that a loaded machine's late timers cannot reorder what the test looks at.
  const sync = new SyncWaiters({ timeoutMs: 400, policy: "fail", emit: (event) => events.push(event) });
  const early = [settled(sync.wait(10, "durable")), settled(sync.wait(20, "received"))];
  const confirmed = settled(sync.wait(30, "durable"));
  await Bun.sleep(50);
  const late = settled(sync.wait(40, "durable"));
  sync.acknowledge(30, 30); // confirms all three early ones
  await until(() => late.state() !== "pending", 5_000, "the late waiter's timeout");
  expect(early.map((w) => w.state())).toEqual(["resolved", "resolved"]);
  expect(confirmed.state()).toBe("resolved");
  expect(late.state()).toBe("rejected");
  expect(late.error()).toBeInstanceOf(ReplicationTimeoutError);
  expect(sync.counters).toEqual({ confirmed: 3, timeouts: 1, degradedCommits: 0 });

  // Two waiters 250 ms apart: the first fails at ~400 ms, the second is still waiting then.
  const first = settled(sync.wait(50, "durable"));
  await Bun.sleep(250);
  const second = settled(sync.wait(60, "durable"));
  await until(() => first.state() !== "pending", 5_000, "the first timeout");
  expect(first.state()).toBe("rejected");
  expect(second.state()).toBe("pending");
  await until(() => second.state() !== "pending", 5_000, "the second timeout");
  expect(second.state()).toBe("rejected");
  expect(sync.counters.timeouts).toBe(3);
  expect(sync.waiting).toBe(0);
  expect(events).toEqual([]);
});

test("degrade: the first late waiter lets every waiter go, counted; then commits do not wait", async () => {
  const events: string[] = [];
  const sync = new SyncWaiters({ timeoutMs: 60, policy: "degrade", emit: (event) => events.push(event) });
  const waiters = [settled(sync.wait(10, "durable")), settled(sync.wait(20, "durable")), settled(sync.wait(30, "received"))];
  await until(() => waiters.every((w) => w.state() !== "pending"), 5_000, "degrading");
  expect(waiters.map((w) => w.state())).toEqual(["resolved", "resolved", "resolved"]);
  expect(sync.degraded).toBe(true);
  expect(events).toEqual(["degraded"]);
  expect(sync.counters).toEqual({ confirmed: 0, timeouts: 1, degradedCommits: 2 });
  await sync.wait(40, "durable"); // degraded: at once
  expect(sync.counters.degradedCommits).toBe(3);
  sync.acknowledge(40, 40); // caught up
  expect(events).toEqual(["degraded", "restored"]);
});

test("every waiter confirmed: the timer is stopped, nothing times out later", async () => {
  const sync = new SyncWaiters({ timeoutMs: 40, policy: "fail", emit: () => {} });
  const waiters = [settled(sync.wait(10, "durable")), settled(sync.wait(20, "durable"))];
  sync.acknowledge(20, 20);
  await Bun.sleep(120);
  expect(waiters.map((w) => w.state())).toEqual(["resolved", "resolved"]);
  expect(sync.counters).toEqual({ confirmed: 2, timeouts: 0, degradedCommits: 0 });
});
