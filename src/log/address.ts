/**
 * All log address arithmetic, in one place.
 *
 * A log address is a logical byte offset of the log. Segment sequence number `s` covers addresses
 * `[s × segmentSize, (s + 1) × segmentSize)`; which physical segment of the file holds `s` is the
 * segment table's business (space.ts), so the math here needs only the segment size. Every unit
 * starts on a 4 KiB boundary (units are written whole, rounded up to 4 KiB, and segments are
 * multiples of 4 KiB), which is why O_DIRECT reads of whole units need no extra alignment.
 *
 * Why a module of its own: `Math.floor(address / segmentSize)` and its friends were written out a
 * dozen times across the log; one slip (a floor where a ceil belongs) is a unit read from the wrong
 * segment.
 *
 * @module
 */
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { ROOT_REGION_BYTES, roundUp, UNIT_HEADER_BYTES } from "./format.ts";
import { InvalidArgumentError } from "../errors.ts";

/** Smallest room worth opening a unit in; less than this at a segment's end is skipped. */
export const MIN_UNIT_ROOM_BYTES = UNIT_HEADER_BYTES + 4096;

/** Marks a successor segment that is not known (never a valid index). */
export const UNKNOWN_SEGMENT = 0xffffffff;

/** `n` rounded down to a multiple of `alignment` (default: the 4 KiB I/O alignment). */
export function alignDown(n: number, alignment = ALIGNMENT_BYTES): number {
  return Math.floor(n / alignment) * alignment;
}

/** `n` rounded up to a multiple of `alignment` (default: the 4 KiB I/O alignment). */
export function alignUp(n: number, alignment = ALIGNMENT_BYTES): number {
  return roundUp(n, alignment);
}

/** Segment and file-offset math for one segment size. */
export class LogGeometry {
  /** Bytes per segment (a multiple of 4 KiB). */
  readonly segmentSize: number;

  constructor(segmentSize: number) {
    if (!Number.isInteger(segmentSize) || segmentSize <= 0 || segmentSize % ALIGNMENT_BYTES !== 0) {
      throw new Error(`segment size ${segmentSize} is not a positive multiple of ${ALIGNMENT_BYTES}`);
    }
    this.segmentSize = segmentSize;
  }

  /** Sequence number of the segment holding `address`. */
  seqOf(address: number): number {
    return Math.floor(address / this.segmentSize);
  }

  /** First address of segment `seq`. */
  segmentStart(seq: number): number {
    return seq * this.segmentSize;
  }

  /** First address of the segment after the one holding `address`. */
  nextSegmentStart(address: number): number {
    return this.segmentStart(this.seqOf(address) + 1);
  }

  /** True when `address` is the first byte of a segment. */
  isSegmentStart(address: number): boolean {
    return address % this.segmentSize === 0;
  }

  /**
   * Where a unit may open at or after `address`: `address` itself, or the next segment's start when
   * the room left in this segment is under {@link MIN_UNIT_ROOM_BYTES} (the writer skips it).
   */
  unitStartFrom(address: number): number {
    const next = this.nextSegmentStart(address);
    return next - address < MIN_UNIT_ROOM_BYTES ? next : address;
  }

  /** File offset of the first byte of physical segment `index` (the root region comes first). */
  segmentFileOffset(index: number): number {
    return ROOT_REGION_BYTES + index * this.segmentSize;
  }

  /** File offset of log `address` when its segment lives at physical index `segmentIndex`. */
  physicalOffset(segmentIndex: number, address: number): number {
    return this.segmentFileOffset(segmentIndex) + (address % this.segmentSize);
  }

  /** File size that holds exactly `segments` segments. */
  fileBytesFor(segments: number): number {
    return this.segmentFileOffset(segments);
  }

  /**
   * Segments a file of `fileBytes` holds: `"whole"` counts only complete ones; `"started"` also
   * one the end of the file cuts through.
   */
  segmentsIn(fileBytes: number, count: "whole" | "started"): number {
    const past = Math.max(0, fileBytes - ROOT_REGION_BYTES) / this.segmentSize;
    return count === "whole" ? Math.floor(past) : Math.ceil(past);
  }
}

/** Default bytes per segment of a new file. */
export const DEFAULT_SEGMENT_BYTES = 8 << 20;
/** Smallest segment a file may have. */
export const MIN_SEGMENT_BYTES = 64 << 10;
/** Largest segment: offsets inside a segment stay below 2^31 (u32 header fields, int math). */
export const MAX_SEGMENT_BYTES = 0x7fffffff - (0x7fffffff % ALIGNMENT_BYTES);

/** Throws unless `value` is a multiple of the 4 KiB alignment in `[min, max]`. */
export function checkAlignedSize(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max || value % ALIGNMENT_BYTES !== 0) {
    throw new InvalidArgumentError(`${name} must be a multiple of ${ALIGNMENT_BYTES} in [${min}, ${max}], got ${value}`);
  }
}
