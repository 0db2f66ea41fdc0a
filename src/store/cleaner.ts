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
 * When to clean: under `maxFileBytes` (or on a block device), to keep the water marks of free
 * segments in the room the limit leaves; without it, to keep the file to its space goal,
 * `cleanerSpaceAmplification` times the live records ({@link Cleaner.spaceGoalBytes}), cutting
 * free segments off the file's end when it is over.
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
  /** Under `maxFileBytes`: below this many free segments, writers wait for the cleaner rather than grow the file (default 2). */
  cleanerLowWaterSegments: number;
  /** Under `maxFileBytes`: the cleaner works in the background until this many segments are free (default 4). */
  cleanerHighWaterSegments: number;
  /**
   * Without `maxFileBytes`: the file size the cleaner keeps to, as a multiple of the live records
   * (default 1.5). Lower costs more write amplification.
   */
  cleanerSpaceAmplification: number;
  /** Run the cleaner by itself in the background (default true). */
  autoClean: boolean;
}

/** Segments behind the tail a victim must be (outside `compact()`). */
export const MIN_VICTIM_AGE_SEGMENTS = 2;

/** Bytes of records relocated per batch: the longest a batch holds the transaction turn. */
export const RELOCATE_BATCH_BYTES = 1 << 20;

const NO_PENDING_WRITES: PendingWrites = { records: 0, bytes: 0, largestRecordBytes: 0 };

/** Fullest victims the cleaner takes to hold the space goal when there are no others (see {@link Cleaner.victimCandidates}). */
export const SPACE_GOAL_UTILISATION_PERCENT = 90;

