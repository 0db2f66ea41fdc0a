/**
 * `bloom-lss stat <file>`: what `store.stats()` and `store.spaces()` say, for people or as JSON.
 *
 * @module
 */
import { ExitCode, formatBytes, openStore, type CommonOptions } from "./common.ts";
import type { CliCommand } from "./command.ts";

interface StatOptions extends CommonOptions {
  json?: boolean;
}

export const statCommand: CliCommand<StatOptions> = {
  name: "stat",
  summary: "print a store's statistics and seid spaces",
  define: (command) =>
    command
      .argument("<file>", "the store's file (or block device)")
      .option("--json", "one JSON object instead of text")
      .addHelpText("after", "\nOpens the store read-only: it can run beside nothing else that holds the store open."),
  async run([file], options, output) {
    const store = await openStore(file as string, { readOnly: true, progress: options.progress });
    try {
      const stats = store.stats();
      const spaces = store.spaces().map((space) => ({ space, elements: store.seids(space).length }));
      if (options.json === true) {
        await output.out(`${JSON.stringify({ path: store.path, ...stats, spaces })}\n`);
        return ExitCode.ok;
      }
      const rows: Array<[string, string]> = [
        ["file", store.path],
        ["io", stats.io + (stats.ioFallbackReason !== undefined ? ` (fell back: ${stats.ioFallbackReason})` : "")],
        ["elements", String(stats.elements)],
        ["live bytes", `${formatBytes(stats.liveBytes)} in values, ${formatBytes(stats.liveRecordBytes)} in records`],
        ["file bytes", formatBytes(stats.fileBytes) + (stats.deviceBytes !== undefined ? ` used of a ${formatBytes(stats.deviceBytes)} block device` : "")],
        ["segments", `${stats.segmentsUsed} used, ${stats.segmentsFree} free, ${stats.segmentsPending} pending, ${formatBytes(stats.segmentSize)} each`],
        ["space amplification", stats.spaceAmplification.toFixed(2)],
        ["commits", String(stats.commits)],
        ["unclean shutdowns", String(stats.uncleanShutdowns)],
        [
          "recovery",
          `${stats.recovery.checkpointLoaded ? "checkpoint" : "no checkpoint"}, ${stats.recovery.transactionsReplayed} transactions replayed ` +
            `(${formatBytes(stats.recovery.bytesReplayed)}) in ${stats.recovery.durationMs.toFixed(0)} ms`,
        ],
        ["mapping table", formatBytes(stats.mappingTableBytes)],
        ["spaces", spaces.map((s) => `${s.space} (${s.elements})`).join(", ")],
      ];
      const width = Math.max(...rows.map(([name]) => name.length));
      await output.out(rows.map(([name, value]) => `${name.padEnd(width)}  ${value}\n`).join(""));
      return ExitCode.ok;
    } finally {
      await store.close();
    }
  },
};
