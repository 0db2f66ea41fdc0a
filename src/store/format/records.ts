/**
 * Records of the seid store, as they sit inside the log's flush units (format: docs/FORMAT.md).
 *
 * Every record starts with a 32-byte header and is padded to 8 bytes:
 * ```
 *  0  u32 recordBytes   header + body, unpadded
 *  4  u8  type          RecordType
 *  5  u8  flags
 *  6  u16 reserved (0)
 *  8  u32 crc32         of the whole record with this field zero
 * 12  u32 aux           part index (DATA), record count (COMMIT), chunk index (CHECKPOINT)
 * 16  f64 txId          transaction sequence number (0 for system records)
 * 24  u64 seid          element key (0 where none)
 * 32  body
 * ```
 *
 * @module
 */
import { CorruptionError } from "../../errors.ts";
// A cycle with extents.ts (it pads with this file's helpers): only read inside functions, so safe.
import { FLAG_PART } from "./extents.ts";

export const RECORD_HEADER_BYTES = 32;

export const enum RecordType {
  /** A whole small element, or one part of a large one. */
  Data = 1,
  /** The element is deleted. */
  Delete = 2,
  /**
   * The atomic point of a transaction: everything of `txId` before it takes effect. Body (format
   * version 2): f64 commit time, ms since the epoch (see {@link encodeCommitBody}); empty in
   * version-1 files. Flag {@link FLAG_COMMIT_SYSTEM} marks the cleaner's relocations.
   */
  Commit = 3,
  /** The list of parts of a large element: body = [f64 address, u32 bytes, u32 pad] per part. */
  Extents = 4,
  /** Seid allocation high-water marks: body = [u32 space, u32 pad, f64 next] per space. */
  Alloc = 5,
  /** One chunk of a checkpoint blob. */
  Checkpoint = 6,
}

/** Decoded header of a record. */
export interface RecordHeader {
  recordBytes: number;
  type: RecordType;
  flags: number;
  aux: number;
  txId: number;
  seid: bigint;
}

/** Padding every record is rounded up to inside a unit. */
export const RECORD_PAD_BYTES = 8;

export function paddedRecordBytes(recordBytes: number): number {
  return Math.ceil(recordBytes / RECORD_PAD_BYTES) * RECORD_PAD_BYTES;
}

/** The header is built here and copied in: a DataView per record costs more than the copy. */
const headerScratch = new Uint8Array(RECORD_HEADER_BYTES);
const headerView = new DataView(headerScratch.buffer);

/** A record's header in {@link headerScratch}, its CRC field zero. */
function buildHeader(recordBytes: number, type: RecordType, txId: number, seid: bigint, aux: number, flags: number): void {
  const view = headerView;
  view.setUint32(0, recordBytes, true);
  view.setUint8(4, type);
  view.setUint8(5, flags);
  view.setUint16(6, 0, true);
  view.setUint32(8, 0, true);
  view.setUint32(12, aux >>> 0, true);
  view.setFloat64(16, txId, true);
  view.setBigUint64(24, seid, true);
}

/**
 * Write a record header (and the CRC, over the body already in place) into `target`, which
 * spans exactly the record: header then body.
 */
export function sealRecord(target: Uint8Array, type: RecordType, txId: number, seid: bigint, aux: number, flags = 0): void {
  buildHeader(target.length, type, txId, seid, aux, flags);
  target.set(headerScratch, 0);
  const crc = Bun.hash.crc32(target) >>> 0;
  target[8] = crc & 0xff;
  target[9] = (crc >>> 8) & 0xff;
  target[10] = (crc >>> 16) & 0xff;
  target[11] = crc >>> 24;
}

/**
 * Write the record of `body` (header, then body) into `target` at `offset`, without a view of
 * the record: the CRC runs over the header (with its CRC field zero) and then the body, from
 * their own arrays (a CRC-32 continued from a seed is the CRC of the concatenation). Returns the
 * record's bytes (unpadded). Why not {@link sealRecord}: it needs a view spanning the record,
 * and a bulk load's subarray per record cost 0.25–0.28 µs of each 100 B write (CPU profile).
 */
export function writeRecord(target: Uint8Array, offset: number, type: RecordType, txId: number, seid: bigint, aux: number, body: Uint8Array, flags = 0): number {
  const recordBytes = RECORD_HEADER_BYTES + body.length;
  buildHeader(recordBytes, type, txId, seid, aux, flags);
  headerView.setUint32(8, Bun.hash.crc32(body, Bun.hash.crc32(headerScratch)) >>> 0, true);
  target.set(headerScratch, offset);
  target.set(body, offset + RECORD_HEADER_BYTES);
  return recordBytes;
}

/**
 * Check a record read back from the log: its length, its CRC, and (when given) its type and
 * seid. Anything off is a `CorruptionError`; never wrong bytes.
 */
export function verifyRecord(record: Uint8Array, expect?: { type: RecordType; seid?: bigint }): RecordHeader {
  if (record.length < RECORD_HEADER_BYTES) throw new CorruptionError(`record of ${record.length} bytes is shorter than its header`);
  const view = new DataView(record.buffer, record.byteOffset, RECORD_HEADER_BYTES);
  const recordBytes = view.getUint32(0, true);
  if (recordBytes !== record.length) {
    throw new CorruptionError(`record claims ${recordBytes} bytes where ${record.length} were expected`);
  }
  const stored = view.getUint32(8, true);
  view.setUint32(8, 0, true);
  const actual = Bun.hash.crc32(record) >>> 0;
  view.setUint32(8, stored, true);
  if (stored !== actual) throw new CorruptionError(`record checksum mismatch (stored ${stored}, computed ${actual})`);
  const header = decodeHeader(view);
  if (expect !== undefined) {
    if (header.type !== expect.type) throw new CorruptionError(`record type ${header.type} where ${expect.type} was expected`);
    if (expect.seid !== undefined && header.seid !== expect.seid) {
      throw new CorruptionError(`record of seid ${header.seid} where ${expect.seid} was expected`);
    }
  }
  return header;
}

