/**
 * Corrupted files: damage copies of a closed store at random places (bit flips, zeroed 4 KiB
 * ranges, truncation, garbage appended, or two of these at once), open each copy with a time
 * limit and read everything back.
 *
 * What each trial demands:
 * - open either succeeds or throws `CorruptionError` (never another error, never a hang, never a
 *   crash of the process);
 * - the element set (`has`, `sizeOf`) is the model's after SOME committed prefix (damage may
 *   lose the log's tail, or make recovery start from an older root copy);
 * - every read returns that prefix's bytes or throws `CorruptionError`: never wrong bytes. The
 *   prefix is narrowed by every successful read (and by the counter element, which names it).
 * - a store that opened writable accepts a new transaction, and it reads back.
 *
 * Base stores are built once: one left as a crash would leave it (a checkpoint, then log to
 * replay), one closed cleanly (everything in the checkpoint).
 *
 * @module
 */
import { describe, HangError, withTimeout } from "./util.ts";
import fs from "node:fs";
import path from "node:path";
import { FaultBackend } from "../fault-backend.ts";
import { seededRandom } from "../prng.ts";
import { openStore, type Store } from "../../src/store/store.ts";
import { CorruptionError, LssError } from "../../src/errors.ts";
import { COUNTER_SEID, encodeCounter, FIXED_KEYS, makeValue, type State } from "./model.ts";

/** Options of {@link runCorruptionTrials}. */
export interface CorruptionOptions {
  seed: number;
  /** Working directory (created if missing). */
  dir: string;
  trials: number;
  /** Longest open, read or close before it counts as a hang (default 20 s). */
  timeoutMs?: number;
  /** Transactions in each base store (default 70). */
  transactions?: number;
}

/** What the corruption trials did and found. */
export interface CorruptionReport {
  seed: number;
  trials: number;
  /** Damage applied, by kind. */
  damage: Record<string, number>;
  opened: number;
  /** Opens that threw CorruptionError (allowed). */
  openCorruption: number;
  /** Recoveries whose element set is the newest state of the base (nothing lost). */
  recoveredWhole: number;
  /** Recoveries of an older committed prefix (allowed: damage in the log's tail or a root copy). */
  recoveredOlder: number;
  reads: number;
  /** Reads that threw CorruptionError (allowed: the element's bytes were damaged). */
  corruptReads: number;
  /** Transactions committed on damaged stores after open. */
  writesAfterOpen: number;
  checks: number;
  violations: Array<{ trial: number; message: string; file?: string }>;
  elapsedMs: number;
}

interface Base {
  name: string;
  bytes: Uint8Array;
  /** states[k] = state after the first k transactions. */
  states: State[];
}

const STORE_OPTIONS = { segmentSize: 256 << 10, bufferSize: 64 << 10, cacheBytes: 0, numSegmentsPerCheckpoint: 2 } as const;

/** Build a base store: `transactions` commits (a checkpoint after 60%), then crash or close. */
async function buildBase(dir: string, name: string, seed: number, transactions: number, crash: boolean): Promise<Base> {
  const rand = seededRandom(seed);
  const file = path.join(dir, `${name}.lss`);
  fs.rmSync(file, { force: true });
  const fault = new FaultBackend({ seed, simulateSync: true, direct: false });
  const store = await openStore(file, { ...STORE_OPTIONS, autoClean: false }, fault);
  const states: State[] = [new Map()];
  let state: State = new Map();
  for (let k = 1; k <= transactions; k++) {
    const next = new Map(state);
    const effects: Array<[bigint, Uint8Array | undefined]> = [];
    const ops = 1 + Math.floor(rand() * 4);
    for (let i = 0; i < ops; i++) {
      const seid = BigInt(1 + Math.floor(rand() * FIXED_KEYS));
      if (rand() < 0.15) {
        effects.push([seid, undefined]);
        continue;
      }
      const r = rand();
      const length = k % 29 === 7 && i === 0 ? (520 << 10) + Math.floor(rand() * (100 << 10)) : r < 0.1 ? 0 : r < 0.6 ? Math.floor(rand() * 300) : Math.floor(rand() * 12_000);
      effects.push([seid, makeValue(length, k * 16 + i)]);
    }
    effects.push([COUNTER_SEID, encodeCounter(k)]);
    await store.transaction((tx) => {
      for (const [seid, value] of effects) {
        if (value === undefined) tx.delete(seid);
        else tx.write(seid, value);
      }
    });
    for (const [seid, value] of effects) {
      if (value === undefined) next.delete(seid);
      else next.set(seid, value);
    }
    state = next;
    states.push(state);
    if (k === Math.floor(transactions * 0.6)) await store.checkpoint();
  }
  let bytes: Uint8Array;
  if (crash) {
    await store.flush();
    await fault.powerCut(); // every write completed and synced: the image is the file as it is
    bytes = new Uint8Array(fs.readFileSync(file));
    await store.close().catch(() => {});
  } else {
    await store.close();
    bytes = new Uint8Array(fs.readFileSync(file));
  }
  fault.close();
  fs.rmSync(file, { force: true });
  return { name, bytes, states };
}

