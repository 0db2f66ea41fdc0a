/**
 * The log read logically: units → committed transactions with their values, for restore (which
 * writes them into a new store) and verify (which checks and counts them). It follows the same
 * rules as recovery's replay (store/replay.ts) — records grouped by transaction, a transaction
 * taking effect at its intact Commit record, older transactions still open at a Commit dropped —
 * but it yields values instead of log locations, since a restored store has a log of its own.
 *
 * - Records before `fromLsn` are skipped: they belong to the base (the first increment after a
 *   base starts inside a unit).
 * - A multipart element is reassembled from its part records (Data with FLAG_PART) by the
 *   addresses its Extents record lists (through chunk records for indirect ones). Every part a
 *   user transaction names is in that transaction, so a missing one is damage.
 * - The cleaner's relocations (Commit with FLAG_COMMIT_SYSTEM) are skipped whole: they move bytes
 *   without changing any element, and their Extents records may name parts they did not move.
 * - Seid-space high-water marks (Alloc records) are handed out as they come.
 *
 * Memory: the values of the transaction being read, bounded by `maxTransactionBytes`.
 *
 * @module
 */
import { CorruptionError, InvalidArgumentError } from "../errors.ts";
import { UNIT_HEADER_BYTES } from "../log/format.ts";
import { decodeAlloc } from "../store/format/alloc.ts";
import { decodeExtents, FLAG_EXTENTS_CHUNK, FLAG_EXTENTS_INDIRECT, FLAG_PART, type Part } from "../store/format/extents.ts";
import { decodeCommitTime, FLAG_COMMIT_SYSTEM, RecordType, scanRecords } from "../store/format/records.ts";
import type { LogUnit } from "./log-object.ts";

/** One operation of a committed transaction, with its value. */
export type LogicalOp = { kind: "write"; seid: bigint; value: Uint8Array } | { kind: "delete"; seid: bigint };

/** A committed user transaction, as read from the log. */
export interface LogicalTransaction {
  readonly txId: number;
  /** Commit time, ms since the epoch (`null`: a version-1 Commit record, time unknown). */
  readonly time: number | null;
  /** Log address of its Commit record. */
  readonly commitAddress: number;
  readonly ops: LogicalOp[];
}

/** What the log holds, in order. */
export type LogicalEvent =
  | { kind: "spaces"; entries: Array<[number, number]> }
  | { kind: "commit"; transaction: LogicalTransaction }
  /** A Commit of the cleaner (nothing changes); counted so transaction ranges match the log. */
  | { kind: "system-commit"; txId: number; time: number | null; commitAddress: number };

/** Default bound on the bytes of one transaction held while it is read. */
export const DEFAULT_MAX_TRANSACTION_BYTES = 1 << 30;

interface OpenTransaction {
  /** Writes and deletes in order; a multipart write waits for its parts in `parts`. */
  ops: Array<LogicalOp | { kind: "multipart"; seid: bigint; parts: Part[] }>;
  /** Part bodies by log address. */
  parts: Map<number, Uint8Array>;
  /** Extents chunk records by address (indirect elements). */
  chunks: Map<number, Part[]>;
  bytes: number;
}

/** Reads units of a chain in order (across increments) and yields what they commit. */
export class LogicalReader {
  private readonly open = new Map<number, OpenTransaction>();
  private readonly fromLsn: number;
  private readonly maxTransactionBytes: number;

  /**
   * @param fromLsn - the base's log position: records before it are in the base
   */
  constructor(fromLsn: number, maxTransactionBytes = DEFAULT_MAX_TRANSACTION_BYTES) {
    this.fromLsn = fromLsn;
    this.maxTransactionBytes = maxTransactionBytes;
  }

