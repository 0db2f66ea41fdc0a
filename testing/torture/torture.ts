/**
 * The torture driver's command line (`bun run torture -- --seconds N --seed S`, see
 * scripts/torture.ts): simulated power cuts and injected I/O faults under random workloads
 * (powercut.ts), optionally SIGKILLs of a real writer process (kills.ts) and corrupted files
 * (corrupt.ts). Prints what it did, every violation, and the seed that replays it; exits 1 when
 * anything was violated.
 *
 * @module
 */
import path from "node:path";
import { runPowerCutTorture, type PowerCutReport } from "./powercut.ts";
import { runKills } from "./kills.ts";
import { runCorruptionTrials } from "./corrupt.ts";

const USAGE = `usage: bun scripts/torture.ts [options]
  --seconds N     run the power-cut torture for N seconds (default 60)
  --cycles N      …or for N cycles (each ends in a power cut or a clean close after a fault)
  --seed S        master seed (default: derived from the clock; printed)
  --faults P      probability that a cycle injects an I/O error (default 0.3)
  --async         real asynchronous I/O through the thread pool (default: synchronous transfers
                  completed in a seeded order, so a seed replays exactly)
  --kills N       also SIGKILL a real writer process N times (default 0)
  --io uring|portable   backend of the killed writer (default uring)
  --corrupt N     also run N corrupted-file trials (default 0)
  --dir DIR       working directory (default .test-data/torture)
  --quiet         no progress lines`;

