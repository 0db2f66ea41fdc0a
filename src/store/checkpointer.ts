/**
 * Checkpoints: the mapping table, the segment utilisation table, the seid spaces and the log's
 * segment table, written as Checkpoint records through the log and then named by the root block
 * (both copies), so that recovery replays only the log written after it. Loading one at open is
 * here too: writing and reading the same blob belong to one file.
 *
 * When: every `numSegmentsPerCheckpoint` segments of log (in the background, after a commit), on
 * `store.checkpoint()`, when the cleaner needs emptied segments freed, and at close if anything
 * changed. A checkpoint holds the transaction turn: no commit interleaves with it.
 *
 * @module
 */
import { CorruptionError } from "../errors.ts";
import { noteMultipart, type CommitPath, type StoreCore } from "./commit.ts";
import { checkpointMapCount, decodeCheckpoint, encodeCheckpoint } from "./format/checkpoint.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, scanRecords } from "./format/records.ts";
import type { SegmentPins } from "./pins.ts";
import { appendRecord } from "./write-path.ts";

/** Largest Checkpoint record body: a checkpoint is written as chunks of this size. */
export const CHECKPOINT_CHUNK_BYTES = 16 << 10;

/** Load the checkpoint the root block names (if any) into `core`; its counters, or undefined. */
export async function loadCheckpoint(core: StoreCore): Promise<{ lastTxId: number; commits: number } | undefined> {
  const payloads = await core.log.readCheckpoint();
  if (payloads === undefined) return undefined;
  const chunks: Uint8Array[] = [];
  for (const payload of payloads) {
    for (const record of scanRecords(payload)) {
      if (record.header.type !== RecordType.Checkpoint) continue;
      if (record.header.aux !== chunks.length) throw new CorruptionError(`checkpoint chunk ${record.header.aux} out of order`);
      chunks.push(record.body);
    }
  }
  const blob = Buffer.concat(chunks);
  core.map.reserve(checkpointMapCount(blob));
  const decoded = decodeCheckpoint(
    blob,
    (seid, location) => {
      core.map.set(seid, location);
      core.liveValueBytes += location.sizeBytes;
      if (!location.multipart) core.largestRecordBytes = Math.max(core.largestRecordBytes, paddedRecordBytes(RECORD_HEADER_BYTES + location.sizeBytes));
    },
    (seid, multipart) => {
      core.parts.set(seid, multipart);
      noteMultipart(core, multipart);
    },
  );
  core.sut.restore(decoded.sut);
  core.spaces.apply(decoded.spaces);
  core.log.restoreSegments(decoded.segments);
  return { lastTxId: decoded.lastTxId, commits: decoded.commits };
}

/** Writes checkpoints of one store. */
export class Checkpointer {
  private readonly core: StoreCore;
  private readonly commits: CommitPath;
  private readonly pins: SegmentPins;
  private readonly segmentsPerCheckpoint: number;
  /** Segment seq of the newest checkpoint's replay start. */
  private lastSeq: number;
  private queued = false;
  /** Checkpoints written by this process. */
  count = 0;

  constructor(core: StoreCore, commits: CommitPath, pins: SegmentPins, segmentsPerCheckpoint: number) {
    this.core = core;
    this.commits = commits;
    this.pins = pins;
    this.segmentsPerCheckpoint = segmentsPerCheckpoint;
    this.lastSeq = core.log.segmentSeqOf(core.log.rootBlock.replayFrom.address);
  }

  /**
   * After a commit: once the log has moved through `numSegmentsPerCheckpoint` segments since the
   * last checkpoint, take one in the background (in the transaction order). `canStart` is false
   * once the store is closing.
   */
  maybeCheckpoint(canStart: boolean): void {
    if (this.queued || !canStart) return;
    const seq = this.core.log.segmentSeqOf(this.core.log.sealedEnd);
    if (seq - this.lastSeq < this.segmentsPerCheckpoint) return;
    this.queued = true;
    this.commits
      .exclusive(() => this.writeLocked())
      .catch(() => {
        // A failed background checkpoint leaves the previous one in force; the log's failure
        // (if that was the cause) already made the store read-only.
      })
      .finally(() => {
        this.queued = false;
      });
  }

  /**
   * Write a checkpoint and point the root block at it. The caller holds the transaction turn.
   * It is the store's upkeep: it may use the whole full-disk reserve (src/log/space.ts), since
   * it is what makes the segments the cleaner emptied reusable.
   */
  async writeLocked(): Promise<void> {
    await this.core.log.withSpaceUse("upkeep", () => this.write());
  }

  private async write(): Promise<void> {
    const { log } = this.core;
    await this.commits.appendAllocations();
    await log.flush();
    const start = log.tailPosition();
    const blob = encodeCheckpoint({
      lastTxId: this.commits.lastTxId,
      commits: this.commits.commits,
      spaces: this.core.spaces.snapshot(),
      sut: this.core.sut.entries(),
      segments: log.segmentState(),
      map: this.core.map.entries(),
      mapEntries: this.core.map.size,
      parts: this.core.parts,
    });
    // Chunks of at most CHECKPOINT_CHUNK_BYTES, not a whole buffer each: a record that does not
    // fit the room left where the log is goes after it, and the room left is lost; smaller
    // chunks lose less, which keeps the full-disk reserve small (cleaner.ts fullDiskReserve).
    const chunkBytes = Math.min(CHECKPOINT_CHUNK_BYTES, log.maxReservationBytes - RECORD_HEADER_BYTES);
    for (let offset = 0, index = 0; offset < blob.length || index === 0; offset += chunkBytes, index++) {
      await appendRecord(log, RecordType.Checkpoint, 0, 0n, index, blob.subarray(offset, Math.min(blob.length, offset + chunkBytes)));
    }
    await log.flush();
    const endAddress = log.sealedEnd;
    const replayFrom = log.tailPosition();
    await log.writeRoot({ checkpoint: { start, endAddress }, replayFrom });
    this.count += 1;
    this.commits.dirty = false;
    this.lastSeq = log.segmentSeqOf(replayFrom.address);
    this.releaseEmptySegments(log.segmentSeqOf(start.address));
  }

  /**
   * Segments wholly before the newest checkpoint that hold no live record can be reused: after
   * the next root write neither root copy can lead recovery into them (see SegmentTable).
   */
  private releaseEmptySegments(checkpointSeq: number): void {
    const { log, sut } = this.core;
    const empty: number[] = [];
    for (const seq of log.liveSegmentSeqs()) {
      if (seq >= checkpointSeq) break;
      if (sut.liveBytesOf(seq) === 0) empty.push(seq);
    }
    const pinned = this.pins.pinnedAmong(empty);
    for (const seq of empty) if (!pinned.has(seq)) log.releaseSegment(seq);
  }
}
