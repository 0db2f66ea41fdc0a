/**
 * The FIFO ticket lock across threads (src/workers/turn.ts), in one thread: waiters are served in
 * ticket order, a hand-off wakes only the next holder, closing wakes every waiter at once.
 */
import { describe, expect, test } from "bun:test";
import { StoreClosedError } from "../../src/errors.ts";
import { OWNER_ID, OwnerTurns, TurnLock } from "../../src/workers/turn.ts";
import { withTimeout } from "./util.ts";

/** A waiter's promise and whether it settled (and how). */
function watch(promise: Promise<void>): { promise: Promise<void>; state: () => string } {
  let state = "pending";
  const watched = promise.then(
    () => void (state = "served"),
    (error: unknown) => void (state = error instanceof StoreClosedError ? "closed" : `error ${String(error)}`),
  );
  return { promise: watched, state: () => state };
}

/** Let waitAsync wake-ups and their microtasks run. */
const settle = () => Bun.sleep(20);

describe("turn lock", () => {
  test("tickets are served in order; a hand-off wakes the next holder only", async () => {
    const lock = new TurnLock();
    const turns = new OwnerTurns(lock, () => true);
    const first = lock.takeNow(OWNER_ID) as number; // served: the owner holds the turn
    expect(lock.isServing(first)).toBe(true);
    // Three Workers (ids 2, 3, 4 on separate wake words) queue behind it.
    const tickets = [2, 3, 4].map((id) => ({ id, ticket: lock.takeNow(id) as number }));
    const waiters = tickets.map(({ id, ticket }) => watch(lock.waitFor(ticket, id)));
    await settle();
    expect(waiters.map((w) => w.state())).toEqual(["pending", "pending", "pending"]);
    for (let served = 0; served < 3; served++) {
      turns.passOn();
      await withTimeout(waiters[served]?.promise as Promise<void>, 5_000, `waiter ${served}`);
      await settle();
      expect(waiters.map((w) => w.state())).toEqual(waiters.map((_, i) => (i <= served ? "served" : "pending")));
    }
    turns.close();
  });

  test("a Worker's wake word is bumped only when one of its tickets is served", async () => {
    const lock = new TurnLock();
    const turns = new OwnerTurns(lock, () => true);
    const words = new Int32Array(lock.shared);
    const wakeBase = words.length - 2 - 256; // the Float64 tx id word follows the 256 wake words
    lock.takeNow(OWNER_ID);
    const a = lock.takeNow(7) as number;
    lock.takeNow(OWNER_ID);
    const b = lock.takeNow(9) as number;
    const waitA = watch(lock.waitFor(a, 7));
    const waitB = watch(lock.waitFor(b, 9));
    turns.passOn(); // serves 7's ticket
    await withTimeout(waitA.promise, 5_000, "a");
    expect([words[wakeBase + 7], words[wakeBase + 9]]).toEqual([1, 0]);
    turns.passOn(); // an owner ticket: no wake word
    expect([words[wakeBase + 7], words[wakeBase + 9]]).toEqual([1, 0]);
    turns.passOn(); // serves 9's ticket
    await withTimeout(waitB.promise, 5_000, "b");
    expect([words[wakeBase + 7], words[wakeBase + 9]]).toEqual([1, 1]);
    turns.close();
  });

  test("close wakes every waiter at once with StoreClosedError; a dead holder's ticket is skipped", async () => {
    const lock = new TurnLock();
    const alive = new Set([2, 3, 4, 5]);
    const turns = new OwnerTurns(lock, (id) => alive.has(id));
    lock.takeNow(OWNER_ID);
    const dead = lock.takeNow(2) as number;
    const next = lock.takeNow(3) as number;
    const later = [4, 5].map((id) => watch(lock.waitFor(lock.takeNow(id) as number, id)));
    const waitDead = watch(lock.waitFor(dead, 2));
    const waitNext = watch(lock.waitFor(next, 3));
    alive.delete(2);
    turns.passOn(); // 2 is gone: its ticket is passed over, 3 is served
    await withTimeout(waitNext.promise, 5_000, "next");
    await withTimeout(waitDead.promise, 5_000, "dead");
    expect([waitDead.state(), waitNext.state()]).toEqual(["closed", "served"]);
    const words = new Int32Array(lock.shared);
    const wakeBase = words.length - 2 - 256;
    turns.close();
    // Every wake word bumped: no waiter sleeps out its wait step.
    expect([words[wakeBase + 4], words[wakeBase + 5], words[wakeBase + 200]]).toEqual([1, 1, 1]);
    await withTimeout(Promise.all(later.map((w) => w.promise)), 5_000, "close");
    expect(later.map((w) => w.state())).toEqual(["closed", "closed"]);
  });
});
