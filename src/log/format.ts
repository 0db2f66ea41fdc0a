/**
 * Byte formats of the log layer: the flush-unit header and the root block. docs/FORMAT.md
 * describes both; keep the two in step.
 *
 * All integers are little-endian. Log addresses are logical byte offsets of the log: segment
 * sequence number `s` covers addresses `[s × segmentSize, (s + 1) × segmentSize)`, and the
 * segment's physical place in the file comes from the segment table, so a reused segment still
 * orders the log by the sequence number its addresses carry.
 *
 * @module
 */
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { CorruptionError } from "../errors.ts";

/**
 * On-disk format version written in the root block. Bump on any incompatible change.
 *
 * - 1: the first release.
 * - 2: Commit records carry a body (the commit time, and a flag on the cleaner's system commits);
 *   see docs/FORMAT.md. A version-1 file is still read (its Commit records have an empty body:
 *   commit time unknown) and becomes version 2 at its first root-block write, since from then on
 *   its log holds version-2 Commit records.
 */
export const FORMAT_VERSION = 2;
/** Oldest root-block format version this build still opens. */
export const MIN_FORMAT_VERSION = 1;
/**
 * Version field of every flush-unit header. Units did not change between format versions 1 and
 * 2, and a file upgraded in place holds units of both eras, so this stays 1 (a unit written by
 * either version is the same bytes).
 */
export const UNIT_FORMAT_VERSION = 1;

/** Two root-block copies, one 4 KiB block each, before the first segment. */
export const ROOT_BLOCK_BYTES = ALIGNMENT_BYTES;
export const ROOT_REGION_BYTES = 2 * ROOT_BLOCK_BYTES;

/** Every flush unit starts with this header; payload follows at this offset. */
export const UNIT_HEADER_BYTES = 64;

/** Payload reservations are rounded up to this, so records inside a unit stay 8-byte aligned. */
export const RECORD_ALIGNMENT_BYTES = 8;

const UNIT_MAGIC = 0x554c5342; // "BSLU" little-endian
const ROOT_MAGIC_LO = 0x53534c42; // "BLSS"
const ROOT_MAGIC_HI = 0x544f4f52; // "ROOT"

/** Round `n` up to a multiple of `multiple` (a power of two). */
export function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}

/** Header of one flush unit, as written at the start of each unit. */
export interface UnitHeader {
  /** Logical log address of the unit's first byte (its header). */
  address: number;
  /** Payload bytes after the header (a multiple of 8). */
  payloadBytes: number;
  /** Address where the previous non-empty unit ended; recovery checks the chain with it. */
  prevEnd: number;
  /** Physical index of this unit's segment, and of the segment that follows it in the log. */
  segmentIndex: number;
  nextSegmentIndex: number;
  /** CRC-32 of the payload bytes. */
  payloadCrc: number;
  /** Open count of the file when the unit was written; never decreases along a valid log. */
  epoch: number;
}

/** Bytes a unit occupies in the file: header plus payload, rounded up to 4 KiB. */
export function unitFileBytes(payloadBytes: number): number {
  return roundUp(UNIT_HEADER_BYTES + payloadBytes, ALIGNMENT_BYTES);
}

/** Write `header` into the first {@link UNIT_HEADER_BYTES} of `target`. */
export function encodeUnitHeader(target: Uint8Array, header: UnitHeader): void {
  const view = new DataView(target.buffer, target.byteOffset, UNIT_HEADER_BYTES);
  target.fill(0, 0, UNIT_HEADER_BYTES);
  view.setUint32(0, UNIT_MAGIC, true);
  view.setUint16(4, UNIT_FORMAT_VERSION, true);
  view.setUint32(8, header.payloadBytes, true);
  view.setUint32(12, header.payloadCrc >>> 0, true);
  view.setFloat64(16, header.address, true);
  view.setFloat64(24, header.prevEnd, true);
  view.setUint32(32, header.segmentIndex, true);
  view.setUint32(36, header.nextSegmentIndex, true);
  view.setUint32(40, header.epoch, true);
  view.setUint32(60, Bun.hash.crc32(target.subarray(0, 60)) >>> 0, true);
}

/** Decode a unit header; `undefined` when its magic or checksum is wrong (torn, stale, never written). */
export function decodeUnitHeader(source: Uint8Array): UnitHeader | undefined {
  if (source.length < UNIT_HEADER_BYTES) return undefined;
  const view = new DataView(source.buffer, source.byteOffset, UNIT_HEADER_BYTES);
  if (view.getUint32(0, true) !== UNIT_MAGIC) return undefined;
  if (view.getUint32(60, true) !== Bun.hash.crc32(source.subarray(0, 60)) >>> 0) return undefined;
  if (view.getUint16(4, true) !== UNIT_FORMAT_VERSION) return undefined;
  return {
    payloadBytes: view.getUint32(8, true),
    payloadCrc: view.getUint32(12, true),
    address: view.getFloat64(16, true),
    prevEnd: view.getFloat64(24, true),
    segmentIndex: view.getUint32(32, true),
    nextSegmentIndex: view.getUint32(36, true),
    epoch: view.getUint32(40, true),
  };
}

/** A position in the log: a logical address and the physical segment that holds it. */
export interface LogPosition {
  address: number;
  segmentIndex: number;
  /** End address of the unit before this position (for the chain check). */
  prevEnd: number;
  /** Physical index of the segment that follows `segmentIndex` in the log. */
  nextSegmentIndex: number;
}

