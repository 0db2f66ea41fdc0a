/**
 * Where a full backup's base is planned and copied: in the process's backup Worker
 * (base-worker.ts), or on the store's thread when a Worker cannot be had.
 *
 * **Why a Worker.** The copy reads, checks (a CRC-32 per unit and per record), copies and hashes
 * (SHA-256 per object) every live byte. On the store's thread that held the JS thread for about
 * 0.7 s of a 1.1 s backup of 162 MiB (bench/backup.ts), in stretches the writers' commits waited
 * behind (their completions need the thread): a serial writer's commit p99 went from 5 to 26 ms.
 * In a Worker the same work runs on another core, with its own descriptor of the file and its
 * own I/O backend. The plan is made there too (base-plan.ts says why): the store's thread only
 * posts the copy of the map it took at the point, in the transfer list, and unpins segments as
 * the Worker reports them done.
 *
 * **One Worker, kept.** The Worker is started by the first backup that wants one and serves every
 * backup of every store in the process, one job per backup (jobs may overlap). It ends once it has
 * had no job for {@link IDLE_MS}, and never keeps the process alive while idle. A Worker per backup
 * (as first built) paid for itself each time: its modules loaded and its code was compiled again
 * (JIT threads took ~19% of the process's CPU samples during back-to-back backups, `perf record`),
 * and every 1 MiB piece its chunks were assembled in was fresh memory (page faults on this VM ran
 * the copy into them at 1.6 GB/s against 10+ GB/s into reused ones; see PiecePool in base.ts).
 *
 * **When not.** A base under {@link WORKER_MIN_BYTES}; a target the caller opened itself (a
 * `BackupTarget` object cannot cross to the Worker: only a target string and its options can);
 * and whenever the Worker cannot start or open the file and target (e.g. a `bun build --compile`
 * binary that did not embed base-worker.js): then the copy runs on the store's thread, the same
 * code, and the backup is the same bytes. The map goes to the Worker only once it has opened both,
 * so until then nothing is lost by falling back.
 *
 * **Behind the writers.** By default (`BackupOptions.yieldToCommits`) the Worker runs at the
 * lowest CPU priority the kernel has, `SCHED_IDLE` (libc.ts `setThreadIdle`), and each step of
 * its copy first waits, up to 1 ms, while a durable commit is on the device (commit-gate.ts).
 * Measured with `bun bench/backup.ts` (serial durable commits of 100 B while full backups of
 * 162 MiB ran back to back, 2026-12-01, alternating with the code before): the store's thread
 * waited ~0.4 s of every 3 s for a core (`/proc/self/task/<tid>/schedstat`) while the Worker ran
 * at normal priority, and the commits' p99 rose by 3.4–3.8 ms; with both, by 0.68–0.92 ms, the
 * copy running at ~210 MiB/s beside the writers (~460 before). `nice` 19 instead of `SCHED_IDLE`:
 * ~1.0 ms (a woken thread preempts a `SCHED_IDLE` one at once, a niced one not always). The
 * price: a copy with nobody committing ran ~12% slower (424–465 against 497–516 MiB/s; other
 * threads of the process, the thread pool's writes among them, preempt it), and on a machine
 * whose cores are all busy with other work it gets almost no CPU: `yieldToCommits: false` copies
 * in a second Worker at normal priority. One Worker per priority: a thread that went
 * `SCHED_IDLE` cannot come back unprivileged.
 *
 * **A store closed under a copy** ends its backup at once with StoreClosedError; the Worker is
 * told to stop that job (at its next segment) and closes its descriptor of the file.
 *
 * @module
 */
import { rebuildError, type DescribedError } from "../error-wire.ts";
import { StoreClosedError } from "../errors.ts";
import type { IoChoice } from "../io/backend.ts";
import type { MappingTransfer } from "../store/state/mapping.ts";
import type { BaseResult } from "./base-copy.ts";
import { partsBuffers, type PartsTable, type PlanHeader } from "./base-plan.ts";
import type { OpenTargetOptions } from "./target.ts";

