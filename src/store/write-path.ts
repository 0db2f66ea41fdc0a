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
import type { Location, MappingTable } from "./mapping.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, sealRecord } from "./records.ts";
import type { SegmentUtilisation } from "./sut.ts";

/** Data record flag: this is one part of a multipart element (an Extents record follows). */
export const FLAG_PART = 1;

/** Commits with more operations than this make room in the mapping table up front. */
const RESERVE_FROM_OPS = 1024;

/** Largest part of a multipart element (see {@link partBytesFor}). */
export const MAX_PART_BYTES = 4 << 20;

/** Bytes of an Extents record entry: f64 address, u32 body bytes, u32 pad. */
export const EXTENT_ENTRY_BYTES = 16;

/** Extents record flag: the record lists parts of a larger list (a chunk of an indirect element). */
export const FLAG_EXTENTS_CHUNK = 2;
/** Extents record flag: the record lists chunk records, not parts (elements with very many parts). */
export const FLAG_EXTENTS_INDIRECT = 4;

/** One part of a multipart element as it sits in the log. */
export interface Part {
  address: number;
  /** Body bytes of the part (the element's bytes it carries). */
  bodyBytes: number;
}

/** A record of a multipart element other than its parts: the extents record(s). */
export interface MetaRecord {
  address: number;
  /** Padded record bytes, as the utilisation table counts them. */
  recordBytes: number;
}

/** Where a multipart element's bytes are. */
export interface Multipart {
  parts: Part[];
  /** Its Extents records: the root (first) and, for indirect elements, the chunks. */
  meta: MetaRecord[];
}

/** A committed operation, ready to apply (runtime) or replayed (recovery). */
export type AppliedOp =
  | {
      kind: "write";
      seid: bigint;
      /** Address of the Data record (single part) or of the Extents record (multipart). */
      address: number;
      sizeBytes: number;
      /** Record bytes (padded) of a single-part element (0 for multipart: see `multipart.meta`). */
      recordBytes: number;
      multipart: Multipart | undefined;
      /** The value, when the writer still has it (for the cache). */
      value: Uint8Array | undefined;
      /** Moved by the cleaner, bytes unchanged: a cached copy stays valid. */
      moved?: true;
    }
  | { kind: "delete"; seid: bigint };

/** A committed write (of either shape). */
export type WriteOp = Extract<AppliedOp, { kind: "write" }>;

/** What the write path and replay share. */
export interface StoreCore {
  readonly log: LogStructuredStore;
  readonly map: MappingTable;
  readonly sut: SegmentUtilisation;
  readonly cache: ElementCache;
  /** Parts of every multipart element (kept in memory: few, and each large). */
  readonly parts: Map<bigint, Multipart>;
  liveValueBytes: number;
}

/**
 * Body bytes of one part: two part records fill a flush buffer exactly, so streamed units are
 * full, and a segment's tail that cannot take a part wastes less than half a buffer.
 */
export function partBytesFor(log: LogStructuredStore): number {
  const half = Math.floor((log.maxReservationBytes / 2 - RECORD_HEADER_BYTES) / 8) * 8;
  return Math.min(MAX_PART_BYTES, half);
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
 * The synchronous fast path of {@link appendElement}: a single-part element when a flush buffer
 * has room right now. Undefined when the caller must take the asynchronous path.
 */
export function tryAppendSmallElement(log: LogStructuredStore, txId: number, seid: bigint, value: Uint8Array, keepValue: boolean): WriteOp | undefined {
  if (value.length > partBytesFor(log)) return undefined;
  const reservation = log.tryReserve(RECORD_HEADER_BYTES + value.length);
  if (reservation === undefined) return undefined;
  try {
    reservation.bytes.set(value, RECORD_HEADER_BYTES);
    sealRecord(reservation.bytes, RecordType.Data, txId, seid, 0);
  } finally {
    log.release(reservation);
  }
  return singleWriteOp(seid, reservation.address, value, keepValue ? value : undefined);
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
export async function appendElement(log: LogStructuredStore, txId: number, seid: bigint, value: Uint8Array, keepValue: boolean): Promise<AppliedOp> {
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

function encodeEntries(entries: ReadonlyArray<{ address: number; bytes: number }>): Uint8Array {
  const body = new Uint8Array(entries.length * EXTENT_ENTRY_BYTES);
  const view = new DataView(body.buffer);
  entries.forEach((entry, i) => {
    view.setFloat64(i * EXTENT_ENTRY_BYTES, entry.address, true);
    view.setUint32(i * EXTENT_ENTRY_BYTES + 8, entry.bytes, true);
  });
  return body;
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
      const body = encodeEntries(rootEntries.slice(first, first + perRecord));
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
  const body = encodeEntries(rootEntries);
  const address = await appendRecord(log, RecordType.Extents, txId, seid, rootEntries.length, body, flags);
  meta.unshift({ address, recordBytes: paddedRecordBytes(RECORD_HEADER_BYTES + body.length) });
  return { kind: "write", seid, address, sizeBytes, recordBytes: 0, multipart: { parts, meta }, value: undefined };
}

/** Decode an Extents record body: (address, bytes) entries — parts, or chunks if INDIRECT. */
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
function forget(core: StoreCore, seid: bigint, previous: Location | undefined): void {
  if (previous === undefined) return;
  core.liveValueBytes -= previous.sizeBytes;
  if (previous.multipart) {
    const multipart = core.parts.get(seid);
    if (multipart === undefined) throw new Error(`seid ${seid} is multipart but its parts are unknown`);
    for (const part of multipart.parts) core.sut.remove(part.address, partRecordBytes(part));
    for (const record of multipart.meta) core.sut.remove(record.address, record.recordBytes);
    core.parts.delete(seid);
  } else {
    core.sut.remove(previous.address, paddedRecordBytes(RECORD_HEADER_BYTES + previous.sizeBytes));
  }
}

/** Count a multipart element's records in the utilisation table. */
function countMultipart(core: StoreCore, multipart: Multipart): void {
  for (const part of multipart.parts) core.sut.add(part.address, partRecordBytes(part));
  for (const record of multipart.meta) core.sut.add(record.address, record.recordBytes);
}

/** Apply committed operations, in order, all at once (no await: readers see all or none). */
export function applyCommitted(core: StoreCore, ops: readonly AppliedOp[]): void {
  // A large commit makes room for its writes at once: growing step by step under a bulk load of
  // 1 M new seids cost a fifth of it in rehashes (~1.0 M writes/s with this, ~0.8 M without).
  // Writes that replace a seid count too, so the table may grow one step early; reserve() grows
  // geometrically, so repeated large commits do not rehash each time.
  if (ops.length > RESERVE_FROM_OPS) core.map.reserve(core.map.size + ops.length);
  for (const op of ops) {
    // One mapping-table lookup per operation: set and delete hand back the location they replace.
    if (op.kind === "delete") {
      forget(core, op.seid, core.map.delete(op.seid));
      core.cache.invalidate(op.seid);
      continue;
    }
    forget(core, op.seid, core.map.set(op.seid, { address: op.address, sizeBytes: op.sizeBytes, multipart: op.multipart !== undefined }));
    if (op.multipart !== undefined) {
      countMultipart(core, op.multipart);
      core.parts.set(op.seid, op.multipart);
    } else {
      core.sut.add(op.address, op.recordBytes);
    }
    core.liveValueBytes += op.sizeBytes;
    if (op.value !== undefined) core.cache.set(op.seid, op.value);
    else if (op.moved !== true) core.cache.invalidate(op.seid);
  }
}
