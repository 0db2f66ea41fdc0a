/**
 * Extents records: how a multipart element (larger than one part) is named in the log. Its
 * parts are Data records with {@link FLAG_PART}; an Extents record after them lists each part's
 * address and body bytes. Past what one record holds, chunk records list the parts and a root
 * record ({@link FLAG_EXTENTS_INDIRECT}) lists the chunks: two levels reach far past any disk
 * (65 k × 65 k parts of about half a buffer). Byte layout: docs/FORMAT.md.
 *
 * @module
 */
import { paddedRecordBytes, RECORD_HEADER_BYTES } from "./records.ts";

/** Data record flag: this is one part of a multipart element (an Extents record follows). */
export const FLAG_PART = 1;
/** Extents record flag: the record lists parts of a larger list (a chunk of an indirect element). */
export const FLAG_EXTENTS_CHUNK = 2;
/** Extents record flag: the record lists chunk records, not parts (elements with very many parts). */
export const FLAG_EXTENTS_INDIRECT = 4;

/** Bytes of an Extents record entry: f64 address, u32 body bytes, u32 pad. */
export const EXTENT_ENTRY_BYTES = 16;

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

/** Encode (address, bytes) entries as an Extents record body. */
export function encodeExtents(entries: ReadonlyArray<{ address: number; bytes: number }>): Uint8Array {
  const body = new Uint8Array(entries.length * EXTENT_ENTRY_BYTES);
  const view = new DataView(body.buffer);
  entries.forEach((entry, i) => {
    view.setFloat64(i * EXTENT_ENTRY_BYTES, entry.address, true);
    view.setUint32(i * EXTENT_ENTRY_BYTES + 8, entry.bytes, true);
  });
  return body;
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

/** Padded bytes of a part's Data record (what the utilisation table counts for it). */
export function partRecordBytes(part: Part): number {
  return paddedRecordBytes(RECORD_HEADER_BYTES + part.bodyBytes);
}