/** Smallest room the cleaner keeps beyond the full-disk reserve without `maxFileBytes` (see {@link Cleaner.slackBytes}). */
const MIN_SLACK_BYTES = 64 << 10;

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
  /** Bytes of free room given back to the filesystem (the file's end cut). */
  bytesShrunk: number;
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
  readonly counters: CleanerStats = { segmentsCleaned: 0, bytesShrunk: 0, bytesRelocated: 0, recordsRelocated: 0, throttledMs: 0, cleanerRuns: 0 };

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
      if (tail - seq < minAge || stable < (seq + 1) * log.segmentSize) continue;
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
    // Pins last, and all at once: with Workers attached a pin lookup scans their shared pin table
    // (16 k entries), and one scan per live segment on every candidate scan was 17% of the
    // owner's CPU while two Workers committed (bench/workers.ts).
    const pinned = pins.pinnedAmong(scored.map((entry) => entry.seq));
    return scored.flatMap((entry) => (pinned.has(entry.seq) ? [] : [entry.seq]));
  }

  /**
   * The candidates the cleaner's own work (background, throttle) takes victims from: those below
   * `cleanerUtilisationPercent`; without `maxFileBytes`, when the file is at its space goal and
   * none is, those below {@link SPACE_GOAL_UTILISATION_PERCENT}: growing past the goal is the
   * alternative.
   */
  private victimCandidates(): number[] {
    if (this.host.maxFileBytes !== undefined) return this.candidates();
    const candidates = this.freeableCandidates(this.settings.cleanerUtilisationPercent);
    if (candidates.length > 0 || this.log.outOfSpace || !this.atSpaceGoal()) return candidates;
    return this.freeableCandidates(Math.max(this.settings.cleanerUtilisationPercent, SPACE_GOAL_UTILISATION_PERCENT));
  }

  /**
   * Without `maxFileBytes`: candidates, those whose cleaning gives room back at once first. A
   * segment past the newest checkpoint's start is free only after another checkpoint; when a
   * checkpoint costs more than half a segment, freeing segments one by one that way would write
   * more than it frees, so those wait until enough of them are pending to be worth one (see
   * background() and throttle()) or the periodic checkpoint passes over them.
   */
  private freeableCandidates(thresholdPercent: number): number[] {
    const log = this.log;
    const candidates = this.candidates(thresholdPercent);
    if (!this.checkpointTooDear()) return candidates;
    const checkpoint = log.rootBlock.checkpoint;
    const start = checkpoint === undefined ? 0 : log.segmentSeqOf(checkpoint.start.address);
    return [...candidates.filter((seq) => seq < start), ...candidates.filter((seq) => seq >= start)];
  }

  /** A checkpoint costs more than half a segment (see {@link freeableCandidates}). */
  private checkpointTooDear(): boolean {
    return 2 * this.checkpointEstimate() > this.log.segmentSize;
  }

  /**
   * Whether the candidates hold at least `segments` segments' worth of garbage (two by default).
   * Asked after every commit, so the scan (every live segment, then a sort) runs again only when
   * the log's tail, or the free or pending counts, have moved since the last one, or an eighth of
   * a segment was appended: less changes the answer too little to pay for a scan per commit.
   */
  private worthCleaning(segments = 2): boolean {
    const log = this.log;
    const memo = this.worthMemo;
    const appended = Math.floor(log.appendedEnd / Math.max(1, log.segmentSize >> 3));
    if (memo.tail !== log.tailSegmentSeq || memo.free !== log.freeSegments || memo.pending !== log.pendingSegments || memo.appended !== appended) {
      memo.tail = log.tailSegmentSeq;
      memo.free = log.freeSegments;
      memo.pending = log.pendingSegments;
      memo.appended = appended;
      memo.reclaimable = this.reclaimableBytes(this.victimCandidates());
    }
    return memo.reclaimable >= segments * log.segmentSize;
  }

  private readonly worthMemo = { tail: -1, free: -1, pending: -1, appended: -1, reclaimable: 0 };

  /** Bytes cleaning the candidates would reclaim. */
  private reclaimableBytes(victims: readonly number[]): number {
    const { core } = this.host;
    const log = this.log;
    let bytes = 0;
    for (const seq of victims) bytes += log.segmentSize - core.sut.liveBytesOf(seq);
    return bytes;
  }

  /** Clean `seq`: relocate its live records and give it back. `locked`: the caller holds the turn. */
  async cleanSegment(seq: number, locked: boolean, lend = true): Promise<boolean> {
    const log = this.log;
    // The background cleaner and a throttled writer may pick the same victim; a checkpoint may
    // also have given it back already (it was empty).
    if (this.cleaning.has(seq) || !log.isLiveSegment(seq)) return false;
    this.cleaning.add(seq);
    try {
      return await this.cleanSegmentOnce(seq, locked, lend);
    } finally {
      this.cleaning.delete(seq);
    }
  }

  private async cleanSegmentOnce(seq: number, locked: boolean, lend: boolean): Promise<boolean> {
    const { core, pins } = this.host;
    const log = this.log;
    // With the turn held (throttle), the transaction about to run has written nothing yet.
    const records = await this.readVictim(seq);
    const batches = this.batch(records);
    for (const batch of batches) {
      if (locked) await this.relocate(seq, batch, lend);
      else await this.host.commits.exclusive(() => this.relocate(seq, batch, lend));
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
   * store's upkeep: it may use the whole full-disk reserve, and with `lend` what it takes is lent
   * until the victim is given back ({@link returnLent}; src/log/space.ts `SpaceUse`): only for
   * one victim at a time, cleaned and given back before the next (compact() cleans many before
   * the checkpoint that gives them back, and lends nothing).
   */
  private async relocate(seq: number, batch: VictimRecord[], lend: boolean): Promise<void> {
    await this.log.withSpaceUse(lend ? "relocate" : "upkeep", () => this.relocateBatch(seq, batch));
  }

  /**
   * The victims cleaned since the last call are given back (free, or pending a checkpoint that
   * was tried) or given up: what their relocations took of the full-disk reserve is no longer
   * lent, and the log keeps the reserve whole again.
   */
  private returnLent(): void {
    try {
      this.log.lentReturned();
    } catch {
      // An I/O failure growing the file: the log is failed already, and says so to the next caller.
    }
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
   * {@link throttle} when writers must wait, else `undefined`: the transaction path skips an
   * async call and its promise ticks on every transaction when space is not short.
   */
  throttleIfNeeded(): Promise<void> | undefined {
    return this.needsThrottle() ? this.throttle() : undefined;
  }

  /**
   * Writers' throttle (CEDA's BlockUntilLowWaterMark), called with the turn held before a
   * transaction runs: while space is short ({@link needsThrottle}) and cleaning can free some,
   * clean and checkpoint instead of growing the file. A store whose live data fills the disk or
   * `maxFileBytes` gets `NoSpaceError` from the log when its transaction needs room the full-disk
   * reserve keeps back (not here: a transaction that only deletes may run).
   */
  async throttle(): Promise<void> {
    const log = this.log;
    if (!this.needsThrottle()) return;
    const started = performance.now();
    try {
      for (let round = 0; round < 8 && this.needsThrottle(); round++) {
        const victims = this.affordableCandidates();
        if (victims.length === 0 && log.pendingSegments === 0) break;
        try {
          // Without `maxFileBytes` one at a time: the room is what relocations spend, and each
          // victim given back returns it before the next takes more.
          const count = this.host.maxFileBytes === undefined ? 1 : Math.max(2, this.settings.cleanerLowWaterSegments);
          for (const seq of victims.slice(0, count)) await this.cleanSegment(seq, true);
          // Emptied segments become free once the relocations are durable (if they lie before the
          // newest checkpoint); only those after it need a new checkpoint.
          if (log.pendingSegments > 0) await log.flush();
          // A checkpoint costs the whole mapping table: take one only when writers are down to the
          // hard low-water mark, not merely inside the reserve (without `maxFileBytes`: when the
          // room is still short, the pending segments being what it lacks).
          const short =
            this.host.maxFileBytes === undefined
              ? this.needsThrottle() && log.pendingSegments * log.segmentSize >= 2 * this.checkpointEstimate()
              : this.headroom() < this.settings.cleanerLowWaterSegments;
          if (short && log.pendingSegments > 0) await this.checkpointLocked();
        } finally {
          this.returnLent();
        }
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
    const victim = this.victimShare(pending);
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
   * The full-disk reserve's share for one victim's live records: at most
   * `cleanerUtilisationPercent` of a segment, at most all live records, at most the emptiest
   * victim's ({@link emptiestVictimBytes}).
   */
  private victimShare(pending: PendingWrites = NO_PENDING_WRITES): number {
    const { core } = this.host;
    return Math.min(
      Math.ceil((this.log.segmentSize * this.settings.cleanerUtilisationPercent) / 100),
      core.sut.totalLiveBytes + pending.bytes,
      this.emptiestVictimBytes(),
    );
  }

  /**
   * Whether cleaning `seq` now leaves room for the checkpoint that may be needed to give it back
   * (without `maxFileBytes`, on a disk with room): should the disk fill meanwhile, a victim whose
   * relocations left no room for that checkpoint would hold the room it took for good.
   */
  private affordable(seq: number): boolean {
    const log = this.log;
    if (this.host.maxFileBytes !== undefined || log.outOfSpace) return true;
    const afterwards = log.roomBytes - this.host.core.sut.liveBytesOf(seq) - RESERVE_FLUSHES * (ALIGNMENT_BYTES + UNIT_HEADER_BYTES);
    return afterwards >= this.checkpointEstimate();
  }

  /**
   * Live bytes of the emptiest segment `compact()` could clean now (Infinity if none): on a full
   * disk it cleans the emptiest first, and each victim it gives back returns a segment, more than
   * the next one needs, so the reserve needs room for the first only. Between scans the others
   * only get emptier (overwrites, deletes); the scan runs again when one is cleaned or given back,
   * or the log's tail moves on (the segment it leaves may be emptier still). Pinned segments count
   * as candidates: a read stream holds them only for a while.
   */
  private emptiestVictimBytes(): number {
    const log = this.log;
    const memo = this.emptiestMemo;
    const checkpointStart = log.rootBlock.checkpoint?.start.address ?? -1;
    if (memo.tail === log.tailSegmentSeq && memo.free === log.freeSegments && memo.pending === log.pendingSegments && memo.checkpoint === checkpointStart) {
      return memo.bytes;
    }
    const { core } = this.host;
    const tail = log.tailSegmentSeq;
    const stable = log.stableAddress;
    const checkpoint = log.rootBlock.checkpoint;
    const firstKept = checkpoint === undefined ? Number.POSITIVE_INFINITY : log.segmentSeqOf(checkpoint.start.address);
    const lastKept = checkpoint === undefined ? -1 : log.segmentSeqOf(checkpoint.endAddress - 1);
    const threshold = (log.segmentSize * this.settings.cleanerUtilisationPercent) / 100;
    let emptiest = Number.POSITIVE_INFINITY;
    for (const seq of log.liveSegmentSeqs()) {
      if (seq >= tail || stable < (seq + 1) * log.segmentSize || (seq >= firstKept && seq <= lastKept)) continue;
      const live = core.sut.liveBytesOf(seq);
      if (live < threshold && live < emptiest) emptiest = live;
    }
    Object.assign(memo, { tail, free: log.freeSegments, pending: log.pendingSegments, checkpoint: checkpointStart, bytes: emptiest });
    return emptiest;
  }

  private readonly emptiestMemo = { tail: -1, free: -1, pending: -1, checkpoint: -1, bytes: Number.POSITIVE_INFINITY };

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
   * it: when the file is at its space goal ({@link spaceGoalBytes}), the room ahead of the log is
   * short of the full-disk reserve plus {@link slackBytes} (the transaction would grow the file)
   * and cleaning would reclaim at least a segment: the file does not grow past its goal while
   * garbage is there to reclaim, and grows when there is none.
   */
  private needsThrottle(): boolean {
    if (this.host.maxFileBytes !== undefined) return this.headroom() < this.settings.cleanerLowWaterSegments + this.reserveSegments();
    return this.atSpaceGoal() && this.log.roomBytes < this.reserveBytes() + this.slackBytes() && this.worthCleaning(1);
  }

  // ─────────────── without maxFileBytes: the space goal ───────────────

  /**
   * The file size the cleaner keeps to without `maxFileBytes`: `cleanerSpaceAmplification` times
   * the live records, but not less than the live records plus the full-disk reserve and two
   * segments (the one being written and one being emptied): below that, cleaning would only move
   * nearly live segments about.
   */
  spaceGoalBytes(): number {
    const live = this.host.core.sut.totalLiveBytes;
    const segment = this.log.segmentSize;
    return Math.max(this.settings.cleanerSpaceAmplification * live - segment, live + this.reserveBytes() + segment);
  }

  /** The file would pass its space goal if it grew now. */
  private atSpaceGoal(): boolean {
    return this.log.fileBytes + this.slackBytes() > this.spaceGoalBytes();
  }

  /** Bytes of the full-disk reserve (see {@link fullDiskReserve}). */
  private reserveBytes(): number {
    const reserve = this.fullDiskReserve();
    return reserve.upkeepBytes + reserve.deleteBytes;
  }

  /**
   * Room beyond the reserve the cleaner keeps ahead of the log, so that a transaction seldom
   * grows the file: an eighth of a segment (at least {@link MIN_SLACK_BYTES}).
   */
  private slackBytes(): number {
    return Math.max(MIN_SLACK_BYTES, Math.floor(this.log.segmentSize / 8));
  }

  /**
   * The background cleaner works while the file is at its goal and room is short of the reserve
   * plus twice the slack (the writer would soon grow the file), or while the file is over its
   * goal and a victim at its end could be cut off once emptied ({@link endVictims}).
   */
  private wantsSpaceCleaning(): boolean {
    if (!this.atSpaceGoal()) return false;
    const room = this.log.roomBytes;
    if (room < this.reserveBytes() + 2 * this.slackBytes()) return true;
    // Over the goal: the segments at the end emptied, to be cut off.
    return this.endVictims().length > 0;
  }

  /**
   * Over the space goal: the candidates among the file's last segments, as many as the file is
   * over its goal by and one more, best first. Emptied, they become free at the file's end,
   * which {@link shrinkIfRoomy} cuts off (the writer takes the lowest free segments, so those
   * stay free); free segments in the middle of the file would only be room, not a smaller file.
   */
  private endVictims(): number[] {
    const log = this.log;
    const over = log.fileBytes - this.spaceGoalBytes();
    if (over <= 0) return [];
    const from = log.fileSegments - Math.ceil(over / log.segmentSize) - 1;
    return this.victimCandidates().filter((seq) => (log.segmentIndexOf(seq) ?? -1) >= from);
  }

  /** The next background victim: one at the file's end while over the space goal, else the best. */
  private nextVictim(): number | undefined {
    if (this.host.maxFileBytes === undefined) {
      const atEnd = this.endVictims().find((seq) => this.affordable(seq));
      if (atEnd !== undefined) return atEnd;
    }
    return this.affordableCandidates()[0];
  }

  /**
   * Candidates best first, those the room affords ({@link affordable}) only, and on a full disk
   * emptiest first: each frees the most for what it relocates, and the full-disk reserve holds
   * room for the emptiest ({@link victimShare}).
   */
  private affordableCandidates(): number[] {
    const { core } = this.host;
    const log = this.log;
    const candidates = this.victimCandidates();
    if (log.outOfSpace) return candidates.sort((a, b) => core.sut.liveBytesOf(a) - core.sut.liveBytesOf(b));
    return candidates.filter((seq) => this.affordable(seq));
  }

  /**
   * Give free room back to the filesystem: cut the file's end down to the reserve and twice the
   * slack of room, once there is more than that plus what the file grows by at a time and the
   * slack again (hysteresis: a file that shrinks and grows back at every commit would spend its
   * time in fallocate). The turn is held.
   */
  private shrinkIfRoomy(): number {
    // Over the goal, free segments at the end are cut as soon as the reserve stays whole: the
    // writer would take them, and the file would stay over its goal; writers then wait for the
    // cleaner (needsThrottle) rather than grow it back.
    const keep = this.reserveBytes() + 2 * this.slackBytes();
    if (this.log.fileBytes > this.spaceGoalBytes()) return this.log.shrinkFile(keep);
    if (!this.roomy()) return 0;
    return this.log.shrinkFile(keep);
  }

  /** More room than {@link shrinkIfRoomy} keeps, by a growth step and the slack. */
  private roomy(): boolean {
    return this.log.roomBytes > this.reserveBytes() + 3 * this.slackBytes() + this.log.growthStepBytes;
  }

  private async checkpointLocked(): Promise<void> {
    await this.host.checkpointer.writeLocked();
  }

  /**
   * Under `maxFileBytes`: segments the background cleaner counts as spare, free ones plus the
   * room the file may still grow by. Counting only free segments there made it clean as soon as
   * two segments' worth of garbage existed while most of the allowed file was unused, so victims
   * were three-quarters live (write amplification about 10 at 50% utilisation); letting garbage
   * gather until the room is used makes victims emptier.
   */
  private spareSegments(): number {
    return this.headroom();
  }

  /** Under `maxFileBytes`: free segments the background cleaner aims for, the high-water mark above the writers' floor. */
  private freeTarget(): number {
    return Math.max(this.settings.cleanerHighWaterSegments, this.settings.cleanerLowWaterSegments + this.reserveSegments() + 1);
  }

  /** Whether background cleaning has work: under `maxFileBytes`, spare segments short of the target; without, the space goal. */
  private wantsBackground(): boolean {
    if (this.host.maxFileBytes !== undefined) return this.spareSegments() < this.freeTarget();
    return this.wantsSpaceCleaning();
  }

  /**
   * After a commit: start background cleaning when it has work ({@link wantsBackground}) and the
   * candidates hold enough garbage to be worth moving data for (two segments' worth under
   * `maxFileBytes`, one towards the space goal); without `maxFileBytes`, also give back free room
   * the file no longer needs.
   */
  nudge(): void {
    if (!this.settings.autoClean || this.running !== undefined || !this.host.isOpen()) return;
    const bounded = this.host.maxFileBytes !== undefined;
    if (!bounded && this.pendingWorthCheckpoint()) {
      this.startUpkeep(true);
      return;
    }
    if (!this.wantsBackground() || !this.worthCleaning(bounded ? 2 : 1)) {
      if (!bounded && this.roomy()) this.startUpkeep(false);
      return;
    }
    this.running = this.background().finally(() => {
      this.running = undefined;
    });
  }

  /**
   * Without `maxFileBytes`: segments cleaning emptied wait for a checkpoint (they lie past the
   * newest one), the file is at its space goal and room ahead of the log is running short, and
   * freeing them gains at least twice what the checkpoint writes. Then a checkpoint now, rather
   * than a bigger file. Why: background cleaning takes one only while it still has victims; when
   * it had emptied every victim there was, the emptied segments waited for the periodic checkpoint
   * (`numSegmentsPerCheckpoint` segments of log later) and the writer grew the file meanwhile —
   * with the default 8 MiB segments, 8 MiB of values overwritten 20 times left a file 14.9× the
   * live records, 11 segments pending (bench/store.ts (j)).
   */
  private pendingWorthCheckpoint(): boolean {
    const log = this.log;
    const pending = log.pendingSegments;
    // Freed since (by another checkpoint): what stays pending is only what that one left.
    if (pending < this.pendingKept) this.pendingKept = pending;
    if (pending === this.pendingKept || !this.atSpaceGoal()) return false;
    if (log.roomBytes >= this.reserveBytes() + 2 * this.slackBytes()) return false;
    return (pending - this.pendingKept) * log.segmentSize >= 2 * this.checkpointEstimate();
  }

  /**
   * Segments a checkpoint taken for pending segments left pending: a tail reader (a standby, an
   * archive, a backup) or a retention handle still needs them (src/log/segments.ts). Only
   * segments emptied since count towards the next such checkpoint, so one that cannot free them
   * is not taken again after every commit.
   */
  private pendingKept = 0;

  /** {@link checkpointLocked} for the pending segments (see {@link pendingWorthCheckpoint}); the turn is held. */
  private async checkpointForPending(): Promise<void> {
    await this.checkpointLocked();
    this.pendingKept = this.log.pendingSegments;
  }

  /**
   * Without `maxFileBytes`, in the background holding the turn: a checkpoint for the pending
   * segments first when `checkpoint` ({@link pendingWorthCheckpoint}), then free room cut off the
   * file's end.
   */
  private startUpkeep(checkpoint: boolean): void {
    this.running = this.host.commits
      .exclusive(async () => {
        if (checkpoint) await this.checkpointForPending();
        this.counters.bytesShrunk += this.shrinkIfRoomy();
      })
      .catch(() => {
        // As background cleaning: a closed or failed store; nothing half-done (a checkpoint that
        // failed leaves the previous one in force).
      })
      .finally(() => {
        this.running = undefined;
      });
  }

  private async background(): Promise<void> {
    this.counters.cleanerRuns += 1;
    const log = this.log;
    const relocatedAtStart = this.counters.bytesRelocated;
    const cleanedAtStart = this.counters.segmentsCleaned;
    try {
      const bounded = this.host.maxFileBytes !== undefined;
      while (this.host.isOpen() && this.wantsBackground()) {
        // Yield to the event loop between victims: cleaning runs in small steps.
        await new Promise((resolve) => setImmediate(resolve));
        const victim = this.nextVictim();
        if (victim === undefined) break;
        try {
          // No progress (taken meanwhile, or written into since): stop; the next commit nudges again.
          if (!(await this.cleanSegment(victim, false))) break;
          // Durable relocations free the segments before the newest checkpoint; those after it
          // wait for a checkpoint, taken while there is still room for one.
          if (log.pendingSegments > 0) await log.flush();
          // Without `maxFileBytes`, while room is still short (the pending segments are the room
          // it lacks), once they free at least half of what the checkpoint writes (a store whose
          // checkpoint spans many segments does not write one per victim).
          const checkpointAt = bounded
            ? Math.max(1, Math.floor(this.settings.cleanerHighWaterSegments / 2))
            : this.wantsSpaceCleaning()
              ? Math.max(1, Math.ceil(this.checkpointEstimate() / (2 * log.segmentSize)))
              : Number.POSITIVE_INFINITY;
          if (log.pendingSegments >= checkpointAt) await this.host.commits.exclusive(() => this.checkpointLocked());
          else if (!bounded && this.pendingWorthCheckpoint()) await this.host.commits.exclusive(() => this.checkpointForPending());
        } finally {
          this.returnLent();
        }
        // An emptied segment at the file's end is cut off at once.
        if (!bounded) this.counters.bytesShrunk += await this.host.commits.exclusive(async () => this.shrinkIfRoomy());
        // Progress guard: stop when relocation eats most of what cleaning frees.
        const cleaned = this.counters.segmentsCleaned - cleanedAtStart;
        const relocated = this.counters.bytesRelocated - relocatedAtStart;
        if (cleaned >= 2 && relocated > 0.8 * cleaned * log.segmentSize) break;
      }
      log.requestFlush();
      if (!bounded && this.host.isOpen()) {
        this.counters.bytesShrunk += await this.host.commits.exclusive(async () => this.shrinkIfRoomy());
      }
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
      for (const seq of victims) await this.cleanSegment(seq, false, false);
      // Relocations land in the tail; a checkpoint makes the emptied segments free.
      await this.host.commits.exclusive(() => this.checkpointLocked());
    }
    await this.host.commits.exclusive(() => this.checkpointLocked());
    let bytesFreed = 0;
    if (shrink) bytesFreed = await this.host.commits.exclusive(async () => this.log.shrinkFile());
    return { segmentsCleaned: this.counters.segmentsCleaned - before, bytesFreed };
  }
}
