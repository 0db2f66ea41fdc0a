/**
 * What every `bloom-lss` command shares: exit codes, opening a store with feedback, parsing seids,
 * progress bars on stderr, and writing to stdout with backpressure.
 *
 * The CLI is a thin layer over the package's public API (`../index.ts`): nothing here reaches into
 * the store's internals, so each command shows how to do the same from code.
 *
 * @module
 */
import { Presets, SingleBar } from "cli-progress";
import { BackupChainError, BackupObjectMissingError, CorruptionError, LssError, MAX_SEID, Store, type StoreOptions } from "../index.ts";

/** Exit codes of every command (documented in docs/CLI.md). */
export const ExitCode = {
  /** Done; for `verify`: every checksum matched. */
  ok: 0,
  /** Damage: `verify` found elements that fail their checksums, or the file is not a readable store. */
  damaged: 1,
  /** Bad usage: an unknown command or option, a malformed argument. */
  usage: 2,
  /** The command could not run: the file is missing or locked, an I/O error, a bad option value. */
  failed: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Thrown for a malformed argument: reported as a usage error (exit 2). */
export class UsageError extends Error {}

/** Options every command takes. */
export interface CommonOptions {
  /** Progress on stderr: `true` forces it, `false` hides it, unset shows it on a terminal. */
  progress?: boolean;
}

/** Where a command writes: stdout for results, stderr for progress and diagnostics. */
export interface CliOutput {
  /** Write to stdout, waiting when the pipe is full (so a large dump never buffers in memory). */
  out(text: string): Promise<void>;
  /** A line on stderr. */
  err(line: string): void;
}

/** stdout and stderr of this process. */
export const processOutput: CliOutput = {
  out: (text) =>
    new Promise<void>((resolve, reject) => {
      const flushed = process.stdout.write(text, (error) => (error ? reject(error) : undefined));
      if (flushed) resolve();
      else process.stdout.once("drain", resolve);
    }),
  err: (line) => void process.stderr.write(`${line}\n`),
};

/** A progress bar on stderr, or nothing when progress is off. */
export interface Progress {
  update(value: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

/**
 * A bar on stderr counting to `total` (or a ticking elapsed time when `total` is undefined).
 * Shown on a terminal, or everywhere with `--progress` (off a terminal: a line every second).
 */
export function progressBar(options: CommonOptions, label: string, total: number | undefined, unit: "bytes" | "items" = "items"): Progress {
  const show = options.progress ?? process.stderr.isTTY === true;
  if (!show) return { update: () => {}, stop: () => {} };
  const value = unit === "bytes" ? "{done} / {all}" : "{value} / {total}";
  const bar = new SingleBar(
    {
      format: total === undefined ? `${label} {duration_formatted} {status}` : `${label} [{bar}] {percentage}% | ${value} | {duration_formatted} | ETA {eta_formatted}`,
      stream: process.stderr,
      noTTYOutput: true,
      notTTYSchedule: 1000,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  const payload = (v: number) => (unit === "bytes" ? { done: formatBytes(v), all: formatBytes(total ?? 0) } : {});
  bar.start(total ?? 1, 0, { status: "", ...payload(0) });
  return {
    update: (v, extra) => bar.update(total === undefined ? 0 : v, { ...payload(v), ...extra }),
    stop: () => bar.stop(),
  };
}

/**
 * Open the store at `file` for a command. Opening replays the log written since the last
 * checkpoint, which can take a while on a large store: an elapsed-time line shows meanwhile.
 */
export async function openStore(file: string, options: StoreOptions & CommonOptions): Promise<Store> {
  const { progress, ...storeOptions } = options;
  let bar: Progress | undefined;
  const timer = setTimeout(() => (bar = progressBar({ progress }, `opening ${file} (recovery)`, undefined)), 1000);
  try {
    return await Store.open(file, { create: false, ...storeOptions });
  } finally {
    clearTimeout(timer);
    bar?.stop();
  }
}

/**
 * A seid from the command line: decimal (`4294967297`), hexadecimal (`0x100000001`), or
 * `space:index` (`1:1`, the same seid).
 */
export function parseSeid(text: string): bigint {
  const pair = /^(\d+):(\d+)$/.exec(text);
  let seid: bigint;
  try {
    seid = pair !== null ? (BigInt(pair[1] as string) << 32n) | BigInt(pair[2] as string) : BigInt(text);
  } catch {
    throw new UsageError(`not a seid: ${JSON.stringify(text)} (decimal, 0x-hex, or space:index)`);
  }
  if (pair !== null && BigInt(pair[2] as string) > 0xffffffffn) throw new UsageError(`index out of range in ${text}`);
  if (seid < 1n || seid > MAX_SEID) throw new UsageError(`seid ${text} is outside [1, 2^64 - 1]`);
  return seid;
}

/** A non-negative integer option. */
export function parseCount(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** The space of a seid (its high 32 bits). */
export function spaceOf(seid: bigint): number {
  return Number(seid >> 32n);
}

/** `1536` → `"1.5 KiB"`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The exit code and message for an error a command threw. */
export function describeFailure(error: unknown): { code: ExitCode; message: string } {
  if (error instanceof UsageError) return { code: ExitCode.usage, message: error.message };
  // A damaged backup is damage too: an object that fails its checksum, a chain with a gap, an object gone.
  if (error instanceof CorruptionError || error instanceof BackupChainError || error instanceof BackupObjectMissingError) {
    return { code: ExitCode.damaged, message: `${error.code}: ${error.message}` };
  }
  if (error instanceof LssError) return { code: ExitCode.failed, message: `${error.code}: ${error.message}` };
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  if (errno === "EPIPE") return { code: ExitCode.ok, message: "" }; // the reader went away (| head)
  return { code: ExitCode.failed, message: error instanceof Error ? error.message : String(error) };
}
