/**
 * A full backup's base copied in a Worker of its own (src/backup/base-thread.ts): the same
 * backup as on the store's thread (restores equal the store), progress reported, damage in the
 * store's file refused with the same typed error, a store closed under the copy ends it with
 * StoreClosedError (and close does not hang), and errors cross from the Worker with their class
 * and fields.
 */
import { afterAll, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { BackupCorruptionError, BackupTargetError, CorruptionError, InvalidArgumentError, LssError, StoreClosedError, Store } from "../../src/index.ts";
import { describeError, rebuildError } from "../../src/error-wire.ts";
import { IDLE_MS } from "../../src/backup/base-thread.ts";
import { fillPattern, rng, scratchDir } from "../helpers.ts";

const scratch = scratchDir("base-worker");
afterAll(() => scratch.cleanup());

const OPTIONS = { cacheBytes: 0, segmentSize: 1 << 20 } as const;

/** A store with ~12 MiB of live data: small and mid-size elements, some multipart, some overwritten or deleted. */
async function filled(name: string, bigValues = 3): Promise<{ store: Store; file: string; model: Map<bigint, Uint8Array> }> {
  const file = path.join(scratch.dir, `${name}.lss`);
  const store = await Store.open(file, OPTIONS);
  const model = new Map<bigint, Uint8Array>();
  const next = rng(5);
  const seids: bigint[] = [];
  for (let batch = 0; batch < 12; batch++) {
    await store.transaction((tx) => {
      for (let i = 0; i < 200; i++) {
        const seid = store.allocateSeid();
        seids.push(seid);
        const value = new Uint8Array(100 + Math.floor(next() * 8_000));
        fillPattern(value, batch * 1_000 + i);
        tx.write(seid, value);
        model.set(seid, value);
      }
    });
  }
  for (let i = 0; i < bigValues; i++) {
    const seid = store.allocateSeid();
    const value = new Uint8Array((2 << 20) + 12_345 * i);
    fillPattern(value, 77 + i);
    await store.transaction((tx) => tx.write(seid, value));
    model.set(seid, value);
  }
  // Overwrites and deletes leave dead records in the segments the copy must skip.
  await store.transaction((tx) => {
    for (let i = 0; i < 300; i++) {
      const seid = seids[Math.floor(next() * seids.length)] as bigint;
      if (i % 3 === 0) {
        tx.delete(seid);
        model.delete(seid);
      } else {
        const value = new Uint8Array(50 + i);
        fillPattern(value, 9_000 + i);
        tx.write(seid, value);
        model.set(seid, value);
      }
    }
  });
  return { store, file, model };
}

async function expectRestoreEquals(location: string, model: Map<bigint, Uint8Array>, out: string): Promise<void> {
  await Store.restore(location, out);
  const restored = await Store.open(out, OPTIONS);
  try {
    expect(restored.stats().elements).toBe(model.size);
    for (const [seid, value] of model) {
      const bytes = await restored.read(seid);
      if (bytes === undefined || !Buffer.from(bytes).equals(Buffer.from(value))) throw new Error(`seid ${seid}: restored bytes differ`);
    }
  } finally {
    await restored.close();
  }
}

test("a base copied in a Worker restores exactly like one copied on the store's thread, with progress to the total", async () => {
  const { store, model } = await filled("same");
  try {
    const progress: number[] = [];
    let total = 0;
    const inWorker = await store.backup(path.join(scratch.dir, "same-worker"), {
      onProgress: (p) => {
        if (p.phase !== "base") return;
        progress.push(p.bytesDone);
        total = p.bytesTotal;
      },
    });
    // Over 8 MiB of live data: "auto" picks the Worker.
    expect(inWorker.copiedIn).toBe("worker");
    expect(inWorker.elements).toBe(model.size);
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.every((p, i) => i === 0 || p >= (progress[i - 1] as number))).toBe(true);
    expect(progress.at(-1)).toBe(total);
    expect(total).toBeGreaterThan(8 << 20);

    const onThread = await store.backup(path.join(scratch.dir, "same-caller"), { copyIn: "caller" });
    expect(onThread.copiedIn).toBe("caller");
    expect(onThread.elements).toBe(model.size);
    expect(onThread.transaction).toBe(inWorker.transaction);

    await expectRestoreEquals(path.join(scratch.dir, "same-worker"), model, path.join(scratch.dir, "same-worker.lss"));
    await expectRestoreEquals(path.join(scratch.dir, "same-caller"), model, path.join(scratch.dir, "same-caller.lss"));
    const verified = await Store.verifyBackup(path.join(scratch.dir, "same-worker"));
    expect(verified.bytes).toBeGreaterThan(8 << 20);
  } finally {
    await store.close();
  }
}, 120_000);

