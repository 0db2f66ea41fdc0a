/**
 * The write path: turning a transaction's operations into log records, and applying committed
 * operations to the mapping table, the segment utilisation table and the cache. Recovery's replay
 * applies through the same {@link applyCommitted}, so the state after a restart is built by the
 * same code as the state before it.
 *
 * @module
 */
import type { LogStructuredStore } from "../log/lss.ts";
import type { Reservation } from "../log/ring.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { ElementCache } from "./cache.ts";
import type { MappingTable } from "./mapping.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, sealRecord } from "./records.ts";
import type { SegmentUtilisation } from "./sut.ts";

/** Data record flag: this is one part of a multipart element (an Extents record follows). */
export const FLAG_PART = 1;

/** Largest part of a multipart element. */
export const MAX_PART_BYTES = 512 << 10;

/** Bytes of an Extents record entry: f64 address, u32 body bytes, u32 pad. */
export const EXTENT_ENTRY_BYTES = 16;

/** One part of a multipart element as it sits in the log. */
export interface Part {
  address: number;
  /** Body bytes of the part (the element's bytes it carries). */
  bodyBytes: number;
}

/** A committed operation, ready to apply (runtime) or replayed (recovery). */
export type AppliedOp =
  | {
      kind: "write";
      seid: bigint;
      /** Address of the Data record (single part) or of the Extents record (multipart). */
      address: number;
      sizeBytes: number;
      /** Record bytes (padded) of a single-part element, or of the Extents record. */
      recordBytes: number;
      parts: Part[] | undefined;
      /** The value, when the writer still has it (for the cache). */
      value: Uint8Array | undefined;
    }
  | { kind: "delete"; seid: bigint };

/** What the write path and replay share. */
export interface StoreCore {
  readonly log: LogStructuredStore;
  readonly map: MappingTable;
  readonly sut: SegmentUtilisation;
  readonly cache: ElementCache;
  /** Parts of every multipart element (kept in memory: few, and each large). */
  readonly parts: Map<bigint, Part[]>;
  liveValueBytes: number;
}

/** Bytes of one part's Data record body that fit a log reservation. */
export function partBytesFor(log: LogStructuredStore): number {
  return Math.min(MAX_PART_BYTES, log.maxReservationBytes - RECORD_HEADER_BYTES);
}

/** Reserve room for one record, waiting if every flush buffer is busy. */
async function reserveRecord(log: LogStructuredStore, recordBytes: number): Promise<Reservation> {
  return log.tryReserve(recordBytes) ?? (await log.reserveSpace(recordBytes));
}

/** Append one record whose body is `body` (copied into the flush buffer). Returns its address. */
export async function appendRecord(
  log: LogStructuredStore,
  type: RecordType,
  txId: number,
  seid: bigint,
  aux: number,
  body: Uint8Array,
  flags = 0,
): Promise<number> {
  const reservation = await reserveRecord(log, RECORD_HEADER_BYTES + body.length);
  try {
    reservation.bytes.set(body, RECORD_HEADER_BYTES);
    sealRecord(reservation.bytes, type, txId, seid, aux, flags);
  } finally {
    log.release(reservation);
  }
  return reservation.address;
}

/**
 * Write an element's bytes: one Data record when it fits a part, else parts then an Extents
 * record. Returns the op to apply at commit.
 */
export async function appendElement(log: LogStructuredStore, txId: number, seid: bigint, value: Uint8Array, keepValue: boolean): Promise<AppliedOp> {
  const partBytes = partBytesFor(log);
  if (value.length <= partBytes) {
    const address = await appendRecord(log, RecordType.Data, txId, seid, 0, value);
    return {
      kind: "write",
      seid,
      address,
      sizeBytes: value.length,
      recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + value.length),
      parts: undefined,
      value: keepValue ? value : undefined,
    };
  }
  const parts: Part[] = [];
  for (let offset = 0, index = 0; offset < value.length; offset += partBytes, index++) {
    const body = value.subarray(offset, Math.min(value.length, offset + partBytes));
    const address = await appendRecord(log, RecordType.Data, txId, seid, index, body, FLAG_PART);
    parts.push({ address, bodyBytes: body.length });
  }
  return appendExtents(log, txId, seid, parts, value.length);
}

