/**
 * Walking the log on disk: from a known position, read unit after unit, each checked (magic,
 * header checksum, the address it claims, the chain back to the previous unit, the epoch, the
 * payload checksum), following each segment's `nextSegmentIndex` to the next segment. The walk
 * stops at the first unit that fails any check: that is the hole after which nothing is trusted.
 *
 * Its cost is the log walked, never the size of the file.
 *
 * @module
 */
import type { FileHandle, IoBackend, NativeBuffer } from "../io/backend.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import {
  decodeUnitHeader,
  ROOT_REGION_BYTES,
  UNIT_HEADER_BYTES,
  unitFileBytes,
  type LogPosition,
  type UnitHeader,
} from "./format.ts";
import { CorruptionError } from "../errors.ts";

/** Smallest room worth opening a unit in; less than this at a segment's end is skipped. */
export const MIN_UNIT_ROOM_BYTES = UNIT_HEADER_BYTES + 4096;

/** What the walk needs of the file. */
export interface WalkContext {
  readonly backend: IoBackend;
  readonly queue: IoQueue;
  readonly file: FileHandle;
  readonly segmentSize: number;
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

/** Marks a successor segment that is not known (never a valid index). */
export const UNKNOWN_SEGMENT = 0xffffffff;

/** Physical file offset of log `address` in segment `segmentIndex`. */
export function physicalOffset(segmentSize: number, segmentIndex: number, address: number): number {
  return ROOT_REGION_BYTES + segmentIndex * segmentSize + (address % segmentSize);
}

/** First address of the segment after the one holding `address`. */
export function nextSegmentStart(segmentSize: number, address: number): number {
  return (Math.floor(address / segmentSize) + 1) * segmentSize;
}

async function readUnitAt(ctx: WalkContext, position: LogPosition, minEpoch: number): Promise<WalkedUnit | undefined> {
  const segmentEnd = nextSegmentStart(ctx.segmentSize, position.address);
  if (segmentEnd - position.address < MIN_UNIT_ROOM_BYTES) return undefined;
  const offset = physicalOffset(ctx.segmentSize, position.segmentIndex, position.address);
  try {
    await ctx.queue.read(ctx.file, ctx.scratch, 0, ALIGNMENT_BYTES, offset);
  } catch (error) {
    // Past the end of the file (a short read): nothing there. Any other failure (EIO…) is not
    // the end of the log: taking it for one would drop durable transactions, so it propagates.
    if (error instanceof CorruptionError) return undefined;
    throw error;
  }
  const header = decodeUnitHeader(ctx.scratch.bytes.subarray(0, UNIT_HEADER_BYTES));
  if (header === undefined) return undefined;
  if (header.address !== position.address || header.prevEnd !== position.prevEnd) return undefined;
  if (header.segmentIndex !== position.segmentIndex || header.epoch < minEpoch) return undefined;
  const fileBytes = unitFileBytes(header.payloadBytes);
  if (position.address + fileBytes > segmentEnd) return undefined;
  // A unit larger than the scratch was written by an open with a larger bufferSize than this
  // one's: read it into a buffer of its own (skipping it would drop it and all the log after it).
  const temporary = fileBytes > ctx.scratch.sizeBytes ? ctx.backend.alloc(fileBytes) : undefined;
  let payload: Uint8Array;
  try {
    const buffer = temporary ?? ctx.scratch;
    if (temporary !== undefined) temporary.bytes.set(ctx.scratch.bytes.subarray(0, ALIGNMENT_BYTES));
    if (fileBytes > ALIGNMENT_BYTES) {
      try {
        await ctx.queue.read(ctx.file, buffer, ALIGNMENT_BYTES, fileBytes - ALIGNMENT_BYTES, offset + ALIGNMENT_BYTES);
      } catch (error) {
        if (error instanceof CorruptionError) return undefined;
        throw error;
      }
    }
    payload = buffer.bytes.subarray(UNIT_HEADER_BYTES, UNIT_HEADER_BYTES + header.payloadBytes);
    if (Bun.hash.crc32(payload) >>> 0 !== header.payloadCrc) return undefined;
    if (temporary !== undefined) payload = payload.slice();
  } finally {
    if (temporary !== undefined) ctx.backend.free(temporary);
  }
  const end = position.address + fileBytes;
  // A unit that fills its segment exactly: the next position is the start of the next segment,
  // whose own successor is not known until a unit there is read.
  const next: LogPosition =
    end === segmentEnd
      ? { address: end, segmentIndex: header.nextSegmentIndex, nextSegmentIndex: UNKNOWN_SEGMENT, prevEnd: end }
      : { address: end, segmentIndex: header.segmentIndex, nextSegmentIndex: header.nextSegmentIndex, prevEnd: end };
  return { header, payload, next };
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
  let position = start;
  // The first unit too must not be older than what led here (see LogStructuredStore.recover).
  let epoch = minEpoch;
  const segments: Array<[number, number]> = [[Math.floor(start.address / ctx.segmentSize), start.segmentIndex]];
  let units = 0;
  let bytes = 0;
  while (position.address < stopAt) {
    let unit = await readUnitAt(ctx, position, epoch);
    if (unit === undefined && position.nextSegmentIndex !== UNKNOWN_SEGMENT) {
      // The writer may have moved on to the next segment, leaving this one's tail unused.
      const jumped: LogPosition = {
        address: nextSegmentStart(ctx.segmentSize, position.address),
        segmentIndex: position.nextSegmentIndex,
        nextSegmentIndex: position.nextSegmentIndex,
        prevEnd: position.prevEnd,
      };
      unit = await readUnitAt(ctx, jumped, epoch);
      if (unit !== undefined) segments.push([Math.floor(jumped.address / ctx.segmentSize), jumped.segmentIndex]);
    } else if (unit !== undefined && position.address % ctx.segmentSize === 0 && position.address !== start.address) {
      segments.push([Math.floor(position.address / ctx.segmentSize), position.segmentIndex]);
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