/** Run `trials` corrupted-file trials; resolves with the report (violations included). */
export async function runCorruptionTrials(options: CorruptionOptions): Promise<CorruptionReport> {
  const started = performance.now();
  fs.mkdirSync(options.dir, { recursive: true });
  const rand = seededRandom(options.seed);
  const timeoutMs = options.timeoutMs ?? 20_000;
  const transactions = options.transactions ?? 70;
  const bases = [
    await buildBase(options.dir, `base-crashed-${options.seed}`, options.seed * 7 + 1, transactions, true),
    await buildBase(options.dir, `base-closed-${options.seed}`, options.seed * 7 + 2, transactions, false),
  ];
  const report: CorruptionReport = {
    seed: options.seed,
    trials: 0,
    damage: {},
    opened: 0,
    openCorruption: 0,
    recoveredWhole: 0,
    recoveredOlder: 0,
    reads: 0,
    corruptReads: 0,
    writesAfterOpen: 0,
    checks: 0,
    violations: [],
    elapsedMs: 0,
  };
  const target = path.join(options.dir, `trial-${options.seed}.lss`);
  for (let trial = 1; trial <= options.trials; trial++) {
    const base = bases[trial % bases.length] as Base;
    const { bytes, kinds } = damage(base.bytes, rand);
    for (const kind of kinds) report.damage[kind] = (report.damage[kind] ?? 0) + 1;
    fs.writeFileSync(target, bytes);
    const violationsBefore = report.violations.length;
    await runTrial(target, base, trial, rand() < 0.5, rand() < 0.3, timeoutMs, report);
    report.trials += 1;
    if (report.violations.length > violationsBefore) {
      // Keep the damaged file for whoever investigates.
      const copy = path.join(options.dir, `corruption-violation-seed${options.seed}-trial${trial}-${base.name}.lss`);
      fs.writeFileSync(copy, bytes);
      for (const violation of report.violations.slice(violationsBefore)) violation.file = copy;
    }
  }
  fs.rmSync(target, { force: true });
  report.elapsedMs = performance.now() - started;
  return report;
}

/** Apply one or two kinds of damage at random places. */
export function damage(original: Uint8Array, rand: () => number): { bytes: Uint8Array; kinds: string[] } {
  let bytes = original.slice();
  const kinds: string[] = [];
  const count = rand() < 0.2 ? 2 : 1;
  const place = (length: number): number => {
    // A third of the damage goes to the metadata-dense places: the root blocks and the log's
    // last quarter (its tail, and in a closed store the checkpoint); the rest anywhere.
    const r = rand();
    if (r < 0.12) return Math.floor(rand() * Math.min(length, 8192));
    if (r < 0.35) return Math.floor(length * 0.75 + rand() * length * 0.25);
    return Math.floor(rand() * length);
  };
  for (let i = 0; i < count; i++) {
    const r = rand();
    if (r < 0.4) {
      const flips = 1 + Math.floor(rand() * 8);
      const at = place(bytes.length);
      for (let f = 0; f < flips; f++) {
        // Flips near each other (one damaged sector) or scattered.
        const position = rand() < 0.5 ? Math.min(bytes.length - 1, at + Math.floor(rand() * 512)) : place(bytes.length);
        bytes[position] = (bytes[position] as number) ^ (1 << Math.floor(rand() * 8));
      }
      kinds.push("bitflip");
    } else if (r < 0.65) {
      const ranges = 1 + Math.floor(rand() * 3);
      for (let z = 0; z < ranges; z++) {
        const at = Math.floor(place(bytes.length) / 4096) * 4096;
        bytes.fill(0, at, Math.min(bytes.length, at + 4096));
      }
      kinds.push("zero4k");
    } else if (r < 0.85) {
      const cut = rand() < 0.2 ? Math.floor(rand() * 12_288) : place(bytes.length);
      bytes = bytes.slice(0, cut);
      kinds.push("truncate");
    } else {
      const extra = 1 + Math.floor(rand() * (rand() < 0.5 ? 512 : 300_000));
      const garbage = new Uint8Array(extra);
      for (let g = 0; g < extra; g++) garbage[g] = Math.floor(rand() * 256);
      const grown = new Uint8Array(bytes.length + extra);
      grown.set(bytes);
      grown.set(garbage, bytes.length);
      bytes = grown;
      kinds.push("append");
    }
  }
  return { bytes, kinds };
}

