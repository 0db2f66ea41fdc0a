/**
 * Promise-shaped I/O over a backend's batched submit/reap: each call gets its own user data, and
 * one pump reaps completions for everybody who shares the backend. Short reads and errno results
 * become typed errors here, so the layers above see either the whole transfer or an exception.
 *
 * @module
 */
import { linkSucceeded, type FileHandle, type IoBackend, type IoCompletion, type IoOp, type NativeBuffer } from "./backend.ts";
import { CorruptionError, errorFromErrno, NoSpaceError } from "../errors.ts";
import { ECANCELED } from "./errno.ts";
import type { CommitGate } from "./commit-gate.ts";

/** Longest single blocking wait of the pump; short so timers and other callers keep running. */
const PUMP_WAIT_MS = 50;

/**
 * Lone chains sent through the backend's queue after one done with system calls took longer than
 * `loneChainBlockUs`: a slow spell of the disk is not spent blocking the thread; then it tries again.
 */
export const SLOW_SYNC_BACKOFF_CHAINS = 64;

/** The write of a write + datasync chain. */
interface WriteArgs {
  readonly file: FileHandle;
  readonly buffer: NativeBuffer;
  readonly bufferOffset: number;
  readonly lengthBytes: number;
  readonly fileOffset: number;
}

interface Pending {
  resolve: (result: number) => void;
  reject: (error: Error) => void;
}

/**
 * A write that transferred less than asked. On a regular file (or a block device's end) Linux
 * does that only when it ran out of room part way (the disk, a quota, the file size limit), and
 * the rest would fail with ENOSPC: so it is a {@link NoSpaceError}, which the log retries.
 */
function shortWrite(written: number, lengthBytes: number, fileOffset: number, file: FileHandle): NoSpaceError {
  return new NoSpaceError(`short write ${written}/${lengthBytes} at ${fileOffset} of ${file.path}: the disk is full`);
}

/** Promise-returning reads, writes and datasyncs over one backend. */
export class IoQueue {
  readonly backend: IoBackend;
  private nextUserData = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly backlog: IoOp[] = [];
  private pumping = false;
  private readonly completions: IoCompletion[] = [];
  /** Outstanding members of link chains: user data → chain (the user data of its first op). */
  private readonly chainMembers = new Map<number, number>();
  /** Chains with members outstanding, and how many each has. */
  private readonly chainsOutstanding = new Map<number, number>();

  /**
   * How long the pump may block the JS thread in the kernel when all that is outstanding is one
   * link chain (a lone commit's write and datasync), µs, at most `MAX_WAIT_BLOCK_US`; 0 (the
   * default) never blocks. The log sets it from the store's `commitWaitBlockUs` (config.ts).
   */
  loneChainBlockUs: number;

  /** Lone write + datasync chains done with system calls on this thread (a statistic). */
  syncCallChains = 0;
  /** Lone chains still to go through the queue after a slow one (see SLOW_SYNC_BACKOFF_CHAINS). */
  private slowChainsLeft = 0;
  /** Lone chains waiting for their turn of the event loop (writeThenSyncNext). */
  private deferred = 0;

  /** Counts awaited write + datasync chains on the device (see commit-gate.ts); the log's queue has one. */
  readonly gate: CommitGate | undefined;

  constructor(backend: IoBackend, options: { loneChainBlockUs?: number; gate?: CommitGate } = {}) {
    this.backend = backend;
    this.loneChainBlockUs = options.loneChainBlockUs ?? 0;
    this.gate = options.gate;
  }

  /** Operations issued and not yet finished (including those waiting for queue room). */
  get outstanding(): number {
    return this.pending.size + this.deferred;
  }

  /** Write `lengthBytes` from `buffer` at `bufferOffset` to `fileOffset`; rejects on any error or short write. */
  async write(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): Promise<void> {
    const written = await this.issue((userData) => ({ op: "write", fd: file.fd, buffer, bufferOffset, lengthBytes, fileOffset, userData }), `write ${file.path}@${fileOffset}+${lengthBytes}`);
    if (written !== lengthBytes) throw shortWrite(written, lengthBytes, fileOffset, file);
  }

