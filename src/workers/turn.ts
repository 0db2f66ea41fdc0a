/**
 * The transaction turn across threads: a FIFO ticket lock in a SharedArrayBuffer.
 *
 * Any thread takes a ticket (one `Atomics.add`, synchronous, so tickets follow call order across
 * the process) and records who holds it in a claims ring; it then waits, with
 * `Atomics.waitAsync` so its event loop keeps running, until SERVING reaches its ticket.
 *
 * **Only the opening thread (the owner) ever advances SERVING.** Every transaction, whoever runs
 * it, ends on the owner: it commits a Worker's shipped operations or hears its abort, and it learns
 * of a Worker's death from that Worker's socket. So passing the turn on never depends on a thread
 * that may be gone, and the owner can skip the tickets of dead Workers when it reaches them.
 *
 * Layout (Int32 words): NEXT, SERVING, CLOSED, then {@link CLAIMS} claim words (the holder's
 * attachment id at `ticket mod CLAIMS`, 0 while the taker has not written it yet, or
 * {@link SKIPPED}), then {@link WAKES} wake words, then one Float64: the last transaction id
 * handed out (the turn holder increments it, so a Worker knows its transaction's id without
 * asking anyone).
 *
 * Wake words: a Worker waits on the wake word of its attachment id (`id mod WAKES`), and the
 * owner, serving a ticket, bumps and notifies the word of that ticket's holder only. Why not all
 * waiters on SERVING: every hand-off then woke every waiting Worker, each a futex wake the owner
 * pays for and a thread that preempts it on a 2-core machine only to wait again (with 4 Workers
 * committing: 3 wasted wake-ups per turn). The waiter reads its wake word before it checks
 * SERVING, and the owner bumps it after it stores SERVING, so no serving is missed.
 *
 * Orphans: a thread killed between its `Atomics.add` and its claim leaves a ticket with no claim.
 * The owner, reaching such a ticket, gives its taker {@link ORPHAN_GRACE_MS} (two synchronous
 * statements take nanoseconds) and then skips it with a CAS; a live taker whose CAS then fails
 * takes a new ticket, so a skip can never lose a transaction.
 *
 * @module
 */
import { StoreClosedError } from "../errors.ts";

/** Claim words: tickets outstanding at once are kept below half of this (backpressure, no error). */
export const CLAIMS = 1 << 16;
/** A claim word the owner wrote over an orphaned ticket. */
export const SKIPPED = -1;
/** The owner thread's attachment id. */
export const OWNER_ID = 1;
/** How long the owner waits for the claim of a taken ticket before skipping it as orphaned. */
export const ORPHAN_GRACE_MS = 1000;
/** Longest single `waitAsync`; between steps a waiter checks whether the store closed. */
const WAIT_STEP_MS = 250;

/** Wake words (see the module doc): attachments whose ids agree modulo this share one. */
const WAKES = 256;

const NEXT = 0;
const SERVING = 1;
const CLOSED = 2;
const CLAIM_BASE = 4;
const WAKE_BASE = CLAIM_BASE + CLAIMS;
const HEADER_WORDS = WAKE_BASE + WAKES;
/** Byte offset of the Float64 last-tx-id word (8-aligned). */
const TXID_BYTE = HEADER_WORDS * 4;

/** `a − b` on wrapping int32 ticket numbers. */
function diff(a: number, b: number): number {
  return (a - b) | 0;
}

/** The shared words of a turn lock and what every thread can do with them. */
export class TurnLock {
  readonly shared: SharedArrayBuffer;
  private readonly words: Int32Array;
  /** `[0]`: the last transaction id handed out (shared with CommitPath once the store is shared). */
  readonly txIds: Float64Array;

  constructor(shared?: SharedArrayBuffer) {
    this.shared = shared ?? new SharedArrayBuffer(TXID_BYTE + 8);
    this.words = new Int32Array(this.shared, 0, HEADER_WORDS);
    this.txIds = new Float64Array(this.shared, TXID_BYTE, 1);
  }

  get closed(): boolean {
    return Atomics.load(this.words, CLOSED) !== 0;
  }

