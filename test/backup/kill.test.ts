/**
 * SIGKILL in the middle of a backup: the primary reopens unharmed, and the target holds a
 * complete, verifiable backup (the previous one, or the new one if its manifest got written) whose
 * restore equals exactly the state at its point — never a silently partial one.
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { forEachLine, rng, scratchDir } from "../helpers.ts";
import { stateDigest, storeState, STORE_OPTIONS } from "./scenario.ts";

const CHILD = path.join(import.meta.dir, "fixtures", "backup-killed.ts");
const KILLS = 4;

test(`SIGKILL during a backup (${KILLS} kills at random moments): primary unharmed, target verifiable and exact`, async () => {
  const next = rng(5);
  for (let i = 0; i < KILLS; i++) {
    const { dir, cleanup } = scratchDir(`backup-kill-${i}`);
    try {
      const file = path.join(dir, "primary.lss");
      const target = path.join(dir, "target");
      const child = Bun.spawn([process.execPath, CHILD, file, target, String(100 + i)], { stdout: "pipe", stderr: "pipe" });
      const digests = new Map<number, string>();
      let backingUp = false;
      const lines = forEachLine(child.stdout, (line) => {
        const [word, tx, digest] = line.split(" ");
        if (word === "digest") digests.set(Number(tx), digest as string);
        if (word === "backing-up") backingUp = true;
      });
      const deadline = Date.now() + 60_000;
      while (!backingUp) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`child never started backing up: ${await new Response(child.stderr).text()}`);
        await Bun.sleep(2);
      }
      await Bun.sleep(Math.floor(next() * 150));
      child.kill("SIGKILL");
      await child.exited;
      await lines;
      expect(child.signalCode).toBe("SIGKILL");

      // The primary: opens after the crash, every element reads back verified, state is the last written.
      const primary = await Store.open(file, STORE_OPTIONS);
      const finalTx = Math.max(...digests.keys());
      expect(stateDigest(await storeState(primary))).toBe(digests.get(finalTx)!);
      await primary.close();

      // The target: a complete backup, at one of the points the child reported.
      const report = await Store.verifyBackup(target);
      const out = path.join(dir, "restored.lss");
      const restored = await Store.restore(target, out);
      expect(restored.transaction).toBe(report.lastTransaction);
      const point = [...digests.keys()].filter((tx) => tx <= restored.transaction).sort((a, b) => b - a)[0]!;
      const store = await Store.open(out, { readOnly: true });
      expect(stateDigest(await storeState(store))).toBe(digests.get(point)!);
      await store.close();
    } finally {
      cleanup();
    }
  }
}, 240_000);
