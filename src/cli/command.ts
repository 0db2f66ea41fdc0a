/**
 * The shape of one `bloom-lss` command. `main.ts` keeps them in one table; adding a command
 * (`backup`, `restore`, `verify-backup`, `standby` once their APIs exist) is one more entry: a
 * file that defines its arguments and options and runs them through the public API.
 *
 * @module
 */
import type { Command } from "commander";
import type { CliOutput, ExitCode } from "./common.ts";

/** One command of the table. */
export interface CliCommand<Options = Record<string, unknown>> {
  /** The word after `bloom-lss`. */
  readonly name: string;
  /** One line for `bloom-lss --help`. */
  readonly summary: string;
  /** Add the command's arguments, options and help text to commander's command. */
  define(command: Command): Command;
  /** Run it with commander's parsed positional arguments and options; resolve with the exit code. */
  run(args: readonly string[], options: Options, output: CliOutput): Promise<ExitCode>;
}
