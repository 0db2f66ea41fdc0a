/**
 * `bloom-lss standby <file> --primary <host:port | unix:path>`: `Store.openStandby()` from the
 * command line. It follows the primary (seeding first when the file is new) and prints its lag
 * on stderr until SIGINT or SIGTERM, or with `--until-caught-up` until it has applied everything
 * the primary had made durable; `--promote` then turns it into a primary and exits. The secret
 * comes from a file or an environment variable, never from the command line (where `ps` shows it).
 *
 * @module
 */
import fs from "node:fs";
import { Store } from "../index.ts";
import type { CliCommand } from "./command.ts";
import { ExitCode, parseCount, progressBar, UsageError, type CommonOptions } from "./common.ts";

interface StandbyCliOptions extends CommonOptions {
  primary?: string;
  secretFile?: string;
  secretEnv?: string;
  untilCaughtUp?: boolean;
  timeout?: string;
  promote?: boolean;
  json?: boolean;
}

/** `host:port`, `[::1]:port` or `unix:/path` → what `openStandby` takes. */
function parsePrimary(text: string): string | { unix: string } {
  if (text.startsWith("unix:")) return { unix: text.slice("unix:".length) };
  if (!/:\d+$/.test(text)) throw new UsageError(`--primary must be host:port or unix:/path, got ${JSON.stringify(text)}`);
  return text;
}

function readSecret(options: StandbyCliOptions): string {
  if (options.secretFile !== undefined) return fs.readFileSync(options.secretFile, "utf8").trim();
  const name = options.secretEnv ?? "BLOOM_LSS_SECRET";
  const secret = process.env[name];
  if (secret === undefined || secret === "") throw new UsageError(`no secret: pass --secret-file, or set ${name}`);
  return secret;
}

export const standbyCommand: CliCommand<StandbyCliOptions> = {
  name: "standby",
  summary: "follow a primary as a hot standby (seed, then the log), and optionally promote it",
  define: (command) =>
    command
      .argument("<file>", "the standby's own store file (created and seeded when new)")
      .requiredOption("--primary <address>", "the primary: host:port, or unix:/path/to/socket")
      .option("--secret-file <path>", "read the pre-shared secret from this file")
      .option("--secret-env <name>", "read the secret from this environment variable (default BLOOM_LSS_SECRET)")
      .option("--until-caught-up", "exit once everything the primary had made durable is applied here")
      .option("--timeout <ms>", "with --until-caught-up: give up after this long (default 600000)")
      .option("--promote", "after catching up, promote this standby to a primary (the old one is fenced off)")
      .option("--json", "print the final replication stats as one JSON object")
      .addHelpText("after", "\nWithout --until-caught-up it follows until SIGINT or SIGTERM, then closes cleanly."),
  async run([file], options, output) {
    const primary = parsePrimary(options.primary as string);
    const secret = readSecret(options);
    const timeoutMs = options.timeout !== undefined ? parseCount(options.timeout, "--timeout") : 600_000;
    const standby = await Store.openStandby(file as string, { primary, secret, log: (line) => output.err(line) });
    const bar = progressBar(options, "standby", undefined);
    const ticker = setInterval(() => {
      const r = standby.stats().replication;
      bar.update(0, { status: `${r.connected ? "connected" : "reconnecting"}, applied ${r.appliedTransaction}/${r.primaryTransaction}, lag ${r.lagTransactions} tx, ${r.lagMs} ms` });
    }, 1000);
    let promoted = false;
    try {
      if (options.untilCaughtUp === true || options.promote === true) {
        await standby.caughtUp({ timeoutMs });
      } else {
        await new Promise<void>((resolve) => {
          process.once("SIGINT", resolve);
          process.once("SIGTERM", resolve);
        });
      }
      const stats = standby.stats().replication;
      if (options.promote === true) {
        await standby.promote();
        promoted = true;
      }
      await output.out(
        options.json === true
          ? `${JSON.stringify({ ...stats, promoted })}\n`
          : `standby ${file}: applied through transaction ${stats.appliedTransaction} of ${stats.primaryTransaction}${promoted ? "; promoted to primary" : ""}\n`,
      );
      return ExitCode.ok;
    } finally {
      clearInterval(ticker);
      bar.stop();
      await standby.close(); // also the promoted store
    }
  },
};
