/**
 * The power-cut torture: random workloads against a {@link History} model, with simulated power
 * cuts and injected I/O errors (through {@link FaultBackend}) at random points, and a check of
 * the recovered store after each.
 *
 * One *cycle*: open the store on a fresh fault-injecting backend (sometimes with a fault or a
 * power cut armed inside the open itself) → check the recovered state → arm a power cut at a
 * random I/O call, or an injected error (EIO or ENOSPC, once or until cleared), or nothing →
 * run random steps (batches of concurrent transactions of writes, deletes, overwrites, empty and
 * multi-part values, seid allocations, aborted transactions; checkpoints; flushes; reads; clean
 * reopens) → cut the power (or, after an injected error, sometimes close cleanly) → next cycle.
 *
 * What the check demands after every cut or reopen:
 * - the store opens (a cut during the file's creation may leave a file that never became a
 *   store; that is only noted);
 * - its state equals the model after a prefix of the transactions issued, ending at one that may
 *   have committed, and containing every transaction acknowledged durable;
 * - every element reads back with exactly the model's bytes (no CorruptionError: a power cut
 *   damages nothing durable), `has`, `sizeOf`, `seids()` and the element count agree;
 * - a seid allocated now is above every seid the surviving prefix allocated;
 * - the store accepts new transactions.
 * While running: a transaction rejects only after a fault (with IoError, NoSpaceError or
 * ReadOnlyError), never hangs, and after a fault clears the store either works or rejects writes
 * with ReadOnlyError.
 *
 * @module
 */
import { describe, HangError, withTimeout } from "./util.ts";
import fs from "node:fs";
import path from "node:path";
import { EIO, ENOSPC, FaultBackend, type FaultSite } from "../fault-backend.ts";
import { seededRandom } from "../prng.ts";
import { openStore, storeInternals, type Store } from "../../src/store/store.ts";
import type { SpaceCounters } from "../../src/log/space.ts";
import { checkInvariants } from "../invariants.ts";
import type { StoreOptions } from "../../src/store/config.ts";
import { CorruptionError, LssError } from "../../src/errors.ts";
import {
  COUNTER_SEID,
  decodeCounter,
  encodeCounter,
  FIXED_KEYS,
  History,
  makeValue,
  sameBytes,
  type Effect,
  type ModelTx,
} from "./model.ts";

/** Options of {@link runPowerCutTorture}. */
export interface PowerCutTortureOptions {
  /** Master seed: every decision derives from it. */
  seed: number;
  /** Directory for the store files (created if missing). */
  dir: string;
  /** Stop after this many cycles (each ends in a power cut or, after a fault, a clean close). */
  cycles?: number;
  /** Stop after this many seconds. */
  seconds?: number;
  /** Stop once this many power cuts were simulated. */
  powerCuts?: number;
  /** Probability that a cycle injects an I/O error instead of only cutting the power (default 0.3). */
  faultProbability?: number;
  /** Start a new file after this many cycles (default 40), so creation and small files recur. */
  cyclesPerFile?: number;
  /** Steps per cycle at most (default 14). */
  maxSteps?: number;
  /** Probability that a write is a multi-part value over 512 KiB (default 0.015). */
  largeValueProbability?: number;
  /** Segment sizes of the files, taken in turn (default {@link SEGMENT_SIZES}). */
  segmentSizes?: readonly number[];
  /** Longest any single store call may take before it counts as a hang (default 30 s). */
  timeoutMs?: number;
  /** Called every `progressEveryMs` (default 10 s) with the report so far. */
  onProgress?: (report: PowerCutReport) => void;
  progressEveryMs?: number;
  /**
   * Real asynchronous I/O through the portable backend's thread pool (default false: transfers
   * run synchronously at submit and complete in a seeded order, so a seed replays exactly).
   */
  asyncIo?: boolean;
  /**
   * Self-test of the harness only: open every store with `durability: "relaxed"` yet count each
   * resolved commit as a durable ack, which the checks must then catch as lost acknowledgements.
   */
  unsafeCountRelaxedAcks?: boolean;
  /** Stop at the first violation (default false). */
  stopOnViolation?: boolean;
}

/** A broken promise of the store. */
export interface Violation {
  cycle: number;
  /** Seed of the cycle's fault backend. */
  cycleSeed: number;
  message: string;
  /** A copy of the file as it was before the failing open, when one was kept. */
  file?: string;
}

