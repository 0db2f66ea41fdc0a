/**
 * The primary in a child process, committing continuously at the `durable` level with several
 * transactions in flight, is SIGKILLed at random moments; the standby (this process) is promoted.
 * Every acknowledged transaction is on it, nothing is torn, and what it holds is a committed
 * prefix: exactly transactions 1..k for some k at or past the last acknowledged one.
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { forEachLine, rng, scratchDir } from "../helpers.ts";
import { SECRET, STORE_OPTIONS, until, valueOf } from "./util.ts";

const CHILD = path.join(import.meta.dir, "fixtures", "primary-writer.ts");
const ROUNDS = 5;
const COUNTER = (7n << 32n) | 0xffff_fffen;

test(`SIGKILL the primary at random moments (${ROUNDS} rounds), promote the standby: every acknowledged transaction is there, a committed prefix`, async () => {
  const next = rng(23);
  const promoteTimes: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const { dir, cleanup } = scratchDir(`repl-kill-${round}`);
    try {
      const child = Bun.spawn([process.execPath, CHILD, path.join(dir, "primary.lss"), String(1 + (round % 3) * 8)], { stdout: "pipe", stderr: "pipe" });
      let port = 0;
      let writing = false;
      let acked = 0;
      const acks = new Set<number>();
      const lines = forEachLine(child.stdout, (line) => {
        const [word, value] = line.split(" ");
        if (word === "port") port = Number(value);
        if (word === "writing") writing = true;
        if (word === "ack") {
          const n = Number(value);
          acks.add(n);
          acked = Math.max(acked, n);
        }
      });
      await until(() => port > 0 || child.exitCode !== null, 30_000, "the child's port");
      if (port === 0) throw new Error(`child failed: ${await new Response(child.stderr).text()}`);
      const standby = await Store.openStandby(path.join(dir, "standby.lss"), {
        primary: `127.0.0.1:${port}`,
        secret: SECRET,
        store: STORE_OPTIONS,
        reconnectMinMs: 20,
        reconnectMaxMs: 100,
        log: () => {},
      });
      try {
        await until(() => writing, 30_000, "the child to start writing");
        await until(() => acked >= 20, 30_000, "some acknowledged commits");
        await Bun.sleep(Math.floor(next() * 700));
        child.kill("SIGKILL");
        await child.exited;
        await lines;
        expect(child.signalCode).toBe("SIGKILL");
        const t = performance.now();
        await standby.promote();
        promoteTimes.push(performance.now() - t);
        // The counter names the last transaction applied: k.
        const counter = await standby.read(COUNTER);
        expect(counter).toBeDefined();
        let k = 0;
        for (let n = 1; n <= acked + 10_000; n++) {
          if (Buffer.compare(counter!, valueOf(n, 0, 8)) === 0) {
            k = n;
            break;
          }
        }
        expect(k).toBeGreaterThanOrEqual(acked);
        // Exactly 1..k, each with its exact bytes; nothing past k.
        const present = standby.seids(7).filter((s) => s !== COUNTER);
        expect(present.length).toBe(k);
        for (let n = 1; n <= k; n++) {
          const value = await standby.read((7n << 32n) | BigInt(n));
          if (value === undefined || Buffer.compare(value, valueOf(n, 7, 20 + (n % 700))) !== 0) throw new Error(`round ${round}: transaction ${n} of ${k} is missing or torn`);
        }
        for (const n of acks) expect(n).toBeLessThanOrEqual(k);
        // Promoted: it takes writes.
        await standby.transaction((tx) => tx.write(COUNTER, new Uint8Array([1])));
        console.log(`round ${round}: ${acked} acknowledged, ${k} on the promoted standby, promotion ${promoteTimes.at(-1)!.toFixed(1)} ms`);
      } finally {
        if (child.exitCode === null) child.kill("SIGKILL");
        await standby.close();
      }
    } finally {
      cleanup();
    }
  }
  expect(Math.max(...promoteTimes)).toBeLessThan(1_000);
}, 120_000);
