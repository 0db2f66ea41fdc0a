/**
 * The segment cleaner: keeps the one file from growing without bound.
 *
 * Victims are chosen from the segment utilisation table by the LFS cost-benefit policy (Rosenblum
 * & Ousterhout 1992): the score is (1 − u) × age / (1 + u), where `u` is the segment's live
 * fraction and `age` is how many segments the log has written since. Only segments below
 * `cleanerUtilisationPercent` are candidates; never the tail; never a segment a read stream is
 * reading; never one the log may still be writing.
 *
 * Cleaning a victim:
 * 1. read the victim whole, outside the transaction turn;
 * 2. in small batches, each holding the turn only briefly, relocate its live records to the tail
 *    as system transactions (records plus a Commit, applied like any transaction). A record is
 *    live only if the mapping table still points at it when its batch runs;
 * 3. give the emptied segment back to the log.
 *
 * A segment given back is only *pending* (FASTER's lesson). It becomes free once the relocations
 * that emptied it are durable, if it lies before the newest checkpoint's start (recovery reads
 * nothing there), or else at the next checkpoint, whose root block goes to both copies. A crash at any moment loses nothing: relocations are ordinary
 * committed transactions. Space a crash leaks goes to a later cleaning.
 *
 * Deletes are never "dropped by a merge" (Bitcask's bug): liveness comes from the mapping table
 * and recovery starts from a checkpoint of it, so an old version of a deleted element is never
 * live again.
 *
 * @module
 */
import type { LogStructuredStore, PendingWrites, SpaceReserve } from "../log/log.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { alignUp, MIN_UNIT_ROOM_BYTES } from "../log/address.ts";
import { ROOT_REGION_BYTES, UNIT_HEADER_BYTES } from "../log/format.ts";
import { CHECKPOINT_CHUNK_BYTES, type Checkpointer } from "./checkpointer.ts";
import type { AppliedOp, CommitPath, StoreCore } from "./commit.ts";
import { FLAG_PART, type Part } from "./format/extents.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, scanRecords } from "./format/records.ts";
import type { SegmentPins } from "./pins.ts";
import { appendExtents, appendRecord, singleWriteOp } from "./write-path.ts";

/** Cleaner settings (public options of `Store.open`). */
export interface CleanerSettings {
  /** Segments whose live bytes are below this percentage of the segment are candidates (default 80). */
  cleanerUtilisationPercent: number;
  /** Below this many free segments, writers wait for the cleaner rather than grow the file (default 2). */
  cleanerLowWaterSegments: number;
  /** The cleaner works in the background until this many segments are free (default 4). */
  cleanerHighWaterSegments: number;
  /** Run the cleaner by itself in the background (default true). */
  autoClean: boolean;
}

/** Segments behind the tail a victim must be (outside `compact()`). */
export const MIN_VICTIM_AGE_SEGMENTS = 2;

/** Bytes of records relocated per batch: the longest a batch holds the transaction turn. */
export const RELOCATE_BATCH_BYTES = 1 << 20;

const NO_PENDING_WRITES: PendingWrites = { records: 0, bytes: 0, largestRecordBytes: 0 };

/** Smallest delete share of the full-disk reserve (see {@link Cleaner.fullDiskReserve}). */
export const MIN_DELETE_SHARE_BYTES = 256 << 10;
/** What a delete transaction appends besides its Delete records (a Commit, a unit's rounding). */
const DELETE_SHARE_SLACK_BYTES = 64 << 10;
/** A checkpoint's header and seid spaces, and what the estimate does not count. */
const CHECKPOINT_MARGIN_BYTES = 16 << 10;
/** Units upkeep ends by flushing besides full ones (checkpoints flush twice, cleaning after each victim). */
const RESERVE_FLUSHES = 8;

/** Counters the cleaner keeps. */
export interface CleanerStats {
  segmentsCleaned: number;
  bytesRelocated: number;
  recordsRelocated: number;
  throttledMs: number;
  cleanerRuns: number;
}

