/**
 * A fault-injecting {@link IoBackend} for tests and the torture driver. It wraps a real backend
 * (the portable one by default, for determinism) and forwards every call, while it:
 *
 * - **models durability**: each file has a shadow *durable image*. A write is recorded (offset and
 *   a copy of its bytes, taken at submit) as *pending*. A datasync covers the writes whose
 *   completion the wrapper had seen when the datasync started; when the datasync completes
 *   successfully those writes join the durable image. `syncNow` does the same at once. Linked
 *   ops (`IoOp.link`) are run by the wrapper one at a time: the next op of a chain starts only
 *   once the wrapper has seen the one before complete whole (else it completes with -ECANCELED),
 *   so a datasync linked after a write starts after that write's completion and covers it.
 * - **simulates power loss**: {@link FaultBackend.cutPower} freezes, for every file, an image that
 *   a power cut could leave: the durable image, plus each pending write independently (seeded)
 *   kept whole, dropped, or torn at 512-byte sector granularity (each sector new or old), and a
 *   file size between the durable one and the current one. From then on the backend is *dead*:
 *   every operation fails with EIO (submitted ops as `-EIO` completions, synchronous calls as a
 *   thrown `IoError`), so the abandoned store acknowledges nothing more.
 *   {@link FaultBackend.powerCut} then waits for the real I/O still in flight, closes the real
 *   file descriptors (releasing their flocks) and writes the frozen images over the files, ready
 *   for a fresh backend and store to reopen them.
 * - **injects errors**: the Nth I/O call from now (a submitted op, or a synchronous call such as
 *   `allocateSpace` or `openFile`) fails with an errno (EIO, ENOSPC, …), once or until
 *   {@link FaultBackend.clearFaults}; or calls fail at random with a seeded probability.
 *
 * Everything random comes from one seeded generator, so a seed replays the same decisions for the
 * same sequence of calls. Every fault is counted ({@link FaultBackend.counts}), so a test can
 * assert that its harness really injected something.
 *
 * @module
 */
import fs from "node:fs";
import nodePath from "node:path";
import type {
  FileHandle,
  IoBackend,
  IoCompletion,
  IoKind,
  IoOp,
  NativeBuffer,
  OpenFileOptions,
} from "../src/io/backend.ts";
import { checkChains, linkSucceeded } from "../src/io/backend.ts";
import { ECANCELED } from "../src/io/errno.ts";
import { errnoOf, PortableBackend } from "../src/io/portable.ts";
import { seededRandom } from "./prng.ts";
import { errorFromErrno, InvalidArgumentError, StoreClosedError } from "../src/errors.ts";

/** Sector size at which a power cut tears a write. */
export const SECTOR_BYTES = 512;

export const EIO = 5;
export const ENOSPC = 28;

/** Where a fault may be injected: each submitted op kind, and each synchronous call. */
export type FaultSite =
  | "write"
  | "read"
  | "datasync"
  | "openFile"
  | "lockFile"
  | "fileSizeBytes"
  | "allocateSpace"
  | "truncate"
  | "syncNow";

/** Every site (the default of an injection). */
export const ALL_FAULT_SITES: readonly FaultSite[] = [
  "write",
  "read",
  "datasync",
  "openFile",
  "lockFile",
  "fileSizeBytes",
  "allocateSpace",
  "truncate",
  "syncNow",
];

/** What happens to each non-durable write at a power cut: relative weights. */
export interface PowerCutWeights {
  keep: number;
  drop: number;
  torn: number;
}

/** Options of {@link FaultBackend}. */
export interface FaultBackendOptions {
  /** Seed of every random decision (default 1). */
  seed?: number;
  /** The real backend underneath (default: a new PortableBackend, closed with this one). */
  inner?: IoBackend;
  /**
   * Do not issue real fdatasyncs: a datasync completes at once (still moving writes into the
   * durable image). Durability is simulated anyway, so this only makes tests faster.
   */
  simulateSync?: boolean;
  /**
   * Do each transfer synchronously at submit (node:fs positional calls on the inner backend's
   * descriptors) and hand completions back in a seeded order, some held for later reaps so that
   * they still finish out of order. With no thread pool in the way, a seed replays exactly.
   */
  syncIo?: boolean;
  /** With `syncIo`: probability that a completion is held back at each reap (default 0.3). */
  holdProbability?: number;
  /**
   * Do not really free buffers given back with `free()`: fill them with a poison byte and keep
   * them until {@link FaultBackend.close}, which checks the poison is intact. A write into a
   * buffer after it was freed (by the store, or by I/O still in flight) is then counted in
   * `counts.useAfterFree` instead of corrupting memory another allocation owns.
   */
  quarantineFrees?: boolean;
  /** Override the O_DIRECT request of every openFile (false: buffered I/O, faster for tests). */
  direct?: boolean;
  /** Fate of non-durable writes at a power cut (default keep 2, drop 1, torn 1). */
  powerCut?: Partial<PowerCutWeights>;
  /**
   * Probability that the file size after a power cut is the current one (default 0.5); otherwise
   * it is the durable size, grown to hold every write that survived.
   */
  keepSizeProbability?: number;
}

