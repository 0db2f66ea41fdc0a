/**
 * `bloom-lss backup <file> <target>`, `bloom-lss restore <source> <file>` and
 * `bloom-lss verify-backup <source>`: `store.backup()`, `Store.restore()` and
 * `Store.verifyBackup()` with progress on stderr. A target is a directory or `s3://bucket/prefix`
 * (credentials, endpoint and region from the environment: `S3_*`, then `AWS_*`).
 *
 * @module
 */
import { Store } from "../index.ts";
import type { CliCommand } from "./command.ts";
import { ExitCode, formatBytes, openStore, parseCount, progressBar, UsageError, type CommonOptions, type Progress } from "./common.ts";

interface JsonOption extends CommonOptions {
  json?: boolean;
}

/** One bar per phase ("base", then "log"), as the library reports them. */
function phasedProgress(options: CommonOptions, verb: string): { onProgress: (p: { phase: string; bytesDone: number; bytesTotal: number }) => void; stop: () => void } {
  let phase = "";
  let bar: Progress | undefined;
  return {
    onProgress: (p) => {
      if (p.phase !== phase) {
        bar?.stop();
        phase = p.phase;
        bar = progressBar(options, `${verb} ${phase === "base" ? "live elements" : "log"}`, Math.max(1, p.bytesTotal), "bytes");
      }
      bar?.update(p.bytesDone);
    },
    stop: () => bar?.stop(),
  };
}

export const backupCommand: CliCommand<JsonOption & { full?: boolean }> = {
  name: "backup",
  summary: "back up a store to a directory or s3://bucket/prefix (full the first time, then increments)",
  define: (command) =>
    command
      .argument("<file>", "the store's file")
      .argument("<target>", "a directory, or s3://bucket/prefix (credentials from S3_* or AWS_* variables)")
      .option("--full", "take a new full backup even if the target holds a chain to continue")
      .option("--json", "one JSON object instead of text")
      .addHelpText("after", "\nOpens the store for writing (it records the store's id at the first backup): no other process may hold it open."),
  async run([file, target], options, output) {
    const store = await openStore(file as string, { progress: options.progress });
    const progress = phasedProgress(options, "copying");
    try {
      const info = await store.backup(target as string, { ...(options.full === true ? { full: true } : {}), onProgress: progress.onProgress });
      progress.stop();
      await output.out(
        options.json === true
          ? `${JSON.stringify(info)}\n`
          : `backup ${info.kind}${info.reason !== undefined ? ` (${info.reason})` : ""}: manifest ${info.manifest}, ` +
              `consistent at transaction ${info.transaction}, ${formatBytes(info.bytes)} in ${info.objects} objects\n`,
      );
      return ExitCode.ok;
    } finally {
      progress.stop();
      await store.close();
    }
  },
};

export const restoreCommand: CliCommand<JsonOption & { transaction?: string; time?: string }> = {
  name: "restore",
  summary: "build a new store from a backup, up to a transaction or a time",
  define: (command) =>
    command
      .argument("<source>", "the backup: a directory, or s3://bucket/prefix")
      .argument("<file>", "the new store's file (must not exist, or be empty)")
      .option("--transaction <id>", "stop right after this transaction")
      .option("--time <when>", "stop after the last commit at or before this time (ISO 8601, or ms since the epoch)")
      .option("--json", "one JSON object instead of text"),
  async run([source, file], options, output) {
    if (options.transaction !== undefined && options.time !== undefined) throw new UsageError("give --transaction or --time, not both");
    const transaction = options.transaction !== undefined ? parseCount(options.transaction, "--transaction") : undefined;
    let time: number | undefined;
    if (options.time !== undefined) {
      time = /^\d+$/.test(options.time) ? Number(options.time) : Date.parse(options.time);
      if (!Number.isFinite(time)) throw new UsageError(`--time must be ISO 8601 or ms since the epoch, got ${JSON.stringify(options.time)}`);
    }
    const progress = phasedProgress(options, "restoring");
    try {
      const info = await Store.restore(source as string, file as string, {
        ...(transaction !== undefined ? { transaction } : {}),
        ...(time !== undefined ? { time } : {}),
        onProgress: progress.onProgress,
      });
      progress.stop();
      await output.out(
        options.json === true
          ? `${JSON.stringify(info)}\n`
          : `restored ${info.path} at transaction ${info.transaction}` +
              `${info.commitTime !== null ? ` (${new Date(info.commitTime).toISOString()})` : ""}: ` +
              `${info.baseElements} elements from the base, ${info.transactionsReplayed} transactions replayed\n`,
      );
      return ExitCode.ok;
    } finally {
      progress.stop();
    }
  },
};

export const verifyBackupCommand: CliCommand<JsonOption> = {
  name: "verify-backup",
  summary: "check every checksum of a backup and its chain, without restoring",
  define: (command) =>
    command
      .argument("<source>", "the backup: a directory, or s3://bucket/prefix")
      .option("--json", "one JSON object instead of text")
      .addHelpText("after", "\nExit code 1 when the backup is damaged or its chain has a gap (the message names the object or the gap)."),
  async run([source], options, output) {
    const bar = progressBar(options, "verifying", undefined);
    try {
      const report = await Store.verifyBackup(source as string);
      bar.stop();
      await output.out(
        options.json === true
          ? `${JSON.stringify(report)}\n`
          : `backup ${report.target} is intact: manifest ${report.manifest}, base ${report.base.id} ` +
              `(${report.base.elements} elements, ${formatBytes(report.base.bytes)}) at transaction ${report.base.transaction}\n`,
      );
      return ExitCode.ok;
    } finally {
      bar.stop();
    }
  },
};