/** What the cleaner works with: the store's state, its commit path, pins and checkpoints. */
export interface CleanerHost {
  readonly core: StoreCore;
  /** Relocations are system transactions through the one commit path, holding its turn. */
  readonly commits: CommitPath;
  readonly pins: SegmentPins;
  readonly checkpointer: Checkpointer;
  /** Largest file allowed (`maxFileBytes`, or the block device's size), or undefined. */
  readonly maxFileBytes: number | undefined;
  /** False once the store is closing or failed: background cleaning stops. */
  isOpen(): boolean;
}

interface VictimRecord {
  type: RecordType;
  flags: number;
  seid: bigint;
  address: number;
  body: Uint8Array;
}

/** The cleaner of one store. */
export class Cleaner {
  readonly settings: CleanerSettings;
  private readonly host: CleanerHost;
  private running: Promise<void> | undefined;
  private readonly cleaning = new Set<number>();
  readonly counters: CleanerStats = { segmentsCleaned: 0, bytesRelocated: 0, recordsRelocated: 0, throttledMs: 0, cleanerRuns: 0 };

  private readonly log: LogStructuredStore;

  constructor(host: CleanerHost, settings: CleanerSettings) {
    this.host = host;
    this.log = host.core.log;
    this.settings = settings;
  }

  /**
   * Candidate victims, best first. `minAge` keeps the youngest segments out (background and
   * throttle): their garbage is still growing, and cleaning them early moves data twice.
   */
  candidates(thresholdPercent = this.settings.cleanerUtilisationPercent, minAge = MIN_VICTIM_AGE_SEGMENTS): number[] {
    const { core, pins } = this.host;
    const log = this.log;
    const tail = log.tailSegmentSeq;
    const stable = log.stableAddress;
    // The newest checkpoint's segments look empty to the utilisation table (it counts element
    // records only), but nothing in them can be given back before the next checkpoint, which
    // writes as much again: choosing them made writers clean and checkpoint before every
    // transaction once the map outgrew a segment or two (14 commits/s at 950 k seids).
    const checkpoint = log.rootBlock.checkpoint;
    const firstKept = checkpoint === undefined ? Number.POSITIVE_INFINITY : log.segmentSeqOf(checkpoint.start.address);
    const lastKept = checkpoint === undefined ? -1 : log.segmentSeqOf(checkpoint.endAddress - 1);
    const scored: Array<{ seq: number; score: number }> = [];
    for (const seq of log.liveSegmentSeqs()) {
      if (tail - seq < minAge || pins.isPinned(seq) || stable < (seq + 1) * log.segmentSize) continue;
      if (seq >= firstKept && seq <= lastKept) continue;
      // Being cleaned already (by a throttled writer, say): offering it again made the background
      // cleaner spin on it, a candidate scan per event-loop turn, until the other finished.
      if (this.cleaning.has(seq)) continue;
      const utilisation = core.sut.liveBytesOf(seq) / log.segmentSize;
      if (utilisation * 100 >= thresholdPercent) continue;
      const age = tail - seq;
      scored.push({ seq, score: ((1 - utilisation) * age) / (1 + utilisation) });
    }
    scored.sort((a, b) => b.score - a.score);
    return scored.map((entry) => entry.seq);
  }

  /**
   * Whether the candidates hold at least two segments' worth of garbage. Asked after every
   * commit, so the scan (every live segment, then a sort) runs again only when the log's tail,
   * or the free or pending counts, have moved since the last one: within one tail segment the
   * answer changes too little to pay for a scan per commit.
   */
  private worthCleaning(): boolean {
    const log = this.log;
    const memo = this.worthMemo;
    if (memo.tail === log.tailSegmentSeq && memo.free === log.freeSegments && memo.pending === log.pendingSegments) return memo.worth;
    memo.tail = log.tailSegmentSeq;
    memo.free = log.freeSegments;
    memo.pending = log.pendingSegments;
    memo.worth = this.reclaimableBytes(this.candidates()) >= 2 * log.segmentSize;
    return memo.worth;
  }

  private readonly worthMemo = { tail: -1, free: -1, pending: -1, worth: false };

  /** Bytes cleaning the candidates would reclaim. */
  private reclaimableBytes(victims: readonly number[]): number {
    const { core } = this.host;
    const log = this.log;
    let bytes = 0;
    for (const seq of victims) bytes += log.segmentSize - core.sut.liveBytesOf(seq);
    return bytes;
  }