/** What the torture did and found. */
export interface PowerCutReport {
  seed: number;
  cycles: number;
  powerCuts: number;
  /** Power cuts that hit during Store.open (recovery, root writes). */
  cutsDuringOpen: number;
  /** Cycles that ended with a clean close after an injected error. */
  cleanCloses: number;
  /** Clean close-and-reopen steps in the middle of cycles. */
  reopens: number;
  tornWrites: number;
  droppedWrites: number;
  keptWrites: number;
  injectedErrors: number;
  /** Transactions issued, committed (resolved), acknowledged durable, aborted on purpose. */
  transactions: number;
  committed: number;
  durable: number;
  aborted: number;
  checkpoints: number;
  /** Individual checks that passed or failed (reads compared, prefixes matched, …). */
  checks: number;
  /** Recoveries that kept transactions committed but not yet acknowledged (allowed). */
  recoveredUnacked: number;
  /** Recoveries that lost committed but unacknowledged transactions (allowed). */
  lostUnacked: number;
  /** Files a power cut during creation left unopenable (nothing was ever acknowledged in them). */
  unopenableNewFiles: number;
  /** The log's rarer ways taken (src/log/space.ts), summed over every store opened. */
  space: SpaceCounters;
  violations: Violation[];
  elapsedMs: number;
}

/** Thrown by aborted transactions of the workload (on purpose: not an error of the store). */
class AbortMarker extends Error {}

/** Errors a store may give after an I/O fault or a power cut. */
function isFaultError(error: unknown): boolean {
  return (
    error instanceof LssError &&
    (error.code === "LSS_IO" || error.code === "LSS_NO_SPACE" || error.code === "LSS_READ_ONLY" || error.code === "LSS_CLOSED")
  );
}


/**
 * Segment sizes of the files, taken in turn: small segments (many rotations, the file grows a
 * whole segment at a time, and the full-disk reserve spans several), and segments large enough
 * to hold the reserve, where the file's last segment is only partly there and the writer's
 * successor often not at all (space.ts: naming a free segment instead, skipping the part of a
 * segment the file does not hold when it cannot grow).
 */
const SEGMENT_SIZES = [256 << 10, 1 << 20] as const;
const BUFFER_BYTES = 64 << 10;
/** Images of the cycles before a violation written beside it (kept in memory, see keepCopy). */
const EARLIER_IMAGES = 4;
const FAULT_SITE_CHOICES: ReadonlyArray<readonly FaultSite[] | undefined> = [
  undefined,
  undefined,
  ["write"],
  ["datasync"],
  ["read"],
  ["allocateSpace"],
  ["write", "datasync"],
];

/** Run the power-cut torture; resolves with the report (violations included, never thrown). */
export async function runPowerCutTorture(options: PowerCutTortureOptions): Promise<PowerCutReport> {
  const torture = new PowerCutTorture(options);
  return torture.run();
}

class PowerCutTorture {
  private readonly options: PowerCutTortureOptions;
  private readonly rand: () => number;
  private readonly timeoutMs: number;
  private readonly report: PowerCutReport;
  private history = new History();
  private file = "";
  private fileNumber = 0;
  private cyclesOnFile = 0;
  /** Something was ever acknowledged or verified in the current file. */
  private fileEstablished = false;
  private cycle = 0;
  private cycleSeed = 0;
  private readonly segmentSizes: readonly number[];
  private started = 0;
  /** The current cycle's store resolves commits only once durable. */
  private sync = true;

  constructor(options: PowerCutTortureOptions) {
    this.options = options;
    this.segmentSizes = options.segmentSizes ?? SEGMENT_SIZES;
    this.rand = seededRandom(options.seed);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.report = {
      seed: options.seed,
      cycles: 0,
      powerCuts: 0,
      cutsDuringOpen: 0,
      cleanCloses: 0,
      reopens: 0,
      tornWrites: 0,
      droppedWrites: 0,
      keptWrites: 0,
      injectedErrors: 0,
      transactions: 0,
      committed: 0,
      durable: 0,
      aborted: 0,
      checkpoints: 0,
      checks: 0,
      recoveredUnacked: 0,
      lostUnacked: 0,
      unopenableNewFiles: 0,
      space: { successorsRenamed: 0, segmentsSkipped: 0, renamesUndone: 0 },
      violations: [],
      elapsedMs: 0,
    };
  }

  private int(below: number): number {
    return Math.floor(this.rand() * below);
  }

  private violation(message: string, file?: string): void {
    this.report.violations.push({ cycle: this.cycle, cycleSeed: this.cycleSeed, message, file });
    if (process.env.TORTURE_DEBUG) {
      console.error(`VIOLATION cycle ${this.cycle}: ${message}`);
      for (const line of this.traceLines) console.error(`  ${line}`);
    }
  }

  /** The file as the last {@link EARLIER_IMAGES} cycles opened it (see openAndVerify). */
  private readonly earlierImages: Array<{ cycle: number; file: string; image: Uint8Array | undefined }> = [];