/** Counters of everything the wrapper did on purpose, and of the calls it saw. */
export interface FaultCounts {
  /** Power cuts simulated. */
  powerCuts: number;
  /** Non-durable writes a power cut tore (some sectors new, some old). */
  tornWrites: number;
  /** Non-durable writes a power cut dropped entirely. */
  droppedWrites: number;
  /** Non-durable writes a power cut kept whole. */
  keptWrites: number;
  /** Errors injected (submitted ops failed and synchronous calls thrown). */
  injectedErrors: number;
  /** I/O calls seen (each op of a batch counts once). */
  calls: number;
  /** Writes that reached the durable image through a completed datasync or syncNow. */
  durableWrites: number;
  /** Quarantined buffers found written after they were freed (see `quarantineFrees`). */
  useAfterFree: number;
}

/** An error injection: the `nth` matching call from now fails with `errno`. */
export interface ErrorInjection {
  /** 1-based: 1 fails the very next matching call. */
  nth: number;
  /** Positive errno (default EIO). ENOSPC becomes `NoSpaceError`, others `IoError`. */
  errno?: number;
  /** Keep failing every later matching call too, until {@link FaultBackend.clearFaults}. */
  sticky?: boolean;
  /** Sites that count and fail (default: all). */
  sites?: readonly FaultSite[];
  /**
   * Writes of nothing but zeros (the log's zero-fills of fresh file space, src/log/prewrite.ts)
   * neither count nor fail: for a test that must hit a unit write (default false).
   */
  skipZeroFills?: boolean;
}

/** Random errors: each matching call fails with this probability (seeded). */
export interface RandomErrors {
  probability: number;
  errno?: number;
  sites?: readonly FaultSite[];
}

/** What a power cut did to one file. */
export interface PowerCutFile {
  path: string;
  /** Size of the image written. */
  sizeBytes: number;
  durableBytes: number;
  kept: number;
  dropped: number;
  torn: number;
}


interface PendingWrite {
  readonly id: number;
  readonly offset: number;
  readonly data: Uint8Array;
  /** The wrapper has seen its completion (so a later datasync covers it). */
  done: boolean;
}

/** Shadow state of one file (by absolute path), shared by every handle on it. */
class FileShadow {
  readonly path: string;
  /** Durable contents; bytes past `durableSize` are zero. */
  private data: Uint8Array;
  durableSize: number;
  /** Size as the running system sees it (writes, fallocate, truncate applied). */
  currentSize: number;
  /** Writes not yet durable, in submission order. */
  pending: PendingWrite[] = [];

  constructor(path: string, contents: Uint8Array) {
    this.path = path;
    this.data = new Uint8Array(Math.max(4096, contents.length));
    this.data.set(contents);
    this.durableSize = contents.length;
    this.currentSize = contents.length;
  }