/** The durable anchor of the file, kept in two alternating checksummed copies. */
export interface RootBlock {
  formatVersion: number;
  /** Higher is newer; copy `generation % 2` holds it. */
  generation: number;
  segmentSize: number;
  /** Where recovery starts replaying the log. */
  replayFrom: LogPosition;
  /** The checkpoint recovery loads first, or none. */
  checkpoint: { start: LogPosition; endAddress: number } | undefined;
  uncleanShutdowns: number;
  /** True only while the file is closed cleanly. */
  cleanShutdown: boolean;
  /** Bumped by every writable open; units carry it, so stale units past a recovered tail are refused. */
  epoch: number;
  /** Opaque bytes of the layer above (at most {@link ROOT_USER_BYTES}). */
  user: Uint8Array;
}

/** Room for the upper layer's own fields in the root block. */
export const ROOT_USER_BYTES = 2048;

/** Encode a root block into exactly {@link ROOT_BLOCK_BYTES}. */
export function encodeRootBlock(target: Uint8Array, root: RootBlock): void {
  if (root.user.length > ROOT_USER_BYTES) throw new RangeError(`root user bytes ${root.user.length} > ${ROOT_USER_BYTES}`);
  target.fill(0, 0, ROOT_BLOCK_BYTES);
  const view = new DataView(target.buffer, target.byteOffset, ROOT_BLOCK_BYTES);
  view.setUint32(0, ROOT_MAGIC_LO, true);
  view.setUint32(4, ROOT_MAGIC_HI, true);
  view.setUint32(8, root.formatVersion, true);
  view.setFloat64(16, root.generation, true);
  view.setUint32(24, root.segmentSize, true);
  view.setUint32(28, root.uncleanShutdowns, true);
  view.setUint8(32, root.cleanShutdown ? 1 : 0);
  view.setUint8(33, root.checkpoint === undefined ? 0 : 1);
  writePosition(view, 40, root.replayFrom);
  if (root.checkpoint !== undefined) {
    writePosition(view, 64, root.checkpoint.start);
    view.setFloat64(88, root.checkpoint.endAddress, true);
  }
  view.setUint32(96, root.user.length, true);
  view.setUint32(100, root.epoch, true);
  target.set(root.user, 128);
  view.setUint32(ROOT_BLOCK_BYTES - 4, Bun.hash.crc32(target.subarray(0, ROOT_BLOCK_BYTES - 4)) >>> 0, true);
}

function writePosition(view: DataView, at: number, position: LogPosition): void {
  view.setFloat64(at, position.address, true);
  view.setUint32(at + 8, position.segmentIndex, true);
  view.setFloat64(at + 16, position.prevEnd, true);
  view.setUint32(at + 12, position.nextSegmentIndex, true);
}

function readPosition(view: DataView, at: number): LogPosition {
  return {
    address: view.getFloat64(at, true),
    segmentIndex: view.getUint32(at + 8, true),
    nextSegmentIndex: view.getUint32(at + 12, true),
    prevEnd: view.getFloat64(at + 16, true),
  };
}

/**
 * True when `source` starts with the root block's magic, valid or not: a copy that has it but
 * fails its checksum is a damaged root of a store, not somebody else's bytes.
 */
export function hasRootMagic(source: Uint8Array): boolean {
  const view = new DataView(source.buffer, source.byteOffset, 8);
  return view.getUint32(0, true) === ROOT_MAGIC_LO && view.getUint32(4, true) === ROOT_MAGIC_HI;
}

/**
 * Decode one root-block copy: `undefined` when it is torn or was never written; a
 * `CorruptionError` when it is intact but of a format version this build does not read.
 */
export function decodeRootBlock(source: Uint8Array): RootBlock | undefined {
  const view = new DataView(source.buffer, source.byteOffset, ROOT_BLOCK_BYTES);
  if (view.getUint32(0, true) !== ROOT_MAGIC_LO || view.getUint32(4, true) !== ROOT_MAGIC_HI) return undefined;
  if (view.getUint32(ROOT_BLOCK_BYTES - 4, true) !== Bun.hash.crc32(source.subarray(0, ROOT_BLOCK_BYTES - 4)) >>> 0) {
    return undefined;
  }
  const formatVersion = view.getUint32(8, true);
  if (formatVersion < MIN_FORMAT_VERSION || formatVersion > FORMAT_VERSION) {
    throw new CorruptionError(
      `unsupported format version ${formatVersion}: this build reads versions ${MIN_FORMAT_VERSION} to ${FORMAT_VERSION}`,
    );
  }
  const userBytes = view.getUint32(96, true);
  if (userBytes > ROOT_USER_BYTES) return undefined;
  return {
    formatVersion,
    generation: view.getFloat64(16, true),
    segmentSize: view.getUint32(24, true),
    uncleanShutdowns: view.getUint32(28, true),
    cleanShutdown: view.getUint8(32) === 1,
    replayFrom: readPosition(view, 40),
    checkpoint: view.getUint8(33) === 1 ? { start: readPosition(view, 64), endAddress: view.getFloat64(88, true) } : undefined,
    epoch: view.getUint32(100, true),
    user: source.slice(128, 128 + userBytes),
  };
}
