/**
 * The commit gate (src/io/commit-gate.ts): a waiter is let go when the last commit leaves, and
 * never later than its bound while commits keep coming; the IoQueue counts exactly the awaited
 * write + datasync chains while they are on the device (system calls or the queue, success or
 * failure), and a backup's base copy waits on it unless told not to (BackupOptions.yieldToCommits).
 */
import { afterAll, describe, expect, test } from "bun:test";
import path from "node:path";
import { CommitGate } from "../../src/io/commit-gate.ts";
import { ALIGNMENT_BYTES, type IoBackend } from "../../src/io/backend.ts";
import { openBackend } from "../../src/io/open.ts";
import { IoQueue } from "../../src/io/queue.ts";
import { InvalidArgumentError, Store } from "../../src/index.ts";
import { storeInternals } from "../../src/store/store.ts";
import { BACKENDS, fillPattern, scratchDir } from "../helpers.ts";

const scratch = scratchDir("commit-gate");
afterAll(() => scratch.cleanup());

describe("CommitGate", () => {
  test("free: yieldTo returns at once with 0 ms waited", async () => {
    const gate = new CommitGate();
    expect(gate.busy).toBe(0);
    expect(await gate.yieldTo(10_000)).toBe(0);
  });

  test("busy: a waiter is let go when the last commit leaves, not when the first does", async () => {
    const gate = new CommitGate();
    gate.enter();
    gate.enter();
    let done = false;
    const waiting = gate.yieldTo(10_000).then((ms) => ((done = true), ms));
    await Bun.sleep(5);
    gate.leave();
    await Bun.sleep(5);
    expect(done).toBe(false);
    expect(gate.busy).toBe(1);
    gate.leave();
    // The bound is 10 s: let go by the leave, well before it.
    const waited = await Promise.race([waiting, Bun.sleep(5_000).then(() => -1)]);
    expect(waited).toBeGreaterThanOrEqual(5);
    expect(waited).toBeLessThan(5_000);
    expect(gate.busy).toBe(0);
  });

  test("commits that never leave: the waiter goes on after its bound", async () => {
    const gate = new CommitGate();
    gate.enter();
    const waited = await Promise.race([gate.yieldTo(30), Bun.sleep(5_000).then(() => -1)]);
    expect(waited).toBeGreaterThanOrEqual(29);
    gate.leave();
  });

  test("the word is shared: a gate over the same buffer sees the other's commits", async () => {
    const gate = new CommitGate();
    const other = new CommitGate(gate.shared);
    gate.enter();
    expect(other.busy).toBe(1);
    const waiting = other.yieldTo(10_000);
    gate.leave();
    // Let go by the other gate's leave, not by the 10 s bound nor the 5 s deadline here (-1).
    const waited = await Promise.race([waiting, Bun.sleep(5_000).then(() => -1)]);
    expect(waited).toBeGreaterThanOrEqual(0);
    expect(waited).toBeLessThan(5_000);
  });
});