test("backups of two stores at once share the one Worker, and each restores to its own store", async () => {
  const a = await filled("two-a");
  const b = await filled("two-b", 1);
  try {
    const [infoA, infoB] = await Promise.all([
      a.store.backup(path.join(scratch.dir, "two-a-target"), { copyIn: "worker" }),
      b.store.backup(path.join(scratch.dir, "two-b-target"), { copyIn: "worker" }),
    ]);
    expect([infoA.copiedIn, infoB.copiedIn]).toEqual(["worker", "worker"]);
    expect([infoA.elements, infoB.elements]).toEqual([a.model.size, b.model.size]);
    await expectRestoreEquals(path.join(scratch.dir, "two-a-target"), a.model, path.join(scratch.dir, "two-a.restored.lss"));
    await expectRestoreEquals(path.join(scratch.dir, "two-b-target"), b.model, path.join(scratch.dir, "two-b.restored.lss"));
  } finally {
    await a.store.close();
    await b.store.close();
  }
}, 120_000);

test("maxBytesPerSecond paces the base copy in the Worker and on the store's thread, and the backup is the same; a bad rate is refused", async () => {
  const { store, model } = await filled("rate", 1);
  try {
    const rate = 16 << 20;
    for (const copyIn of ["worker", "caller"] as const) {
      const started = performance.now();
      let total = 0;
      const info = await store.backup(path.join(scratch.dir, `rate-${copyIn}`), {
        copyIn,
        maxBytesPerSecond: rate,
        onProgress: (p) => {
          if (p.phase === "base") total = p.bytesTotal;
        },
      });
      const took = performance.now() - started;
      expect(info.copiedIn).toBe(copyIn);
      // Every byte of the base is read at the rate, less the limiter's 20 ms of burst.
      expect(total).toBeGreaterThan(8 << 20);
      expect(took).toBeGreaterThanOrEqual((total / rate) * 1000 - 20);
      await expectRestoreEquals(path.join(scratch.dir, `rate-${copyIn}`), model, path.join(scratch.dir, `rate-${copyIn}.lss`));
    }
    for (const bad of [0, -1, 1000, Number.NaN, Number.POSITIVE_INFINITY]) {
      const target = path.join(scratch.dir, `rate-bad-${String(bad)}`);
      await expect(store.backup(target, { maxBytesPerSecond: bad })).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(fs.existsSync(target) ? fs.readdirSync(target).filter((f) => !f.startsWith(".")) : []).toEqual([]);
    }
  } finally {
    await store.close();
  }
}, 120_000);

