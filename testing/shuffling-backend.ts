/**
 * A wrapping IoBackend for log tests: forwards everything to a real backend, records every write
 * (decoding the unit header it carries), counts unit writes in flight, and — when shuffling is
 * on — holds completions back and hands them to `reap` in a seeded shuffled order, so the layer
 * above sees writes finish out of order.
 *
 * Completions are held until `batch` of them are waiting, or until nothing else is in flight in
 * the real backend (so nothing can deadlock waiting for a held completion) and the oldest has
 * waited `holdMs`; then up to `batch` of them, picked at random, are released.
 */
import type {
  FileHandle,
  IoBackend,
  IoCompletion,
  IoKind,
  IoOp,
  NativeBuffer,
  OpenFileOptions,
} from "../src/io/backend.ts";
import { decodeUnitHeader, ROOT_REGION_BYTES, UNIT_HEADER_BYTES, unitFileBytes, type UnitHeader } from "../src/log/format.ts";
import { InvalidArgumentError } from "../src/errors.ts";
import { rng } from "./prng.ts";

/** One unit write seen by the wrapper. */
export interface UnitWrite {
  /** Physical file offset. */
  fileOffset: number;
  lengthBytes: number;
  /** Decoded header (the unit's logical address, payload size, prevEnd, ...). */
  header: UnitHeader;
  /** Logical end address of the unit (address + its 4 KiB-rounded size). */
  end: number;
  /** Order of submission and of delivery to the caller (-1 until delivered). */
  submitSeq: number;
  completeSeq: number;
  result: number | undefined;
  /** Event number of the delivery of its completion (-1 until delivered). */
  deliveredAt: number;
  /**
   * A datasync submitted after that delivery has been delivered as completed, or one linked after
   * this write in its chain (it started only once the write completed) has.
   */
  durable: boolean;
}

export interface ShufflingOptions {
  /** Hold and shuffle completions (default false: a pure recorder). */
  shuffle?: boolean;
  /** Seed of the shuffle. */
  seed?: number;
  /** Completions held before a shuffled release (default 4). */
  batch?: number;
  /**
   * When fewer than `batch` are held and the real backend has nothing else in flight, release
   * them only once the oldest has been held this long (default 0). Lets more writes pile up
   * behind a fast device, whose completions would otherwise come back one at a time.
   */
  holdMs?: number;
  /** Called on every reap, before completions are delivered (tests check invariants here). */
  onReap?: () => void;
}

export class ShufflingBackend implements IoBackend {
  readonly inner: IoBackend;
  private readonly shuffle: boolean;
  private readonly random: () => number;
  private readonly batch: number;
  private readonly holdMs: number;
  private oldestHeldAt = 0;
  /** Called on every reap, before completions are delivered (settable after construction). */
  onReap: (() => void) | undefined;
  private held: IoCompletion[] = [];
  private readonly scratch: IoCompletion[] = [];
  private readonly unitByUserData = new Map<number, UnitWrite>();
  /** Every unit write submitted, in submission order. */
  readonly unitWrites: UnitWrite[] = [];
  /** Unit writes in flight now, and the most ever seen at once. */
  unitWritesInFlight = 0;
  maxUnitWritesInFlight = 0;
  /** Root-block writes and datasyncs submitted. */
  rootWrites = 0;
  /** Zero-fill writes of fresh file space (the log's pre-writes), passed through unrecorded. */
  zeroWrites = 0;
  datasyncs = 0;
  private completeSeq = 0;
  /** Submissions and deliveries, numbered in the order they happen. */
  private events = 0;
  private readonly syncByUserData = new Map<number, number>();
  /** Unit writes linked before a datasync in its chain, by the datasync's user data. */
  private readonly chainedBySync = new Map<number, UnitWrite[]>();
  /** Datasyncs submitted linked after a unit write, and those that completed successfully. */
  linkedSyncs = 0;
  linkedSyncsCompleted = 0;

  constructor(inner: IoBackend, options: ShufflingOptions = {}) {
    this.inner = inner;
    this.shuffle = options.shuffle ?? false;
    this.random = rng(options.seed ?? 1);
    this.batch = options.batch ?? 4;
    this.holdMs = options.holdMs ?? 0;
    this.onReap = options.onReap;
  }

  get kind(): IoKind {
    return this.inner.kind;
  }
  get queueDepth(): number {
    return this.inner.queueDepth;
  }
  get fallbackReason(): string | undefined {
    return this.inner.fallbackReason;
  }
  get inFlight(): number {
    return this.inner.inFlight + this.held.length;
  }
  get closed(): boolean {
    return this.inner.closed;
  }