  /** Clean `seq`: relocate its live records and give it back. `locked`: the caller holds the turn. */
  async cleanSegment(seq: number, locked: boolean): Promise<boolean> {
    const log = this.log;
    // The background cleaner and a throttled writer may pick the same victim; a checkpoint may
    // also have given it back already (it was empty).
    if (this.cleaning.has(seq) || !log.isLiveSegment(seq)) return false;
    this.cleaning.add(seq);
    try {
      return await this.cleanSegmentOnce(seq, locked);
    } finally {
      this.cleaning.delete(seq);
    }
  }

  private async cleanSegmentOnce(seq: number, locked: boolean): Promise<boolean> {
    const { core, pins } = this.host;
    const log = this.log;
    // With the turn held (throttle), the transaction about to run has written nothing yet.
    const records = await this.readVictim(seq);
    const batches = this.batch(records);
    for (const batch of batches) {
      if (locked) await this.relocate(seq, batch);
      else await this.host.commits.exclusive(() => this.relocate(seq, batch));
    }
    // Give the segment back only while holding the turn: a transaction in progress may have
    // written records into it that are not counted yet (they count at its commit).
    const release = async (): Promise<boolean> => {
      if (!log.isLiveSegment(seq) || core.sut.liveBytesOf(seq) !== 0 || pins.isPinned(seq) || seq >= log.tailSegmentSeq) return false;
      log.releaseSegment(seq);
      this.counters.segmentsCleaned += 1;
      // On a full disk the relocations may have used the reserve: make what cleaning emptied
      // reusable before the next victim needs room (durable, and past a checkpoint).
      if (log.outOfSpace) await this.freeEmptied();
      return true;
    };
    return locked ? release() : this.host.commits.exclusive(release);
  }

  private async readVictim(seq: number): Promise<VictimRecord[]> {
    const units = await this.log.readSegmentUnits(seq);
    const records: VictimRecord[] = [];
    for (const unit of units) {
      const base = unit.address + UNIT_HEADER_BYTES;
      for (const record of scanRecords(unit.payload)) {
        const { type, flags, seid } = record.header;
        if (type !== RecordType.Data && type !== RecordType.Extents) continue;
        records.push({ type, flags, seid, address: base + record.offset, body: record.body });
      }
    }
    return records;
  }

  /** Group records into batches of about RELOCATE_BATCH_BYTES, keeping each element's records together. */
  private batch(records: VictimRecord[]): VictimRecord[][] {
    const bySeid = new Map<bigint, VictimRecord[]>();
    for (const record of records) {
      const list = bySeid.get(record.seid) ?? [];
      list.push(record);
      bySeid.set(record.seid, list);
    }
    const batches: VictimRecord[][] = [];
    let current: VictimRecord[] = [];
    let bytes = 0;
    for (const list of bySeid.values()) {
      current.push(...list);
      for (const record of list) bytes += record.body.length;
      if (bytes >= RELOCATE_BATCH_BYTES) {
        batches.push(current);
        current = [];
        bytes = 0;
      }
    }
    if (current.length > 0) batches.push(current);
    return batches;
  }

  /**
   * Relocate the live records of one batch as a system transaction. The turn is held. It is the
   * store's upkeep: it may use the whole full-disk reserve (src/log/space.ts).
   */
  private async relocate(seq: number, batch: VictimRecord[]): Promise<void> {
    await this.log.withSpaceUse("upkeep", () => this.relocateBatch(seq, batch));
  }

