/** Starting test Workers (driver.ts) and waiting for them, every wait with a deadline. */
import path from "node:path";
import type { StoreHandle } from "../../src/workers/handle.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import type { DriverJob } from "./model.ts";
import { scratchDir } from "../helpers.ts";

export { withTimeout };

const DRIVER = path.join(import.meta.dir, "driver.ts");

/** A running test Worker. */
export interface Running<T> {
  worker: Worker;
  /** The job's result (rejects with the Worker's error). */
  result: Promise<T>;
  /** Resolves with the first message for which `match` is true. */
  message(match: (data: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Every message so far. */
  messages: Array<Record<string, unknown>>;
}

/** Start driver.ts on `job` against the store `handle` names. */
export function startJob<T>(handle: StoreHandle, job: DriverJob, options: { close?: boolean } = {}): Running<T> {
  const worker = new Worker(DRIVER);
  const messages: Array<Record<string, unknown>> = [];
  const listeners: Array<{ match: (data: Record<string, unknown>) => boolean; resolve: (data: Record<string, unknown>) => void }> = [];
  let settle!: { resolve: (value: T) => void; reject: (error: Error) => void };
  const result = new Promise<T>((resolve, reject) => (settle = { resolve, reject }));
  result.catch(() => {});
  worker.onmessage = (event: MessageEvent<Record<string, unknown>>) => {
    const data = event.data;
    messages.push(data);
    for (const listener of [...listeners]) {
      if (listener.match(data)) {
        listeners.splice(listeners.indexOf(listener), 1);
        listener.resolve(data);
      }
    }
    if (data.error !== undefined) settle.reject(new Error(`worker: ${String(data.error)}`));
    if (data.done === true) settle.resolve(data.result as T);
  };
  worker.onerror = (event) => settle.reject(new Error(`worker error: ${event.message}`));
  worker.postMessage({ handle, job, close: options.close });
  return {
    worker,
    result,
    messages,
    message(match) {
      const seen = messages.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve) => listeners.push({ match, resolve }));
    },
  };
}

/** What a Workers test works in: a scratch directory, its store's path, and the Workers it starts. */
export interface Scene {
  dir: string;
  file: string;
  running: Array<Running<unknown>>;
}

/** Run `body` in a fresh scene; its Workers are terminated and its directory removed after, also on failure. */
export async function inScene<T>(name: string, body: (scene: Scene) => Promise<T>): Promise<T> {
  const { dir, cleanup } = scratchDir(name);
  const running: Array<Running<unknown>> = [];
  try {
    return await body({ dir, file: path.join(dir, "a.lss"), running });
  } finally {
    for (const r of running) r.worker.terminate();
    cleanup();
  }
}
