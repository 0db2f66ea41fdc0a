/**
 * The backup suite, run against a directory target (backup.test.ts) and against S3 through
 * s3rver (backup-s3.test.ts): full and incremental backups under a continuous writer with the
 * cleaner running, exact restores at each backup's point and at random transactions and times,
 * damaged objects and broken chains refused with typed errors naming them, and continuous
 * archiving.
 */
import { expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import {
  BackupChainError,
  BackupCorruptionError,
  BackupObjectMissingError,
  BackupPointError,
  InvalidArgumentError,
  Store,
  type OpenTargetOptions,
} from "../../src/index.ts";
import { encodeManifest, latestManifest, manifestName } from "../../src/backup/manifest.ts";
import { openTarget, type BackupTarget } from "../../src/backup/target.ts";
import { rng, scratchDir } from "../helpers.ts";
import { expectStoreEquals, ModelWriter, STORE_OPTIONS } from "./scenario.ts";

/** How a suite reaches its kind of target. */
export interface SuiteTargets {
  /** A fresh, empty target location (a directory path or an s3:// URL). */
  fresh(name: string): string;
  /** Options for openTarget / backup / restore / verify (S3 endpoint and credentials). */
  options(): OpenTargetOptions;
  /**
   * Where full backups copy their base (default: the store's choice, which for the suite's small
   * stores is the caller's thread). When set, only the restore test is defined.
   */
  copyIn?: "worker" | "caller";
  /** Make the target unreachable for a while, then reachable again (S3 only). */
  outage?: { halt(): Promise<void>; resume(): Promise<void> };
}

async function expectRejects<T extends Error>(promise: Promise<unknown>, type: new (...args: never[]) => T): Promise<T> {
  try {
    await promise;
  } catch (error) {
    if (!(error instanceof type)) throw new Error(`expected ${type.name}, got ${String(error)}`);
    return error;
  }
  throw new Error(`expected ${type.name}, but it resolved`);
}

/** Define the suite's tests for one kind of target. */
export function defineBackupSuite(kind: string, targets: SuiteTargets): void {
  test(`${kind}: full and incremental backups under a continuous writer restore exactly, at their points, 20 random transactions and times`, async () => {
    const { dir, cleanup } = scratchDir(`backup-${kind}`);
    const opts = targets.options();
    const backupOpts = { ...opts, copyIn: targets.copyIn };
    try {
      const store = await Store.open(path.join(dir, "primary.lss"), STORE_OPTIONS);
      const writer = new ModelWriter(store, 14);
      await writer.run(150);
      const location = targets.fresh("chain");

      writer.start();
      await Bun.sleep(50);
      const fileBefore = store.stats().fileBytes;
      const writtenBefore = store.stats().bytesWritten;
      const full = await store.backup(location, backupOpts);
      const grew = store.stats().fileBytes - fileBefore;
      const written = store.stats().bytesWritten - writtenBefore;
      expect(full.kind).toBe("full");
      expect(full.elements).toBeGreaterThan(0);
      if (targets.copyIn !== undefined) expect(full.copiedIn).toBe(targets.copyIn);
      // The file grows at most by what was written during the copy (plus the segment in use).
      expect(grew).toBeLessThanOrEqual(written + 2 * STORE_OPTIONS.segmentSize);

      const backups = [full];
      for (let i = 0; i < 3; i++) {
        await Bun.sleep(60);
        backups.push(await store.backup(location, backupOpts));
      }
      await writer.stop();
      backups.push(await store.backup(location, backupOpts));
      // The log between two backups is not held (only an archiver holds it): with the cleaner
      // reclaiming small segments fast, a backup may find it reused and take a new base instead.
      for (const b of backups.slice(1)) {
        if (b.kind === "full") expect(b.reason).toContain("already reused");
        else expect(b.kind).toBe("incremental");
      }
      expect(backups.filter((b) => b.kind === "incremental").length).toBeGreaterThan(0);
      // With nothing new, a backup is "unchanged". The background cleaner (nudged by the writer's
      // last commits) and a checkpoint may still add log for a moment after the writer stops, so
      // back up until the store is quiet, within a bound.
      // Those backups join the chain like any other (the checks below cover them).
      let unchanged = await store.backup(location, backupOpts);
      for (let tries = 0; unchanged.kind !== "unchanged" && tries < 10; tries++) {
        backups.push(unchanged);
        await Bun.sleep(200);
        unchanged = await store.backup(location, backupOpts);
      }
      expect(unchanged.kind).toBe("unchanged");
      expect(unchanged.transaction).toBe(backups.at(-1)!.transaction);
      expect(store.stats().cleaner.segmentsCleaned).toBeGreaterThan(0);

      // Each backup's own point (a restore of the newest chain to that transaction).
      const last = backups.at(-1)!;
      expect(last.transaction).toBeGreaterThanOrEqual(writer.lastTx);
      let n = 0;
      const summary = backups.map((b) => `${b.kind}:${b.firstTransaction}..${b.transaction}@${b.manifestSeq}`).join(" ");
      for (const b of backups) {
        const out = path.join(dir, `point-${n++}.lss`);
        if (process.env.BACKUP_TEST_TRACE) console.error(summary);
        const info = await Store.restore(location, out, { ...opts, transaction: b.transaction });
        expect(info.transaction).toBe(b.transaction);
        await expectStoreEquals(out, writer.modelAt(b.transaction), `backup ${n} at transaction ${b.transaction}`);
      }
      // The whole chain.
      const whole = path.join(dir, "whole.lss");
      const wholeInfo = await Store.restore(location, whole, opts);
      expect(wholeInfo.transaction).toBe(last.transaction);
      await expectStoreEquals(whole, writer.modelAt(writer.lastTx), "the whole chain");

      // 20 random transactions from the base's point on.
      const next = rng(99);
      // What the chains cover: from each base to the last backup before the next base. The log
      // between a chain's end and a base taken because it was reused is in no backup.
      const covered: Array<[number, number]> = [];
      for (const b of backups) {
        if (b.kind === "full") covered.push([b.firstTransaction!, b.transaction]);
        else covered[covered.length - 1]![1] = b.transaction;
      }
      const isCovered = (tx: number): boolean => covered.some(([from, to]) => tx >= from && tx <= to);
      const candidates = writer.txs.filter((tx) => isCovered(tx.id));
      for (let i = 0; i < 20; i++) {
        const tx = candidates[Math.floor(next() * candidates.length)]!.id;
        const out = path.join(dir, `tx-${i}.lss`);
        await Store.restore(location, out, { ...opts, transaction: tx });
        await expectStoreEquals(out, writer.modelAt(tx), `transaction ${tx}`);
        fs.rmSync(out);
      }
      // Times strictly between two commits.
      const marks = writer.marks.filter((m) => covered.some(([from, to]) => m.afterTx >= from && m.afterTx < to));
      expect(marks.length).toBeGreaterThan(0);
      for (const [i, mark] of marks.slice(0, 8).entries()) {
        const out = path.join(dir, `time-${i}.lss`);
        const info = await Store.restore(location, out, { ...opts, time: new Date(mark.time) });
        // The last commit at or before the mark: the writer's `afterTx`, or a cleaner's commit after it.
        expect(info.transaction).toBeGreaterThanOrEqual(mark.afterTx);
        expect(writer.txs.some((tx) => tx.id > mark.afterTx && tx.id <= info.transaction)).toBe(false);
        await expectStoreEquals(out, writer.modelAt(mark.afterTx), `time ${mark.time}`);
        fs.rmSync(out);
      }

      // Points the backup does not hold.
      await expectRejects(Store.restore(location, path.join(dir, "early.lss"), { ...opts, transaction: full.firstTransaction! - 1 }), BackupPointError);
      await expectRejects(Store.restore(location, path.join(dir, "late.lss"), { ...opts, transaction: last.transaction + 1 }), BackupPointError);
      expect(fs.existsSync(path.join(dir, "early.lss"))).toBe(false);
      // Never over an existing store.
      await expectRejects(Store.restore(location, whole, opts), InvalidArgumentError);

      const report = await Store.verifyBackup(location, opts);
      const lastFull = backups.filter((b) => b.kind === "full").at(-1)!;
      expect(report.base.transaction).toBe(lastFull.firstTransaction!);
      expect(report.lastTransaction).toBeGreaterThanOrEqual(writer.lastTx);
      expect(report.objects).toBe(report.base.chunks + report.increments + 1);
      await store.close();
    } finally {
      cleanup();
    }
  }, 240_000);

  // A suite for one place of the base copy covers only what depends on it.
  if (targets.copyIn !== undefined) return;

  test(`${kind}: a flipped byte, a truncated object, a missing increment and a chain gap are refused, naming them`, async () => {
    const { dir, cleanup } = scratchDir(`backup-damage-${kind}`);
    const opts = targets.options();
    try {
      const store = await Store.open(path.join(dir, "primary.lss"), STORE_OPTIONS);
      const writer = new ModelWriter(store, 7);
      const chainOf = async (name: string): Promise<{ location: string; target: BackupTarget }> => {
        const location = targets.fresh(name);
        await writer.run(40);
        await store.backup(location, { ...opts, chunkBytes: 64 << 10, full: true });
        for (let i = 0; i < 2; i++) {
          await writer.run(20);
          await store.backup(location, opts);
        }
        return { location, target: await openTarget(location, opts) };
      };
      const replace = async (target: BackupTarget, name: string, bytes: Uint8Array): Promise<void> => {
        await target.delete(name);
        await target.put(name, bytes);
      };
      const bothRefuse = async <T extends Error>(location: string, type: new (...args: never[]) => T, label: string): Promise<T[]> => {
        const out = path.join(dir, `${label}.lss`);
        const errors = [await expectRejects(Store.verifyBackup(location, opts), type), await expectRejects(Store.restore(location, out, opts), type)];
        expect(fs.existsSync(out)).toBe(false);
        return errors;
      };

      {
        const { location, target } = await chainOf("flip");
        const manifest = (await latestManifest(target))!.manifest;
        const chunk = manifest.base.chunks[0]!.name;
        const bytes = await target.get(chunk);
        bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
        await replace(target, chunk, bytes);
        for (const error of await bothRefuse(location, BackupCorruptionError, "flip")) {
          expect(error.objectName).toBe(chunk);
          expect(error.message).toContain(chunk);
        }
        await target.close();
      }
      {
        const { location, target } = await chainOf("truncate");
        const manifest = (await latestManifest(target))!.manifest;
        const inc = manifest.increments[0]!.name;
        const bytes = await target.get(inc);
        await replace(target, inc, bytes.subarray(0, bytes.length - 100));
        for (const error of await bothRefuse(location, BackupCorruptionError, "truncate")) expect(error.objectName).toBe(inc);
        await target.close();
      }
      {
        const { location, target } = await chainOf("missing");
        const manifest = (await latestManifest(target))!.manifest;
        const inc = manifest.increments.at(-1)!.name;
        await target.delete(inc);
        for (const error of await bothRefuse(location, BackupObjectMissingError, "missing")) expect(error.objectName).toBe(inc);
        await target.close();
      }
      {
        const { location, target } = await chainOf("gap");
        const manifest = (await latestManifest(target))!.manifest;
        const dropped = manifest.increments[0]!;
        const broken = { ...manifest, seq: manifest.seq + 1, increments: manifest.increments.slice(1) };
        await target.put(manifestName(broken.seq), encodeManifest(broken));
        for (const error of await bothRefuse(location, BackupChainError, "gap")) {
          expect(error.gap.after).toContain("base");
          expect(error.message).toContain("missing");
          expect(error.gap.next).toContain(manifest.increments[1]!.name);
          expect(error.message).toContain(`[${dropped.fromLsn}, ${dropped.toLsn})`);
        }
        await target.close();
      }
      await store.close();
    } finally {
      cleanup();
    }
  }, 180_000);

  test(`${kind}: continuous archiving ships the tail at least every interval${targets.outage ? ", rides out a target outage (backlog reported, then shipped)" : ""}`, async () => {
    const { dir, cleanup } = scratchDir(`archive-${kind}`);
    const opts = targets.options();
    try {
      const store = await Store.open(path.join(dir, "primary.lss"), STORE_OPTIONS);
      const writer = new ModelWriter(store, 21);
      await writer.run(50);
      const location = targets.fresh("archive");
      // Every full ship and every failure, with why: shown when the count below is off.
      const shipLog: string[] = [];
      const archive = await store.archive(location, {
        ...opts,
        intervalMs: 100,
        onShip: (info) => {
          if (info.kind === "full") shipLog.push(`full at tx ${info.transaction}: ${info.reason}`);
        },
        onError: (error) => shipLog.push(`failed: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`),
      });
      writer.start();
      const waitShipped = async (tx: number, ms: number): Promise<void> => {
        const until = Date.now() + ms;
        while ((store.stats().archive?.shippedTransaction ?? -1) < tx) {
          if (Date.now() > until) throw new Error(`archive did not ship transaction ${tx} within ${ms} ms: ${JSON.stringify(store.stats().archive)}`);
          await Bun.sleep(20);
        }
      };
      await Bun.sleep(400);
      await waitShipped(writer.lastTx, 10_000);
      expect(store.stats().archive?.healthy).toBe(true);

      if (targets.outage) {
        await targets.outage.halt();
        const haltedAt = writer.lastTx;
        const until = Date.now() + 20_000;
        while ((store.stats().archive?.failures ?? 0) === 0) {
          if (Date.now() > until) throw new Error("no failed ship while the target was down");
          await Bun.sleep(20);
        }
        await Bun.sleep(300);
        const during = store.stats().archive!;
        expect(during.healthy).toBe(false);
        expect(during.backlogBytes).toBeGreaterThan(0);
        expect(during.heldFrom).not.toBeNull();
        expect(writer.lastTx).toBeGreaterThan(haltedAt);
        await targets.outage.resume();
      }
      await writer.stop();
      await waitShipped(writer.lastTx, 30_000);
      const stats = store.stats().archive!;
      expect(stats.healthy).toBe(true);
      if (stats.fullBackups !== 1) console.error(`archive ships and failures:\n${shipLog.join("\n")}`);
      expect(stats.fullBackups).toBe(1); // the outage did not force a new base
      expect(stats.ships).toBeGreaterThan(2);
      await archive.stop();
      expect(store.stats().archive?.state).toBe("stopped");
      const out = path.join(dir, "restored.lss");
      const info = await Store.restore(location, out, opts);
      // The writer's last transaction, or a cleaner's commit after it.
      expect(info.transaction).toBeGreaterThanOrEqual(writer.lastTx);
      await expectStoreEquals(out, writer.modelAt(writer.lastTx), "archived chain");
      await store.close();
    } finally {
      cleanup();
    }
  }, 180_000);
}