  private async relocateBatch(seq: number, batch: VictimRecord[]): Promise<void> {
    const { core } = this.host;
    const log = this.log;
    const txId = this.host.commits.nextTxId();
    const ops: AppliedOp[] = [];
    const bodies = new Map<number, Uint8Array>();
    const multipart = new Set<bigint>();
    let relocatedBytes = 0;
    for (const record of batch) {
      const location = core.map.get(record.seid);
      if (location === undefined) continue;
      if (record.type === RecordType.Data && (record.flags & FLAG_PART) === 0) {
        if (location.multipart || location.address !== record.address) continue;
        const address = await appendRecord(log, RecordType.Data, txId, record.seid, 0, record.body);
        const op = { ...singleWriteOp(record.seid, address, record.body, undefined), moved: true as const };
        ops.push(op);
        relocatedBytes += op.recordBytes;
        continue;
      }
      if (!location.multipart) continue;
      bodies.set(record.address, record.body);
      multipart.add(record.seid);
    }
    for (const seid of multipart) {
      const location = core.map.get(seid);
      const current = core.parts.get(seid);
      if (location === undefined || current === undefined) continue;
      const touched =
        current.parts.some((part) => log.segmentSeqOf(part.address) === seq) ||
        current.meta.some((record) => log.segmentSeqOf(record.address) === seq);
      if (!touched) continue;
      const parts: Part[] = [];
      for (const [index, part] of current.parts.entries()) {
        if (log.segmentSeqOf(part.address) !== seq) {
          parts.push(part);
          continue;
        }
        const body = bodies.get(part.address);
        // A part of this segment the scan did not see cannot be moved: leave the element as is.
        if (body === undefined) {
          parts.length = 0;
          break;
        }
        const address = await appendRecord(log, RecordType.Data, txId, seid, index, body, FLAG_PART);
        parts.push({ address, bodyBytes: body.length });
        relocatedBytes += paddedRecordBytes(RECORD_HEADER_BYTES + body.length);
      }
      if (parts.length !== current.parts.length) continue;
      ops.push({ ...(await appendExtents(log, txId, seid, parts, location.sizeBytes)), moved: true });
    }
    if ((await this.host.commits.commitLive(txId, ops, "system")) === undefined) return;
    this.counters.bytesRelocated += relocatedBytes;
    this.counters.recordsRelocated += ops.length;
  }

  /**
   * Writers' throttle (CEDA's BlockUntilLowWaterMark), called with the turn held before a
   * transaction runs: while fewer than the low-water mark of segments are free and cleaning can
   * free some, clean and checkpoint instead of growing the file. A store whose live data fills
   * the disk or `maxFileBytes` gets `NoSpaceError` from the log when its transaction needs a
   * segment the full-disk reserve keeps back (not here: a transaction that only deletes may run).
   */
  async throttle(): Promise<void> {
    const log = this.log;
    if (!this.needsThrottle()) return;
    const started = performance.now();
    try {
      for (let round = 0; round < 8 && this.needsThrottle(); round++) {
        const victims = this.candidates();
        if (victims.length === 0 && log.pendingSegments === 0) break;
        for (const seq of victims.slice(0, Math.max(2, this.settings.cleanerLowWaterSegments))) await this.cleanSegment(seq, true);
        // Emptied segments become free once the relocations are durable (if they lie before the
        // newest checkpoint); only those after it need a new checkpoint.
        if (log.pendingSegments > 0) await log.flush();
        // A checkpoint costs the whole mapping table: take one only when writers are down to the
        // hard low-water mark, not merely inside the reserve.
        if (this.headroom() < this.settings.cleanerLowWaterSegments && log.pendingSegments > 0) await this.checkpointLocked();
      }
    } finally {
      this.counters.throttledMs += performance.now() - started;
    }
  }

  /**
   * Make the segments cleaning emptied reusable now (the turn is held): their relocations
   * durable, and a checkpoint when some lie past the newest one. Used when the disk is full,
   * where the next victim's relocations need the room.
   */
  private async freeEmptied(): Promise<void> {
    const log = this.log;
    if (log.pendingSegments === 0) return;
    await log.flush();
    if (log.pendingSegments > 0) await this.checkpointLocked();
  }