/** Bases smaller than this are copied on the store's thread (`copyIn: "auto"`). */
export const WORKER_MIN_BYTES = 8 << 20;
/** How long a job may wait for the Worker to start and open the file and target before the copy runs here instead. */
const START_TIMEOUT_MS = 15_000;
/** How often the store is checked for having closed under a running copy. */
const CLOSED_POLL_MS = 50;
/** The Worker ends after this long without a job (its pieces and compiled code go with it). */
export const IDLE_MS = 5_000;

/** What a job opens in the Worker: the store's file and the target. */
export interface OpenJob {
  /** The copy yields to the writers (BackupOptions.yieldToCommits): the Worker's thread is `SCHED_IDLE`. */
  readonly background: boolean;
  /** The store's file (or device) and the I/O backend to read it with. */
  readonly path: string;
  readonly io: IoChoice;
  readonly segmentSize: number;
  /** segment seq → physical index, for every segment pinned at the point. */
  readonly indexes: ReadonlyMap<number, number>;
  /** The target string and its options, as the user gave them. */
  readonly target: string;
  readonly targetOptions: OpenTargetOptions;
}

/** What the plan is made from, posted once the Worker has opened the file and the target. */
export interface PlanJob {
  readonly header: PlanHeader;
  /** The map at the point (its slot array is transferred, not copied). */
  readonly map: MappingTransfer;
  readonly parts: PartsTable;
  /** Segments pinned at the point; each is reported released once the copy is done with it. */
  readonly pinned: readonly number[];
  /** The copy's rate limit, if any (BackupOptions.maxBytesPerSecond). */
  readonly maxBytesPerSecond: number | undefined;
  /** The store's commit gate (commit-gate.ts) to wait on before each step; none when not yielding. */
  readonly commitGate: SharedArrayBuffer | undefined;
}

/** Messages to the Worker. */
export type ToBaseWorker =
  | ({ type: "open"; id: number } & OpenJob)
  | ({ type: "copy"; id: number } & PlanJob)
  | { type: "cancel"; id: number };

/** Messages from the Worker. */
export type FromBaseWorker = { id: number } & (
  | { type: "ready" }
  | { type: "planned"; totalBytes: number }
  | { type: "progress"; bytes: number }
  | { type: "release"; seqs: number[] }
  | { type: "done"; result: BaseResult }
  | { type: "error"; ready: boolean; error: DescribedError }
);

/** What the store's thread hears of a copy in the Worker. */
export interface WorkerHooks {
  /** The plan is made: the bytes the copy will report in all. */
  planned(totalBytes: number): void;
  /** Bytes of records copied since the last call. */
  progress(bytes: number): void;
  /** Pinned segments the copy no longer needs (each reported once). */
  release(seqs: number[]): void;
}

function workerUrl(): URL {
  // Beside this module: base-worker.ts in the sources, base-worker.js in the built package.
  return new URL(import.meta.url.endsWith(".ts") ? "./base-worker.ts" : "./base-worker.js", import.meta.url);
}

/** One job's side of the Worker's messages. */
interface JobListener {
  message(message: FromBaseWorker): void;
  /** The Worker ended (it failed, or exited) while the job ran. */
  died(why: string): void;
}

/** One of the process's backup Workers (see the module doc): one per priority. */
class CopyThread {
  private static readonly current = new Map<boolean, CopyThread>();
  private readonly background: boolean;
  private readonly worker: Worker;
  private readonly jobs = new Map<number, JobListener>();
  private nextId = 1;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private alive = true;