function valueKey(value: Uint8Array | undefined): string {
  if (value === undefined) return "-";
  return `${value.length}:${Bun.hash(value).toString(36)}`;
}

async function runTrial(
  file: string,
  base: Base,
  trial: number,
  readOnly: boolean,
  writeAfter: boolean,
  timeoutMs: number,
  report: CorruptionReport,
): Promise<void> {
  const violation = (message: string) => report.violations.push({ trial, message: `[${base.name}${readOnly ? ", readOnly" : ""}] ${message}` });
  const fault = new FaultBackend({ seed: trial, simulateSync: true, direct: false });
  let store: Store;
  try {
    store = await withTimeout(openStore(file, { ...STORE_OPTIONS, readOnly }, fault), timeoutMs, "open");
  } catch (error) {
    report.checks += 1;
    if (error instanceof CorruptionError) report.openCorruption += 1;
    else violation(`open threw ${describe(error)} (only CorruptionError is allowed)`);
    if (!(error instanceof HangError)) fault.close();
    return;
  }
  report.opened += 1;
  try {
    // Candidate prefixes: k such that every observation so far agrees with states[k].
    let candidates = base.states.map((_, k) => k);
    const universe = new Set<bigint>([COUNTER_SEID]);
    for (let i = 1; i <= FIXED_KEYS; i++) universe.add(BigInt(i));
    const narrow = (keep: (state: State) => boolean, what: () => string): boolean => {
      const before = candidates.length;
      candidates = candidates.filter((k) => keep(base.states[k] as State));
      report.checks += 1;
      if (candidates.length === 0 && before > 0) {
        violation(what());
        return false;
      }
      return true;
    };
    // The element set must be some prefix's.
    for (const seid of universe) {
      const has = store.has(seid);
      const size = store.sizeOf(seid);
      if (!narrow((state) => state.has(seid) === has && (state.get(seid)?.length ?? undefined) === size, () => `seid ${seid}: has=${has} size=${size} matches no committed prefix consistent with the rest`)) return;
    }
    const listed = store.seids(0);
    if (!narrow((state) => state.size === listed.length && listed.every((seid) => state.has(seid)), () => `seids(0) lists ${listed.length} seids: no committed prefix has exactly those`)) return;
    // Reads: the prefix's bytes or CorruptionError.
    for (const seid of universe) {
      let value: Uint8Array | undefined;
      report.reads += 1;
      try {
        value = await withTimeout(store.read(seid), timeoutMs, `read of seid ${seid}`);
      } catch (error) {
        if (error instanceof CorruptionError) {
          report.corruptReads += 1;
          continue;
        }
        violation(`read of seid ${seid} threw ${describe(error)} (only CorruptionError is allowed)`);
        return;
      }
      const key = valueKey(value);
      if (!narrow((state) => valueKey(state.get(seid)) === key, () => `seid ${seid} read ${value === undefined ? "nothing" : `${value.length} bytes`}: wrong bytes for every committed prefix consistent with the rest`)) return;
    }
    const newest = base.states.length - 1;
    if (candidates.includes(newest)) report.recoveredWhole += 1;
    else report.recoveredOlder += 1;
    if (!readOnly && writeAfter) {
      const seid = BigInt(FIXED_KEYS + 1);
      const value = makeValue(1000 + trial, trial);
      try {
        await withTimeout(store.transaction((tx) => tx.write(seid, value)), timeoutMs, "transaction after open");
        const back = await withTimeout(store.read(seid), timeoutMs, "read after write");
        report.checks += 1;
        if (back === undefined || Buffer.compare(back, value) !== 0) violation(`a write after open reads back ${back?.length} bytes, not the ${value.length} written`);
        report.writesAfterOpen += 1;
      } catch (error) {
        if (!(error instanceof LssError) || error instanceof HangError) violation(`a transaction after open failed: ${describe(error)}`);
      }
    }
  } finally {
    try {
      await withTimeout(store.close(), timeoutMs, "close");
    } catch (error) {
      if (error instanceof HangError || !(error instanceof LssError)) violation(`close threw ${describe(error)}`);
    }
    fault.close();
  }
}
