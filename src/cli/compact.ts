/**
 * `bloom-lss compact <file>`: `store.compact()`, with the cleaner's progress on stderr.
 *
 * @module
 */
import { ExitCode, formatBytes, openStore, parseCount, progressBar, type CommonOptions } from "./common.ts";
import type { CliCommand } from "./command.ts";

interface CompactOptions extends CommonOptions {
  shrink?: boolean;
  utilisation?: string;
  json?: boolean;
}

export const compactCommand: CliCommand<CompactOptions> = {
  name: "compact",
  summary: "clean under-used segments now, and optionally shrink the file",
  define: (command) =>
    command
      .argument("<file>", "the store's file (or block device)")
      .option("--shrink", "also move the log's tail down and truncate free segments at the end of the file")
      .option("--utilisation <percent>", "clean segments below this live-data percentage (default: the store's cleanerUtilisationPercent)")
      .option("--json", "one JSON object instead of text")
      .addHelpText("after", "\nOpens the store for writing: no other process may hold it open."),
  async run([file], options, output) {
    const utilisationPercent = options.utilisation !== undefined ? parseCount(options.utilisation, "--utilisation") : undefined;
    const store = await openStore(file as string, { progress: options.progress });
    try {
      const before = store.stats();
      // compact() reports nothing until it is done: the cleaner's counters show it moving.
      const bar = progressBar(options, "compacting", undefined);
      const ticker = setInterval(() => {
        const cleaner = store.stats().cleaner;
        bar.update(0, { status: `${cleaner.segmentsCleaned - before.cleaner.segmentsCleaned} segments cleaned, ${formatBytes(cleaner.bytesRelocated - before.cleaner.bytesRelocated)} moved` });
      }, 250);
      let result: { segmentsCleaned: number; bytesFreed: number };
      try {
        result = await store.compact({
          ...(options.shrink === true ? { shrink: true } : {}),
          ...(utilisationPercent !== undefined ? { utilisationPercent } : {}),
        });
      } finally {
        clearInterval(ticker);
        bar.stop();
      }
      const after = store.stats();
      const report = { ...result, fileBytesBefore: before.fileBytes, fileBytesAfter: after.fileBytes, bytesRelocated: after.cleaner.bytesRelocated - before.cleaner.bytesRelocated };
      await output.out(
        options.json === true
          ? `${JSON.stringify(report)}\n`
          : `compacted: ${result.segmentsCleaned} segments cleaned, ${formatBytes(report.bytesRelocated)} moved; ` +
              `file ${formatBytes(before.fileBytes)} -> ${formatBytes(after.fileBytes)}\n`,
      );
      return ExitCode.ok;
    } finally {
      await store.close();
    }
  },
};