  private ensure(bytes: number): void {
    if (bytes <= this.data.length) return;
    let capacity = this.data.length;
    while (capacity < bytes) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.data);
    this.data = grown;
  }

  /** Make the completed pending writes among `ids` durable; then the durable size is `size`. */
  makeDurable(ids: ReadonlySet<number>, size: number): number {
    let count = 0;
    const still: PendingWrite[] = [];
    for (const write of this.pending) {
      if (ids.has(write.id) && write.done) {
        this.ensure(write.offset + write.data.length);
        this.data.set(write.data, write.offset);
        count += 1;
      } else {
        still.push(write);
      }
    }
    this.pending = still;
    if (size < this.durableSize) this.data.fill(0, size, Math.min(this.data.length, this.durableSize));
    this.durableSize = size;
    this.ensure(size);
    return count;
  }

  /** Drop a pending write from the model (it failed: nothing known landed). */
  forget(id: number): void {
    this.pending = this.pending.filter((write) => write.id !== id);
  }

  /** Ids of the writes whose completion was seen. */
  doneIds(): Set<number> {
    const ids = new Set<number>();
    for (const write of this.pending) if (write.done) ids.add(write.id);
    return ids;
  }

  /** The image a power cut leaves; `random` decides each pending write's fate. */
  cut(random: () => number, weights: PowerCutWeights, keepSizeProbability: number): { image: Uint8Array; file: PowerCutFile } {
    let end = this.durableSize;
    let maxEnd = Math.max(this.durableSize, this.currentSize);
    for (const write of this.pending) maxEnd = Math.max(maxEnd, write.offset + write.data.length);
    const image = new Uint8Array(maxEnd);
    image.set(this.data.subarray(0, Math.min(this.durableSize, this.data.length)));
    const file: PowerCutFile = { path: this.path, sizeBytes: 0, durableBytes: this.durableSize, kept: 0, dropped: 0, torn: 0 };
    const total = weights.keep + weights.drop + weights.torn;
    for (const write of this.pending) {
      const roll = random() * total;
      if (roll < weights.keep) {
        image.set(write.data, write.offset);
        file.kept += 1;
        end = Math.max(end, write.offset + write.data.length);
      } else if (roll < weights.keep + weights.drop) {
        file.dropped += 1;
      } else {
        // Torn: each 512-byte sector independently new or old (the order the disk wrote them in
        // is unknown, so any subset may have landed).
        const sectors = Math.ceil(write.data.length / SECTOR_BYTES);
        const newProbability = random();
        let landed = 0;
        for (let s = 0; s < sectors; s++) {
          if (random() < newProbability) {
            const from = s * SECTOR_BYTES;
            const to = Math.min(write.data.length, from + SECTOR_BYTES);
            image.set(write.data.subarray(from, to), write.offset + from);
            end = Math.max(end, write.offset + to);
            landed += 1;
          }
        }
        // A write that landed whole or not at all is not torn: count what it really became.
        if (landed === sectors) file.kept += 1;
        else if (landed === 0) file.dropped += 1;
        else file.torn += 1;
      }
    }
    // The size: the one the running system saw (its extensions made durable too), or the durable
    // size grown only as far as the writes that landed reach (the extension itself was lost).
    const finalSize = random() < keepSizeProbability ? Math.max(this.currentSize, end) : end;
    file.sizeBytes = finalSize;
    return { image: image.subarray(0, finalSize), file };
  }
}

interface OpenRecord {
  readonly handle: FileHandle;
  readonly shadow: FileShadow;
  /** Closed by the power cut (the caller's later closeFile is a no-op). */
  closedByCut: boolean;
}

type Tracked =
  | { kind: "write"; shadow: FileShadow; write: PendingWrite }
  | { kind: "datasync"; shadow: FileShadow; covers: Set<number>; size: number }
  | { kind: "read" };

interface ArmedInjection {
  remaining: number;
  errno: number;
  sticky: boolean;
  firing: boolean;
  sites: ReadonlySet<FaultSite>;
  skipZeroFills: boolean;
}

/** The fault-injecting wrapper. */
export class FaultBackend implements IoBackend {
  readonly inner: IoBackend;
  private readonly ownsInner: boolean;
  private readonly random: () => number;
  private readonly simulateSync: boolean;
  private readonly syncIo: boolean;
  private readonly holdProbability: number;
  /** syncIo: completions of transfers already done, not yet released to `ready`. */
  private held: IoCompletion[] = [];
  private readonly directOverride: boolean | undefined;
  private readonly weights: PowerCutWeights;
  private readonly keepSizeProbability: number;
  private readonly shadows = new Map<string, FileShadow>();
  private readonly openFiles = new Map<number, OpenRecord>();
  private readonly tracked = new Map<number, Tracked>();
  /** Link chains under way, by the user data of the op running now: that op and the ops after it. */
  private readonly chains = new Map<number, { op: IoOp; rest: readonly IoOp[] }>();
  /** Ops of chains not started yet (they count in flight). */
  private deferred = 0;
  /** Completions of our own (injected, simulated syncs, or after the cut) plus those pulled from inner. */
  private ready: IoCompletion[] = [];
  private readonly scratch: IoCompletion[] = [];
  private nextWriteId = 1;
  private injections: ArmedInjection[] = [];
  private randomErrors: { probability: number; errno: number; sites: ReadonlySet<FaultSite> } | undefined;
  /** Matching calls left before the armed power cut, and the sites that count. */
  private cutAfter: { remaining: number; sites: ReadonlySet<FaultSite> } | undefined;
  private dead = false;
  private cutImages: Array<{ path: string; image: Uint8Array }> | undefined;
  private cutFinished = false;
  private isClosed = false;
  private innerWaiting: Promise<void> | undefined;
  private readonly wakers = new Set<() => void>();
  private readonly counters: FaultCounts = {
    powerCuts: 0,
    tornWrites: 0,
    droppedWrites: 0,
    keptWrites: 0,
    injectedErrors: 0,
    calls: 0,
    durableWrites: 0,
    useAfterFree: 0,
  };
  private readonly quarantineFrees: boolean;
  private readonly quarantine: Array<{ buffer: NativeBuffer; freedAt: string }> = [];
  /** Where each damaged quarantined buffer was freed (size and stack), for whoever investigates. */
  readonly useAfterFreeReports: string[] = [];
  /** What the last power cut did, per file. */
  lastCut: PowerCutFile[] = [];
  /** Called when an injected error fires (site, errno, call number). */
  onInject: ((site: FaultSite, errno: number, call: number) => void) | undefined;