  openFile(path: string, options?: OpenFileOptions): FileHandle {
    return this.inner.openFile(path, options);
  }
  closeFile(file: FileHandle): void {
    this.inner.closeFile(file);
  }
  lockFile(file: FileHandle): Promise<void> {
    return this.inner.lockFile(file);
  }
  fileSizeBytes(file: FileHandle): number {
    return this.inner.fileSizeBytes(file);
  }
  allocateSpace(file: FileHandle, offset: number, lengthBytes: number): void {
    this.inner.allocateSpace(file, offset, lengthBytes);
  }
  truncate(file: FileHandle, sizeBytes: number): void {
    this.inner.truncate(file, sizeBytes);
  }
  syncNow(file: FileHandle): void {
    this.inner.syncNow(file);
  }
  alloc(sizeBytes: number): NativeBuffer {
    return this.inner.alloc(sizeBytes);
  }
  free(buffer: NativeBuffer): void {
    this.inner.free(buffer);
  }

  submit(ops: readonly IoOp[]): void {
    if (this.inner.inFlight + this.held.length + ops.length > this.inner.queueDepth) {
      // Held completions still occupy queue room from the caller's point of view.
      throw new InvalidArgumentError(`submitting ${ops.length} ops would exceed queueDepth ${this.inner.queueDepth}`);
    }
    this.inner.submit(ops);
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i] as IoOp;
      if (op.op === "datasync") {
        this.datasyncs += 1;
        this.syncByUserData.set(op.userData, this.events++);
        // Linked after writes of its chain: it starts only once they completed whole, so when it
        // succeeds they are durable too, even if their completions are still held back here.
        const chained: UnitWrite[] = [];
        for (let k = i - 1; k >= 0 && (ops[k] as IoOp).link === true; k--) {
          const write = this.unitByUserData.get((ops[k] as IoOp).userData);
          if (write !== undefined) chained.push(write);
        }
        if (chained.length > 0) {
          this.chainedBySync.set(op.userData, chained);
          this.linkedSyncs += 1;
        }
        continue;
      }
      if (op.op !== "write") continue;
      if (op.fileOffset < ROOT_REGION_BYTES) {
        this.rootWrites += 1;
        continue;
      }
      const header = decodeUnitHeader(op.buffer.bytes.subarray(op.bufferOffset, op.bufferOffset + UNIT_HEADER_BYTES));
      if (header === undefined) {
        // The log zero-fills fresh pieces of the file ahead of its units (src/log/prewrite.ts).
        const bytes = op.buffer.bytes.subarray(op.bufferOffset, op.bufferOffset + op.lengthBytes);
        if (bytes.every((byte) => byte === 0)) {
          this.zeroWrites += 1;
          continue;
        }
        throw new Error(`write at ${op.fileOffset} carries no valid unit header, and is not zeros`);
      }
      if (unitFileBytes(header.payloadBytes) !== op.lengthBytes) {
        throw new Error(`unit at ${header.address}: ${op.lengthBytes} bytes written for ${header.payloadBytes} payload bytes`);
      }
      const write: UnitWrite = {
        fileOffset: op.fileOffset,
        lengthBytes: op.lengthBytes,
        header,
        end: header.address + op.lengthBytes,
        submitSeq: this.unitWrites.length,
        completeSeq: -1,
        result: undefined,
        deliveredAt: -1,
        durable: false,
      };
      this.unitWrites.push(write);
      this.unitByUserData.set(op.userData, write);
      this.unitWritesInFlight += 1;
      if (this.unitWritesInFlight > this.maxUnitWritesInFlight) this.maxUnitWritesInFlight = this.unitWritesInFlight;
    }
  }

  /** Pull what the real backend has finished into the held list. */
  private pull(): void {
    this.scratch.length = 0;
    this.inner.reap(this.scratch);
    if (this.held.length === 0 && this.scratch.length > 0) this.oldestHeldAt = performance.now();
    for (const c of this.scratch) this.held.push(c);
  }

  private isSync(c: IoCompletion): boolean {
    return this.syncByUserData.has(c.userData);
  }

  /** How many held write/read completions may be released now (besides datasyncs). */
  private releasableOthers(others: number): number {
    if (!this.shuffle) return others;
    if (others >= this.batch) return this.batch;
    if (this.inner.inFlight === 0 && performance.now() - this.oldestHeldAt >= this.holdMs) return others;
    return 0;
  }

  /** How many held completions a reap would hand out now. */
  private releasable(): number {
    if (!this.shuffle) return this.held.length;
    const syncs = this.held.filter((c) => this.isSync(c)).length;
    return syncs + Math.min(1, this.releasableOthers(this.held.length - syncs));
  }

  reap(out: IoCompletion[], max = Number.MAX_SAFE_INTEGER): number {
    this.onReap?.();
    this.pull();
    let released: IoCompletion[];
    if (!this.shuffle) {
      released = this.held.splice(0, max);
    } else {
      // Datasync completions are never held: a datasync may then complete while writes
      // submitted before it are still held back, which the log's stability rule must survive.
      const syncs = this.held.filter((c) => this.isSync(c));
      const others = this.held.filter((c) => !this.isSync(c));
      for (let i = others.length - 1; i > 0; i--) {
        const j = Math.floor(this.random() * (i + 1));
        const t = others[i] as IoCompletion;
        others[i] = others[j] as IoCompletion;
        others[j] = t;
      }
      // One other (a random one) per reap, and only when `batch` are held or nothing else can
      // come; the rest stay held, so completions of neighbouring units reach the caller in
      // different reaps, datasyncs completing between. One per reap also keeps the durability
      // bookkeeping exact: the caller has processed that completion before its next reap, so a
      // datasync it submits meanwhile covers it. The write goes before the datasyncs, whose
      // completion may make the caller submit a new datasync.
      const picked = others.splice(0, Math.min(1, this.releasableOthers(others.length)));
      released = [...picked, ...syncs];
      this.held = [...released.splice(max), ...others];
    }
    for (const c of released) {
      const write = this.unitByUserData.get(c.userData);
      if (write !== undefined) {
        this.unitByUserData.delete(c.userData);
        write.completeSeq = this.completeSeq++;
        write.result = c.result;
        write.deliveredAt = this.events++;
        this.unitWritesInFlight -= 1;
      }
      const syncSubmittedAt = this.syncByUserData.get(c.userData);
      if (syncSubmittedAt !== undefined) {
        this.syncByUserData.delete(c.userData);
        const chained = this.chainedBySync.get(c.userData);
        this.chainedBySync.delete(c.userData);
        if (c.result === 0) {
          for (const w of this.unitWrites) {
            if (!w.durable && w.deliveredAt >= 0 && w.deliveredAt < syncSubmittedAt && w.result === w.lengthBytes) w.durable = true;
          }
          for (const w of chained ?? []) w.durable = true;
          if (chained !== undefined) this.linkedSyncsCompleted += 1;
        }
      }
      out.push(c);
    }
    return released.length;
  }

  async wait(minReady: number, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      this.pull();
      if (this.releasable() >= minReady) return;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return;
      await this.inner.wait(1, Math.min(remaining, 2));
    }
  }

  close(): void {
    this.inner.close();
  }

  /** Unit writes in the order they were delivered to the caller. */
  completionOrder(): UnitWrite[] {
    return this.unitWrites.filter((w) => w.completeSeq >= 0).sort((a, b) => a.completeSeq - b.completeSeq);
  }

  /** Pairs of unit writes delivered in the opposite order of their log addresses. */
  inversions(): number {
    const order = this.completionOrder().map((w) => w.header.address);
    let count = 0;
    for (let i = 0; i < order.length; i++) {
      for (let j = i + 1; j < order.length; j++) if ((order[i] as number) > (order[j] as number)) count += 1;
    }
    return count;
  }

  /**
   * End of the gap-free prefix of the log whose unit writes have all been delivered as
   * completed, starting from `start`: follows each unit's prevEnd chain in address order.
   * Also returns every end address on that prefix (where stableAddress may legitimately sit).
   */
  completedPrefix(start: number): { end: number; ends: Set<number> } {
    return this.prefix(start, (w) => w.completeSeq >= 0 && w.result === w.lengthBytes);
  }

  /**
   * The same over units that are durable: written, and covered by a datasync that was submitted
   * after their write completion reached the caller and that has completed.
   */
  durablePrefix(start: number): { end: number; ends: Set<number> } {
    return this.prefix(start, (w) => w.durable);
  }

  private prefix(start: number, done: (w: UnitWrite) => boolean): { end: number; ends: Set<number> } {
    const byPrevEnd = new Map<number, UnitWrite>();
    for (const w of this.unitWrites) if (w.header.address >= start) byPrevEnd.set(w.header.prevEnd, w);
    const ends = new Set<number>([start]);
    let end = start;
    for (;;) {
      const next = byPrevEnd.get(end);
      if (next === undefined || !done(next)) break;
      end = next.end;
      ends.add(end);
    }
    return { end, ends };
  }
}