/** Largest number of parts one Extents record can list. */
export function maxPartsFor(log: LogStructuredStore): number {
  return Math.floor((log.maxReservationBytes - RECORD_HEADER_BYTES) / EXTENT_ENTRY_BYTES);
}

/** Append the Extents record that makes `parts` one element. */
export async function appendExtents(log: LogStructuredStore, txId: number, seid: bigint, parts: Part[], sizeBytes: number): Promise<AppliedOp> {
  if (parts.length > maxPartsFor(log)) {
    throw new InvalidArgumentError(
      `an element of ${sizeBytes} bytes needs ${parts.length} parts, over the ${maxPartsFor(log)} one extents record can list with this bufferSize`,
    );
  }
  const body = new Uint8Array(parts.length * EXTENT_ENTRY_BYTES);
  const view = new DataView(body.buffer);
  parts.forEach((part, i) => {
    view.setFloat64(i * EXTENT_ENTRY_BYTES, part.address, true);
    view.setUint32(i * EXTENT_ENTRY_BYTES + 8, part.bodyBytes, true);
  });
  const address = await appendRecord(log, RecordType.Extents, txId, seid, parts.length, body);
  return {
    kind: "write",
    seid,
    address,
    sizeBytes,
    recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + body.length),
    parts,
    value: undefined,
  };
}

/** Decode an Extents record body. */
export function decodeExtents(body: Uint8Array): Part[] {
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  const parts: Part[] = [];
  for (let at = 0; at + EXTENT_ENTRY_BYTES <= body.length; at += EXTENT_ENTRY_BYTES) {
    parts.push({ address: view.getFloat64(at, true), bodyBytes: view.getUint32(at + 8, true) });
  }
  return parts;
}

/** Padded bytes of a part's Data record. */
export function partRecordBytes(part: Part): number {
  return paddedRecordBytes(RECORD_HEADER_BYTES + part.bodyBytes);
}

/** Take an element's records out of the utilisation table (it was replaced or deleted). */
function forget(core: StoreCore, seid: bigint): void {
  const previous = core.map.get(seid);
  if (previous === undefined) return;
  core.liveValueBytes -= previous.sizeBytes;
  if (previous.multipart) {
    const parts = core.parts.get(seid) ?? [];
    for (const part of parts) core.sut.remove(part.address, partRecordBytes(part));
    core.sut.remove(previous.address, paddedRecordBytes(RECORD_HEADER_BYTES + parts.length * EXTENT_ENTRY_BYTES));
    core.parts.delete(seid);
  } else {
    core.sut.remove(previous.address, paddedRecordBytes(RECORD_HEADER_BYTES + previous.sizeBytes));
  }
}

/** Apply committed operations, in order, all at once (no await: readers see all or none). */
export function applyCommitted(core: StoreCore, ops: readonly AppliedOp[]): void {
  for (const op of ops) {
    forget(core, op.seid);
    if (op.kind === "delete") {
      core.map.delete(op.seid);
      core.cache.invalidate(op.seid);
      continue;
    }
    core.map.set(op.seid, { address: op.address, sizeBytes: op.sizeBytes, multipart: op.parts !== undefined });
    core.sut.add(op.address, op.recordBytes);
    if (op.parts !== undefined) {
      for (const part of op.parts) core.sut.add(part.address, partRecordBytes(part));
      core.parts.set(op.seid, op.parts);
    }
    core.liveValueBytes += op.sizeBytes;
    if (op.value !== undefined) core.cache.set(op.seid, op.value);
    else core.cache.invalidate(op.seid);
  }
}
