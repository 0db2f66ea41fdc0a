/**
 * The base copy of a full backup: from a plan made at the consistent point (base-plan.ts: which
 * live record is where), read every live record, check it, and write the base's chunk objects to the target.
 * The same code runs on the store's thread or in the backup Worker (base-worker.ts); what
 * differs is only where the bytes come from ({@link BaseSource}: the log itself, or a read-only
 * descriptor of the file in the Worker).
 *
 * **Verified, compacting copy.** Only live records are copied. Segments dense in live records are
 * read whole, in steps (one sequential read each, every unit through the log's unit checker);
 * sparse ones record by record. Every record is checked (CRC, type, seid, part index) before it is
 * written to the base, verbatim.
 *
 * @module
 */
import { UNIT_HEADER_BYTES } from "../log/format.ts";
import type { StepGate } from "../log/walk.ts";
import type { CommitGate } from "../io/commit-gate.ts";
import type { HeldBytes } from "../log/reader.ts";
import { FLAG_PART } from "../store/format/extents.ts";
import { RECORD_HEADER_BYTES, RecordType, scanRecords, verifyRecord } from "../store/format/records.ts";
import { CorruptionError, StoreClosedError } from "../errors.ts";
import { BaseWriter, type PiecePool } from "./base.ts";
import type { BasePlan, PlanMultipart, PlanSegment } from "./base-plan.ts";
import { baseChunkName, type ChunkEntry } from "./manifest.ts";
import type { BackupTarget } from "./target.ts";

/** Where the copy reads the log from. */
export interface BaseSource {
  visitSegmentUnits(seq: number, visit: (address: number, payload: Uint8Array) => void, stepBytes: number, beforeStep?: StepGate): Promise<void>;
  readHeld(address: number, lengthBytes: number): Promise<HeldBytes>;
  segmentSeqOf(address: number): number;
}

/** What the copy reports as it goes. */
export interface BaseHooks {
  /** Bytes of records copied since the last call. */
  progress(bytes: number): void;
  /**
   * Uses of these segments are done: one entry per use, where a segment's single-part records
   * are one use in all and each multipart part one more (see SegmentUses in base-plan.ts).
   */
  release(seqs: number[]): void;
}

/** What a finished copy made. */
export interface BaseResult {
  readonly chunks: ChunkEntry[];
  /** Bytes of the base stream (padding included). */
  readonly bytes: number;
  readonly elements: number;
  /** Objects stored, and their bytes as the target reported them. */
  readonly objects: number;
  readonly storedBytes: number;
  /** Time the copy waited for the writers' commits to leave the device, ms (CopyOptions.commitGate). */
  readonly yieldedMs: number;
}

/** Read a segment whole when its live records are at least this share of it; else record by record. */
export const DENSE_SEGMENT_FRACTION = 1 / 8;
/** Record reads in flight at once for sparse segments and multipart parts. */
const READ_CONCURRENCY = 8;
/**
 * Dense segments are read in steps of this size, so writers' commits queue behind at most one
 * on the device, and (on the store's thread) each step's checks and copies hold the JS thread
 * briefly: 1 MiB steps held it ~3 ms each, and commits waited that long.
 */
const SEGMENT_READ_STEP_BYTES = 256 << 10;
/** Longest stretch of copying without yielding to the event loop, ms. */
const PACE_MS = 2;

/**
 * Keeps a long copy from starving the event loop: awaits that resolve at once never let I/O
 * completions (the writers' commits) run, so every few ms of work the copy yields a macrotask.
 */