  /** Recent events (debugging aid: printed with violations when TORTURE_DEBUG is set). */
  private readonly traceLines: string[] = [];

  private trace(line: string): void {
    if (process.env.TORTURE_TRACE) console.error(`[${this.cycle}] ${line}`);
    if (!process.env.TORTURE_DEBUG) return;
    this.traceLines.push(`[${this.cycle}] ${line}`);
    if (this.traceLines.length > 400) this.traceLines.splice(0, this.traceLines.length - 400);
  }

  private check(ok: boolean, message: () => string): boolean {
    this.report.checks += 1;
    if (!ok) this.violation(message());
    return ok;
  }

  async run(): Promise<PowerCutReport> {
    fs.mkdirSync(this.options.dir, { recursive: true });
    this.started = performance.now();
    const deadline = this.options.seconds === undefined ? Number.POSITIVE_INFINITY : this.started + this.options.seconds * 1000;
    const maxCycles = this.options.cycles ?? (this.options.seconds === undefined && this.options.powerCuts === undefined ? 100 : Number.POSITIVE_INFINITY);
    const maxCuts = this.options.powerCuts ?? Number.POSITIVE_INFINITY;
    let lastProgress = this.started;
    const progressEvery = this.options.progressEveryMs ?? 10_000;
    this.newFile();
    while (this.report.cycles < maxCycles && this.report.powerCuts < maxCuts && performance.now() < deadline) {
      if (this.cyclesOnFile >= (this.options.cyclesPerFile ?? 40)) this.newFile();
      this.cycle = this.report.cycles + 1;
      this.cycleSeed = (this.rand() * 0x7fffffff) | 0;
      const violationsBefore = this.report.violations.length;
      if (process.env.TORTURE_DEBUG) console.error(`cycle ${this.cycle} seed ${this.cycleSeed}`);
      await this.runCycle();
      this.report.cycles += 1;
      this.cyclesOnFile += 1;
      if (this.report.violations.length > violationsBefore) {
        if (this.options.stopOnViolation) break;
        // The model no longer describes the file: carry on with a new one.
        this.newFile();
      }
      const now = performance.now();
      if (this.options.onProgress !== undefined && now - lastProgress >= progressEvery) {
        lastProgress = now;
        this.report.elapsedMs = now - this.started;
        this.options.onProgress({ ...this.report });
      }
    }
    this.report.elapsedMs = performance.now() - this.started;
    if (this.report.violations.length === 0) this.removeFile();
    return this.report;
  }

  private removeFile(): void {
    if (this.file !== "") fs.rmSync(this.file, { force: true });
  }

  private newFile(): void {
    this.removeFile();
    this.fileNumber += 1;
    this.file = path.join(this.options.dir, `torture-${this.options.seed}-${this.fileNumber}.lss`);
    fs.rmSync(this.file, { force: true });
    this.history = new History();
    this.cyclesOnFile = 0;
    this.fileEstablished = false;
  }

  private storeOptions(): StoreOptions {
    const relaxed = this.rand() < 0.15 || this.options.unsafeCountRelaxedAcks === true;
    return {
      segmentSize: this.segmentSizes[this.fileNumber % this.segmentSizes.length],
      bufferSize: BUFFER_BYTES,
      ringSize: 2 + this.int(3),
      cacheBytes: [0, 64 << 10, 4 << 20][this.int(3)] as number,
      // Off, a few blocks (eviction all the time), or the default: each read a block around a miss.
      blockCacheBytes: [0, 256 << 10, 32 << 20][this.int(3)] as number,
      durability: relaxed ? "relaxed" : "sync",
      // The relaxed flush timer fires by the clock: only with real async I/O (no exact replay anyway).
      flushTimeMs: this.options.asyncIo === true ? 2 + this.int(20) : 60_000,
      writeMode: this.rand() < 0.7 ? "tailLocalized" : "serialized",
      numSegmentsPerCheckpoint: 1 + this.int(4),
    };
  }

  private absorbCounts(fault: FaultBackend): void {
    const counts = fault.counts;
    this.report.powerCuts += counts.powerCuts;
    this.report.tornWrites += counts.tornWrites;
    this.report.droppedWrites += counts.droppedWrites;
    this.report.keptWrites += counts.keptWrites;
    this.report.injectedErrors += counts.injectedErrors;
    if (counts.useAfterFree > 0) {
      this.violation(`${counts.useAfterFree} native buffers were written after the store freed them: ${fault.useAfterFreeReports.join(" | ")}`);
    }
  }

