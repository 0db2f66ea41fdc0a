/**
 * `bloom-lss dump <file>`: elements as JSON lines or a hex dump, all of them or by space or
 * seid range, in ascending seid order (`store.entries()`).
 *
 * @module
 */
import { ExitCode, openStore, parseCount, parseSeid, progressBar, spaceOf, UsageError, type CommonOptions } from "./common.ts";
import type { CliCommand } from "./command.ts";

interface DumpOptions extends CommonOptions {
  space?: string;
  from?: string;
  to?: string;
  format: string;
  encoding: string;
  limit?: string;
}

const ENCODINGS = ["base64", "hex", "utf8"] as const;
type Encoding = (typeof ENCODINGS)[number];

function encode(bytes: Uint8Array, encoding: Encoding): string {
  if (encoding === "utf8") return new TextDecoder().decode(bytes);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(encoding);
}

/** `hexdump -C`-style lines: offset, 16 bytes in hex, the printable ones as text. */
function hexLines(bytes: Uint8Array): string {
  let out = "";
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const row = bytes.subarray(offset, offset + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    out += `  ${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  |${text}|\n`;
  }
  return out;
}

export const dumpCommand: CliCommand<DumpOptions> = {
  name: "dump",
  summary: "print elements as JSON lines or hex, by space or seid range",
  define: (command) =>
    command
      .argument("<file>", "the store's file (or block device)")
      .option("--space <n>", "only this seid space")
      .option("--from <seid>", "only seids >= this (decimal, 0x-hex, or space:index)")
      .option("--to <seid>", "only seids <= this")
      .option("--format <format>", "jsonl (one JSON object per element) or hex", "jsonl")
      .option("--encoding <encoding>", "how jsonl carries values: base64, hex or utf8", "base64")
      .option("--limit <n>", "stop after this many elements")
      .addHelpText(
        "after",
        '\njsonl lines: {"seid":"4294967297","space":1,"size":5,"value":"aGVsbG8="} (seids are strings: they exceed 2^53).\n' +
          "Values are read whole; an element over 1 GiB is refused (read it with store.readStream()).",
      ),
  async run([file], options, output) {
    if (options.format !== "jsonl" && options.format !== "hex") throw new UsageError(`--format must be jsonl or hex, got ${options.format}`);
    const encoding = options.encoding as Encoding;
    if (!ENCODINGS.includes(encoding)) throw new UsageError(`--encoding must be one of ${ENCODINGS.join(", ")}, got ${options.encoding}`);
    const range = {
      ...(options.space !== undefined ? { space: parseCount(options.space, "--space") } : {}),
      ...(options.from !== undefined ? { from: parseSeid(options.from) } : {}),
      ...(options.to !== undefined ? { to: parseSeid(options.to) } : {}),
    };
    const limit = options.limit !== undefined ? parseCount(options.limit, "--limit") : Number.POSITIVE_INFINITY;
    const store = await openStore(file as string, { readOnly: true, progress: options.progress });
    try {
      // Progress only when the dump goes to a file or a pipe: on a terminal it would tear the output.
      const total = Math.min(limit, store.stats().elements);
      const bar = progressBar({ progress: options.progress ?? (process.stderr.isTTY === true && process.stdout.isTTY !== true) }, "dumping", total);
      let count = 0;
      for await (const [seid, value] of store.entries(range)) {
        if (count >= limit) break;
        if (options.format === "jsonl") {
          const line = { seid: String(seid), space: spaceOf(seid), size: value.length, value: encode(value, encoding) };
          await output.out(`${JSON.stringify(line)}\n`);
        } else {
          await output.out(`seid ${seid} (space ${spaceOf(seid)}, ${value.length} bytes)\n${hexLines(value)}`);
        }
        count += 1;
        bar.update(count);
      }
      bar.stop();
      return ExitCode.ok;
    } finally {
      await store.close();
    }
  },
};
