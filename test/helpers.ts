/**
 * Shared test helpers: scratch directories on the project's own filesystem (not /tmp, which may
 * be tmpfs and refuse O_DIRECT), seeded randomness, and the list of backends every I/O test runs on.
 */
import fs from "node:fs";
import path from "node:path";
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