/**
 * {@link verifyRecord} of a Data record of `seid` sitting at the start of a scratch buffer, without
 * allocating: `words` is a Uint32Array over the same memory as `record` (from its first byte), so
 * the header is read as u32s (the format is little-endian, as are the hosts this runs on; the
 * seid halves are compared as the mapping table splits them). The CRC field is zeroed for the
 * checksum and put back. Returns the record's flags. Why: a DataView per record over a small
 * array, and a BigInt for its seid, were most of a read served from memory.
 */
export function verifyDataRecordIn(record: Uint8Array, words: Uint32Array, seidLo: number, seidHi: number): number {
  if (record.length < RECORD_HEADER_BYTES) throw new CorruptionError(`record of ${record.length} bytes is shorter than its header`);
  const recordBytes = words[0] as number;
  if (recordBytes !== record.length) {
    throw new CorruptionError(`record claims ${recordBytes} bytes where ${record.length} were expected`);
  }
  const stored = words[2] as number;
  words[2] = 0;
  const actual = Bun.hash.crc32(record) >>> 0;
  words[2] = stored;
  if (stored !== actual) throw new CorruptionError(`record checksum mismatch (stored ${stored}, computed ${actual})`);
  const type = record[4] as number;
  if (type !== RecordType.Data) throw new CorruptionError(`record type ${type} where ${RecordType.Data} was expected`);
  if (words[6] !== seidLo || words[7] !== seidHi) {
    const found = (BigInt(words[7] as number) << 32n) | BigInt(words[6] as number);
    const expected = (BigInt(seidHi) << 32n) | BigInt(seidLo);
    throw new CorruptionError(`record of seid ${found} where ${expected} was expected`);
  }
  return record[5] as number;
}

function decodeHeader(view: DataView): RecordHeader {
  return {
    recordBytes: view.getUint32(0, true),
    type: view.getUint8(4) as RecordType,
    flags: view.getUint8(5),
    aux: view.getUint32(12, true),
    txId: view.getFloat64(16, true),
    seid: view.getBigUint64(24, true),
  };
}

/** A record found while scanning a unit's payload. */
export interface ScannedRecord {
  header: RecordHeader;
  /** Offset of the record inside the payload. */
  offset: number;
  body: Uint8Array;
}

/**
 * Iterate the records of one unit payload (already verified as a whole by the unit checksum;
 * each record is verified again). A record that does not check out is a `CorruptionError`.
 */
export function* scanRecords(payload: Uint8Array): Generator<ScannedRecord> {
  let offset = 0;
  while (offset + RECORD_HEADER_BYTES <= payload.length) {
    const view = new DataView(payload.buffer, payload.byteOffset + offset, RECORD_HEADER_BYTES);
    const recordBytes = view.getUint32(0, true);
    if (recordBytes === 0) return; // padding at the end of a unit
    if (recordBytes < RECORD_HEADER_BYTES || offset + recordBytes > payload.length) {
      throw new CorruptionError(`record at unit offset ${offset} claims ${recordBytes} bytes, past the unit's end`);
    }
    const record = payload.subarray(offset, offset + recordBytes);
    const header = verifyRecord(record);
    yield { header, offset, body: record.subarray(RECORD_HEADER_BYTES) };
    offset += paddedRecordBytes(recordBytes);
  }
}

/**
 * Commit record flag: a system transaction (the cleaner's relocation). It moves records without
 * changing any element's bytes, so a logical reader of the log (backup restore) skips it.
 */
export const FLAG_COMMIT_SYSTEM = 1;

/** Bytes of a version-2 Commit record body. */
export const COMMIT_BODY_BYTES = 8;

/** Where {@link encodeCommitBody} encodes: not a DataView over each new array's `.buffer` (see encodeAlloc). */
const commitScratch = new Uint8Array(COMMIT_BODY_BYTES);
const commitScratchView = new DataView(commitScratch.buffer);

/** The body of a Commit record: the commit time (ms since the epoch, f64). */
export function encodeCommitBody(timeMs: number): Uint8Array {
  commitScratchView.setFloat64(0, timeMs, true);
  return commitScratch.slice();
}

/**
 * The commit time in a Commit record's body: `null` for the empty body of a version-1 file
 * (time unknown). Any other length is damage.
 */
export function decodeCommitTime(body: Uint8Array): number | null {
  if (body.length === 0) return null;
  if (body.length !== COMMIT_BODY_BYTES) throw new CorruptionError(`Commit record body of ${body.length} bytes (expected 0 or ${COMMIT_BODY_BYTES})`);
  const time = new DataView(body.buffer, body.byteOffset, COMMIT_BODY_BYTES).getFloat64(0, true);
  if (!Number.isFinite(time)) throw new CorruptionError(`Commit record time ${time} is not a finite number`);
  return time;
}

/**
 * Whether the caching layer should keep a unit (log option `cacheAdmission`): not when it opens
 * with a part of a large element. Streamed and multipart elements are read part by part, once; a
 * unit of small records is what read-after-write and neighbouring reads come back to. Measured:
 * caching every unit of a 1 GiB stream raised its peak RSS from ~165 to ~230 MiB for no hit.
 */
export function unitWorthCaching(payload: Uint8Array): boolean {
  if (payload.length < RECORD_HEADER_BYTES) return true;
  return !(payload[4] === RecordType.Data && ((payload[5] as number) & FLAG_PART) !== 0);
}
