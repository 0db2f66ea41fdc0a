/**
 * Shared test helpers: scratch directories on the project's own filesystem (not /tmp, which may
 * be tmpfs and refuse O_DIRECT), seeded randomness, and the list of backends every I/O test runs on.
 */
import fs from "node:fs";
import path from "node:path";
import fc from "fast-check";
import type { IoBackend, IoChoice, IoCompletion } from "../src/io/backend.ts";

const ROOT = path.resolve(import.meta.dir, "..", ".test-data");

/** A fresh directory for one test; removed by the returned cleanup. */
export function scratchDir(name: string): { dir: string; cleanup: () => void } {
  fs.mkdirSync(ROOT, { recursive: true });
  const dir = fs.mkdtempSync(path.join(ROOT, `${name.replace(/[^a-z0-9]+/gi, "-")}-`));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Both real backends: every I/O-level test runs on each. */
export const BACKENDS: readonly Exclude<IoChoice, "auto">[] = ["portable", "uring"];

import { rng } from "../testing/prng.ts";
export { rng };

/** Fill `bytes` with a pattern derived from `seed`, so a mix-up of two payloads is caught. */
export function fillPattern(bytes: Uint8Array, seed: number): void {
  const next = rng(seed);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (next() * 256) | 0;
}

/** Current resident set size in bytes. */
export function rssBytes(): number {
  return process.memoryUsage().rss;
}


export { forEachLine } from "../testing/torture/util.ts";

/** Wait for `count` completions (10 s deadline, then whatever arrived: callers assert the count). */
export async function reapAll(backend: IoBackend, count: number, timeoutMs = 10_000): Promise<IoCompletion[]> {
  const out: IoCompletion[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count && Date.now() < deadline) {
    await backend.wait(1, 100);
    backend.reap(out);
  }
  return out;
}

/** How long a failed property may shrink before it reports what it has (see {@link failFast}). */
export const SHRINK_BUDGET_MS = 15_000;

/**
 * Wrap a fast-check predicate so a failure is reported fast: the first failing case is logged in
 * full at once (its values and error), and once it has shrunk for `budgetMs` every further
 * candidate is skipped, so fast-check ends with the smallest case found so far (with its seed and
 * path for replay) instead of shrinking until the test's timeout hides everything.
 */
export function failFast<Args extends unknown[], R>(name: string, predicate: (...args: Args) => R, budgetMs = SHRINK_BUDGET_MS): (...args: Args) => R {
  let firstFailureAt: number | undefined;
  const failed = (args: Args, error: unknown): never => {
    if (firstFailureAt === undefined) {
      firstFailureAt = Date.now();
      console.error(`${name}: first failing case (shrinking for at most ${budgetMs} ms):\n${fc.stringify(args)}\n`, error);
    }
    throw error;
  };
  return (...args: Args): R => {
    if (firstFailureAt !== undefined && Date.now() - firstFailureAt > budgetMs) fc.pre(false);
    let result: R;
    try {
      result = predicate(...args);
    } catch (error) {
      return failed(args, error);
    }
    if (result instanceof Promise) return result.catch((error: unknown) => failed(args, error)) as R;
    return result;
  };
}