  private constructor(worker: Worker, background: boolean) {
    this.worker = worker;
    this.background = background;
    worker.onmessage = (event: MessageEvent<FromBaseWorker>) => this.jobs.get(event.data.id)?.message(event.data);
    // The module failed to load, or something threw outside a job's handlers.
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.end(`the backup's base-copy Worker failed: ${event.message}`);
    };
    worker.addEventListener("close", () => this.end("the backup's base-copy Worker exited before it finished"));
  }

  /** The running Worker of that priority, started if there is none; undefined when none can be started. */
  static get(background: boolean): CopyThread | undefined {
    const running = CopyThread.current.get(background);
    if (running?.alive === true) return running;
    let started: CopyThread;
    try {
      started = new CopyThread(new Worker(workerUrl()), background);
    } catch {
      return undefined;
    }
    CopyThread.current.set(background, started);
    return started;
  }

  /** Register a job; the Worker stays (and keeps the process alive) while any job is open. */
  open(listener: JobListener): number {
    const id = this.nextId++;
    this.jobs.set(id, listener);
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.worker.ref();
    return id;
  }

  /** Post to the Worker; false when it cannot be posted (e.g. options that cannot be cloned). */
  post(message: ToBaseWorker, transfer: ArrayBuffer[] = []): boolean {
    try {
      this.worker.postMessage(message, transfer);
      return true;
    } catch {
      return false;
    }
  }

  /** The job is over (as far as the store's thread is concerned). */
  close(id: number): void {
    if (!this.jobs.delete(id) || this.jobs.size > 0 || !this.alive) return;
    this.worker.unref();
    this.idleTimer = setTimeout(() => {
      if (this.jobs.size === 0) this.end(undefined);
    }, IDLE_MS);
    this.idleTimer.unref?.();
  }

  private end(why: string | undefined): void {
    if (!this.alive) return;
    this.alive = false;
    if (CopyThread.current.get(this.background) === this) CopyThread.current.delete(this.background);
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    void this.worker.terminate();
    const jobs = [...this.jobs.values()];
    this.jobs.clear();
    for (const job of jobs) job.died(why ?? "the backup's base-copy Worker was stopped");
  }
}

/**
 * Plan and copy the base in the Worker. Resolves `undefined` when the Worker could not start or
 * open the file or the target (nothing was posted but the open; the caller then copies on its own
 * thread); once `plan()` was taken and posted, a failure rejects. `closed()` is polled: a store
 * closed under the copy ends it with StoreClosedError.
 */
export function copyBaseInWorker(open: OpenJob, plan: () => PlanJob, hooks: WorkerHooks, closed: () => boolean): Promise<BaseResult | undefined> {
  const thread = CopyThread.get(open.background);
  if (thread === undefined) return Promise.resolve(undefined);
  return new Promise<BaseResult | undefined>((resolve, reject) => {
    let ready = false;
    let settled = false;
    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(startTimer);
      clearInterval(closedTimer);
      thread.close(id);
      outcome();
    };
    const id = thread.open({
      message(message) {
        switch (message.type) {
          case "ready": {
            ready = true;
            clearTimeout(startTimer);
            const job = plan();
            if (!thread.post({ type: "copy", id, ...job }, [job.map.slots.buffer, ...partsBuffers(job.parts)])) {
              finish(() => reject(new Error("the backup's plan could not be posted to its Worker")));
            }
            return;
          }
          case "planned":
            return hooks.planned(message.totalBytes);
          case "progress":
            return hooks.progress(message.bytes);
          case "release":
            return hooks.release(message.seqs);
          case "done":
            return finish(() => resolve(message.result));
          case "error":
            return finish(() => (message.ready ? reject(rebuildError(message.error, "the backup's base-copy Worker")) : resolve(undefined)));
        }
      },
      died(why) {
        finish(() => (ready ? reject(new Error(why)) : resolve(undefined)));
      },
    });
    const startTimer = setTimeout(() => {
      thread.post({ type: "cancel", id });
      finish(() => resolve(undefined));
    }, START_TIMEOUT_MS);
    const closedTimer = setInterval(() => {
      if (!closed()) return;
      thread.post({ type: "cancel", id });
      finish(() => reject(new StoreClosedError("the store was closed during the backup")));
    }, CLOSED_POLL_MS);
    // Options that cannot be cloned (a user's own `env` object, say): copy on this thread.
    if (!thread.post({ type: "open", id, ...open })) finish(() => resolve(undefined));
  });
}