  /** Tickets taken and not yet passed on (the one being served included). */
  get outstanding(): number {
    return diff(Atomics.load(this.words, NEXT), Atomics.load(this.words, SERVING));
  }

  get serving(): number {
    return Atomics.load(this.words, SERVING);
  }

  /** The attachment id that claimed `ticket` (0: not yet written, {@link SKIPPED}: skipped). */
  claimOf(ticket: number): number {
    return Atomics.load(this.words, CLAIM_BASE + (ticket & (CLAIMS - 1)));
  }

  /**
   * Take a ticket for attachment `id`: synchronous, so tickets follow call order. While half of
   * the claim ring is outstanding the taker first waits for room (backpressure, never an error).
   */
  async take(id: number): Promise<number> {
    for (;;) {
      while (this.outstanding >= CLAIMS / 2) await this.waitServingChange(this.serving);
      const ticket = this.takeNow(id);
      if (ticket !== undefined) return ticket;
    }
  }

  /** Take a ticket without waiting for room; undefined if it was skipped (orphan watchdog). */
  takeNow(id: number): number | undefined {
    if (this.closed) throw new StoreClosedError("the store is closed");
    const ticket = Atomics.add(this.words, NEXT, 1);
    // A CAS, not a store: the owner may have skipped this ticket as orphaned meanwhile.
    return Atomics.compareExchange(this.words, CLAIM_BASE + (ticket & (CLAIMS - 1)), 0, id) === 0 ? ticket : undefined;
  }

  /** True once SERVING is `ticket`: the holder of `ticket` may run. */
  isServing(ticket: number): boolean {
    return Atomics.load(this.words, SERVING) === ticket;
  }

  /**
   * Wait (event loop running) until `ticket`, taken by attachment `id`, is served. Throws
   * `StoreClosedError` if the store closes first, if `gone()` says the owner is unreachable, or if
   * the owner passed the ticket over (it declared the holder gone).
   */
  async waitFor(ticket: number, id: number, gone?: () => boolean): Promise<void> {
    const wake = WAKE_BASE + (id & (WAKES - 1));
    for (;;) {
      if (gone?.() === true) throw new StoreClosedError("the store's owner thread is gone");
      // The wake word first, then SERVING: a serving stored after this load bumps the word, so
      // the wait below returns at once instead of sleeping through it.
      const seen = Atomics.load(this.words, wake);
      const serving = Atomics.load(this.words, SERVING);
      if (serving === ticket) return;
      if (diff(serving, ticket) > 0) throw new StoreClosedError("the store's owner passed this transaction's turn over (the store closed or detached this thread)");
      if (this.closed) throw new StoreClosedError("the store is closed");
      const result = Atomics.waitAsync(this.words, wake, seen, WAIT_STEP_MS);
      if (result.async) await result.value;
    }
  }

  private async waitServingChange(seen: number): Promise<void> {
    const result = Atomics.waitAsync(this.words, SERVING, seen, WAIT_STEP_MS);
    if (result.async) await result.value;
  }

  // ───────────────────────────── owner only ─────────────────────────────

  /** Owner: the served ticket is done; clear its claim and serve the next. Returns the new SERVING. */
  advance(): number {
    const serving = Atomics.load(this.words, SERVING);
    const crowded = diff(Atomics.load(this.words, NEXT), serving) >= CLAIMS / 2;
    Atomics.store(this.words, CLAIM_BASE + (serving & (CLAIMS - 1)), 0);
    const next = (serving + 1) | 0;
    Atomics.store(this.words, SERVING, next);
    // Wake only the next holder (a claim not written yet: its taker checks SERVING before it
    // waits; the owner's own turns resolve without a wake-up).
    const claim = Atomics.load(this.words, CLAIM_BASE + (next & (CLAIMS - 1)));
    if (claim > OWNER_ID) this.wake(claim);
    // Takers waiting for room in the claim ring wait on SERVING (see take).
    if (crowded) Atomics.notify(this.words, SERVING);
    return next;
  }

  private wake(id: number): void {
    const word = WAKE_BASE + (id & (WAKES - 1));
    Atomics.add(this.words, word, 1);
    Atomics.notify(this.words, word);
  }