  /** The events of one unit (which must come after every unit handed in before). */
  *unit(unit: LogUnit): Generator<LogicalEvent> {
    const base = unit.address + UNIT_HEADER_BYTES;
    for (const record of scanRecords(unit.payload)) {
      const address = base + record.offset;
      if (address < this.fromLsn) continue;
      const { header, body } = record;
      switch (header.type) {
        case RecordType.Alloc:
          yield { kind: "spaces", entries: decodeAlloc(body) };
          break;
        case RecordType.Checkpoint:
          break;
        case RecordType.Delete:
          this.transaction(header.txId).ops.push({ kind: "delete", seid: header.seid });
          break;
        case RecordType.Data: {
          const tx = this.transaction(header.txId);
          if ((header.flags & FLAG_PART) !== 0) tx.parts.set(address, body.slice());
          else tx.ops.push({ kind: "write", seid: header.seid, value: body.slice() });
          this.grow(tx, header.txId, body.length);
          break;
        }
        case RecordType.Extents: {
          const tx = this.transaction(header.txId);
          const entries = decodeExtents(body);
          if ((header.flags & FLAG_EXTENTS_CHUNK) !== 0) {
            tx.chunks.set(address, entries);
            break;
          }
          let parts = entries;
          if ((header.flags & FLAG_EXTENTS_INDIRECT) !== 0) {
            parts = [];
            for (const entry of entries) {
              const chunk = tx.chunks.get(entry.address);
              // A system transaction's chunks are always its own too; a missing one is damage
              // only if the transaction commits as a user transaction (checked at its Commit).
              if (chunk === undefined) {
                parts = [];
                tx.ops.push({ kind: "multipart", seid: header.seid, parts: [{ address: -1, bodyBytes: 0 }] });
                break;
              }
              parts.push(...chunk);
            }
            if (parts.length === 0) break;
          }
          tx.ops.push({ kind: "multipart", seid: header.seid, parts });
          break;
        }
        case RecordType.Commit: {
          const tx = this.open.get(header.txId);
          this.open.delete(header.txId);
          for (const older of [...this.open.keys()]) if (older < header.txId) this.open.delete(older);
          const time = decodeCommitTime(body);
          if ((header.flags & FLAG_COMMIT_SYSTEM) !== 0) {
            yield { kind: "system-commit", txId: header.txId, time, commitAddress: address };
            break;
          }
          yield { kind: "commit", transaction: { txId: header.txId, time, commitAddress: address, ops: assemble(tx, header.txId) } };
          break;
        }
        default:
          throw new CorruptionError(`unknown record type ${header.type} at log address ${address}`);
      }
    }
  }

  private transaction(txId: number): OpenTransaction {
    let tx = this.open.get(txId);
    if (tx === undefined) {
      tx = { ops: [], parts: new Map(), chunks: new Map(), bytes: 0 };
      this.open.set(txId, tx);
    }
    return tx;
  }

  private grow(tx: OpenTransaction, txId: number, bytes: number): void {
    tx.bytes += bytes;
    if (tx.bytes > this.maxTransactionBytes) {
      throw new InvalidArgumentError(
        `transaction ${txId} holds more than maxTransactionBytes (${this.maxTransactionBytes}) of values; raise the limit to read it`,
      );
    }
  }
}

/** The ops of a committed user transaction, multipart values put together from their parts. */
function assemble(tx: OpenTransaction | undefined, txId: number): LogicalOp[] {
  if (tx === undefined) return [];
  const out: LogicalOp[] = [];
  for (const op of tx.ops) {
    if (op.kind !== "multipart") {
      out.push(op);
      continue;
    }
    const size = op.parts.reduce((sum, part) => sum + part.bodyBytes, 0);
    const value = new Uint8Array(size);
    let at = 0;
    for (const [index, part] of op.parts.entries()) {
      const body = tx.parts.get(part.address);
      if (body === undefined || body.length !== part.bodyBytes) {
        throw new CorruptionError(`transaction ${txId}: part ${index} of seid ${op.seid} (log address ${part.address}) is not in the transaction`);
      }
      value.set(body, at);
      at += body.length;
    }
    out.push({ kind: "write", seid: op.seid, value });
  }
  return out;
}