  private async runCycle(): Promise<void> {
    const weights = [
      { keep: 1, drop: 1, torn: 1 },
      { keep: 3, drop: 1, torn: 1 },
      { keep: 1, drop: 3, torn: 1 },
      { keep: 1, drop: 1, torn: 3 },
    ][this.int(4)] as { keep: number; drop: number; torn: number };
    const fault = new FaultBackend({
      seed: this.cycleSeed,
      simulateSync: true,
      syncIo: this.options.asyncIo !== true,
      direct: false,
      powerCut: weights,
      quarantineFrees: true,
    });
    const options = this.storeOptions();
    this.sync = options.durability === "sync" || this.options.unsafeCountRelaxedAcks === true;
    this.trace(`options ${JSON.stringify(options)} weights ${JSON.stringify(weights)}`);
    fault.onInject = (site, errno, call) => this.trace(`injected errno ${errno} at ${site}, call ${call}`);
    let store: Store | undefined;
    try {
      store = await this.openAndVerify(fault, options);
      if (store === undefined) return;
      await this.workload(fault, store, options);
    } finally {
      this.absorbCounts(fault);
    }
  }

  /** Open after the last cycle's cut or close; check the state. Undefined when the cycle ends here. */
  private async openAndVerify(fault: FaultBackend, options: StoreOptions): Promise<Store | undefined> {
    const roll = this.rand();
    let openFault: "none" | "cut" | "error" = "none";
    if (roll < 0.06) {
      openFault = "cut";
      fault.cutPowerAtCall(1 + this.int(40));
    } else if (roll < 0.12) {
      openFault = "error";
      fault.injectError({ nth: 1 + this.int(40), errno: this.rand() < 0.5 ? EIO : ENOSPC });
    }
    const before = fs.existsSync(this.file) ? fs.readFileSync(this.file) : undefined;
    // The images the last cycles opened, kept in memory (no I/O, so a run's interleaving does not
    // change): at a violation they are written beside it, to see what the cycles before it left.
    this.earlierImages.push({ cycle: this.cycle, file: this.file, image: before });
    if (this.earlierImages.length > EARLIER_IMAGES) this.earlierImages.shift();
    let store: Store;
    try {
      store = await withTimeout(openStore(this.file, options, fault), this.timeoutMs, "Store.open");
    } catch (error) {
      if (error instanceof HangError) {
        this.violation(`${error.message}`, this.keepCopy(before));
        return undefined;
      }
      if (fault.isCut) {
        this.report.cutsDuringOpen += 1;
        await fault.powerCut();
        fault.close();
        return undefined;
      }
      if (openFault === "error" && fault.counts.injectedErrors > 0 && isFaultError(error)) {
        fault.close();
        return undefined;
      }
      if (error instanceof CorruptionError && !this.fileEstablished) {
        // A power cut while the file was being created: nothing was ever acknowledged in it.
        this.report.unopenableNewFiles += 1;
        fault.close();
        this.newFile();
        return undefined;
      }
      this.violation(`Store.open failed: ${describe(error)}`, this.keepCopy(before));
      fault.close();
      return undefined;
    }
    if (fault.isCut) {
      // The cut came after open's last call: it hits the workload's first I/O instead.
    }
    fault.clearFaults();
    const ok = await this.verifyRecovered(store, before, fault);
    if (!ok) {
      await this.abandon(fault, store, []);
      return undefined;
    }
    this.fileEstablished = true;
    return store;
  }

  private keepCopy(bytes: Uint8Array | undefined): string | undefined {
    if (bytes === undefined) return undefined;
    const copy = path.join(this.options.dir, `violation-seed${this.options.seed}-cycle${this.cycle}.lss`);
    fs.writeFileSync(copy, bytes);
    for (const earlier of this.earlierImages) {
      if (earlier.cycle === this.cycle || earlier.file !== this.file || earlier.image === undefined) continue;
      fs.writeFileSync(path.join(this.options.dir, `violation-seed${this.options.seed}-cycle${this.cycle}-opened-by-cycle${earlier.cycle}.lss`), earlier.image);
    }
    return copy;
  }