  /** Read exactly `lengthBytes`; a read past the end of the file is a `CorruptionError`. */
  async read(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): Promise<void> {
    const got = await this.issue((userData) => ({ op: "read", fd: file.fd, buffer, bufferOffset, lengthBytes, fileOffset, userData }), `read ${file.path}@${fileOffset}+${lengthBytes}`);
    if (got !== lengthBytes) {
      throw new CorruptionError(`read of ${lengthBytes} bytes at ${fileOffset} of ${file.path} got ${got}: past the end of the file`);
    }
  }

  /** Read up to `lengthBytes`; resolves with how many were read (fewer at the end of the file, 0 past it). */
  readSome(file: FileHandle, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, fileOffset: number): Promise<number> {
    return this.issue((userData) => ({ op: "read", fd: file.fd, buffer, bufferOffset, lengthBytes, fileOffset, userData }), `read ${file.path}@${fileOffset}+${lengthBytes}`);
  }

  /** fdatasync through the backend's queue. */
  async datasync(file: FileHandle): Promise<void> {
    await this.issue((userData) => ({ op: "datasync", fd: file.fd, userData }), `fdatasync ${file.path}`);
  }

  /**
   * A write and an fdatasync linked in one submission (see `IoOp.link`): the datasync starts only
   * once the write has completed whole, so when `synced` resolves the write is on stable storage
   * — one device round trip and one wake-up of this thread instead of two. If the write fails (or
   * is short) `written` rejects with its error and `synced` with ECANCELED. `awaited`: somebody
   * waits for this datasync now, so it may be done with system calls (writeThenSyncNext).
   */
  writeThenSync(
    file: FileHandle,
    buffer: NativeBuffer,
    bufferOffset: number,
    lengthBytes: number,
    fileOffset: number,
    awaited = false,
  ): { written: Promise<void>; synced: Promise<void> } {
    const write: WriteArgs = { file, buffer, bufferOffset, lengthBytes, fileOffset };
    if (!awaited) return this.writeThenSyncQueued(write);
    if (this.slowChainsLeft > 0) this.slowChainsLeft -= 1;
    else if (this.mayCallNow()) return this.writeThenSyncNext(write);
    return this.awaitedThroughQueue(write);
  }

  /** An awaited chain through the queue, counted on the commit gate until its datasync ends. */
  private awaitedThroughQueue(write: WriteArgs): { written: Promise<void>; synced: Promise<void> } {
    const gate = this.gate;
    gate?.enter();
    const chain = this.writeThenSyncQueued(write);
    if (gate !== undefined) chain.synced.then(() => gate.leave(), () => gate.leave());
    return chain;
  }

  private writeThenSyncQueued({ file, buffer, bufferOffset, lengthBytes, fileOffset }: WriteArgs): { written: Promise<void>; synced: Promise<void> } {
    const what = `write ${file.path}@${fileOffset}+${lengthBytes}`;
    const [write, sync] = this.issueChain(
      [
        (userData) => ({ op: "write", fd: file.fd, buffer, bufferOffset, lengthBytes, fileOffset, userData, link: true }),
        (userData) => ({ op: "datasync", fd: file.fd, userData }),
      ],
      [what, `fdatasync ${file.path} (linked after ${what})`],
    ) as [Promise<number>, Promise<number>];
    const written = write.then((count) => {
      if (count !== lengthBytes) throw shortWrite(count, lengthBytes, fileOffset, file);
    });
    return { written, synced: sync.then(() => undefined) };
  }

  /**
   * Whether a write + datasync chain issued now would be alone in flight and may be done with
   * plain system calls on this thread: the caller allows blocking it (`loneChainBlockUs` > 0),
   * the backend can, and nothing else is in flight or waiting.
   */
  private mayCallNow(): boolean {
    const backend = this.backend;
    return (
      backend.writeThenSyncNow !== undefined &&
      this.loneChainBlockUs > 0 &&
      this.pending.size === 0 &&
      this.backlog.length === 0 &&
      this.deferred === 0 &&
      backend.inFlight === 0 &&
      !backend.closed
    );
  }