export class Pacer {
  private last = performance.now();
  async tick(): Promise<void> {
    if (performance.now() - this.last < PACE_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.last = performance.now();
  }
}

/** How a copy runs, besides its plan, source, target and hooks. */
export interface CopyOptions {
  /** Pieces to assemble chunks in (a Worker keeps one pool for all its copies). */
  readonly pool?: PiecePool;
  /** Ends the copy with the signal's reason at its next step (the store closed under it). */
  readonly signal?: AbortSignal;
  /** Read no faster than this on average (see {@link RateLimit}); unlimited when undefined. */
  readonly maxBytesPerSecond?: number;
  /**
   * Durable commits on the device: each read step and each target write waits for them first, up
   * to {@link COMMIT_YIELD_MS} (commit-gate.ts, BackupOptions.yieldToCommits).
   */
  readonly commitGate?: CommitGate;
}

/**
 * Longest a step of the copy waits for the writers' commits to leave the device, ms: under a
 * steady stream of commits (64 in flight, say) the gate is almost never free, and the copy must
 * still go on, at no less than one step per this long.
 */
const COMMIT_YIELD_MS = 1;

/**
 * Largest write of the base to a local target while writers commit (a commit entered the gate
 * since the last write began); writes carry a whole 1 MiB piece otherwise. A commit issued
 * meanwhile waits for a write in flight: with whole pieces, serial durable commits' p99 during
 * back-to-back backups rose by ~3.0 ms, in 256 KiB writes by ~2.0 ms (before the gate), for ~10%
 * less copy throughput (`bun bench/backup.ts`, 2026-12-01; `dd` with O_DIRECT beside the same
 * commits: p99 2.0 ms with 1 MiB blocks, 0.64 ms with 256 KiB, 735 against 684 MB/s). So the
 * short writes are paid only while commits come.
 */
const WRITE_STEP_WHILE_COMMITTING_BYTES = 256 << 10;

/**
 * Paces reads to a byte rate: each read waits until its bytes are due (a virtual clock that
 * never falls more than {@link RATE_BURST_MS} behind, so a stall, say a slow put, is not made up
 * afterwards in a burst). What it buys, measured (`bun bench/backup.ts`): the writers' commit p99
 * during back-to-back backups of 162 MiB rose by ~10 ms at full speed, ~1.1–1.7 ms at 32 MiB/s.
 */
export class RateLimit {
  private next = performance.now();
  private readonly msPerByte: number;

  constructor(bytesPerSecond: number) {
    this.msPerByte = 1000 / bytesPerSecond;
  }