  /** Check the store equals the model after a prefix covering every durable ack; rebase onto it. */
  private async verifyRecovered(store: Store, before: Uint8Array | undefined, fault: FaultBackend): Promise<boolean> {
    const history = this.history;
    const fail = (message: string): boolean => {
      this.violation(message, this.keepCopy(before));
      return false;
    };
    let counterBytes: Uint8Array | undefined;
    try {
      counterBytes = await withTimeout(store.read(COUNTER_SEID), this.timeoutMs, "read");
    } catch (error) {
      if (fault.isCut) return false;
      return fail(`reading the counter after recovery: ${describe(error)}`);
    }
    const number = decodeCounter(counterBytes);
    this.report.checks += 1;
    if (!Number.isInteger(number)) return fail(`the counter element holds ${counterBytes?.length} bytes: not a counter`);
    if (number < history.lastDurable) {
      return fail(`acknowledged transactions lost: recovered through transaction ${number}, but ${history.lastDurable} was acknowledged durable`);
    }
    const state = history.stateThrough(number);
    if (state === undefined) {
      return fail(`recovered through transaction ${number}, which is not a transaction that may have committed (base ${history.baseNumber}, candidates ${history.candidates().map((tx) => tx.number).join(",")})`);
    }
    const committed = history.txs.filter((tx) => tx.outcome === "committed");
    const lastCommitted = committed.at(-1)?.number ?? history.baseNumber;
    if (number > lastCommitted) this.report.recoveredUnacked += 1;
    if (number < lastCommitted) this.report.lostUnacked += 1;
    let mismatches = 0;
    for (const seid of history.universe()) {
      const expected = state.get(seid);
      let got: Uint8Array | undefined;
      try {
        got = await withTimeout(store.read(seid), this.timeoutMs, "read");
      } catch (error) {
        if (fault.isCut) return false;
        mismatches += 1;
        this.check(false, () => `after recovery through ${number}: reading seid ${seid} threw ${describe(error)}`);
        continue;
      }
      const ok =
        expected === undefined
          ? got === undefined && !store.has(seid) && store.sizeOf(seid) === undefined
          : got !== undefined && sameBytes(got, expected) && store.has(seid) && store.sizeOf(seid) === expected.length;
      if (!this.check(ok, () => `after recovery through ${number}: seid ${seid} reads ${got === undefined ? "nothing" : `${got.length} bytes`}, expected ${expected === undefined ? "nothing" : `${expected.length} bytes`}`)) {
        mismatches += 1;
      }
    }
    if (fault.isCut) return false;
    try {
      return this.verifyListing(store, state, number, history, mismatches, before);
    } catch (error) {
      // An armed power cut may hit the fstat of stats(): the cycle ends there.
      if (fault.isCut) return false;
      throw error;
    }
  }

  private verifyListing(store: Store, state: Map<bigint, Uint8Array>, number: number, history: History, mismatchesSoFar: number, before: Uint8Array | undefined): boolean {
    let mismatches = mismatchesSoFar;
    const inSpace = (space: bigint) => [...state.keys()].filter((seid) => seid >> 32n === space).sort((a, b) => (a < b ? -1 : 1));
    for (const space of [0n, 1n]) {
      const listed = store.seids(Number(space));
      const expected = inSpace(space);
      if (!this.check(listed.length === expected.length && listed.every((seid, i) => seid === expected[i]), () => `seids(${space}) lists ${listed.length} seids, the model ${expected.length}`)) mismatches += 1;
    }
    if (!this.check(store.stats().elements === state.size, () => `stats().elements is ${store.stats().elements}, the model has ${state.size}`)) mismatches += 1;
    for (const problem of checkInvariants(store)) {
      this.check(false, () => `after recovery through ${number}: ${problem}`);
      mismatches += 1;
    }
    const maxAllocated = history.maxAllocatedThrough(number);
    const fresh = store.allocateSeid();
    if (!this.check(fresh > maxAllocated, () => `allocateSeid() gave ${fresh} after recovery, but ${maxAllocated} was already allocated and used`)) mismatches += 1;
    if (mismatches > 0) {
      const copy = this.keepCopy(before);
      const last = this.report.violations.at(-1);
      if (last !== undefined && copy !== undefined) last.file = copy;
      return false;
    }
    this.trace(`verified: recovered through ${number} (last durable ${history.lastDurable})`);
    history.rebase(number);
    return true;
  }

  /** Cut the power under the store (unless already cut), let it settle, write the image. */
  /** Count the store's space events (once per store, before it is closed or abandoned). */
  private absorbSpace(store: Store): void {
    const counters = storeInternals(store).core.log.spaceCounters;
    this.report.space.successorsRenamed += counters.successorsRenamed;
    this.report.space.segmentsSkipped += counters.segmentsSkipped;
    this.report.space.renamesUndone += counters.renamesUndone;
  }

  private async abandon(fault: FaultBackend, store: Store, outstanding: Promise<unknown>[]): Promise<void> {
    this.absorbSpace(store);
    fault.cutPower();
    this.trace(`power cut at call ${fault.calls}: ${JSON.stringify(fault.lastCut)}`);
    await this.settle(outstanding, "operations in flight at the power cut");
    await fault.powerCut();
    try {
      await withTimeout(store.close(), this.timeoutMs, "close after the power cut");
    } catch (error) {
      if (error instanceof HangError) this.violation(error.message);
    }
    fault.close();
  }