  constructor(options: FaultBackendOptions = {}) {
    this.ownsInner = options.inner === undefined;
    this.inner = options.inner ?? new PortableBackend();
    this.random = seededRandom(options.seed ?? 1);
    this.simulateSync = options.simulateSync ?? false;
    this.syncIo = options.syncIo ?? false;
    this.holdProbability = options.holdProbability ?? 0.3;
    this.directOverride = options.direct;
    this.weights = { keep: 2, drop: 1, torn: 1, ...options.powerCut };
    if (this.weights.keep < 0 || this.weights.drop < 0 || this.weights.torn < 0 || this.weights.keep + this.weights.drop + this.weights.torn <= 0) {
      throw new InvalidArgumentError("powerCut weights must be ≥ 0 and not all 0");
    }
    this.keepSizeProbability = options.keepSizeProbability ?? 0.5;
    this.quarantineFrees = options.quarantineFrees ?? false;
  }

  // ───────────────────────────── control ─────────────────────────────

  /** A copy of the counters. */
  get counts(): FaultCounts {
    return { ...this.counters };
  }

  /** I/O calls seen so far. */
  get calls(): number {
    return this.counters.calls;
  }

  /** True once the power has been cut (by {@link cutPower} or an armed {@link cutPowerAtCall}). */
  get isCut(): boolean {
    return this.dead;
  }

  /** True while an armed error injection has not fired yet, or a sticky one is firing. */
  get faultArmed(): boolean {
    return this.injections.length > 0 || this.randomErrors !== undefined;
  }

  /** Fail the `nth` matching I/O call from now (see {@link ErrorInjection}). */
  injectError(injection: ErrorInjection): void {
    if (!Number.isInteger(injection.nth) || injection.nth < 1) throw new InvalidArgumentError(`nth must be an integer ≥ 1, got ${injection.nth}`);
    this.injections.push({
      remaining: injection.nth,
      errno: injection.errno ?? EIO,
      sticky: injection.sticky ?? false,
      firing: false,
      sites: new Set(injection.sites ?? ALL_FAULT_SITES),
      skipZeroFills: injection.skipZeroFills ?? false,
    });
  }

  /** Fail each matching call with `probability` (seeded), until {@link clearFaults}. */
  failRandomly(errors: RandomErrors): void {
    if (!(errors.probability >= 0 && errors.probability <= 1)) throw new InvalidArgumentError(`probability must be in [0, 1], got ${errors.probability}`);
    this.randomErrors = { probability: errors.probability, errno: errors.errno ?? EIO, sites: new Set(errors.sites ?? ALL_FAULT_SITES) };
  }

  /** Disarm every error injection (a sticky "disk full" clears). */
  clearFaults(): void {
    this.injections = [];
    this.randomErrors = undefined;
  }

  /**
   * Cut the power just before the `nth` I/O call from now (1 = the next call), which fails.
   * With `sites`, only calls at those sites count (e.g. `["datasync"]`: cut as the nth datasync
   * is issued, when every write since the previous one is still in the air).
   */
  cutPowerAtCall(nth: number, sites: readonly FaultSite[] = ALL_FAULT_SITES): void {
    if (!Number.isInteger(nth) || nth < 1) throw new InvalidArgumentError(`nth must be an integer ≥ 1, got ${nth}`);
    this.cutAfter = { remaining: nth, sites: new Set(sites) };
  }