  /** Resolve when `bytes` more may be read. */
  readonly take: StepGate = async (bytes) => {
    const now = performance.now();
    this.next = Math.max(this.next, now - RATE_BURST_MS) + bytes * this.msPerByte;
    const wait = this.next - now - RATE_BURST_MS;
    if (wait > 0) await new Promise<void>((resolve) => setTimeout(resolve, wait));
  };
}

/** How far a {@link RateLimit} lets reads run ahead of the rate, ms. */
const RATE_BURST_MS = 20;

/** Copy the base the plan describes into `target` (see the module doc). */
export async function copyBase(plan: BasePlan, source: BaseSource, target: BackupTarget, hooks: BaseHooks, options: CopyOptions = {}): Promise<BaseResult> {
  const signal = options.signal;
  const chunks: ChunkEntry[] = [];
  let objects = 0;
  let storedBytes = 0;
  let inFlight: Promise<void> = Promise.resolve();
  const puts: Array<Promise<void>> = [];
  const commitGate = options.commitGate;
  let yieldedMs = 0;
  let commitsSeen = commitGate?.entered ?? 0;
  const beforeWrite =
    commitGate === undefined
      ? undefined
      : async (): Promise<number> => {
          yieldedMs += await commitGate.yieldTo(COMMIT_YIELD_MS);
          const entered = commitGate.entered;
          const quiet = entered === commitsSeen;
          commitsSeen = entered;
          return quiet ? Number.MAX_SAFE_INTEGER : WRITE_STEP_WHILE_COMMITTING_BYTES;
        };
  const writer = new BaseWriter(plan.chunkBytes, async (index, pieces, size) => {
    // One chunk uploads while the next one fills.
    await inFlight;
    const name = baseChunkName(plan.baseId, index);
    const body = pieces.length === 1 ? (pieces[0] as Uint8Array) : () => piecesOf(pieces);
    const put = target.put(name, body, { beforeWrite }).then((info) => {
      if (info.size !== size) throw new Error(`chunk ${name}: ${info.size} bytes stored of ${size}`);
      chunks[index] = info;
      storedBytes += info.size;
      objects += 1;
      writer.recycle(pieces);
    });
    // Awaited before the next chunk (or at the end); marked handled so a failure that happens
    // while the next chunk fills is not reported as unhandled meanwhile.
    put.catch(() => {});
    inFlight = put;
    puts.push(put);
  }, options.pool);
  try {
    const limit = options.maxBytesPerSecond === undefined ? undefined : new RateLimit(options.maxBytesPerSecond);
    const gate: StepGate | undefined =
      commitGate === undefined
        ? limit?.take
        : async (bytes) => {
            if (limit !== undefined) await limit.take(bytes);
            yieldedMs += await commitGate.yieldTo(COMMIT_YIELD_MS);
          };
    const copy: Copy = { source, writer, hooks, pacer: new Pacer(), gate };
    writer.spaces(plan.spaces);
    // Segments are copied two at a time, so one is read from the disk while the other's records
    // are checked and copied (the base's elements may be in any order).
    const order = [...plan.segments];
    const copySegments = async (): Promise<void> => {
      for (let segment = order.shift(); segment !== undefined; segment = order.shift()) {
        if (segment.liveBytes >= plan.segmentSize * DENSE_SEGMENT_FRACTION) await copyDenseSegment(copy, segment);
        else await copyRecords(copy, segment);
        hooks.release([segment.seq]);
        await writer.drain();
        await copy.pacer.tick();
        signal?.throwIfAborted();
      }
    };
    await Promise.all([copySegments(), copySegments()]);
    for (const element of plan.multiparts) {
      await copyMultipart(copy, element);
      hooks.release(Array.from(element.addresses, (address) => source.segmentSeqOf(address)));
      signal?.throwIfAborted();
    }
    await writer.finish(plan.transaction, plan.commitTime);
  } finally {
    // Every put settles before the copy returns or throws (a failed copy must not leave an
    // upload running into a target the caller is about to close).
    await Promise.allSettled(puts);
  }
  await Promise.all(puts);
  return { chunks, bytes: writer.bytes, elements: writer.elements, objects, storedBytes, yieldedMs };
}

/** What the steps of one copy share. */
interface Copy {
  readonly source: BaseSource;
  readonly writer: BaseWriter;
  readonly hooks: BaseHooks;
  readonly pacer: Pacer;
  /** Awaited before each read, with its bytes (the rate limit), when there is one. */
  readonly gate: StepGate | undefined;
}

/** The pieces of a chunk as a body a put can replay. */
async function* piecesOf(pieces: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const piece of pieces) yield piece;
}

/**
 * Copy the live single-part records of a dense segment: one whole-segment read in steps (units
 * through the log's unit checker), the records taken straight out of the read buffer.
 */
async function copyDenseSegment({ source, writer, hooks, gate }: Copy, segment: PlanSegment): Promise<void> {
  const { seids, addresses, sizes } = segment;
  let next = 0;
  let copied = 0;
  await source.visitSegmentUnits(
    segment.seq,
    (unitAddress, payload) => {
      const base = unitAddress + UNIT_HEADER_BYTES;
      if (next >= addresses.length || (addresses[next] as number) >= base + payload.length) return;
      for (const record of scanRecords(payload)) {
        if (next >= addresses.length) break;
        const address = base + record.offset;
        const want = addresses[next] as number;
        if (address < want) continue;
        if (address > want) break; // not in this unit: reported below
        const raw = payload.subarray(record.offset, record.offset + record.header.recordBytes);
        writer.logRecord(checkedElement(raw, seids[next] as bigint, want, sizes[next] as number), true);
        copied += raw.length;
        next += 1;
      }
    },
    SEGMENT_READ_STEP_BYTES,
    gate,
  );
  hooks.progress(copied);
  if (next < addresses.length) {
    // The unit holding it failed its checks (the walk stops at the first bad unit).
    throw new CorruptionError(`seid ${seids[next]}: its record at log address ${addresses[next]} is not in an intact unit of segment ${segment.seq}`);
  }
}