describe("IoQueue counts awaited write + datasync chains on the gate", () => {
  const BLOCK = ALIGNMENT_BYTES;
  for (const io of BACKENDS) {
    test(`${io}: while on the device, through system calls and through the queue; 0 after each, failures included`, async () => {
      const backend = await openBackend({ io, queueDepth: 16 });
      const seenDuringCall: number[] = [];
      const gate = new CommitGate();
      const watching = new Proxy(backend, {
        get(target, property) {
          if (property === "writeThenSyncNow") {
            return (...args: Parameters<NonNullable<IoBackend["writeThenSyncNow"]>>) => {
              seenDuringCall.push(gate.busy);
              return (target.writeThenSyncNow as NonNullable<IoBackend["writeThenSyncNow"]>)(...args);
            };
          }
          const value = Reflect.get(target, property, target) as unknown;
          return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
      const filePath = path.join(scratch.dir, `q-${io}.bin`);
      const file = backend.openFile(filePath, { create: true, direct: true });
      const buffer = backend.alloc(BLOCK);
      fillPattern(buffer.bytes, 1);
      try {
        const queue = new IoQueue(watching, { loneChainBlockUs: 1_000_000, gate });
        // Alone and awaited: system calls, counted while the call runs.
        for (let i = 0; i < 3; i++) {
          const chain = queue.writeThenSync(file, buffer, 0, BLOCK, i * BLOCK, true);
          await Promise.all([chain.written, chain.synced]);
          expect(gate.busy).toBe(0);
        }
        expect(queue.syncCallChains).toBe(3);
        expect(seenDuringCall).toEqual([1, 1, 1]);
        // Through the queue (blocking not allowed): counted from issue to the datasync's end.
        queue.loneChainBlockUs = 0;
        const a = queue.writeThenSync(file, buffer, 0, BLOCK, 0, true);
        const b = queue.writeThenSync(file, buffer, 0, BLOCK, BLOCK, true);
        expect(gate.busy).toBe(2);
        await Promise.all([a.written, a.synced, b.written, b.synced]);
        expect(gate.busy).toBe(0);
        // Nobody waits for it: not a commit the gate holds background I/O for.
        const unawaited = queue.writeThenSync(file, buffer, 0, BLOCK, 0);
        expect(gate.busy).toBe(0);
        await Promise.all([unawaited.written, unawaited.synced]);
        // A failing chain (a read-only descriptor) leaves the gate too, both ways.
        const readOnly = backend.openFile(filePath, { readOnly: true, direct: true });
        try {
          for (const block of [1_000_000, 0]) {
            queue.loneChainBlockUs = block;
            const bad = queue.writeThenSync(readOnly, buffer, 0, BLOCK, 0, true);
            await Promise.allSettled([bad.written, bad.synced]);
            expect(gate.busy).toBe(0);
          }
        } finally {
          backend.closeFile(readOnly);
        }
      } finally {
        backend.free(buffer);
        backend.closeFile(file);
        backend.close();
      }
    });
  }
});

describe("a backup's base copy waits on the store's commit gate", () => {
  test("held busy: the copy waits at each step, a bounded time, and the backup is whole; yieldToCommits false does not wait", async () => {
    const file = path.join(scratch.dir, "backup.lss");
    const store = await Store.open(file, { cacheBytes: 0, segmentSize: 1 << 20 });
    try {
      const model = new Map<bigint, Uint8Array>();
      for (let batch = 0; batch < 10; batch++) {
        await store.transaction((tx) => {
          for (let i = 0; i < 100; i++) {
            const seid = store.allocateSeid();
            const value = new Uint8Array(1_000 + ((batch * 100 + i) % 9) * 1_000);
            fillPattern(value, batch * 100 + i);
            tx.write(seid, value);
            model.set(seid, value);
          }
        });
      }
      const gate = storeInternals(store).core.log.commitGate;
      // A commit that never leaves the device (as a writer with 64 always in flight looks).
      gate.enter();
      try {
        for (const copyIn of ["caller", "worker"] as const) {
          const held = await store.backup(path.join(scratch.dir, `held-${copyIn}`), { copyIn });
          expect(held.copiedIn).toBe(copyIn);
          // Every MiB of the base is at least one write (and more reads), each waiting its 1 ms.
          expect(held.bytes).toBeGreaterThan(4 << 20);
          expect(held.yieldedMs).toBeGreaterThanOrEqual(0.9 * Math.floor(held.bytes / (1 << 20)));
          const free = await store.backup(path.join(scratch.dir, `free-${copyIn}`), { copyIn, yieldToCommits: false });
          expect(free.yieldedMs).toBe(0);
          for (const location of [`held-${copyIn}`, `free-${copyIn}`]) {
            const out = path.join(scratch.dir, `${location}.restored.lss`);
            await Store.restore(path.join(scratch.dir, location), out);
            const restored = await Store.open(out, { cacheBytes: 0 });
            try {
              expect(restored.stats().elements).toBe(model.size);
              for (const [seid, value] of model) expect(Buffer.from((await restored.read(seid)) ?? new Uint8Array(1)).equals(Buffer.from(value))).toBe(true);
            } finally {
              await restored.close();
            }
          }
        }
      } finally {
        gate.leave();
      }
      const idle = await store.backup(path.join(scratch.dir, "idle"), { full: true });
      expect(idle.yieldedMs).toBe(0);
      await expect(store.backup(path.join(scratch.dir, "bad"), { yieldToCommits: "yes" as unknown as boolean })).rejects.toBeInstanceOf(InvalidArgumentError);
    } finally {
      await store.close();
    }
  }, 120_000);
});