  /**
   * A lone write + datasync chain with plain system calls, on the next turn of the event loop.
   * Why system calls: through io_uring the kernel hands the datasync to one of its worker threads,
   * then wakes ours, which made a lone durable commit cost 120–147 µs where `pwrite` +
   * `fdatasync` cost 64–77 µs (2026-12-01, docs/ARCHITECTURE.md). Why the next turn: a commit
   * whose I/O finished within microtasks would let a loop of commits run without ever giving
   * timers, sockets and the store's own background work (the cleaner) a turn — measured: the
   * cleaner fell behind and the file grew to 1.9–2.0× the live data instead of 1.5×. On that turn
   * the chain goes through the queue instead if it is no longer alone (the turn may have issued
   * other I/O). A call that took longer than `loneChainBlockUs` sends the next
   * {@link SLOW_SYNC_BACKOFF_CHAINS} lone chains through the queue, where the thread never blocks
   * past it.
   */
  private writeThenSyncNext(write: WriteArgs): { written: Promise<void>; synced: Promise<void> } {
    const { file, buffer, bufferOffset, lengthBytes, fileOffset } = write;
    this.deferred += 1;
    let settleWritten!: (outcome: Promise<void>) => void;
    let settleSynced!: (outcome: Promise<void>) => void;
    const written = new Promise<void>((resolve) => (settleWritten = resolve));
    const synced = new Promise<void>((resolve) => (settleSynced = resolve));
    setImmediate(() => {
      this.deferred -= 1;
      if (!this.mayCallNow()) {
        const queued = this.awaitedThroughQueue(write);
        settleWritten(queued.written);
        settleSynced(queued.synced);
        return;
      }
      const what = `write ${file.path}@${fileOffset}+${lengthBytes}`;
      const started = performance.now();
      this.gate?.enter();
      const result = (this.backend.writeThenSyncNow as NonNullable<IoBackend["writeThenSyncNow"]>)(file, buffer, bufferOffset, lengthBytes, fileOffset);
      this.gate?.leave();
      if ((performance.now() - started) * 1000 > this.loneChainBlockUs) this.slowChainsLeft = SLOW_SYNC_BACKOFF_CHAINS;
      this.syncCallChains += 1;
      const count = result.written;
      settleWritten(
        count < 0 ? Promise.reject(errorFromErrno(count, what)) : count !== lengthBytes ? Promise.reject(shortWrite(count, lengthBytes, fileOffset, file)) : Promise.resolve(),
      );
      settleSynced(result.synced < 0 ? Promise.reject(errorFromErrno(result.synced, `fdatasync ${file.path} (after ${what})`)) : Promise.resolve());
    });
    return { written, synced };
  }

  private issue(make: (userData: number) => IoOp, what: string): Promise<number> {
    return this.issueChain([make], [what])[0] as Promise<number>;
  }

  /**
   * Issue ops as one link chain (each but the last linked to the next); one op is a plain issue.
   * A chain longer than the backend's whole queue can never go in at once: it is then run one op
   * at a time here, each only after the one before succeeded (else -ECANCELED), as the kernel would.
   */
  private issueChain(makers: ReadonlyArray<(userData: number) => IoOp>, whats: readonly string[]): Promise<number>[] {
    const count = makers.length;
    if (count > 1 && count > this.backend.queueDepth) return this.emulateChain(makers, whats);
    const promises: Promise<number>[] = [];
    const chain = this.nextUserData;
    if (count > 1) this.chainsOutstanding.set(chain, count);
    for (let i = 0; i < count; i++) {
      const userData = this.nextUserData++;
      const op = (makers[i] as (userData: number) => IoOp)(userData);
      const what = whats[i] as string;
      promises.push(
        new Promise<number>((resolve, reject) => {
          this.pending.set(userData, {
            resolve: (result) => (result < 0 ? reject(errorFromErrno(result, what)) : resolve(result)),
            reject,
          });
        }),
      );
      this.backlog.push(op);
      if (count > 1) this.chainMembers.set(userData, chain);
    }
    this.drainBacklog();
    this.startPump();
    return promises;
  }

