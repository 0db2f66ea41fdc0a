/**
 * Replay: the log written after the checkpoint (checkpointer.ts loads that), in order, turned back
 * into committed transactions. Records are grouped by transaction; a transaction takes effect only
 * when its Commit record is read intact, through the one commit path (commit.ts), and the log walk
 * itself stops at the first damaged or missing unit, so what survives is always a prefix of
 * committed transactions. A standby applying a primary's log is the same replayer fed by the
 * durable tail instead of the recovery walk.
 *
 * The cost is the log since the checkpoint, not the whole store.
 *
 * @module
 */
import type { WalkedUnit } from "../log/walk.ts";
import { UNIT_HEADER_BYTES } from "../log/format.ts";
import { CorruptionError } from "../errors.ts";
import type { AppliedOp, CommitPath } from "./commit.ts";
import { decodeAlloc } from "./format/alloc.ts";
import { decodeExtents, FLAG_EXTENTS_CHUNK, FLAG_EXTENTS_INDIRECT, FLAG_PART, type MetaRecord, type Part } from "./format/extents.ts";
import { decodeCommitTime, paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, scanRecords } from "./format/records.ts";

/** What recovery found. */
export interface RecoveryReport {
  checkpointLoaded: boolean;
  unitsReplayed: number;
  bytesReplayed: number;
  transactionsReplayed: number;
  /** Transactions whose records were found without a Commit (cut off by the crash, or aborted). */
  transactionsDiscarded: number;
  lastTxId: number;
  commits: number;
  durationMs: number;
}

/** Records of one transaction seen so far in the replay. */
interface OpenTransaction {
  ops: AppliedOp[];
  /** Extents chunk records, by address. */
  chunks: Map<number, { parts: Part[]; recordBytes: number }>;
}

/**
 * Replays units: groups records by transaction and applies each at its Commit, in the order the
 * Commit records appear. Records of several transactions may interleave (an aborted
 * transaction's last background append can land after the next one began), so each transaction
 * keeps its own list; a Commit also drops every older transaction still open (they never
 * committed).
 */
export class Replayer {
  private readonly open = new Map<number, OpenTransaction>();
  transactionsReplayed = 0;
  transactionsDiscarded = 0;

  constructor(private readonly commits: CommitPath) {}

  /** Visit one unit of the log walk. */
  readonly visit = (unit: WalkedUnit): void => {
    const base = unit.header.address + UNIT_HEADER_BYTES;
    for (const record of scanRecords(unit.payload)) {
      const { header } = record;
      const address = base + record.offset;
      // Every transaction id seen in the log is used up, committed or not.
      this.commits.noteLoggedTxId(header.txId);
      switch (header.type) {
        case RecordType.Alloc:
          this.commits.applyLoggedAllocations(decodeAlloc(record.body));
          break;
        case RecordType.Checkpoint:
          break;
        case RecordType.Data:
        case RecordType.Delete:
        case RecordType.Extents:
          this.collect(this.transaction(header.txId), header.type, header.seid, header.flags, address, record.body);
          break;
        case RecordType.Commit:
          this.commit(header.txId, decodeCommitTime(record.body));
          break;
        default:
          throw new CorruptionError(`unknown record type ${header.type} at log address ${address}`);
      }
    }
  };

  private transaction(txId: number): OpenTransaction {
    let open = this.open.get(txId);
    if (open === undefined) {
      open = { ops: [], chunks: new Map() };
      this.open.set(txId, open);
    }
    return open;
  }

  private collect(tx: OpenTransaction, type: RecordType, seid: bigint, flags: number, address: number, body: Uint8Array): void {
    if (type === RecordType.Delete) {
      tx.ops.push({ kind: "delete", seid });
      return;
    }
    if (type === RecordType.Extents) {
      const recordBytes = paddedRecordBytes(RECORD_HEADER_BYTES + body.length);
      const entries = decodeExtents(body);
      if ((flags & FLAG_EXTENTS_CHUNK) !== 0) {
        tx.chunks.set(address, { parts: entries, recordBytes });
        return;
      }
      const meta: MetaRecord[] = [{ address, recordBytes }];
      let parts = entries;
      if ((flags & FLAG_EXTENTS_INDIRECT) !== 0) {
        parts = [];
        for (const entry of entries) {
          const chunk = tx.chunks.get(entry.address);
          if (chunk === undefined) throw new CorruptionError(`seid ${seid}: extents chunk at ${entry.address} was not found before its root`);
          meta.push({ address: entry.address, recordBytes: chunk.recordBytes });
          parts.push(...chunk.parts);
        }
      }
      const sizeBytes = parts.reduce((sum, part) => sum + part.bodyBytes, 0);
      tx.ops.push({ kind: "write", seid, address, sizeBytes, recordBytes: 0, multipart: { parts, meta }, value: undefined });
      return;
    }
    // A part: the Extents record that follows names it; nothing to apply on its own.
    if ((flags & FLAG_PART) !== 0) return;
    tx.ops.push({
      kind: "write",
      seid,
      address,
      sizeBytes: body.length,
      recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + body.length),
      multipart: undefined,
      value: undefined,
    });
  }

  private commit(txId: number, time: number | null): void {
    const tx = this.open.get(txId);
    this.open.delete(txId);
    for (const older of [...this.open.keys()]) {
      if (older < txId) {
        this.open.delete(older);
        this.transactionsDiscarded += 1;
      }
    }
    this.commits.applyLogged(txId, tx?.ops ?? [], time);
    this.transactionsReplayed += 1;
  }

  /** After the walk: transactions still open at the end were cut off, or aborted. */
  finish(): void {
    this.transactionsDiscarded += this.open.size;
    this.open.clear();
  }
}