  /**
   * The full-disk reserve the log keeps allocated ahead of its writer (src/log/space.ts), in
   * bytes: room for the store's upkeep to free space when the disk is full, and a share for
   * transactions that only delete. It is sized by what upkeep really appends, so it grows with
   * the store (an empty store's is a few hundred KiB, not segments):
   * - one checkpoint ({@link checkpointEstimate});
   * - the live records of one victim: at most `cleanerUtilisationPercent` of a segment, and at
   *   most all the live records there are;
   * - per unit, its header and the rounding up to 4 KiB (units of a buffer at most; the
   *   relocation batches and the flushes between them each end one);
   * - where a record does not fit the room left (a segment's end, or the end of what the file
   *   holds when it cannot grow), that room is lost: less than the largest record upkeep may
   *   append (a checkpoint chunk, or the largest record written), at each segment end crossed
   *   and once more for the file's end.
   * The delete share is what deleting every element in one transaction appends (a record of
   * {@link RECORD_HEADER_BYTES} each), at least {@link MIN_DELETE_SHARE_BYTES} (many small delete
   * transactions: a unit each), at most a segment.
   */
  fullDiskReserve(pending: PendingWrites = NO_PENDING_WRITES): SpaceReserve {
    const { core } = this.host;
    const log = this.log;
    const segment = log.segmentSize;
    const unitPayload = log.maxReservationBytes;
    // Pending user writes (appended, not committed yet) count as if committed: each record a new
    // element (a mapping entry, a Delete record to empty it), its bytes live.
    const checkpoint = this.checkpointEstimate() + pending.records * 24;
    const victim = Math.min(Math.ceil((segment * this.settings.cleanerUtilisationPercent) / 100), core.sut.totalLiveBytes + pending.bytes);
    const need = checkpoint + victim;
    const units = Math.ceil(need / unitPayload) + Math.ceil(victim / RELOCATE_BATCH_BYTES) + RESERVE_FLUSHES;
    const largestRecord = Math.max(core.largestRecordBytes, paddedRecordBytes(pending.largestRecordBytes));
    const largest = Math.min(unitPayload, Math.max(Math.min(checkpoint, CHECKPOINT_CHUNK_BYTES + RECORD_HEADER_BYTES), largestRecord));
    const ends = Math.ceil(need / segment) + 2;
    const upkeepBytes = need + units * (ALIGNMENT_BYTES + UNIT_HEADER_BYTES) + ends * (largest + ALIGNMENT_BYTES) + MIN_UNIT_ROOM_BYTES;
    const deleteBytes = Math.min(segment, Math.max(MIN_DELETE_SHARE_BYTES, (core.map.size + pending.records) * RECORD_HEADER_BYTES + DELETE_SHARE_SLACK_BYTES));
    return { upkeepBytes: alignUp(upkeepBytes), deleteBytes: alignUp(deleteBytes) };
  }

  /**
   * Bytes a checkpoint of the store takes now, at most: 24 per mapping entry, 16 per utilisation
   * entry, part and Extents entry of multipart elements and segment slot, and a margin for the
   * header and the seid spaces.
   */
  checkpointEstimate(): number {
    const { core } = this.host;
    const entries = core.sut.segmentCount + core.multipartEntries + this.log.fileSegments + core.parts.size;
    return CHECKPOINT_MARGIN_BYTES + core.map.size * 24 + entries * 16;
  }

  /**
   * Segments kept back for the cleaner's own writes: a checkpoint (about 24 bytes per seid) and
   * one batch of relocations. Writers are throttled before they eat into it. (The log's full-disk
   * reserve, {@link fullDiskReserve}, is the hard floor under this soft one.)
   */
  reserveSegments(): number {
    const log = this.log;
    return Math.ceil(this.checkpointEstimate() / log.segmentSize) + Math.ceil(RELOCATE_BATCH_BYTES / log.segmentSize) + 1;
  }

  /** Segments the file may still have, under `maxFileBytes` (unbounded without it). */
  private maxSegments(): number {
    const maxFileBytes = this.host.maxFileBytes;
    return maxFileBytes === undefined ? Number.POSITIVE_INFINITY : Math.floor((maxFileBytes - ROOT_REGION_BYTES) / this.log.segmentSize);
  }

  /** Segments writers can still use: free ones plus room to grow under `maxFileBytes`. */
  private headroom(): number {
    const log = this.log;
    return log.freeSegments + Math.max(0, this.maxSegments() - log.fileSegments);
  }

  /**
   * Whether writers should wait for cleaning before they run. Under `maxFileBytes`: when free
   * segments plus room to grow fall below the low-water mark plus the cleaner's reserve. Without
   * it: when free segments are that low and cleaning would reclaim at least two segments (the
   * file does not grow while garbage is there to reclaim, and grows when there is none).
   */
  private needsThrottle(): boolean {
    const floor = this.settings.cleanerLowWaterSegments + this.reserveSegments();
    if (this.host.maxFileBytes !== undefined) return this.headroom() < floor;
    return this.log.freeSegments < floor && this.worthCleaning();
  }

  private async checkpointLocked(): Promise<void> {
    await this.host.checkpointer.writeLocked();
  }