/** Copy single-part records one read each (sparse segments), a few reads in flight. */
async function copyRecords(copy: Copy, segment: PlanSegment): Promise<void> {
  const { seids, addresses, sizes } = segment;
  const { writer, hooks } = copy;
  await copyInBatches(copy, addresses, sizes, (raw, i) => {
    writer.logRecord(checkedElement(raw, seids[i] as bigint, addresses[i] as number, sizes[i] as number), true);
    hooks.progress(raw.length);
  });
}

/**
 * Read the records at `addresses` (bodies of `bodyBytes`) {@link READ_CONCURRENCY} at a time, each
 * held in a native read buffer (no JS copy per read: a 2 MiB `slice` per part cost ~5 ms of the
 * JS thread here, faulting in fresh memory), and hand each to `take` in order, which checks it
 * and copies it into the base; every buffer is given back, and chunks drain between batches.
 */
async function copyInBatches({ source, writer, pacer, gate }: Copy, addresses: Float64Array, bodyBytes: Float64Array, take: (raw: Uint8Array, index: number) => void): Promise<void> {
  for (let first = 0; first < addresses.length; first += READ_CONCURRENCY) {
    const last = Math.min(addresses.length, first + READ_CONCURRENCY);
    if (gate !== undefined) {
      let bytes = 0;
      for (let i = first; i < last; i++) bytes += RECORD_HEADER_BYTES + (bodyBytes[i] as number);
      await gate(bytes);
    }
    const reads: Array<Promise<HeldBytes>> = [];
    for (let i = first; i < last; i++) {
      reads.push(source.readHeld(addresses[i] as number, RECORD_HEADER_BYTES + (bodyBytes[i] as number)));
    }
    const settled = await Promise.allSettled(reads);
    const held = settled.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
    try {
      for (const result of settled) if (result.status === "rejected") throw result.reason;
      if (held.some((h) => !h.live)) throw new StoreClosedError("the store was closed during the backup");
      for (const [k, h] of held.entries()) take(h.bytes, first + k);
    } finally {
      for (const h of held) h.release();
    }
    await writer.drain();
    await pacer.tick();
  }
}

/** A whole element's Data record, checked: CRC, type, seid, size, not a part. */
function checkedElement(raw: Uint8Array, seid: bigint, address: number, sizeBytes: number): Uint8Array {
  const header = verifyRecord(raw, { type: RecordType.Data, seid });
  if ((header.flags & FLAG_PART) !== 0 || raw.length !== RECORD_HEADER_BYTES + sizeBytes) {
    throw new CorruptionError(`seid ${seid}: the record at ${address} is not the whole element the map names`);
  }
  return raw;
}

/** Copy a multipart element's part records in order, each checked. */
async function copyMultipart(copy: Copy, element: PlanMultipart): Promise<void> {
  const { seid, addresses, bodyBytes } = element;
  const { writer, hooks } = copy;
  await copyInBatches(copy, addresses, bodyBytes, (raw, index) => {
    const header = verifyRecord(raw, { type: RecordType.Data, seid });
    if ((header.flags & FLAG_PART) === 0 || header.aux !== index) throw new CorruptionError(`seid ${seid}: part ${index} record is not the part expected`);
    writer.logRecord(raw, false);
    hooks.progress(raw.length);
  });
  writer.endMultipart(seid, Array.from(bodyBytes));
}
