/**
 * The commit gate: a word in shared memory counting the durable commits on the device now (a
 * write + datasync chain somebody awaits), so background I/O — a backup's base copy, in its
 * Worker or on the store's thread — can hold its next request until they are done instead of
 * queueing in front of the next one.
 *
 * Why: a serial writer's commit is one small write and a datasync; a 256 KiB read or write of a
 * backup issued just before it makes it wait for that transfer, and for the flush of everything
 * the backup wrote. Waiting for the gate before each step lets the copy run in the gaps between
 * commits. Measured with `bun bench/backup.ts` (serial durable commits of 100 B beside
 * back-to-back full backups of 162 MiB in the Worker, 2026-12-01): the commits' p99 rose by
 * 1.7–2.0 ms without the gate (the Worker at `SCHED_IDLE` or not, 256 KiB writes), by 0.68–0.92 ms
 * with it and the Worker at `SCHED_IDLE` (base-thread.ts); the copy went from ~380 to ~210 MiB/s
 * beside the writers, and the writers did ~60% more commits meanwhile.
 * A waiter waits at most its `maxMs` per step, so commits that never stop (64 in flight) slow a
 * copy down, never stop it.
 *
 * Cost on the commit path: an atomic add and subtract per awaited chain; the notify (a futex
 * wake) only when somebody waits.
 *
 * @module
 */

/** Index of the count of commits waiting on the device. */
const BUSY = 0;
/** Index of the count of background waiters (so a commit's end wakes nobody when nobody waits). */
const WAITERS = 1;
/** Index of the count of commits ever entered (wrapping): whether any came since a given moment. */
const ENTERED = 2;

/** See the module doc. One per log; its `shared` buffer goes to the backup Worker. */
export class CommitGate {
  readonly shared: SharedArrayBuffer;
  readonly #words: Int32Array;

  constructor(shared: SharedArrayBuffer = new SharedArrayBuffer(12)) {
    this.shared = shared;
    this.#words = new Int32Array(shared);
  }

  /** A commit's write + datasync was issued and somebody waits for it. */
  enter(): void {
    Atomics.add(this.#words, BUSY, 1);
    Atomics.add(this.#words, ENTERED, 1);
  }

  /** That commit's datasync ended (either way). */
  leave(): void {
    if (Atomics.sub(this.#words, BUSY, 1) === 1 && Atomics.load(this.#words, WAITERS) > 0) Atomics.notify(this.#words, BUSY);
  }

  /** Commits ever entered, wrapping at 2^32: equal readings mean none came in between. */
  get entered(): number {
    return Atomics.load(this.#words, ENTERED);
  }

  /** Commits the device works on now. */
  get busy(): number {
    return Atomics.load(this.#words, BUSY);
  }

  /**
   * Wait until no commit is on the device, at most `maxMs` (so a steady stream of commits slows
   * background I/O, never stops it).
   * @returns how long it waited, ms (0 when the device was free of commits)
   */
  async yieldTo(maxMs: number): Promise<number> {
    const words = this.#words;
    let busy = Atomics.load(words, BUSY);
    if (busy === 0) return 0;
    const started = performance.now();
    const deadline = started + maxMs;
    Atomics.add(words, WAITERS, 1);
    try {
      while (busy !== 0) {
        const left = deadline - performance.now();
        if (left <= 0) break;
        const waited = Atomics.waitAsync(words, BUSY, busy, left);
        if (waited.async) await waited.value;
        busy = Atomics.load(words, BUSY);
      }
    } finally {
      Atomics.sub(words, WAITERS, 1);
    }
    return performance.now() - started;
  }
}