  /**
   * Cut the power now: freeze the image of every file (durable writes, and each pending write
   * kept, dropped or torn), and make every later call fail with EIO. Synchronous, so it can be
   * called at any instant. {@link powerCut} finishes the job on disk.
   */
  cutPower(): void {
    if (this.dead) return;
    this.dead = true;
    this.cutAfter = undefined;
    this.counters.powerCuts += 1;
    const images: Array<{ path: string; image: Uint8Array }> = [];
    const files: PowerCutFile[] = [];
    for (const shadow of this.shadows.values()) {
      const { image, file } = shadow.cut(this.random, this.weights, this.keepSizeProbability);
      images.push({ path: shadow.path, image });
      files.push(file);
      this.counters.keptWrites += file.kept;
      this.counters.droppedWrites += file.dropped;
      this.counters.tornWrites += file.torn;
    }
    this.cutImages = images;
    this.lastCut = files;
    this.wake();
  }

  /**
   * Simulate a power cut and leave its result on disk: {@link cutPower} (unless it already
   * happened), wait for the real I/O still in flight, close the real file descriptors (so their
   * locks are released), and write each file's frozen image over it. The store that used this
   * backend is abandoned: everything it tries from now on fails. Reopen the files with a fresh
   * backend. Returns what the cut did to each file.
   */
  async powerCut(): Promise<PowerCutFile[]> {
    this.cutPower();
    if (this.cutFinished) return this.lastCut;
    this.cutFinished = true;
    // Real operations submitted before the cut still run in the inner backend: let them land
    // (on the old file contents, which the image replaces) before closing their descriptors.
    const deadline = Date.now() + 30_000;
    while (this.inner.inFlight > 0) {
      if (Date.now() > deadline) throw new Error(`power cut: ${this.inner.inFlight} real I/O operations never completed`);
      await Bun.sleep(1);
    }
    for (const record of this.openFiles.values()) {
      if (record.closedByCut) continue;
      record.closedByCut = true;
      try {
        this.inner.closeFile(record.handle);
      } catch {
        // Already gone: nothing to release.
      }
    }
    for (const { path, image } of this.cutImages ?? []) fs.writeFileSync(path, image);
    return this.lastCut;
  }

  // ───────────────────────────── injection ─────────────────────────────

  /** Count one call at `site`; returns an errno to fail it with, or 0. Cuts the power when due. */
  private enter(site: FaultSite, zeroFill = false): number {
    if (this.dead) return EIO;
    this.counters.calls += 1;
    if (this.cutAfter !== undefined && this.cutAfter.sites.has(site) && --this.cutAfter.remaining <= 0) {
      this.cutPower();
      return EIO;
    }
    let errno = 0;
    for (const injection of this.injections) {
      if (!injection.sites.has(site) || (zeroFill && injection.skipZeroFills)) continue;
      if (injection.firing) {
        errno ||= injection.errno;
        continue;
      }
      injection.remaining -= 1;
      if (injection.remaining <= 0) {
        errno ||= injection.errno;
        injection.firing = true;
      }
    }
    this.injections = this.injections.filter((injection) => !injection.firing || injection.sticky);
    const randomErrors = this.randomErrors;
    if (errno === 0 && randomErrors !== undefined && randomErrors.sites.has(site) && this.random() < randomErrors.probability) {
      errno = randomErrors.errno;
    }
    if (errno !== 0) {
      this.counters.injectedErrors += 1;
      this.onInject?.(site, errno, this.counters.calls);
    }
    return errno;
  }

  /** Throw the typed error for `errno` of a synchronous call. */
  private fail(errno: number, what: string): never {
    throw errorFromErrno(-errno, `${what}${this.dead ? " (power cut)" : " (injected fault)"}`);
  }

  private check(site: FaultSite, what: string): void {
    const errno = this.enter(site);
    if (errno !== 0) this.fail(errno, what);
  }

  // ───────────────────────────── IoBackend ─────────────────────────────

  get kind(): IoKind {
    return this.inner.kind;
  }

  get queueDepth(): number {
    return this.inner.queueDepth;
  }

