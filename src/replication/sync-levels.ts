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
  resolve: () => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
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

/** The waiting commits of one primary. */
export class SyncWaiters {
  private readonly timeoutMs: number;
  private readonly policy: ReplicationTimeoutPolicy;
  private readonly emit: (event: "degraded" | "restored", detail: string) => void;
  private waiters: Waiter[] = [];
  /** Best acknowledged positions over every standby. */
  private received = 0;
  private durable = 0;
  /** Highest position a commit asked for: a standby at or past it has caught up. */
  private highest = 0;
  degraded = false;
  fenced: FencedError | undefined;
  readonly counters: SyncCounters = { confirmed: 0, timeouts: 0, degradedCommits: 0 };

  constructor(options: { timeoutMs: number; policy: ReplicationTimeoutPolicy; emit: (event: "degraded" | "restored", detail: string) => void }) {
    this.timeoutMs = options.timeoutMs;
    this.policy = options.policy;
    this.emit = options.emit;
  }

  /** Resolves when `level` holds for the commit ending at `position` (see the module doc). */
  wait(position: number, level: ReplicationLevel): Promise<void> {
    if (position > this.highest) this.highest = position;
    if (level === "async") return Promise.resolve();
    if (this.fenced !== undefined) return Promise.reject(this.fenced);
    const kind = level === "received" ? "received" : "durable";
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
      const waiter: Waiter = {
        position,
        level: kind,
        resolve,
        reject,
        timer: setTimeout(() => this.timedOut(waiter), this.timeoutMs),
      };
      this.waiters.push(waiter);
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
          clearTimeout(w.timer);
          this.counters.confirmed += 1;
          w.resolve();
        } else keep.push(w);
      }
      this.waiters = keep;
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

  private timedOut(waiter: Waiter): void {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return;
    this.counters.timeouts += 1;
    if (this.policy === "fail") {
      this.waiters.splice(index, 1);
      waiter.reject(
        new ReplicationTimeoutError(
          `no standby confirmed "${waiter.level}" within ${this.timeoutMs} ms (the transaction is committed on the primary only)`,
        ),
      );
      return;
    }
    // degrade: this commit and every other waiting one go on as async.
    this.degraded = true;
    const all = this.waiters;
    this.waiters = [];
    for (const w of all) {
      clearTimeout(w.timer);
      if (w !== waiter) this.counters.degradedCommits += 1;
      w.resolve();
    }
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
    for (const w of all) {
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  private rejectAll(error: Error): void {
    const all = this.waiters;
    this.waiters = [];
    for (const w of all) {
      clearTimeout(w.timer);
      w.reject(error);
    }
  }

  get waiting(): number {
    return this.waiters.length;
  }
}
