/**
 * What replication keeps in a store's file, and why it is exact across crashes.
 *
 * **In the root block** (the user fields next to the backup identity, src/backup/identity.ts),
 * under `replication`: the id of the replicated store (`storeId`: the first primary's backup id,
 * inherited by every standby and by a promoted standby, so one logical store keeps one id), the
 * highest `epoch` this file has seen, and a standby's own random `standbyId`. These change rarely
 * (seed, promotion, first contact with a newer epoch) and are written under the turn.
 *
 * **In the standby's own commits**: the position applied so far travels in the same transaction
 * as the applied data, as the value of a reserved element ({@link POSITION_SEID}). A standby that
 * crashes comes back with its data and its position from one atomic commit, so it resumes with
 * no gap and no duplicate. Why not the root block: it is written separately from a commit, so it
 * would be either ahead of or behind the data after a crash.
 *
 * @module
 */
import { CorruptionError } from "../errors.ts";
import type { LogStructuredStore } from "../log/log.ts";
import { readFields, storeIdOf, writeFields } from "../backup/identity.ts";
import { MAX_SEID } from "../store/state/seids.ts";

/**
 * The reserved element holding a standby's applied position (seid 2^64 − 1, the last of the last
 * space, which `allocateSeid` only reaches after 2^64 allocations). A primary's application must
 * not write it; a standby's reads of it see the position record.
 */
export const POSITION_SEID = MAX_SEID;

/** The replication fields of the root block. */
export interface ReplicationFields {
  /** The replicated store's id ("" when this file never took part in replication). */
  readonly storeId: string;
  /** Highest epoch seen (a primary's own; 0 when never set). */
  readonly epoch: number;
  /** A standby's own id ("" on a primary). */
  readonly standbyId: string;
}

export function readReplicationFields(log: LogStructuredStore): ReplicationFields {
  const raw = readFields(log).replication;
  const fields = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
  const storeId = typeof fields.storeId === "string" ? fields.storeId : "";
  const epoch = typeof fields.epoch === "number" && Number.isSafeInteger(fields.epoch) && fields.epoch >= 0 ? fields.epoch : 0;
  const standbyId = typeof fields.standbyId === "string" ? fields.standbyId : "";
  return { storeId, epoch, standbyId };
}

/** Write the replication fields (merged). The caller holds the turn. */
export async function writeReplicationFields(log: LogStructuredStore, patch: Partial<ReplicationFields>): Promise<ReplicationFields> {
  const next = { ...readReplicationFields(log), ...patch };
  await writeFields(log, { replication: next });
  return next;
}

/**
 * The identity a primary serves under: its replication id if it has one (a promoted standby
 * keeps its primary's), else its backup id (made now if missing), and its epoch (1 at least).
 * The caller holds the turn.
 */
export async function primaryIdentity(log: LogStructuredStore, ensureBackupId: () => Promise<string>): Promise<{ storeId: string; epoch: number }> {
  const fields = readReplicationFields(log);
  const storeId = fields.storeId !== "" ? fields.storeId : (storeIdOf(log) ?? (await ensureBackupId()));
  const epoch = Math.max(1, fields.epoch);
  if (storeId !== fields.storeId || epoch !== fields.epoch) await writeReplicationFields(log, { storeId, epoch });
  return { storeId, epoch };
}

/** A log unit of the primary: its address and the epoch of the open that wrote it. */
export interface HeldUnit {
  readonly address: number;
  readonly epoch: number;
}

/** A standby's applied position (the value of {@link POSITION_SEID}). */
export interface AppliedPosition {
  /** The primary's epoch the position belongs to (a position means nothing in another epoch's log). */
  readonly epoch: number;
  /**
   * Primary log address to resume from: records before it are applied (just past the last
   * applied Commit record, or the base's point after a seed).
   */
  readonly address: number;
  /** The primary's last transaction applied. */
  readonly transaction: number;
  /** Its commit time (ms since the epoch), or null. */
  readonly commitTime: number | null;
  /**
   * The primary's unit holding that transaction's Commit record. The primary ships units before
   * they are durable on it; after a crash of the primary it checks this unit is still in its log.
   * Absent after a seed (its point is durable on the primary) and in positions written before.
   */
  readonly held?: HeldUnit;
}

export function encodePosition(position: AppliedPosition): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ v: 1, ...position }));
}

/** Whether `value` is a well-formed {@link HeldUnit} (a stored position's, or a Start frame's). */
export function isHeldUnit(value: unknown): value is HeldUnit {
  const v = value as Record<string, unknown>;
  return typeof v === "object" && v !== null && Number.isSafeInteger(v.address) && (v.address as number) >= 0 && Number.isSafeInteger(v.epoch) && (v.epoch as number) >= 0;
}

export function decodePosition(bytes: Uint8Array): AppliedPosition {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new CorruptionError("the standby's applied position is not valid JSON");
  }
  const v = value as Record<string, unknown>;
  const ok =
    typeof v === "object" && v !== null && v.v === 1 &&
    typeof v.epoch === "number" && typeof v.address === "number" && Number.isSafeInteger(v.address) && v.address >= 0 &&
    typeof v.transaction === "number" && (v.commitTime === null || typeof v.commitTime === "number") &&
    (v.held === undefined || isHeldUnit(v.held));
  if (!ok) throw new CorruptionError("the standby's applied position record is malformed");
  const held = isHeldUnit(v.held) ? { address: v.held.address, epoch: v.held.epoch } : undefined;
  return { epoch: v.epoch as number, address: v.address as number, transaction: v.transaction as number, commitTime: v.commitTime as number | null, held };
}