  get fallbackReason(): string | undefined {
    return this.inner.fallbackReason;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Real operations in flight, plus completions waiting to be reaped. */
  get inFlight(): number {
    return this.inner.inFlight + this.ready.length + this.held.length + this.deferred;
  }

  private assertOpen(): void {
    if (this.isClosed) throw new StoreClosedError("the fault-injecting backend is closed");
  }

  private shadowOf(path: string): FileShadow {
    const key = nodePath.resolve(path);
    let shadow = this.shadows.get(key);
    if (shadow === undefined) {
      let contents: Uint8Array = new Uint8Array(0);
      try {
        contents = fs.readFileSync(key);
      } catch {
        // Missing: it starts empty.
      }
      shadow = new FileShadow(key, contents);
      this.shadows.set(key, shadow);
    }
    return shadow;
  }

  private recordOf(fd: number): OpenRecord {
    const record = this.openFiles.get(fd);
    if (record === undefined) throw new InvalidArgumentError(`fd ${fd} was not opened through this backend`);
    return record;
  }

  openFile(path: string, options: OpenFileOptions = {}): FileHandle {
    this.assertOpen();
    this.check("openFile", `open ${path}`);
    const shadow = this.shadowOf(path);
    const handle = this.inner.openFile(path, { ...options, direct: this.directOverride ?? options.direct });
    this.openFiles.set(handle.fd, { handle, shadow, closedByCut: false });
    const size = this.inner.fileSizeBytes(handle);
    shadow.currentSize = size;
    return handle;
  }

  closeFile(file: FileHandle): void {
    const record = this.openFiles.get(file.fd);
    if (record !== undefined && record.handle === file) {
      this.openFiles.delete(file.fd);
      if (record.closedByCut) return;
    }
    this.inner.closeFile(file);
  }

  async lockFile(file: FileHandle): Promise<void> {
    this.assertOpen();
    this.check("lockFile", `flock ${file.path}`);
    await this.inner.lockFile(file);
  }

  fileSizeBytes(file: FileHandle): number {
    this.assertOpen();
    this.check("fileSizeBytes", `fstat ${file.path}`);
    return this.inner.fileSizeBytes(file);
  }

  allocateSpace(file: FileHandle, offset: number, lengthBytes: number): void {
    this.assertOpen();
    this.check("allocateSpace", `fallocate ${file.path}`);
    this.inner.allocateSpace(file, offset, lengthBytes);
    const shadow = this.recordOf(file.fd).shadow;
    shadow.currentSize = Math.max(shadow.currentSize, offset + lengthBytes);
  }

  truncate(file: FileHandle, sizeBytes: number): void {
    this.assertOpen();
    this.check("truncate", `ftruncate ${file.path}`);
    this.inner.truncate(file, sizeBytes);
    this.recordOf(file.fd).shadow.currentSize = sizeBytes;
  }

  syncNow(file: FileHandle): void {
    this.assertOpen();
    this.check("syncNow", `fdatasync ${file.path}`);
    if (!this.simulateSync) this.inner.syncNow(file);
    const shadow = this.recordOf(file.fd).shadow;
    this.counters.durableWrites += shadow.makeDurable(shadow.doneIds(), shadow.currentSize);
  }

  alloc(sizeBytes: number): NativeBuffer {
    this.assertOpen();
    return this.inner.alloc(sizeBytes);
  }

  free(buffer: NativeBuffer): void {
    if (!this.quarantineFrees) {
      this.inner.free(buffer);
      return;
    }
    buffer.bytes.fill(POISON);
    this.quarantine.push({ buffer, freedAt: new Error("freed here").stack ?? "" });
  }

  /** Check the quarantined buffers are still all poison, then free them; returns how many were not. */
  private releaseQuarantine(): number {
    let damaged = 0;
    for (const { buffer, freedAt } of this.quarantine.splice(0)) {
      const first = buffer.bytes.findIndex((byte) => byte !== POISON);
      if (first >= 0) {
        damaged += 1;
        this.useAfterFreeReports.push(`${buffer.sizeBytes}-byte buffer written at offset ${first} after free; ${freedAt}`);
      }
      this.inner.free(buffer);
    }
    this.counters.useAfterFree += damaged;
    return damaged;
  }

  submit(ops: readonly IoOp[]): void {
    this.assertOpen();
    if (this.inFlight + ops.length > this.queueDepth) {
      throw new InvalidArgumentError(
        `submitting ${ops.length} ops would put ${this.inFlight + ops.length} in flight, over queueDepth ${this.queueDepth}`,
      );
    }
    checkChains(ops, this.queueDepth);
    // Link chains are run here, one op at a time: an op's successor starts (is counted as a call,
    // may be failed, and a datasync takes what it covers) only when the op's completion reaches
    // this wrapper whole — as the kernel starts a linked op only once the one before completed.
    // So a linked datasync covers exactly the writes completed before it starts, its own chain's
    // among them, and the durable image stays exact whatever order completions are reaped in.
    const heads: IoOp[] = [];
    let i = 0;
    while (i < ops.length) {
      let j = i;
      while ((ops[j] as IoOp).link === true) j += 1;
      const head = unlinked(ops[i] as IoOp);
      if (j > i) {
        this.chains.set(head.userData, { op: head, rest: ops.slice(i + 1, j + 1) });
        this.deferred += j - i;
      }
      heads.push(head);
      i = j + 1;
    }
    this.begin(heads);
  }

  /** A completion of `userData` is ready: start the rest of its link chain, or cancel it. */
  private continueChain(completion: IoCompletion): void {
    const chain = this.chains.get(completion.userData);
    if (chain === undefined) return;
    this.chains.delete(completion.userData);
    this.deferred -= chain.rest.length;
    if (!linkSucceeded(chain.op, completion.result) || this.isClosed) {
      for (const op of chain.rest) this.ready.push({ userData: op.userData, result: -ECANCELED });
      this.wake();
      return;
    }
    const next = unlinked(chain.rest[0] as IoOp);
    if (chain.rest.length > 1) {
      this.chains.set(next.userData, { op: next, rest: chain.rest.slice(1) });
      this.deferred += chain.rest.length - 1;
    }
    this.begin([next]);
  }

  /** Start unlinked ops now (chains are unrolled by {@link submit} and {@link continueChain}). */
  private begin(ops: readonly IoOp[]): void {
    const pass: IoOp[] = [];
    const passTracked: Array<[number, Tracked]> = [];
    const own: IoCompletion[] = [];
    const ownSyncs: Array<[number, Tracked]> = [];
    for (const op of ops) {
      const zeroFill = op.op === "write" && this.injections.some((injection) => injection.skipZeroFills) && isZeros(op.buffer.bytes.subarray(op.bufferOffset, op.bufferOffset + op.lengthBytes));
      const errno = this.enter(op.op, zeroFill);
      if (errno !== 0) {
        own.push({ userData: op.userData, result: -errno });
        continue;
      }
      const shadow = this.recordOf(op.fd).shadow;
      if (op.op === "write") {
        const data = op.buffer.bytes.slice(op.bufferOffset, op.bufferOffset + op.lengthBytes);
        passTracked.push([op.userData, { kind: "write", shadow, write: { id: this.nextWriteId++, offset: op.fileOffset, data, done: false } }]);
        pass.push(op);
      } else if (op.op === "datasync") {
        const tracked: Tracked = { kind: "datasync", shadow, covers: shadow.doneIds(), size: shadow.currentSize };
        if (this.simulateSync) {
          ownSyncs.push([op.userData, tracked]);
          own.push({ userData: op.userData, result: 0 });
        } else {
          passTracked.push([op.userData, tracked]);
          pass.push(op);
        }
      } else {
        passTracked.push([op.userData, { kind: "read" }]);
        pass.push(op);
      }
    }
    if (pass.length > 0) {
      if (this.syncIo) for (const op of pass) validateTransfer(op);
      else this.inner.submit(pass);
    }
    for (const [userData, tracked] of passTracked) {
      this.tracked.set(userData, tracked);
      if (tracked.kind === "write") tracked.shadow.pending.push(tracked.write);
    }
    if (this.syncIo) for (const op of pass) this.held.push({ userData: op.userData, result: this.execute(op) });
    for (const [userData, tracked] of ownSyncs) this.tracked.set(userData, tracked);
    if (own.length > 0) {
      this.ready.push(...own);
      for (const completion of own) this.continueChain(completion);
      this.wake();
    }
  }

  /** syncIo: do the transfer now; its result (bytes or −errno). */
  private execute(op: IoOp): number {
    try {
      if (op.op === "datasync") {
        if (!this.simulateSync) fs.fdatasyncSync(op.fd);
        return 0;
      }
      if (op.op === "write") return fs.writeSync(op.fd, op.buffer.bytes, op.bufferOffset, op.lengthBytes, op.fileOffset);
      return fs.readSync(op.fd, op.buffer.bytes, op.bufferOffset, op.lengthBytes, op.fileOffset);
    } catch (error) {
      return -errnoOf(error);
    }
  }

  /** Move completions from the inner backend (or, with syncIo, the held ones) into `ready`, marking writes done. */
  private pull(): void {
    this.scratch.length = 0;
    if (this.syncIo) {
      const still: IoCompletion[] = [];
      for (const completion of this.held) (this.random() < this.holdProbability ? still : this.scratch).push(completion);
      // Never hold everything back when nothing else is ready: progress is guaranteed.
      if (this.scratch.length === 0 && this.ready.length === 0 && still.length > 0) this.scratch.push(still.shift() as IoCompletion);
      this.held = still;
    } else {
      this.inner.reap(this.scratch);
    }
    for (const completion of this.scratch) {
      const tracked = this.tracked.get(completion.userData);
      if (tracked !== undefined && tracked.kind === "write" && !this.dead) {
        if (completion.result === tracked.write.data.length) {
          tracked.write.done = true;
          const shadow = tracked.shadow;
          shadow.currentSize = Math.max(shadow.currentSize, tracked.write.offset + tracked.write.data.length);
        } else {
          // A real failure or short write: nothing known landed; drop it from the model.
          tracked.shadow.forget(tracked.write.id);
        }
      }
      this.ready.push(completion);
      this.continueChain(completion);
    }
  }

  reap(out: IoCompletion[], max = Number.MAX_SAFE_INTEGER): number {
    this.pull();
    const count = Math.min(max, this.ready.length);
    for (let i = 0; i < count; i++) {
      const completion = this.ready[i] as IoCompletion;
      out.push(this.deliver(completion));
    }
    this.ready.splice(0, count);
    return count;
  }

  /** A completion leaves for the caller: a datasync that succeeded makes its writes durable now. */
  private deliver(completion: IoCompletion): IoCompletion {
    const tracked = this.tracked.get(completion.userData);
    if (tracked !== undefined) this.tracked.delete(completion.userData);
    if (this.dead) return { userData: completion.userData, result: completion.result < 0 ? completion.result : -EIO };
    if (tracked?.kind === "datasync" && completion.result === 0) {
      this.counters.durableWrites += tracked.shadow.makeDurable(tracked.covers, tracked.size);
    }
    return completion;
  }

  private wake(): void {
    const waiters = [...this.wakers];
    this.wakers.clear();
    for (const resolve of waiters) resolve();
  }

  private innerWait(timeoutMs: number): Promise<void> {
    if (this.innerWaiting === undefined) {
      this.innerWaiting = this.inner.wait(1, timeoutMs).finally(() => {
        this.innerWaiting = undefined;
      });
    }
    return this.innerWaiting;
  }

  async wait(minReady: number, timeoutMs: number): Promise<void> {
    this.assertOpen();
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      this.pull();
      if (this.ready.length >= minReady || this.isClosed) return;
      const left = deadline - performance.now();
      if (left <= 0) return;
      if (this.held.length > 0) {
        // syncIo: the rest is done already, only held back; release more on the next pull.
        await Promise.resolve();
        continue;
      }
      let resolveWake!: () => void;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const woken = new Promise<void>((resolve) => {
        resolveWake = resolve;
        timer = setTimeout(resolve, Math.max(1, Math.ceil(left)));
      });
      this.wakers.add(resolveWake);
      const waits: Array<Promise<void>> = [woken];
      if (this.inner.inFlight > 0 && !this.inner.closed) waits.push(this.innerWait(left));
      await Promise.race(waits);
      clearTimeout(timer);
      this.wakers.delete(resolveWake);
    }
  }

