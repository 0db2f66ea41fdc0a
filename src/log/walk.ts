/**
 * The one unit checker, and the checked walk of the log on disk.
 *
 * {@link checkUnit} decides whether bytes read from the file are the unit the log expects at a
 * place: magic and header checksum, the address it claims, its segment, the chain back to the
 * previous unit and the epoch (when the caller knows them), that it fits its segment, and the
 * payload checksum. Every reader of units goes through it: recovery's walk, the cleaner's
 * segment reads (reader.ts) and the durable tail (tail.ts). A unit that fails any check is a
 * hole, never data.
 *
 * {@link walkLog} reads unit after unit from a known position, following each segment's
 * `nextSegmentIndex` to the next segment, and stops at the first hole: after it nothing is
 * trusted. Its cost is the log walked, never the size of the file.
 *
 * @module
 */
import type { FileHandle, IoBackend, NativeBuffer } from "../io/backend.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import { decodeUnitHeader, UNIT_HEADER_BYTES, unitFileBytes, type LogPosition, type UnitHeader } from "./format.ts";
import { CorruptionError } from "../errors.ts";
import { alignDown, MIN_UNIT_ROOM_BYTES, UNKNOWN_SEGMENT, type LogGeometry } from "./address.ts";

/** What a reader expects at one place of the log. */
export interface UnitExpectation {
  /** Log address the unit must claim. */
  readonly address: number;
  /** Physical segment the unit must claim to be in. */
  readonly segmentIndex: number;
  /** Bytes from `address` to the end of what may hold the unit (its segment, or what was read of it). */
  readonly roomBytes: number;
  /** End of the unit before it, when known: the chain check that refuses stale units. */
  readonly prevEnd?: number;
  /** Oldest epoch acceptable (the previous unit's), when known: epochs never decrease along the log. */
  readonly minEpoch?: number;
}

/** A unit that passed {@link checkUnit}. `payload` views the caller's buffer. */
export interface CheckedUnit {
  readonly header: UnitHeader;
  readonly payload: Uint8Array;
  /** Bytes the unit occupies in the file (header and payload rounded up to 4 KiB). */
  readonly fileBytes: number;
}

/**
 * The header half of {@link checkUnit}, for readers that read a unit's first block before they
 * know its size: the header in `bytes` if it is intact and names exactly the expected place.
 */
export function checkUnitHeader(bytes: Uint8Array, expected: UnitExpectation): UnitHeader | undefined {
  const header = decodeUnitHeader(bytes.subarray(0, UNIT_HEADER_BYTES));
  if (header === undefined) return undefined;
  if (header.address !== expected.address || header.segmentIndex !== expected.segmentIndex) return undefined;
  if (expected.prevEnd !== undefined && header.prevEnd !== expected.prevEnd) return undefined;
  if (expected.minEpoch !== undefined && header.epoch < expected.minEpoch) return undefined;
  if (unitFileBytes(header.payloadBytes) > expected.roomBytes) return undefined;
  return header;
}

/**
 * The one unit checker: whether `bytes` (from the unit's first byte on, holding at least its header
 * and payload) are the intact unit expected at `expected.address`. Undefined for anything else:
 * torn, stale (another address, segment, chain or older epoch), never written, or too short.
 */
export function checkUnit(bytes: Uint8Array, expected: UnitExpectation): CheckedUnit | undefined {
  const header = checkUnitHeader(bytes, expected);
  if (header === undefined) return undefined;
  const payloadEnd = UNIT_HEADER_BYTES + header.payloadBytes;
  if (bytes.length < payloadEnd) return undefined;
  const payload = bytes.subarray(UNIT_HEADER_BYTES, payloadEnd);
  if (Bun.hash.crc32(payload) >>> 0 !== header.payloadCrc) return undefined;
  return { header, payload, fileBytes: unitFileBytes(header.payloadBytes) };
}

/** Awaited before each step of a segment walk is read, with its bytes (a backup's rate limit). */
export type StepGate = (bytes: number) => Promise<void>;

