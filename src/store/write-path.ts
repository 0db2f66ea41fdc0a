/**
 * The write path: turning a transaction's operations into log records (Data, Delete, Extents,
 * appended through the flush buffers). What the records mean once committed is applied by
 * commit.ts, the one commit path, for live transactions and replay alike.
 *
 * @module
 */
import type { LogStructuredStore } from "../log/log.ts";
import type { Reservation } from "../log/ring.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { AppliedOp, WriteOp } from "./commit.ts";
import {
  encodeExtents,
  EXTENT_ENTRY_BYTES,
  FLAG_EXTENTS_CHUNK,
  FLAG_EXTENTS_INDIRECT,
  FLAG_PART,
  type MetaRecord,
  type Part,
} from "./format/extents.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, sealRecord } from "./format/records.ts";

/** Largest part of a multipart element (see {@link partBytesFor}). */
export const MAX_PART_BYTES = 4 << 20;

/**
 * Body bytes of one part: two part records fill a flush buffer exactly, so streamed units are
 * full, and a segment's tail that cannot take a part wastes less than half a buffer.
 */
export function partBytesFor(log: LogStructuredStore): number {
  const half = Math.floor((log.maxReservationBytes / 2 - RECORD_HEADER_BYTES) / 8) * 8;
  return Math.min(MAX_PART_BYTES, half);
}

/**
 * Append one record whose body is `body` (copied into the flush buffer) if a flush buffer has
 * room right now: its address, or `undefined` when the caller must wait for room (nothing was
 * appended then).
 */
export function tryAppendRecord(log: LogStructuredStore, type: RecordType, txId: number, seid: bigint, aux: number, body: Uint8Array, flags = 0): number | undefined {
  const reservation = log.tryReserve(RECORD_HEADER_BYTES + body.length);
  return reservation === undefined ? undefined : fillRecord(log, reservation, type, txId, seid, aux, body, flags);
}

/**
 * Append one record whose body is `body` (copied into the flush buffer): its address at once
 * when a flush buffer has room (no promise: awaited async appends cost their promise ticks on
 * every commit), else a promise of it once one has.
 */
export function appendRecord(log: LogStructuredStore, type: RecordType, txId: number, seid: bigint, aux: number, body: Uint8Array, flags = 0): number | Promise<number> {
  return (
    tryAppendRecord(log, type, txId, seid, aux, body, flags) ??
    log.reserveSpace(RECORD_HEADER_BYTES + body.length).then((reservation) => fillRecord(log, reservation, type, txId, seid, aux, body, flags))
  );
}

/** Copy `body` into `reservation`, seal the record and release it; returns its address. */
function fillRecord(log: LogStructuredStore, reservation: Reservation, type: RecordType, txId: number, seid: bigint, aux: number, body: Uint8Array, flags = 0): number {
  try {
    reservation.bytes.set(body, RECORD_HEADER_BYTES);
    sealRecord(reservation.bytes, type, txId, seid, aux, flags);
  } finally {
    log.release(reservation);
  }
  return reservation.address;
}

/**
 * The synchronous fast path of {@link appendElement}: a single-part element when a flush buffer
 * has room right now. Undefined when the caller must take the asynchronous path.
 */
export function tryAppendSmallElement(log: LogStructuredStore, txId: number, seid: bigint, value: Uint8Array, keepValue: boolean): WriteOp | undefined {
  if (value.length > partBytesFor(log)) return undefined;
  const reservation = log.tryReserve(RECORD_HEADER_BYTES + value.length);
  if (reservation === undefined) return undefined;
  const address = fillRecord(log, reservation, RecordType.Data, txId, seid, 0, value);
  return singleWriteOp(seid, address, value, keepValue ? value : undefined);
}

/** The op of a single-part element whose Data record is at `address`; `cached` goes to the cache. */
export function singleWriteOp(seid: bigint, address: number, value: Uint8Array, cached: Uint8Array | undefined): WriteOp {
  return {
    kind: "write",
    seid,
    address,
    sizeBytes: value.length,
    recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + value.length),
    multipart: undefined,
    value: cached,
  };
}

/**
 * Write an element's bytes: one Data record when it fits a part, else parts then an Extents
 * record. Returns the op to apply at commit.
 */
export async function appendElement(log: LogStructuredStore, txId: number, seid: bigint, value: Uint8Array, keepValue: boolean): Promise<WriteOp> {
  const partBytes = partBytesFor(log);
  if (value.length <= partBytes) {
    const address = await appendRecord(log, RecordType.Data, txId, seid, 0, value);
    return singleWriteOp(seid, address, value, keepValue ? value : undefined);
  }
  const parts: Part[] = [];
  for (let offset = 0, index = 0; offset < value.length; offset += partBytes, index++) {
    const body = value.subarray(offset, Math.min(value.length, offset + partBytes));
    const address = await appendRecord(log, RecordType.Data, txId, seid, index, body, FLAG_PART);
    parts.push({ address, bodyBytes: body.length });
  }
  return appendExtents(log, txId, seid, parts, value.length);
}

/** Largest number of entries one Extents record can list. */
export function maxPartsFor(log: LogStructuredStore): number {
  return Math.floor((log.maxReservationBytes - RECORD_HEADER_BYTES) / EXTENT_ENTRY_BYTES);
}

/**
 * Append the Extents record(s) that make `parts` one element: one record listing the parts, or,
 * past what one record holds, chunk records listing the parts and a root record (INDIRECT)
 * listing the chunks. Two levels reach far past any disk (65 k × 65 k parts of about half a buffer).
 */
export async function appendExtents(log: LogStructuredStore, txId: number, seid: bigint, parts: Part[], sizeBytes: number): Promise<WriteOp> {
  const perRecord = maxPartsFor(log);
  const meta: MetaRecord[] = [];
  let rootEntries = parts.map((part) => ({ address: part.address, bytes: part.bodyBytes }));
  let flags = 0;
  if (parts.length > perRecord) {
    const chunks: Array<{ address: number; bytes: number }> = [];
    for (let first = 0; first < parts.length; first += perRecord) {
      const body = encodeExtents(rootEntries.slice(first, first + perRecord));
      const address = await appendRecord(log, RecordType.Extents, txId, seid, chunks.length, body, FLAG_EXTENTS_CHUNK);
      meta.push({ address, recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + body.length) });
      chunks.push({ address, bytes: body.length });
    }
    if (chunks.length > perRecord) {
      throw new InvalidArgumentError(`an element of ${sizeBytes} bytes needs ${parts.length} parts: more than two levels of extents hold`);
    }
    rootEntries = chunks;
    flags = FLAG_EXTENTS_INDIRECT;
  }
  const body = encodeExtents(rootEntries);
  const address = await appendRecord(log, RecordType.Extents, txId, seid, rootEntries.length, body, flags);
  meta.unshift({ address, recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + body.length) });
  return { kind: "write", seid, address, sizeBytes, recordBytes: 0, multipart: { parts, meta }, value: undefined };
}
