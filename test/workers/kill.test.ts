/**
 * SIGKILL of a whole process whose Workers (and main thread) are committing: after recovery every
 * acknowledged transaction is there (each key holds its last acked value or a later one), bytes
 * exact, over several rounds on the same file.
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { forEachLine, rng, scratchDir } from "../helpers.ts";
import { decodeValue } from "./model.ts";
import { withTimeout } from "./util.ts";

const CHILD = path.join(import.meta.dir, "kill-child.ts");
const ROUNDS = 5;
const WORKERS = 3;

test(`SIGKILL with ${WORKERS} Workers committing: recovery holds every acknowledged transaction (${ROUNDS} rounds)`, async () => {
  const { dir, cleanup } = scratchDir("workers-kill");
  const file = path.join(dir, "a.lss");
  const next = rng(42);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const child = Bun.spawn([process.execPath, CHILD, file, String(WORKERS), String(round * 1_000_000)], { stdout: "pipe", stderr: "pipe" });
      const acked = new Map<string, number>();
      let total = 0;
      let reachedTarget!: () => void;
      const target = 40 + Math.floor(next() * 200);
      const enough = new Promise<void>((resolve) => (reachedTarget = resolve));
      const lines = forEachLine(child.stdout, (line) => {
        const [word, who, n] = line.split(" ");
        if (word !== "ack") return;
        acked.set(who as string, Math.max(acked.get(who as string) ?? 0, Number(n)));
        total += 1;
        if (total >= target) reachedTarget();
      });
      await withTimeout(Promise.race([enough, child.exited.then(async (code) => { throw new Error(`child exited with ${code}: ${await new Response(child.stderr).text()}`); })]), 60_000, "acks");
      await Bun.sleep(next() * 20);
      child.kill("SIGKILL");
      await child.exited;
      await lines.catch(() => {});
      const store = await Store.open(file);
      try {
        for (const [who, n] of acked) {
          const seid = who === "main" ? 99n : BigInt(100 + Number(who));
          const tag = decodeValue(await store.read(seid));
          expect(tag).not.toBeNull();
          expect(tag as number).toBeGreaterThanOrEqual(round * 1_000_000 + n);
        }
        console.log(`round ${round}: ${total} acks (${[...acked].map(([w, n]) => `${w}:${n}`).join(" ")}), recovered ${store.stats().recovery.transactionsReplayed} transactions`);
      } finally {
        await store.close();
      }
    }
  } finally {
    cleanup();
  }
}, 240_000);