/**
 * Visit every intact unit of segment `seq` at physical `index` of `file`, in order, stopping at
 * the first hole: read it (no further than the file's end) into `scratch`, a segment-sized
 * aligned buffer, in steps of `stepBytes` through `queue`, check each unit ({@link checkUnit})
 * and hand its payload, a view of `scratch`, to `visit`. The one walk of a segment for the log's
 * own reads (the cleaner, a backup on the caller's thread) and a backup Worker's (segment-file.ts).
 */
export async function readSegmentUnits(
  io: { readonly backend: IoBackend; readonly queue: IoQueue; readonly file: FileHandle },
  segment: { readonly geometry: LogGeometry; readonly seq: number; readonly index: number; readonly stepBytes: number; readonly beforeStep?: StepGate },
  scratch: NativeBuffer,
  visit: (address: number, payload: Uint8Array) => void,
): Promise<void> {
  const { geometry, seq, index } = segment;
  const physical = geometry.segmentFileOffset(index);
  const readable = Math.min(geometry.segmentSize, alignDown(io.backend.fileSizeBytes(io.file) - physical));
  if (readable <= 0) return;
  const bytes = scratch.bytes;
  const step = Math.max(ALIGNMENT_BYTES, alignDown(Math.min(segment.stepBytes, readable)));
  let read = 0;
  const readUpTo = async (end: number): Promise<void> => {
    while (read < Math.min(end, readable)) {
      const n = Math.min(step, readable - read);
      if (segment.beforeStep !== undefined) await segment.beforeStep(n);
      await io.queue.read(io.file, scratch, read, n, physical + read);
      read += n;
    }
  };
  let offset = 0;
  while (offset + MIN_UNIT_ROOM_BYTES <= readable) {
    await readUpTo(offset + ALIGNMENT_BYTES);
    const address = geometry.segmentStart(seq) + offset;
    const expected = { address, segmentIndex: index, roomBytes: readable - offset };
    const header = checkUnitHeader(bytes.subarray(offset, read), expected);
    if (header === undefined) return;
    const end = offset + unitFileBytes(header.payloadBytes);
    await readUpTo(end);
    const unit = checkUnit(bytes.subarray(offset, Math.min(end, read)), expected);
    if (unit === undefined) return;
    visit(address, unit.payload);
    offset += unit.fileBytes;
  }
}

/** The position right after a unit that starts at `address` and occupies `fileBytes`. */
export function positionAfter(geometry: LogGeometry, header: UnitHeader, fileBytes: number): LogPosition {
  const end = header.address + fileBytes;
  // A unit that fills its segment exactly: the next position is the start of the next segment,
  // whose own successor is not known until a unit there is read.
  return geometry.isSegmentStart(end)
    ? { address: end, segmentIndex: header.nextSegmentIndex, nextSegmentIndex: UNKNOWN_SEGMENT, prevEnd: end }
    : { address: end, segmentIndex: header.segmentIndex, nextSegmentIndex: header.nextSegmentIndex, prevEnd: end };
}

/** What the walk needs of the file. */
export interface WalkContext {
  readonly backend: IoBackend;
  readonly queue: IoQueue;
  readonly file: FileHandle;
  readonly geometry: LogGeometry;
  /** A native buffer of at least one unit's maximum size (bufferSize). */
  readonly scratch: NativeBuffer;
}

/** A unit found by the walk. `payload` is only valid during the visit call. */
export interface WalkedUnit {
  header: UnitHeader;
  payload: Uint8Array;
  /** Position right after this unit. */
  next: LogPosition;
}

/** Read `lengthBytes` at `offset`; false when the file ends before (a short read: nothing there). */
async function readOrEnd(ctx: WalkContext, buffer: NativeBuffer, bufferOffset: number, lengthBytes: number, offset: number): Promise<boolean> {
  try {
    await ctx.queue.read(ctx.file, buffer, bufferOffset, lengthBytes, offset);
    return true;
  } catch (error) {
    // Any other failure (EIO…) is not the end of the log: taking it for one would drop durable
    // transactions, so it propagates.
    if (error instanceof CorruptionError) return false;
    throw error;
  }
}

