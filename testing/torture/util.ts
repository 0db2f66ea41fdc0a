/**
 * Small pieces every torture run (and the crash tests) share: a timeout that names what hung,
 * error descriptions, a line reader for child processes, and the open after a SIGKILL.
 *
 * @module
 */
import { Store, StoreLockedError, type StoreOptions } from "../../src/index.ts";

/** Thrown by {@link withTimeout}: something did not settle in time (a hang is a violation). */
export class HangError extends Error {}

/** `promise`, or a {@link HangError} naming `what` after `ms` milliseconds. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HangError(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** "ClassName: message" for an error, or its string form. */
export function describe(error: unknown): string {
  if (error instanceof Error) return `${error.constructor.name}: ${error.message}`;
  return String(error);
}

/** Call `onLine` for every line a child process writes to `stream`, until it closes. */
export async function forEachLine(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk);
    const lines = pending.split("\n");
    pending = lines.pop() as string;
    for (const line of lines) onLine(line);
  }
  if (pending !== "") onLine(pending);
}

/**
 * Run `open` (of a file whose last writer was SIGKILLed) until it stops failing with
 * `StoreLockedError`. The kernel tears a dead process's io_uring down asynchronously, and until it
 * has, the ring still references the file and holds its flock. Any other error, or a lock that
 * outlives `deadlineMs`, is thrown.
 */
export async function retryWhileLocked<T>(open: () => Promise<T>, deadlineMs = 10_000): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await open();
    } catch (error) {
      if (!(error instanceof StoreLockedError) || Date.now() > deadline) throw error;
      await Bun.sleep(10);
    }
  }
}

/** {@link Store.open} after a SIGKILL of the file's last writer (see {@link retryWhileLocked}). */
export function openAfterKill(file: string, options: StoreOptions = {}): Promise<Store> {
  return retryWhileLocked(() => Store.open(file, options));
}
