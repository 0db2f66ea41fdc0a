/**
 * Shared helpers of the benchmarks: data directory, statistics, fio, machine facts, and the
 * `Report` that bench/run.ts turns into bench/results.md and bench/results.svg.
 *
 * Contract for other benchmark files (bench/log.ts): export
 * `async function runLogBench(report: Report): Promise<void>` and record figures with
 * `report.figure(...)` / `report.ratio(...)`; bench/run.ts calls it when the file exists.
 *
 * Nothing here asserts speed: figures are recorded against their targets and reported.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, constants, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, rmdirSync, rmSync, writeSync } from "node:fs";
import os from "node:os";
import { allocAligned, freeAligned } from "../src/io/libc.ts";
import { dirname, join } from "node:path";

/** The bench/ directory. */
export const BENCH_DIR = dirname(import.meta.path);
/** Parent of every run's data directory (gitignored). */
export const DATA_ROOT = join(BENCH_DIR, ".data");
/**
 * Where this process keeps its files: its own subdirectory, so that two benchmark runs at once
 * (or a standalone `bun bench/io.ts` beside `bun bench/run.ts`) never delete each other's files.
 */
export const DATA_DIR = join(DATA_ROOT, `run-${process.pid}`);

/** Scale of every time budget and operation count; `BENCH_SCALE=0.2` gives a quick smoke run. */
export const SCALE = (() => {
  const raw = Number(process.env.BENCH_SCALE ?? "1");
  return Number.isFinite(raw) && raw > 0 ? raw : 1;
})();

/** Repetitions of each measured pattern (medians are over these). */
export const REPS = (() => {
  const raw = Number(process.env.BENCH_REPS ?? "3");
  return Number.isInteger(raw) && raw >= 1 ? raw : 3;
})();

export function scaled(n: number, min = 1): number {
  return Math.max(min, Math.round(n * SCALE));
}

/** A fresh path under {@link DATA_DIR} (the directory is created; the path is removed first). */
export function dataPath(name: string): string {
  mkdirSync(DATA_DIR, { recursive: true });
  const path = join(DATA_DIR, name);
  rmSync(path, { recursive: true, force: true });
  return path;
}

/** Remove one file of this run, or (no name) this run's whole directory and, if empty, bench/.data. */
export function removeData(name?: string): void {
  rmSync(name === undefined ? DATA_DIR : join(DATA_DIR, name), { recursive: true, force: true });
  if (name === undefined) {
    try {
      rmdirSync(DATA_ROOT);
    } catch {
      // another run still has files there
    }
  }
}

export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 === 1 ? (finite[mid] as number) : ((finite[mid - 1] as number) + (finite[mid] as number)) / 2;
}

/** Human formatting: 3 significant digits, thousands grouped. */
export function fmt(value: number | undefined, digits = 3): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  const abs = Math.abs(value);
  if (abs >= 1000) return Math.round(value).toLocaleString("en-US");
  if (abs === 0) return "0";
  return Number(value.toPrecision(digits)).toString();
}

export function fmtRatio(value: number | undefined, unit?: string): string {
  if (value === undefined || !Number.isFinite(value)) return "n/a";
  if (unit !== undefined) return `${fmt(value)} ${unit}`;
  return `${value >= 10 ? value.toFixed(1) : value.toFixed(2)}×`;
}

export function log(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** Figures of repeated measurements, by key (medians are taken by {@link Report.figure}). */
export class Reps {
  private readonly map = new Map<string, number[]>();
  push(key: string, value: number): void {
    const list = this.map.get(key) ?? [];
    list.push(value);
    this.map.set(key, list);
  }
  get(key: string): number[] {
    return this.map.get(key) ?? [];
  }
}

/** Collect garbage thoroughly (Bun.gc is synchronous with `true`). */
export function fullGc(): void {
  Bun.gc(true);
  Bun.gc(true);
}

export function rssBytes(): number {
  return process.memoryUsage.rss();
}

/** A small fast deterministic PRNG (mulberry32), so runs draw the same offsets. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` bytes of pseudo-random data. */
export function randomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  const next = prng(seed);
  for (let i = 0; i < n; i++) out[i] = (next() * 256) | 0;
  return out;
}

// ─────────────────────────────── machine ───────────────────────────────

export interface MachineInfo {
  nproc: number;
  kernel: string;
  cpu: string;
  memGiB: number;
  bun: string;
  filesystem: string;
  fio: string | undefined;
}

export function machineInfo(): MachineInfo {
  let filesystem = "unknown";
  try {
    const out = execFileSync("df", ["-T", BENCH_DIR], { encoding: "utf8" }).trim().split("\n")[1] ?? "";
    const cols = out.split(/\s+/);
    filesystem = `${cols[1] ?? "?"} on ${cols[0] ?? "?"}`;
  } catch {
    // df missing: leave unknown
  }
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    kernel: os.release(),
    cpu: os.cpus()[0]?.model ?? "unknown",
    memGiB: os.totalmem() / 2 ** 30,
    bun: Bun.version,
    filesystem,
    fio: fioVersion(),
  };
}

// ─────────────────────────────── fio ───────────────────────────────

let fioChecked = false;
let fioVersionCache: string | undefined;

/** fio's version string, or undefined when fio is not installed. */
export function fioVersion(): string | undefined {
  if (fioChecked) return fioVersionCache;
  fioChecked = true;
  const result = spawnSync("fio", ["--version"], { encoding: "utf8" });
  fioVersionCache = result.status === 0 ? result.stdout.trim() : undefined;
  return fioVersionCache;
}

export interface FioResult {
  /** Bytes per second of the job's main direction. */
  bwBytes: number;
  iops: number;
  /** Mean completion latency in microseconds. */
  latUs: number;
}