  /**
   * Segments the background cleaner counts as spare: free ones plus, under `maxFileBytes`, the
   * room the file may still grow by. Counting only free segments there made it clean as soon as
   * two segments' worth of garbage existed while most of the allowed file was unused, so victims
   * were three-quarters live (write amplification about 10 at 50% utilisation); letting garbage
   * gather until the room is used makes victims emptier. Without `maxFileBytes` the file has no
   * room to count, and free segments alone decide, as before.
   */
  private spareSegments(): number {
    return this.host.maxFileBytes === undefined ? this.log.freeSegments : this.headroom();
  }

  /** Free segments the background cleaner aims for: the high-water mark, above the writers' floor. */
  private freeTarget(): number {
    return Math.max(this.settings.cleanerHighWaterSegments, this.settings.cleanerLowWaterSegments + this.reserveSegments() + 1);
  }

  /**
   * After a commit: start background cleaning when free segments are below the target and the
   * candidates hold at least two segments' worth of garbage (less is not worth moving data for).
   */
  nudge(): void {
    if (!this.settings.autoClean || this.running !== undefined || !this.host.isOpen()) return;
    if (this.spareSegments() >= this.freeTarget()) return;
    if (!this.worthCleaning()) return;
    this.running = this.background().finally(() => {
      this.running = undefined;
    });
  }

  private async background(): Promise<void> {
    this.counters.cleanerRuns += 1;
    const log = this.log;
    const relocatedAtStart = this.counters.bytesRelocated;
    const cleanedAtStart = this.counters.segmentsCleaned;
    try {
      while (this.host.isOpen() && this.spareSegments() < this.freeTarget()) {
        // Yield to the event loop between victims: cleaning runs in small steps.
        await new Promise((resolve) => setImmediate(resolve));
        const [victim] = this.candidates();
        if (victim === undefined) break;
        // No progress (taken meanwhile, or written into since): stop; the next commit nudges again.
        if (!(await this.cleanSegment(victim, false))) break;
        // Durable relocations free the segments before the newest checkpoint; those after it
        // wait for a checkpoint, taken while there is still room for one.
        if (log.pendingSegments > 0) await log.flush();
        if (log.pendingSegments >= Math.max(1, Math.floor(this.settings.cleanerHighWaterSegments / 2))) {
          await this.host.commits.exclusive(() => this.checkpointLocked());
        }
        // Progress guard: stop when relocation eats most of what cleaning frees.
        const cleaned = this.counters.segmentsCleaned - cleanedAtStart;
        const relocated = this.counters.bytesRelocated - relocatedAtStart;
        if (cleaned >= 2 && relocated > 0.8 * cleaned * log.segmentSize) break;
      }
      log.requestFlush();
    } catch {
      // Background cleaning gives up quietly: a closed store, or an I/O failure that the log
      // already turned into read-only mode. Nothing it did is half-applied.
    }
  }

  /** Wait for background cleaning to finish. */
  async idle(): Promise<void> {
    await this.running;
  }

  /**
   * Clean every candidate below `thresholdPercent` now, then checkpoint so their space is free;
   * with `shrink`, truncate free segments at the end of the file. The caller holds no turn.
   */
  async compact(thresholdPercent: number, shrink: boolean): Promise<{ segmentsCleaned: number; bytesFreed: number }> {
    await this.idle();
    const { core } = this.host;
    const before = this.counters.segmentsCleaned;
    for (let pass = 0; pass < 3; pass++) {
      // Emptiest first: on a full disk the reserve then frees the most for what it relocates.
      const victims = this.candidates(thresholdPercent, 1).sort((a, b) => core.sut.liveBytesOf(a) - core.sut.liveBytesOf(b));
      if (victims.length === 0) break;
      for (const seq of victims) await this.cleanSegment(seq, false);
      // Relocations land in the tail; a checkpoint makes the emptied segments free.
      await this.host.commits.exclusive(() => this.checkpointLocked());
    }
    await this.host.commits.exclusive(() => this.checkpointLocked());
    let bytesFreed = 0;
    if (shrink) bytesFreed = await this.host.commits.exclusive(async () => this.log.shrinkFile());
    return { segmentsCleaned: this.counters.segmentsCleaned - before, bytesFreed };
  }
}