test("a damaged record in the store's file fails the backup with CorruptionError in the Worker as on the store's thread", async () => {
  const { store, file, model } = await filled("damaged");
  // A recognisable value, then everything checkpointed and closed, so a reopen does not read it.
  const marker = new Uint8Array(6_000).fill(0x5a);
  const seid = store.allocateSeid();
  await store.transaction((tx) => tx.write(seid, marker));
  model.set(seid, marker);
  await store.close();
  const bytes = fs.readFileSync(file);
  const at = Buffer.from(bytes).indexOf(Buffer.from(marker));
  expect(at).toBeGreaterThan(0);
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, new Uint8Array([0x5b]), 0, 1, at + 3_000);
  fs.closeSync(fd);

  const reopened = await Store.open(file, OPTIONS);
  try {
    for (const copyIn of ["worker", "caller"] as const) {
      let error: unknown;
      try {
        await reopened.backup(path.join(scratch.dir, `damaged-${copyIn}`), { copyIn });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(CorruptionError);
      expect((error as CorruptionError).code).toBe("LSS_CORRUPTION");
    }
    // The store itself is unharmed: other elements read back.
    const other = [...model.keys()].find((s) => s !== seid) as bigint;
    expect(Buffer.from((await reopened.read(other)) as Uint8Array).equals(Buffer.from(model.get(other) as Uint8Array))).toBe(true);
  } finally {
    await reopened.close();
  }
}, 120_000);

test("closing the store under a backup copied in a Worker ends it with StoreClosedError, and close returns", async () => {
  // ~70 MiB to copy, and the close starts at the first progress report (after 1 MiB): the copy
  // cannot be over by then.
  const { store } = await filled("closing", 30);
  let started!: () => void;
  const firstProgress = new Promise<void>((resolve) => (started = resolve));
  const backup = store.backup(path.join(scratch.dir, "closing-target"), { copyIn: "worker", onProgress: () => started() });
  backup.catch(() => {});
  const deadline = (ms: number, what: string) => new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms));
  await Promise.race([firstProgress, deadline(30_000, "no progress")]);
  await Promise.race([store.close(), deadline(30_000, "close did not return")]);
  let error: unknown;
  try {
    await Promise.race([backup, deadline(30_000, "the backup did not end")]);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(StoreClosedError);
}, 120_000);

test("errors cross threads with their class, code and fields, also through JSON (the Workers' wire)", () => {
  const roundTrip = (error: Error) => rebuildError(JSON.parse(JSON.stringify(describeError(error))), "a test");
  const target = roundTrip(new BackupTargetError("put failed", { attempts: 3 }));
  expect(target).toBeInstanceOf(BackupTargetError);
  expect((target as BackupTargetError).code).toBe("LSS_BACKUP_TARGET");
  expect((target as BackupTargetError).attempts).toBe(3);
  expect(target.message).toBe("put failed");
  const corrupt = roundTrip(new BackupCorruptionError("base-1/chunk-000001.bin", "bad record"));
  expect(corrupt).toBeInstanceOf(CorruptionError);
  expect((corrupt as BackupCorruptionError).objectName).toBe("base-1/chunk-000001.bin");
  // A class this build does not know keeps its code as an LssError.
  const foreign = rebuildError({ name: "FutureError", message: "later", fields: { code: "LSS_FUTURE" }, stack: undefined }, "a test");
  expect(foreign).toBeInstanceOf(LssError);
  expect((foreign as LssError).code as string).toBe("LSS_FUTURE");
  const plain = roundTrip(new TypeError("nope"));
  expect(plain).toBeInstanceOf(Error);
  expect(plain.message).toBe("nope");
});

test("a script that backs up through the Worker exits as soon as it is done (the idle Worker does not keep it alive)", async () => {
  const child = Bun.spawn([process.execPath, path.join(import.meta.dir, "fixtures", "worker-backup-exit.ts"), path.join(scratch.dir, "exit.lss"), path.join(scratch.dir, "exit-target")], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const deadline = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  const exitedAt = Date.now();
  clearTimeout(deadline);
  expect(err).toBe("");
  expect(code).toBe(0);
  expect(out).toContain("copied-in worker");
  const done = Number(/done (\d+)/.exec(out)?.[1]);
  // The Worker idles for IDLE_MS (5 s) before it ends; the process must not wait for that.
  expect(exitedAt - done).toBeLessThan(IDLE_MS / 2);
});