/** Run one fio job (JSON output) and return the figures of `direction`. */
export function runFio(args: string[], direction: "read" | "write"): FioResult {
  const result = spawnSync("fio", [...args, "--output-format=json"], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (result.status !== 0) throw new Error(`fio ${args.join(" ")} failed: ${result.stderr || result.stdout}`);
  // fio may print warnings before the JSON object.
  const text = result.stdout.slice(result.stdout.indexOf("{"));
  const json = JSON.parse(text) as { jobs: Array<Record<string, { bw_bytes: number; iops: number; clat_ns?: { mean: number } }>> };
  const job = json.jobs[0];
  const side = job?.[direction];
  if (side === undefined) throw new Error(`fio gave no ${direction} figures`);
  return { bwBytes: side.bw_bytes, iops: side.iops, latUs: (side.clat_ns?.mean ?? Number.NaN) / 1000 };
}

// ─────────────────────────────── report ───────────────────────────────

export interface Figure {
  section: string;
  label: string;
  /** Median over reps. */
  value: number | undefined;
  unit: string;
  reps: number[];
  note?: string;
}

export interface Ratio {
  section: string;
  label: string;
  value: number | undefined;
  /** Target the issue asks for (≥ unless `atMost`). */
  target?: number;
  atMost?: boolean;
  /** Unit when the figure is not a plain ratio (shown instead of ×). */
  unit?: string;
  note?: string;
}

/** Everything a run measured, in order. */
export class Report {
  readonly figures: Figure[] = [];
  readonly ratios: Ratio[] = [];
  readonly notes: string[] = [];
  readonly errors: string[] = [];
  /** Free-form text blocks by section (e.g. mitata's table). */
  readonly blocks: { title: string; text: string }[] = [];

  figure(section: string, label: string, reps: number[] | number | undefined, unit: string, note?: string): Figure {
    const list = reps === undefined ? [] : Array.isArray(reps) ? reps : [reps];
    const fig: Figure = { section, label, value: list.length === 0 ? undefined : median(list), unit, reps: list, note };
    this.figures.push(fig);
    log(`  ${section} | ${label}: ${fmt(fig.value)} ${unit}${list.length > 1 ? `  (reps ${list.map((v) => fmt(v)).join(", ")})` : ""}${note ? `  — ${note}` : ""}`);
    return fig;
  }

  ratio(section: string, label: string, value: number | undefined, target?: number, options: { atMost?: boolean; unit?: string; note?: string } = {}): Ratio {
    const r: Ratio = { section, label, value, target, atMost: options.atMost, unit: options.unit, note: options.note };
    this.ratios.push(r);
    log(`  ${section} | ${label}: ${fmtRatio(value, r.unit)}${target !== undefined ? `  target ${options.atMost ? "≤" : "≥"} ${target}: ${verdict(r)}` : ""}`);
    return r;
  }

  note(text: string): void {
    this.notes.push(text);
    log(`  note: ${text}`);
  }

  error(section: string, error: unknown): void {
    const text = `${section}: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`;
    this.errors.push(text);
    log(`  ERROR ${text}`);
    if (error instanceof Error && error.stack) log(error.stack);
  }

  block(title: string, text: string): void {
    this.blocks.push({ title, text });
  }

  get(section: string, label: string): number | undefined {
    return this.figures.find((f) => f.section === section && f.label === label)?.value;
  }
}

export function verdict(r: Ratio): string {
  if (r.target === undefined) return "";
  if (r.value === undefined || !Number.isFinite(r.value)) return "not measured";
  const ok = r.atMost ? r.value <= r.target : r.value >= r.target;
  return ok ? "met" : "missed";
}

/** How far a ratio is toward its target: 1 = exactly met, > 1 = beaten (also for ≤ targets). */
export function targetScore(r: Ratio): number | undefined {
  if (r.target === undefined || r.value === undefined || !Number.isFinite(r.value)) return undefined;
  if (r.atMost) return r.value === 0 ? Number.POSITIVE_INFINITY : r.target / r.value;
  return r.value / r.target;
}

/** A ratio a / b, undefined when either is missing. */
export function ratioOf(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

/** Print stdout heading. */
export function heading(text: string): void {
  log("");
  log(`=== ${text} ===`);
}

export function fileExists(path: string): boolean {
  return existsSync(path);
}

export function readText(path: string): string {
  return readFileSync(path, "utf8");
}

/** Read `bytes` of `source` sequentially and write them to `target` in 8 MiB steps, then fsync. */
export function rawCopy(source: string, target: string, bytes: number): number {
  // The source is read with O_DIRECT, as the store reads it: a buffered read would be served from
  // the page cache after the first copy (a second run measured 731 MiB/s against 230 cold) and
  // compare a backup reading the disk with a copy reading memory.
  const buffer = allocAligned(8 << 20);
  try {
    const started = performance.now();
    const input = openSync(source, constants.O_RDONLY | (constants.O_DIRECT ?? 0o40000));
    const output = openSync(target, "w");
    let done = 0;
    while (done < bytes) {
      // O_DIRECT lengths are whole 4 KiB blocks: read them, write only the bytes wanted.
      const want = Math.min(buffer.sizeBytes, bytes - done);
      const n = readSync(input, buffer.bytes, 0, Math.ceil(want / 4096) * 4096, done);
      if (n === 0) break;
      writeSync(output, buffer.bytes, 0, Math.min(n, want));
      done += Math.min(n, want);
    }
    fsyncSync(output);
    closeSync(input);
    closeSync(output);
    return performance.now() - started;
  } finally {
    freeAligned(buffer);
  }
}