  /**
   * Close the wrapper (and the inner backend it created). Call it once the store that used it has
   * been closed (after a power cut: once the abandoned store's own close has returned).
   */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.wake();
    if (this.inner.inFlight === 0) this.releaseQuarantine();
    if (this.ownsInner && !this.inner.closed && this.inner.inFlight === 0) {
      for (const record of this.openFiles.values()) {
        if (record.closedByCut) continue;
        try {
          this.inner.closeFile(record.handle);
        } catch {
          // ignore
        }
      }
      this.openFiles.clear();
      this.inner.close();
    }
  }
}

/** The op without its link flag (this wrapper runs chains itself, one op at a time). */
function unlinked(op: IoOp): IoOp {
  if (op.link !== true) return op;
  const { link: _link, ...rest } = op;
  return rest as IoOp;
}

/** Fill byte of quarantined buffers. */
const POISON = 0xdb;

/** syncIo: the checks the portable backend makes before a transfer. */
function validateTransfer(op: IoOp): void {
  if (op.op === "datasync") return;
  if (op.bufferOffset < 0 || op.lengthBytes < 0 || op.bufferOffset + op.lengthBytes > op.buffer.sizeBytes) {
    throw new InvalidArgumentError(`${op.op} range [${op.bufferOffset}, +${op.lengthBytes}) is outside its ${op.buffer.sizeBytes}-byte buffer`);
  }
  if (op.fileOffset < 0 || !Number.isSafeInteger(op.fileOffset)) throw new InvalidArgumentError(`${op.op} file offset ${op.fileOffset} is invalid`);
}

/** Whether `bytes` are all zeros. */
function isZeros(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
