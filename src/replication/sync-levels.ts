/**
 * Synchronous replication levels, as PostgreSQL's `synchronous_commit`, without its forever-wait.
 *
 * | level | a commit resolves when (besides the store's own durability) |
 * |---|---|
 * | `async` | at once |
 * | `received` | a standby has received the log holding its Commit record |
 * | `durable` | a standby has applied it and that apply is on the standby's disk |
 * | `applied` | as `durable`, and visible to the standby's readers (see below) |
 *
 * A standby applies a transaction by committing it through its own commit path, which makes it
 * visible a moment before it is durable there; so `applied` (visible *and* durable) is the
 * strongest level and, in this design, is confirmed by the same acknowledgement as `durable`.
 *
 * Waiting is bounded: after `timeoutMs` with no standby confirming, the policy decides —
 * `degrade`: the commit resolves, the primary counts it, emits `degraded` and stops waiting until
 * a standby has caught up again (then `restored`); `fail`: the commit rejects with
 * {@link ReplicationTimeoutError} (it *is* committed and durable on the primary). A fenced
 * primary's waits reject with {@link FencedError}.
 *
 * Positions are the primary's log addresses: a commit waits for an acknowledgement at or past
 * the end of its Commit record.
 *
 * @module
 */
import { FencedError, InvalidArgumentError, ReplicationTimeoutError } from "../errors.ts";

/** How far a commit's replication must get before its promise resolves. */
export type ReplicationLevel = "async" | "received" | "durable" | "applied";

/** What to do when no standby confirms within the timeout. */
export type ReplicationTimeoutPolicy = "degrade" | "fail";

export const REPLICATION_LEVELS: readonly ReplicationLevel[] = ["async", "received", "durable", "applied"];

/** Most commits waiting for a standby at once; past it a commit waits for room (bounded memory). */
export const MAX_SYNC_WAITERS = 65_536;

export function checkLevel(level: unknown, what: string): ReplicationLevel {
  if (typeof level !== "string" || !(REPLICATION_LEVELS as readonly string[]).includes(level)) {
    throw new InvalidArgumentError(`${what} must be one of ${REPLICATION_LEVELS.join(", ")}, got ${JSON.stringify(level)}`);
  }
  return level as ReplicationLevel;
}

