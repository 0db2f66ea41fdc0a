#!/usr/bin/env bun
/**
 * `bloom-lss`: the command-line tool over a store file. Each command is a thin layer over the
 * public API, listed in {@link COMMANDS}; docs/CLI.md documents them and their exit codes.
 *
 * @module
 */
import { Command, CommanderError } from "commander";
import packageJson from "../../package.json" with { type: "json" };
import { backupCommand, restoreCommand, verifyBackupCommand } from "./backup.ts";
import { compactCommand } from "./compact.ts";
import type { CliCommand } from "./command.ts";
import { describeFailure, ExitCode, processOutput, type CliOutput } from "./common.ts";
import { dumpCommand } from "./dump.ts";
import { standbyCommand } from "./standby.ts";
import { statCommand } from "./stat.ts";
import { verifyCommand } from "./verify.ts";

/** Every command, in the order `--help` lists them. */
export const COMMANDS: ReadonlyArray<CliCommand<never>> = [
  statCommand,
  verifyCommand,
  dumpCommand,
  compactCommand,
  backupCommand,
  restoreCommand,
  verifyBackupCommand,
  standbyCommand,
];

/** Run the CLI on `argv` (without the runtime and script); resolves with the exit code. */
export async function main(argv: readonly string[], output: CliOutput = processOutput): Promise<ExitCode> {
  let exitCode: ExitCode = ExitCode.ok;
  const program = new Command("bloom-lss")
    .description("Inspect and maintain bloom-lss store files.")
    .version(packageJson.version, "-V, --version")
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeOut: (text) => void process.stdout.write(text), writeErr: (text) => void process.stderr.write(text) })
    .addHelpText("after", "\nExit codes: 0 ok, 1 damage found, 2 bad usage, 3 the command failed. Run `bloom-lss <command> --help` for details.");
  for (const spec of COMMANDS as ReadonlyArray<CliCommand<Record<string, unknown>>>) {
    const command = spec
      .define(program.command(spec.name).summary(spec.summary).description(spec.summary))
      .option("--progress", "show progress on stderr even when it is not a terminal")
      .option("--no-progress", "never show progress");
    command.action(async (...params: unknown[]) => {
      // commander passes the positional arguments, then the options object, then the command.
      const positional = params.slice(0, -2).filter((p): p is string => typeof p === "string");
      const options = (params.at(-2) ?? {}) as Record<string, unknown>;
      exitCode = await spec.run(positional, options, output);
    });
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end through here too, with exit code 0.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    const failure = describeFailure(error);
    if (failure.message !== "") output.err(`bloom-lss: ${failure.message}`);
    return failure.code;
  }
}

if (import.meta.main) {
  // exitCode, not exit(): pending writes to stdout finish first.
  process.exitCode = await main(process.argv.slice(2));
}
