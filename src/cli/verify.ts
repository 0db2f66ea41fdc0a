/**
 * `bloom-lss verify <file>`: read every live element back and check every checksum.
 *
 * Opening the store already checks the root block, the checkpoint and every log unit replayed;
 * this then reads each element's records (every part of a large one) from the disk, with the
 * cache off so that nothing is answered from memory. Damage does not stop the run: every damaged
 * seid is listed, and the exit code is 1.
 *
 * @module
 */
import { CorruptionError, type Store } from "../index.ts";
import { ExitCode, formatBytes, openStore, progressBar, spaceOf, type CommonOptions } from "./common.ts";
import type { CliCommand } from "./command.ts";

interface VerifyOptions extends CommonOptions {
  json?: boolean;
}

/** Elements up to this size are read whole; larger ones are streamed (bounded memory). */
const READ_WHOLE_BYTES = 64 << 20;

/** A damaged element. */
interface Damage {
  seid: bigint;
  message: string;
}

/** Read all of `seid` from the disk, verifying every record; its size in bytes. */
async function readBack(store: Store, seid: bigint, sizeBytes: number): Promise<number> {
  if (sizeBytes <= READ_WHOLE_BYTES) return (await store.read(seid))?.length ?? 0;
  let read = 0;
  for await (const chunk of store.readStream(seid)) read += chunk.length;
  return read;
}

export const verifyCommand: CliCommand<VerifyOptions> = {
  name: "verify",
  summary: "check every checksum of every live element (exit 1 on damage)",
  define: (command) =>
    command
      .argument("<file>", "the store's file (or block device)")
      .option("--json", "one JSON object: { elements, bytes, damaged: [{ seid, space, message }] }")
      .addHelpText(
        "after",
        "\nExit codes: 0 every checksum matched; 1 damage (each damaged seid is named), or the file is not a\n" +
          "readable store; 3 the store could not be opened (missing, locked, I/O error).",
      ),
  async run([file], options, output) {
    // Cache off: every element must come from the disk, not from what recovery left in memory.
    const store = await openStore(file as string, { readOnly: true, cacheBytes: 0, progress: options.progress });
    try {
      const seids = store.spaces().flatMap((space) => store.seids(space));
      const sizes = seids.map((seid) => store.sizeOf(seid) ?? 0);
      const totalBytes = sizes.reduce((a, b) => a + b, 0);
      const bar = progressBar(options, "verifying", totalBytes, "bytes");
      const damaged: Damage[] = [];
      let doneBytes = 0;
      for (const [i, seid] of seids.entries()) {
        try {
          await readBack(store, seid, sizes[i] ?? 0);
        } catch (error) {
          if (!(error instanceof CorruptionError)) throw error;
          damaged.push({ seid, message: error.message });
        }
        doneBytes += sizes[i] ?? 0;
        bar.update(doneBytes);
      }
      bar.stop();
      if (options.json === true) {
        const report = {
          elements: seids.length,
          bytes: totalBytes,
          damaged: damaged.map((d) => ({ seid: String(d.seid), space: spaceOf(d.seid), message: d.message })),
        };
        await output.out(`${JSON.stringify(report)}\n`);
      } else if (damaged.length === 0) {
        await output.out(`ok: ${seids.length} elements, ${formatBytes(totalBytes)}: every checksum matches\n`);
      } else {
        const lines = damaged.map((d) => `  seid ${d.seid} (space ${spaceOf(d.seid)}): ${d.message}\n`);
        await output.out(`DAMAGED: ${damaged.length} of ${seids.length} elements fail their checksums:\n${lines.join("")}`);
      }
      return damaged.length === 0 ? ExitCode.ok : ExitCode.damaged;
    } finally {
      await store.close();
    }
  },
};