  private async settle(promises: Promise<unknown>[], what: string): Promise<void> {
    if (promises.length === 0) return;
    try {
      await withTimeout(Promise.allSettled(promises), this.timeoutMs, what);
    } catch (error) {
      this.violation(describe(error));
    }
  }

  private async workload(fault: FaultBackend, initial: Store, options: StoreOptions): Promise<void> {
    let store = initial;
    const roll = this.rand();
    const mode: "cutAt" | "explicit" | "fault" =
      roll < (this.options.faultProbability ?? 0.3) ? "fault" : roll < 0.75 ? "cutAt" : "explicit";
    if (mode === "cutAt") {
      // Half the time at a datasync, when every write since the last one is still in the air.
      if (this.rand() < 0.5) fault.cutPowerAtCall(1 + Math.floor(this.rand() * 24), ["datasync"]);
      else fault.cutPowerAtCall(1 + Math.floor(this.rand() * this.rand() * 500));
    }
    this.trace(`mode ${mode} at call ${fault.calls}`);
    let faultArmed = false;
    if (mode === "fault") {
      faultArmed = true;
      fault.injectError({
        nth: 1 + this.int(250),
        errno: this.rand() < 0.5 ? EIO : ENOSPC,
        sticky: this.rand() < 0.4,
        sites: FAULT_SITE_CHOICES[this.int(FAULT_SITE_CHOICES.length)],
      });
    }
    const maxSteps = this.options.maxSteps ?? 14;
    const steps = 2 + this.int(maxSteps - 1);
    const midflightStep = mode === "explicit" && this.rand() < 0.6 ? this.int(steps) : -1;
    let faultSeenAt = -1;
    for (let step = 0; step < steps && !fault.isCut; step++) {
      const injected = fault.counts.injectedErrors > 0;
      if (injected && faultSeenAt < 0) faultSeenAt = step;
      if (faultArmed && faultSeenAt >= 0 && step - faultSeenAt >= 2) {
        // The fault clears: the store must work again, or refuse writes with ReadOnlyError.
        fault.clearFaults();
        faultArmed = false;
        await this.afterFaultCleared(fault, store);
        continue;
      }
      if (step === midflightStep) {
        const batch = this.issueBatch(fault, store);
        await this.midflightDelay();
        fault.cutPower();
        await this.finishBatch(fault, batch);
        break;
      }
      const r = this.rand();
      if (r < 0.62) {
        await this.finishBatch(fault, this.issueBatch(fault, store));
      } else if (r < 0.72) {
        await this.guard(fault, () => store.checkpoint(), "checkpoint", () => void (this.report.checkpoints += 1));
      } else if (r < 0.8) {
        await this.flush(fault, store);
      } else if (r < 0.92) {
        await this.liveReads(fault, store);
      } else if (!fault.isCut && !fault.faultArmed && fault.counts.injectedErrors === 0) {
        const reopened = await this.cleanReopen(fault, store, options);
        if (reopened === undefined) return;
        store = reopened;
      }
    }
    if (!fault.isCut && mode === "fault" && this.rand() < 0.5) {
      // End with a clean close: what reached the file must be a prefix with every ack.
      fault.clearFaults();
      try {
        this.absorbSpace(store);
        await withTimeout(store.close(), this.timeoutMs, "close after an injected fault");
      } catch (error) {
        if (error instanceof HangError) this.violation(error.message);
        else if (!isFaultError(error)) this.violation(`close after an injected fault threw ${describe(error)}`);
      }
      fault.close();
      this.report.cleanCloses += 1;
      return;
    }
    // Cut now, maybe with a last batch in flight.
    const outstanding: Promise<unknown>[] = [];
    if (!fault.isCut && this.rand() < 0.5) {
      const batch = this.issueBatch(fault, store);
      outstanding.push(this.finishBatch(fault, batch));
      await this.midflightDelay();
    }
    fault.cutPower();
    await this.abandon(fault, store, outstanding);
  }