interface Args {
  seconds: number | undefined;
  cycles: number | undefined;
  seed: number;
  faults: number;
  asyncIo: boolean;
  kills: number;
  io: "uring" | "portable";
  corrupt: number;
  dir: string;
  quiet: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = {
    seconds: undefined,
    cycles: undefined,
    seed: Date.now() % 1_000_000,
    faults: 0.3,
    asyncIo: false,
    kills: 0,
    io: "uring",
    corrupt: 0,
    dir: path.resolve(import.meta.dir, "..", "..", ".test-data", "torture"),
    quiet: false,
  };
  const number = (name: string, value: string | undefined): number => {
    const parsed = Number(value);
    if (value === undefined || !Number.isFinite(parsed) || parsed < 0) throw new Error(`${name} needs a number ≥ 0, got ${value}`);
    return parsed;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case "--":
        break;
      case "--seconds":
        args.seconds = number(arg, argv[++i]);
        break;
      case "--cycles":
        args.cycles = Math.floor(number(arg, argv[++i]));
        break;
      case "--seed":
        args.seed = Math.floor(number(arg, argv[++i]));
        break;
      case "--faults":
        args.faults = number(arg, argv[++i]);
        break;
      case "--async":
        args.asyncIo = true;
        break;
      case "--kills":
        args.kills = Math.floor(number(arg, argv[++i]));
        break;
      case "--io": {
        const io = argv[++i];
        if (io !== "uring" && io !== "portable") throw new Error(`--io must be uring or portable, got ${io}`);
        args.io = io;
        break;
      }
      case "--corrupt":
        args.corrupt = Math.floor(number(arg, argv[++i]));
        break;
      case "--dir":
        args.dir = path.resolve(argv[++i] ?? ".");
        break;
      case "--quiet":
        args.quiet = true;
        break;
      case "--help":
      case "-h":
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${arg}\n${USAGE}`);
    }
  }
  if (args.seconds === undefined && args.cycles === undefined) args.seconds = 60;
  return args;
}

function summary(report: PowerCutReport): string {
  const seconds = (report.elapsedMs / 1000).toFixed(1);
  return (
    `${seconds}s: ${report.cycles} cycles, ${report.powerCuts} power cuts (${report.cutsDuringOpen} during open), ` +
    `writes at the cuts: ${report.tornWrites} torn, ${report.droppedWrites} dropped, ${report.keptWrites} kept; ` +
    `${report.injectedErrors} injected errors; ${report.transactions} transactions (${report.committed} committed, ` +
    `${report.durable} acked durable, ${report.aborted} aborted), ${report.checkpoints} checkpoints, ${report.reopens} clean reopens; ` +
    `space: ${report.space.successorsRenamed} successors renamed (${report.space.renamesUndone} undone), ${report.space.segmentsSkipped} segment rests skipped; ` +
    `${report.checks} checks, ${report.violations.length} violations`
  );
}

/** Run the torture as the command line asks; resolves with the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 2;
  }
  const log = (line: string) => {
    if (!args.quiet) console.log(line);
  };
  console.log(`torture: seed ${args.seed}, dir ${args.dir}`);
  let violations = 0;

  if (args.kills > 0) {
    log(`kills: SIGKILL a writer (${args.io}) ${args.kills} times…`);
    const kills = await runKills({
      seed: args.seed,
      dir: args.dir,
      kills: args.kills,
      io: args.io,
      onKill: (kill, lastAck, recovered) => {
        if (kill % 10 === 0) log(`  kill ${kill}: last ack ${lastAck}, recovered through ${recovered}`);
      },
    });
    console.log(
      `kills: ${kills.kills} SIGKILLs, ${kills.acks} acks, recovered through transaction ${kills.recovered}, ${kills.checks} checks, ${kills.violations.length} violations (${(kills.elapsedMs / 1000).toFixed(1)}s)`,
    );
    for (const violation of kills.violations) console.log(`  VIOLATION ${violation}`);
    violations += kills.violations.length;
  }

  if (args.corrupt > 0) {
    log(`corruption: ${args.corrupt} damaged copies…`);
    const corrupt = await runCorruptionTrials({ seed: args.seed, dir: args.dir, trials: args.corrupt });
    console.log(
      `corruption: ${corrupt.trials} damaged files (${Object.entries(corrupt.damage).map(([kind, n]) => `${n} ${kind}`).join(", ")}), ` +
        `${corrupt.opened} opened (${corrupt.recoveredWhole} whole, ${corrupt.recoveredOlder} an older prefix), ${corrupt.openCorruption} CorruptionError at open, ` +
        `${corrupt.reads} reads (${corrupt.corruptReads} CorruptionError), ${corrupt.checks} checks, ${corrupt.violations.length} violations (${(corrupt.elapsedMs / 1000).toFixed(1)}s)`,
    );
    for (const violation of corrupt.violations) console.log(`  VIOLATION trial ${violation.trial}: ${violation.message}${violation.file ? ` (file ${violation.file})` : ""}`);
    violations += corrupt.violations.length;
  }

  if ((args.seconds ?? 0) > 0 || (args.cycles ?? 0) > 0) {
    log(`power cuts and faults: ${args.cycles !== undefined ? `${args.cycles} cycles` : `${args.seconds} s`}…`);
    const report = await runPowerCutTorture({
      seed: args.seed,
      dir: args.dir,
      seconds: args.cycles === undefined ? args.seconds : undefined,
      cycles: args.cycles,
      faultProbability: args.faults,
      asyncIo: args.asyncIo,
      onProgress: (progress) => log(`  ${summary(progress)}`),
    });
    console.log(`power cuts: ${summary(report)}`);
    console.log(
      `  recoveries: ${report.recoveredUnacked} kept unacknowledged commits, ${report.lostUnacked} lost unacknowledged commits (both allowed); ` +
        `${report.cleanCloses} clean closes after a fault; ${report.unopenableNewFiles} files cut during creation`,
    );
    for (const violation of report.violations) {
      console.log(`  VIOLATION cycle ${violation.cycle} (cycle seed ${violation.cycleSeed}): ${violation.message}${violation.file ? ` (file ${violation.file})` : ""}`);
    }
    if (report.violations.length > 0) {
      const first = report.violations[0] as { cycle: number };
      console.log(
        args.asyncIo
          ? "  (--async runs do not replay exactly: rerun without --async to find a replayable seed)"
          : `  replay: bun scripts/torture.ts --seed ${args.seed} --cycles ${first.cycle} --faults ${args.faults}  (TORTURE_DEBUG=1 prints a trace)`,
      );
    }
    violations += report.violations.length;
  }
  console.log(violations === 0 ? "torture: no violations" : `torture: ${violations} VIOLATIONS (seed ${args.seed})`);
  return violations === 0 ? 0 : 1;
}