  /** Owner: skip an orphaned ticket (claim still 0). True if it was skipped. */
  skipOrphan(ticket: number): boolean {
    return Atomics.compareExchange(this.words, CLAIM_BASE + (ticket & (CLAIMS - 1)), 0, SKIPPED) === 0;
  }

  /** True while some ticket after SERVING has been taken. */
  get hasWaiting(): boolean {
    return this.outstanding > 0;
  }

  /** Owner: mark the lock closed and wake every waiter (they throw `StoreClosedError`). */
  close(): void {
    Atomics.store(this.words, CLOSED, 1);
    Atomics.notify(this.words, SERVING);
    for (let id = 0; id < WAKES; id++) this.wake(id);
  }
}

/**
 * The owner's side of the lock: its own turns (resolved directly, a microtask, not a wake-up), and
 * the rule that passes the turn on — skipping dead attachments and orphans.
 */
export class OwnerTurns {
  readonly lock: TurnLock;
  private readonly waiters = new Map<number, () => void>();
  private readonly isAlive: (id: number) => boolean;
  private orphanTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(lock: TurnLock, isAlive: (id: number) => boolean) {
    this.lock = lock;
    this.isAlive = isAlive;
  }

  /** An owner-thread turn, as CommitPath.takeTurn returns it. */
  takeTurn(): { ready: Promise<void>; release: () => void } {
    let ticket: number | undefined;
    let released = false;
    const ready = (async () => {
      ticket = await this.lock.take(OWNER_ID);
      if (this.lock.isServing(ticket)) return;
      await new Promise<void>((resolve) => this.waiters.set(ticket as number, resolve));
    })();
    const release = () => {
      if (released) return;
      released = true;
      // Released before it was served (the caller gave up): it still passes when reached.
      if (ticket !== undefined && this.lock.isServing(ticket)) this.passOn();
      else void ready.then(() => this.passOn(), () => {});
    };
    return { ready, release };
  }

  /**
   * The served ticket is done (its holder committed or aborted, or died): serve the next live one.
   * Dead attachments' tickets are skipped; an owner ticket is resolved at once; a Worker wakes on
   * the notify inside `advance()`.
   */
  passOn(): void {
    let serving = this.lock.advance();
    for (;;) {
      if (!this.lock.hasWaiting) return;
      const claim = this.lock.claimOf(serving);
      if (claim === SKIPPED || (claim > OWNER_ID && !this.isAlive(claim))) {
        serving = this.lock.advance();
        continue;
      }
      if (claim === OWNER_ID) {
        const resolve = this.waiters.get(serving);
        if (resolve !== undefined) {
          this.waiters.delete(serving);
          resolve();
        }
        // else: the owner's taker has not registered yet; it sees isServing() itself.
        return;
      }
      if (claim === 0) this.watchOrphan(serving);
      return;
    }
  }

  /** The served ticket belongs to `id` (a Worker now gone): pass it on. */
  passOnIfHeldBy(id: number): boolean {
    if (this.lock.claimOf(this.lock.serving) !== id || !this.lock.hasWaiting) return false;
    this.passOn();
    return true;
  }

  private watchOrphan(ticket: number): void {
    if (this.orphanTimer !== undefined) return;
    this.orphanTimer = setTimeout(() => {
      this.orphanTimer = undefined;
      if (!this.lock.isServing(ticket) || !this.lock.hasWaiting) return;
      if (this.lock.claimOf(ticket) === 0 && this.lock.skipOrphan(ticket)) {
        this.passOn();
      } else if (this.lock.claimOf(ticket) === 0) {
        this.watchOrphan(ticket);
      } else if (this.lock.claimOf(ticket) === OWNER_ID) {
        // Claimed by the owner after passOn looked: resolve it now.
        const resolve = this.waiters.get(ticket);
        if (resolve !== undefined) {
          this.waiters.delete(ticket);
          resolve();
        }
      }
    }, ORPHAN_GRACE_MS);
    this.orphanTimer.unref?.();
  }

  /** Close: wake every waiter (owner waiters reject through the store's own closed checks). */
  close(): void {
    if (this.orphanTimer !== undefined) clearTimeout(this.orphanTimer);
    this.lock.close();
    for (const resolve of this.waiters.values()) resolve();
    this.waiters.clear();
  }
}