  private async midflightDelay(): Promise<void> {
    const kind = this.int(4);
    if (kind === 0) return;
    if (kind === 1) {
      for (let i = this.int(20); i > 0; i--) await Promise.resolve();
      return;
    }
    if (kind === 2) {
      for (let i = 1 + this.int(6); i > 0; i--) await new Promise<void>((resolve) => setImmediate(resolve));
      return;
    }
    // Longer: many event-loop turns (not the clock, so that a seed replays).
    for (let i = 10 + this.int(80); i > 0; i--) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Run `fn`; errors are fine only after a fault. */
  private async guard(fault: FaultBackend, fn: () => Promise<unknown>, what: string, onOk?: () => void): Promise<boolean> {
    try {
      await withTimeout(fn(), this.timeoutMs, what);
      onOk?.();
      return true;
    } catch (error) {
      if (error instanceof HangError) this.violation(error.message);
      else if (!(isFaultError(error) && (fault.isCut || fault.counts.injectedErrors > 0))) {
        this.violation(`${what} failed without a fault: ${describe(error)}`);
      }
      return false;
    }
  }

  private async flush(fault: FaultBackend, store: Store): Promise<void> {
    const last = this.history.txs.at(-1);
    const ok = await this.guard(fault, () => store.flush(), "flush");
    this.trace(`flush ${ok ? "ok" : "failed"} after tx ${last?.number}`);
    if (ok && last !== undefined) this.history.durableThrough(last);
  }

  private async liveReads(fault: FaultBackend, store: Store): Promise<void> {
    // Only meaningful while every transaction issued has settled and none failed.
    if (this.history.txs.some((tx) => tx.outcome !== "committed")) return;
    for (const problem of checkInvariants(store)) this.check(false, () => `while running: ${problem}`);
    const state = this.history.latest();
    const universe = this.history.universe();
    for (let i = 0; i < 6; i++) {
      const seid = universe[this.int(universe.length)] as bigint;
      let got: Uint8Array | undefined;
      try {
        got = await withTimeout(store.read(seid), this.timeoutMs, "read");
      } catch (error) {
        if (error instanceof HangError) this.violation(error.message);
        else if (!(isFaultError(error) && (fault.isCut || fault.counts.injectedErrors > 0))) {
          this.violation(`live read of seid ${seid} threw ${describe(error)}`);
        }
        return;
      }
      const expected = state.get(seid);
      this.check(
        expected === undefined ? got === undefined : got !== undefined && sameBytes(got, expected),
        () => `live read of seid ${seid}: ${got === undefined ? "nothing" : `${got.length} bytes`}, expected ${expected === undefined ? "nothing" : `${expected.length} bytes`}`,
      );
    }
  }

  /** Close cleanly and reopen on the same backend: the state must be exactly the latest. */
  private async cleanReopen(fault: FaultBackend, store: Store, options: StoreOptions): Promise<Store | undefined> {
    try {
      this.absorbSpace(store);
      await withTimeout(store.close(), this.timeoutMs, "close");
    } catch (error) {
      if (fault.isCut && !(error instanceof HangError)) {
        // The armed power cut hit during the close.
        await fault.powerCut();
        fault.close();
        return undefined;
      }
      this.violation(`clean close failed: ${describe(error)}`);
      fault.close();
      return undefined;
    }
    if (fault.isCut) {
      await fault.powerCut();
      fault.close();
      return undefined;
    }
    this.report.reopens += 1;
    // Every transaction settled and committed (liveReads' condition); a clean close made them durable.
    const allCommitted = this.history.txs.every((tx) => tx.outcome === "committed");
    if (allCommitted) for (const tx of this.history.txs) tx.durable = true;
    let reopened: Store;
    try {
      reopened = await withTimeout(openStore(this.file, options, fault), this.timeoutMs, "reopen");
    } catch (error) {
      if (fault.isCut) {
        await fault.powerCut();
        fault.close();
        return undefined;
      }
      this.violation(`reopen after a clean close failed: ${describe(error)}`);
      fault.close();
      return undefined;
    }
    if (fault.isCut) {
      await this.abandon(fault, reopened, []);
      return undefined;
    }
    const expectedLast = this.history.candidates().at(-1)?.number ?? this.history.baseNumber;
    const ok = await this.verifyRecovered(reopened, undefined, fault);
    if (!ok) {
      await this.abandon(fault, reopened, []);
      return undefined;
    }
    if (allCommitted) {
      this.check(this.history.baseNumber === expectedLast, () => `after a clean close the store holds transaction ${this.history.baseNumber}, not the last one, ${expectedLast}`);
    }
    return reopened;
  }

  /** After an injected fault cleared: a transaction either commits or fails with ReadOnlyError. */
  private async afterFaultCleared(fault: FaultBackend, store: Store): Promise<void> {
    const batch = this.issueBatch(fault, store, 1);
    let results: PromiseSettledResult<void>[];
    try {
      results = await withTimeout(Promise.allSettled(batch.map((entry) => entry.promise)), this.timeoutMs, "a transaction after the fault cleared");
    } catch (error) {
      this.violation(describe(error));
      return;
    }
    for (const [i, result] of results.entries()) {
      const entry = batch[i] as IssuedTx;
      this.record(fault, entry, result);
      if (result.status === "rejected" && !(result.reason instanceof AbortMarker) && !fault.isCut) {
        const error = result.reason;
        this.check(
          error instanceof LssError && (error.code === "LSS_READ_ONLY" || (error.code === "LSS_IO" || error.code === "LSS_NO_SPACE")),
          () => `after the fault cleared a transaction failed with ${describe(error)}, not ReadOnlyError`,
        );
      }
    }
  }

  // ───────────────────────────── transactions ─────────────────────────────

  private issueBatch(fault: FaultBackend, store: Store, count = 1 + this.int(4)): IssuedTx[] {
    const issued: IssuedTx[] = [];
    for (let i = 0; i < count; i++) {
      const entry = this.issueTx(fault, store);
      if (entry !== undefined) issued.push(entry);
    }
    return issued;
  }

  private issueTx(fault: FaultBackend, store: Store): IssuedTx | undefined {
    const number = this.history.takeNumber();
    const effects: Effect[] = [];
    let maxAllocated = 0n;
    const opCount = this.int(7);
    const abort = this.rand() < 0.05;
    const known = [...this.history.latest().keys()].filter((seid) => seid !== COUNTER_SEID);
    for (let i = 0; i < opCount; i++) {
      const r = this.rand();
      let seid: bigint;
      if (r < 0.08) {
        try {
          seid = store.allocateSeid();
        } catch (error) {
          if (!isFaultError(error)) this.violation(`allocateSeid threw ${describe(error)}`);
          return undefined;
        }
        if (seid > maxAllocated) maxAllocated = seid;
      } else if (r < 0.2 && known.length > 0) {
        seid = known[this.int(known.length)] as bigint;
      } else {
        seid = BigInt(1 + this.int(FIXED_KEYS));
      }
      if (this.rand() < 0.2) {
        effects.push({ seid, value: undefined });
        continue;
      }
      effects.push({ seid, value: makeValue(this.valueLength(), number * 64 + i) });
      if (this.rand() < 0.05) effects.push({ seid, value: makeValue(this.valueLength(), number * 64 + 32 + i) });
    }
    effects.push({ seid: COUNTER_SEID, value: encodeCounter(number) });
    const tx = abort ? undefined : this.history.add(number, effects, maxAllocated);
    this.report.transactions += 1;
    const promise = store.transaction((t) => {
      for (const effect of effects) {
        if (effect.value === undefined) t.delete(effect.seid);
        else t.write(effect.seid, effect.value);
      }
      if (abort) throw new AbortMarker(`transaction ${number} aborted on purpose`);
    });
    // Never unhandled: the batch's settle reads it.
    promise.catch(() => {});
    return { tx, promise, abort };
  }

  private valueLength(): number {
    const r = this.rand();
    if (r < (this.options.largeValueProbability ?? 0.015)) return (520 << 10) + this.int(180 << 10);
    if (r < 0.1) return 0;
    if (r < 0.5) return 1 + this.int(200);
    if (r < 0.88) return 200 + this.int(8 << 10);
    return (8 << 10) + this.int(56 << 10);
  }

  private async finishBatch(fault: FaultBackend, batch: IssuedTx[]): Promise<void> {
    let results: PromiseSettledResult<void>[];
    try {
      results = await withTimeout(Promise.allSettled(batch.map((entry) => entry.promise)), this.timeoutMs, "a batch of transactions");
    } catch (error) {
      this.violation(describe(error));
      return;
    }
    for (const [i, result] of results.entries()) this.record(fault, batch[i] as IssuedTx, result);
  }

  private record(fault: FaultBackend, entry: IssuedTx, result: PromiseSettledResult<void>): void {
    const { tx } = entry;
    this.trace(`tx ${tx?.number ?? "(aborted)"} ${result.status}${result.status === "rejected" ? ` ${describe(result.reason)}` : ""} cut=${fault.isCut} call=${fault.calls}`);
    if (result.status === "fulfilled") {
      if (entry.abort) {
        this.violation("an aborted transaction resolved");
        return;
      }
      if (tx === undefined) return;
      this.report.committed += 1;
      this.history.committed(tx);
      // With sync durability the promise resolves only once durable; relaxed needs a flush.
      if (this.sync) {
        this.history.durableThrough(tx);
        this.report.durable += 1;
      }
      return;
    }
    const error = result.reason;
    if (error instanceof AbortMarker) {
      this.report.aborted += 1;
      return;
    }
    if (tx !== undefined) tx.outcome = "unknown";
    if (!(isFaultError(error) && (fault.isCut || fault.counts.injectedErrors > 0))) {
      this.violation(`transaction ${tx?.number} rejected without a fault: ${describe(error)}`);
      if (process.env.TORTURE_DEBUG && error instanceof Error) console.error(error.stack);
    }
  }

}

interface IssuedTx {
  tx: ModelTx | undefined;
  promise: Promise<void>;
  abort: boolean;
}