interface Waiter {
  position: number;
  level: "received" | "durable";
  /** When it times out (performance.now() ms). */
  deadline: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** Counters of the sync levels, for stats. */
export interface SyncCounters {
  /** Commits that waited for a standby and got its confirmation. */
  confirmed: number;
  /** Commits that timed out (each `degrade` or `fail`). */
  timeouts: number;
  /** Commits that did not wait because the primary was degraded. */
  degradedCommits: number;
}

/**
 * How long after a commit last waited for `received` the primary still asks standbys to
 * acknowledge units as they arrive (see {@link SyncWaiters.wantsReceivedAcks}).
 */
export const RECEIVED_ACKS_FOR_MS = 1_000;

/**
 * The waiting commits of one primary.
 *
 * **One timer.** Each waiting commit used to arm its own `setTimeout` and clear it on the
 * acknowledgement: 64 commits in flight armed and cleared 64 timers per round trip to the
 * standby (`setTimeout` alone was 1.5% of the primary's CPU samples in `bun bench/replication.ts`).
 * Now one timer is armed for the oldest deadline and re-armed when it fires; deadlines are kept
 * per waiter.
 */
export class SyncWaiters {
  private readonly timeoutMs: number;
  private readonly policy: ReplicationTimeoutPolicy;
  private readonly emit: (event: "degraded" | "restored", detail: string) => void;
  private readonly defaultLevel: ReplicationLevel;
  private waiters: Waiter[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Best acknowledged positions over every standby. */
  private received = 0;
  private durable = 0;
  /** Highest position a commit asked for: a standby at or past it has caught up. */
  private highest = 0;
  /** When a commit last waited for `received` (performance.now() ms). */
  private receivedWaitAt = Number.NEGATIVE_INFINITY;
  degraded = false;
  fenced: FencedError | undefined;
  readonly counters: SyncCounters = { confirmed: 0, timeouts: 0, degradedCommits: 0 };

  constructor(options: { timeoutMs: number; policy: ReplicationTimeoutPolicy; emit: (event: "degraded" | "restored", detail: string) => void; level?: ReplicationLevel }) {
    this.timeoutMs = options.timeoutMs;
    this.policy = options.policy;
    this.emit = options.emit;
    this.defaultLevel = options.level ?? "async";
  }

  /**
   * Whether standbys should acknowledge each unit as it arrives (`received`), not only once it is
   * durable there: when the store's level is `received`, or a commit waited for `received` in the
   * last {@link RECEIVED_ACKS_FOR_MS}. Otherwise every acknowledgement a standby sends is one of
   * durability (which also confirms receipt): half the acknowledgements, each a write on the
   * standby and a wake-up, read and parse on the primary. Measured (`bun bench/replication.ts`,
   * 64 durable commits in flight): +5–15% commits/s. A `received` commit that arrives after a
   * quiet spell is confirmed by the durable acknowledgement of its unit, or by the received one of
   * the next unit — later, never wrongly: the level is a lower bound.
   */
  wantsReceivedAcks(now = performance.now()): boolean {
    return this.defaultLevel === "received" || now - this.receivedWaitAt < RECEIVED_ACKS_FOR_MS;
  }

  /** Resolves when `level` holds for the commit ending at `position` (see the module doc). */
  wait(position: number, level: ReplicationLevel): Promise<void> {
    if (position > this.highest) this.highest = position;
    if (level === "async") return Promise.resolve();
    if (this.fenced !== undefined) return Promise.reject(this.fenced);
    const kind = level === "received" ? "received" : "durable";
    if (kind === "received") this.receivedWaitAt = performance.now();
    if ((kind === "received" ? this.received : this.durable) >= position) {
      this.counters.confirmed += 1;
      return Promise.resolve();
    }
    if (this.degraded) {
      this.counters.degradedCommits += 1;
      return Promise.resolve();
    }
    if (this.waiters.length >= MAX_SYNC_WAITERS) {
      // Bounded: a flood of waiting commits fails fast rather than growing memory.
      return Promise.reject(new ReplicationTimeoutError(`more than ${MAX_SYNC_WAITERS} commits wait for a standby`));
    }
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ position, level: kind, deadline: performance.now() + this.timeoutMs, resolve, reject });
      this.timer ??= setTimeout(() => this.expire(), this.timeoutMs);
    });
  }

  /** A standby acknowledged up to these positions. */
  acknowledge(received: number, durable: number): void {
    if (received > this.received) this.received = received;
    if (durable > this.durable) this.durable = durable;
    if (this.waiters.length > 0) {
      const keep: Waiter[] = [];
      for (const w of this.waiters) {
        if ((w.level === "received" ? this.received : this.durable) >= w.position) {
          this.counters.confirmed += 1;
          w.resolve();
        } else keep.push(w);
      }
      this.waiters = keep;
      if (keep.length === 0) this.stopTimer();
    }
    if (this.degraded && this.durable >= this.highest) {
      this.degraded = false;
      this.emit("restored", `a standby caught up to ${this.durable}: commits wait for standbys again`);
    }
  }

  /** Forget acknowledgements (a standby that acknowledged them is gone, its replacement starts lower). */
  resetBest(received: number, durable: number): void {
    this.received = received;
    this.durable = durable;
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * The timer fired: the waiters past their deadline time out, and it is armed again for the next
   * one. Deadlines follow the order waiters arrived in (each is its arrival plus `timeoutMs`), and
   * `waiters` keeps that order, so the late ones are a prefix and the next deadline is the first.
   */
  private expire(): void {
    this.timer = undefined;
    const now = performance.now();
    if ((this.waiters[0]?.deadline ?? Infinity) <= now) this.timedOut(now);
    const next = this.waiters[0];
    if (next !== undefined) this.timer = setTimeout(() => this.expire(), Math.max(0, next.deadline - now));
  }

  private timedOut(now: number): void {
    if (this.policy === "fail") {
      // Each waiter past its deadline fails (as its own timer would have).
      let late = 0;
      while (late < this.waiters.length && (this.waiters[late] as Waiter).deadline <= now) late += 1;
      const failed = this.waiters.splice(0, late);
      this.counters.timeouts += failed.length;
      for (const w of failed) {
        w.reject(new ReplicationTimeoutError(`no standby confirmed "${w.level}" within ${this.timeoutMs} ms (the transaction is committed on the primary only)`));
      }
      return;
    }
    // degrade: the first late commit and every other waiting one go on as async.
    this.counters.timeouts += 1;
    this.degraded = true;
    const all = this.waiters;
    this.waiters = [];
    this.stopTimer();
    this.counters.degradedCommits += all.length - 1;
    for (const w of all) w.resolve();
    this.emit("degraded", `no standby confirmed within ${this.timeoutMs} ms: replication degraded to async`);
  }

  /** The primary was fenced (a newer epoch exists): every wait fails from now on. */
  fence(error: FencedError): void {
    this.fenced = error;
    this.rejectAll(error);
  }

  /** Closing: waiting commits resolve (their transactions are committed locally). */
  close(): void {
    const all = this.waiters;
    this.waiters = [];
    this.stopTimer();
    for (const w of all) w.resolve();
  }

  private rejectAll(error: Error): void {
    const all = this.waiters;
    this.waiters = [];
    this.stopTimer();
    for (const w of all) w.reject(error);
  }

  get waiting(): number {
    return this.waiters.length;
  }
}