async function readUnitAt(ctx: WalkContext, position: LogPosition, minEpoch: number): Promise<WalkedUnit | undefined> {
  const roomBytes = ctx.geometry.nextSegmentStart(position.address) - position.address;
  if (roomBytes < MIN_UNIT_ROOM_BYTES) return undefined;
  const offset = ctx.geometry.physicalOffset(position.segmentIndex, position.address);
  if (!(await readOrEnd(ctx, ctx.scratch, 0, ALIGNMENT_BYTES, offset))) return undefined;
  const expected: UnitExpectation = {
    address: position.address,
    segmentIndex: position.segmentIndex,
    prevEnd: position.prevEnd,
    minEpoch,
    roomBytes,
  };
  const header = checkUnitHeader(ctx.scratch.bytes, expected);
  if (header === undefined) return undefined;
  const fileBytes = unitFileBytes(header.payloadBytes);
  // A unit larger than the scratch was written by an open with a larger bufferSize than this
  // one's: read it into a buffer of its own (skipping it would drop it and all the log after it).
  const temporary = fileBytes > ctx.scratch.sizeBytes ? ctx.backend.alloc(fileBytes) : undefined;
  try {
    const buffer = temporary ?? ctx.scratch;
    if (temporary !== undefined) temporary.bytes.set(ctx.scratch.bytes.subarray(0, ALIGNMENT_BYTES));
    if (fileBytes > ALIGNMENT_BYTES && !(await readOrEnd(ctx, buffer, ALIGNMENT_BYTES, fileBytes - ALIGNMENT_BYTES, offset + ALIGNMENT_BYTES))) {
      return undefined;
    }
    const unit = checkUnit(buffer.bytes.subarray(0, fileBytes), expected);
    if (unit === undefined) return undefined;
    const payload = temporary !== undefined ? unit.payload.slice() : unit.payload;
    return { header: unit.header, payload, next: positionAfter(ctx.geometry, unit.header, fileBytes) };
  } finally {
    if (temporary !== undefined) ctx.backend.free(temporary);
  }
}

/**
 * Walk from `start` while units check out (and, if given, while their address is below
 * `stopAt`), calling `visit` for each. Returns the position after the last good unit and the
 * segments entered on the way (seq → index), which the caller records as part of the log.
 */
export async function walkLog(
  ctx: WalkContext,
  start: LogPosition,
  visit: (unit: WalkedUnit) => void | Promise<void>,
  stopAt = Number.POSITIVE_INFINITY,
  minEpoch = 0,
): Promise<{ end: LogPosition; segments: Array<[number, number]>; units: number; bytes: number }> {
  const geometry = ctx.geometry;
  let position = start;
  // The first unit too must not be older than what led here (see LogStructuredStore.recover).
  let epoch = minEpoch;
  const segments: Array<[number, number]> = [[geometry.seqOf(start.address), start.segmentIndex]];
  let units = 0;
  let bytes = 0;
  while (position.address < stopAt) {
    let unit = await readUnitAt(ctx, position, epoch);
    if (unit === undefined && position.nextSegmentIndex !== UNKNOWN_SEGMENT) {
      // The writer may have moved on to the next segment, leaving this one's tail unused.
      const jumped: LogPosition = {
        address: geometry.nextSegmentStart(position.address),
        segmentIndex: position.nextSegmentIndex,
        nextSegmentIndex: position.nextSegmentIndex,
        prevEnd: position.prevEnd,
      };
      unit = await readUnitAt(ctx, jumped, epoch);
      if (unit !== undefined) segments.push([geometry.seqOf(jumped.address), jumped.segmentIndex]);
    } else if (unit !== undefined && geometry.isSegmentStart(position.address) && position.address !== start.address) {
      segments.push([geometry.seqOf(position.address), position.segmentIndex]);
    }
    if (unit === undefined) break;
    epoch = unit.header.epoch;
    await visit(unit);
    units += 1;
    bytes += unit.header.payloadBytes;
    position = unit.next;
  }
  return { end: position, segments, units, bytes };
}
