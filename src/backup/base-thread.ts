/**
 * Where a full backup's base copy runs: in a Worker of its own (base-worker.ts), or on the
 * store's thread when a Worker cannot be had.
 *
 * **Why a Worker.** The copy reads, checks (a CRC-32 per unit and per record), copies and hashes
 * (SHA-256 per object) every live byte. On the store's thread that held the JS thread for about
 * 0.7 s of a 1.1 s backup of 162 MiB (bench/backup.ts), in stretches the writers' commits waited
 * behind (their completions need the thread): a serial writer's commit p99 went from 5 to 26 ms.
 * In a Worker the same work runs on another core, with its own descriptor of the file and its
 * own I/O backend; the store's thread only makes the plan and unpins segments as the Worker
 * reports them done.
 *
 * **When not.** A base under {@link WORKER_MIN_BYTES} (starting a Worker and loading its modules
 * costs tens of ms); a target the caller opened itself (a `BackupTarget` object cannot cross to
 * the Worker: only a target string and its options can); and whenever the Worker cannot start
 * (e.g. a `bun build --compile` binary that did not embed base-worker.js): then the copy runs
 * here, the same code, and the backup is the same bytes.
 *
 * @module
 */
import { rebuildError, type DescribedError } from "../error-wire.ts";
import { StoreClosedError } from "../errors.ts";
import type { IoChoice } from "../io/backend.ts";
import type { BaseHooks, BasePlan, BaseResult } from "./base-copy.ts";
import type { OpenTargetOptions } from "./target.ts";

/** Bases smaller than this are copied on the store's thread (`copyIn: "auto"`). */
export const WORKER_MIN_BYTES = 8 << 20;
/** How long a Worker may take to start and open the file and target before the copy runs here instead. */
const START_TIMEOUT_MS = 15_000;
/** How often the store is checked for having closed under a running copy. */
const CLOSED_POLL_MS = 50;

/** What the store's thread posts to the Worker. */
export interface BaseJob {
  readonly plan: BasePlan;
  /** The store's file (or device) and the I/O backend to read it with. */
  readonly path: string;
  readonly io: IoChoice;
  /** The target string and its options, as the user gave them. */
  readonly target: string;
  readonly targetOptions: OpenTargetOptions;
}

/** What the Worker posts back. */
export type FromBaseWorker =
  | { type: "ready" }
  | { type: "progress"; bytes: number }
  | { type: "release"; seqs: number[] }
  | { type: "done"; result: BaseResult }
  | { type: "error"; ready: boolean; error: DescribedError };

function workerUrl(): URL {
  // Beside this module: base-worker.ts in the sources, base-worker.js in the built package.
  return new URL(import.meta.url.endsWith(".ts") ? "./base-worker.ts" : "./base-worker.js", import.meta.url);
}

/**
 * Run the base copy in a Worker. Resolves `undefined` when the Worker could not start (the
 * caller then copies on its own thread); rejects with the copy's error once it started.
 * `closed()` is polled: a store closed under the copy terminates the Worker (StoreClosedError).
 */
export function copyBaseInWorker(job: BaseJob, hooks: BaseHooks, closed: () => boolean): Promise<BaseResult | undefined> {
  let worker: Worker;
  try {
    worker = new Worker(workerUrl());
  } catch {
    return Promise.resolve(undefined);
  }
  return new Promise<BaseResult | undefined>((resolve, reject) => {
    let ready = false;
    let settled = false;
    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(startTimer);
      clearInterval(closedTimer);
      // Nothing may keep running after the backup returns: the Worker holds a descriptor of the
      // store's file and buffers of its own.
      void worker.terminate();
      outcome();
    };
    const startTimer = setTimeout(() => finish(() => resolve(undefined)), START_TIMEOUT_MS);
    const closedTimer = setInterval(() => {
      if (closed()) finish(() => reject(new StoreClosedError("the store was closed during the backup")));
    }, CLOSED_POLL_MS);
    worker.onmessage = (event: MessageEvent<FromBaseWorker>) => {
      const message = event.data;
      switch (message.type) {
        case "ready":
          ready = true;
          clearTimeout(startTimer);
          return;
        case "progress":
          return hooks.progress(message.bytes);
        case "release":
          return hooks.release(message.seqs);
        case "done":
          return finish(() => resolve(message.result));
        case "error":
          return finish(() => (message.ready ? reject(rebuildError(message.error, "the backup's base-copy Worker")) : resolve(undefined)));
      }
    };
    // The module failed to load, or threw outside the handler.
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      finish(() => (ready ? reject(new Error(`the backup's base-copy Worker failed: ${event.message}`)) : resolve(undefined)));
    };
    worker.addEventListener("close", () => finish(() => (ready ? reject(new Error("the backup's base-copy Worker exited before it finished")) : resolve(undefined))));
    try {
      worker.postMessage(job);
    } catch {
      // Options that cannot be cloned (a user's own `env` object, say): copy on this thread.
      finish(() => resolve(undefined));
    }
  });
}