  private emulateChain(makers: ReadonlyArray<(userData: number) => IoOp>, whats: readonly string[]): Promise<number>[] {
    const done: Promise<{ op: IoOp; result: number }>[] = [];
    for (let i = 0; i < makers.length; i++) {
      const make = makers[i] as (userData: number) => IoOp;
      const what = whats[i] as string;
      const before = done[i - 1];
      const run = async (): Promise<{ op: IoOp; result: number }> => {
        if (before !== undefined) {
          const prior = await before.catch(() => undefined);
          if (prior === undefined || !linkSucceeded(prior.op, prior.result)) throw errorFromErrno(-ECANCELED, what);
        }
        let op: IoOp | undefined;
        const result = await this.issue((userData) => {
          const { link: _link, ...plain } = make(userData);
          op = plain as IoOp;
          return op;
        }, what);
        return { op: op as IoOp, result };
      };
      done.push(run());
    }
    return done.map((promise) => promise.then(({ result }) => result));
  }

  private drainBacklog(): void {
    const room = this.backend.queueDepth - this.backend.inFlight;
    if (room <= 0 || this.backlog.length === 0) return;
    // Never split a link chain across submissions: stop after the last op that ends one.
    let take = Math.min(room, this.backlog.length);
    while (take > 0 && (this.backlog[take - 1] as IoOp).link === true) take -= 1;
    if (take === 0) return; // the next chain needs more room: it goes once completions free some
    const batch = this.backlog.splice(0, take);
    try {
      this.backend.submit(batch);
    } catch (error) {
      for (const op of batch) this.settle(op.userData, undefined, error as Error);
    }
  }

  private settle(userData: number, result: number | undefined, error?: Error): void {
    const entry = this.pending.get(userData);
    if (entry === undefined) return;
    this.pending.delete(userData);
    const chain = this.chainMembers.get(userData);
    if (chain !== undefined) {
      this.chainMembers.delete(userData);
      const left = (this.chainsOutstanding.get(chain) ?? 1) - 1;
      if (left > 0) this.chainsOutstanding.set(chain, left);
      else this.chainsOutstanding.delete(chain);
    }
    if (error !== undefined) entry.reject(error);
    else entry.resolve(result as number);
  }

  private startPump(): void {
    if (this.pumping) return;
    this.pumping = true;
    void this.pump();
  }

  /** All that is outstanding is one link chain, and nothing waits for queue room. */
  private onlyOneChain(): boolean {
    return this.chainsOutstanding.size === 1 && this.chainMembers.size === this.pending.size && this.backlog.length === 0;
  }

  private async pump(): Promise<void> {
    try {
      while (this.pending.size > 0 && !this.backend.closed) {
        // When all that is outstanding is one link chain (a commit's write and its datasync),
        // wake once for the whole chain, not once per op: nothing is waiting on the write alone.
        let onlyOneChain = this.onlyOneChain();
        let blockUs = 0;
        if (onlyOneChain && this.loneChainBlockUs > 0) {
          // Block only for a chain still alone after one event-loop turn: the code that issued it
          // finishes first, and so do microtasks and I/O callbacks already due (they may issue more).
          await new Promise<void>((resolve) => setImmediate(resolve));
          if (this.pending.size === 0 || this.backend.closed) break;
          onlyOneChain = this.onlyOneChain();
          if (onlyOneChain) blockUs = this.loneChainBlockUs;
        }
        const minReady = onlyOneChain ? this.chainMembers.size : 1;
        await this.backend.wait(minReady, PUMP_WAIT_MS, blockUs);
        this.completions.length = 0;
        this.backend.reap(this.completions);
        for (const c of this.completions) this.settle(c.userData, c.result);
        this.drainBacklog();
      }
    } catch (error) {
      for (const userData of [...this.pending.keys()]) this.settle(userData, undefined, error as Error);
    } finally {
      this.pumping = false;
    }
  }
}
