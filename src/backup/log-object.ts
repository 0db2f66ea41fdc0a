/**
 * Increments: the durable log between two points of a backup chain, as one immutable object
 * (`inc-<seq>-<firstTx>-<lastTx>-<fromLsn>-<toLsn>.log`, see manifest.ts).
 *
 * An increment holds whole flush units, each as the log's own unit header (format.ts) followed by
 * its payload, so the **one unit checker** (log/walk.ts `checkUnit`) verifies them on the target
 * exactly as recovery verifies them on disk: magic, header CRC, the address the unit claims, the
 * chain to the unit before it, a never-decreasing epoch, the payload CRC. Two header fields are
 * rewritten because they only mean something inside one file: the physical segment indexes are 0,
 * and `prevEnd` chains the units of the backup (each unit's `prevEnd` is the end of the unit
 * before it in the chain), so a unit dropped or swapped inside an object is caught too. Payloads
 * are stored unpadded.
 *
 * ```
 * header (64 bytes): "BLSSINC1" | u32 version 1 | u32 units | f64 fromLsn | f64 toLsn | 0… | u32 crc32 of bytes 0..60
 * units:             64-byte unit header | payload   (repeated)
 * ```
 * `fromLsn` may lie inside the first unit: the first increment after a base starts at the base's
 * log position, which is wherever the log's end was at the consistent point; records before it
 * are in the base and are skipped by readers. The first unit's `prevEnd` is `fromLsn` when the unit
 * starts at or after it, else the unit's own address. The last unit ends exactly at `toLsn`.
 *
 * @module
 */
import { BackupCorruptionError } from "../errors.ts";
import { decodeUnitHeader, encodeUnitHeader, UNIT_HEADER_BYTES, unitFileBytes } from "../log/format.ts";
import { checkUnit } from "../log/walk.ts";

const MAGIC = new TextEncoder().encode("BLSSINC1");
const VERSION = 1;
/** Bytes of an increment's header. */
export const LOG_OBJECT_HEADER_BYTES = 64;

/** A unit of the log as an increment holds it. */
export interface LogUnit {
  /** Log address of the unit. */
  readonly address: number;
  /** Where the unit ends in the log (4 KiB aligned): the next unit's address or later. */
  readonly endAddress: number;
  /** Epoch of the open that wrote it. */
  readonly epoch: number;
  /** The payload (records). */
  readonly payload: Uint8Array;
}

/** The `prevEnd` the first unit of an object from `fromLsn` carries (see the module doc). */
function firstPrevEnd(fromLsn: number, address: number): number {
  return address >= fromLsn ? fromLsn : address;
}

/** Builds one increment from units handed in order. */
export class LogObjectBuilder {
  readonly fromLsn: number;
  private readonly parts: Uint8Array[] = [];
  private prevEnd: number | undefined;
  private units = 0;
  /** Bytes so far (header included). */
  bytes = LOG_OBJECT_HEADER_BYTES;
  /** End of the last unit added (the object's `toLsn`), or `fromLsn` when empty. */
  toLsn: number;

  constructor(fromLsn: number) {
    this.fromLsn = fromLsn;
    this.toLsn = fromLsn;
  }

  /** Number of units added. */
  get unitCount(): number {
    return this.units;
  }

  /** Append a unit (in log order; its end must be past `fromLsn`). */
  add(unit: LogUnit): void {
    if (unit.endAddress <= this.fromLsn || (this.units > 0 && unit.address < this.toLsn)) {
      throw new Error(`unit at ${unit.address} does not follow ${this.toLsn}`);
    }
    const prevEnd = this.prevEnd ?? firstPrevEnd(this.fromLsn, unit.address);
    const header = new Uint8Array(UNIT_HEADER_BYTES);
    encodeUnitHeader(header, {
      address: unit.address,
      payloadBytes: unit.payload.length,
      prevEnd,
      segmentIndex: 0,
      nextSegmentIndex: 0,
      payloadCrc: Bun.hash.crc32(unit.payload) >>> 0,
      epoch: unit.epoch,
    });
    this.parts.push(header, unit.payload);
    this.bytes += UNIT_HEADER_BYTES + unit.payload.length;
    this.prevEnd = unit.address + unitFileBytes(unit.payload.length);
    if (this.prevEnd !== unit.endAddress) throw new Error(`unit at ${unit.address}: end ${unit.endAddress} is not its size's`);
    this.toLsn = unit.endAddress;
    this.units += 1;
  }

  /** The object's bytes. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.bytes);
    out.set(MAGIC, 0);
    const view = new DataView(out.buffer);
    view.setUint32(8, VERSION, true);
    view.setUint32(12, this.units, true);
    view.setFloat64(16, this.fromLsn, true);
    view.setFloat64(24, this.toLsn, true);
    view.setUint32(60, Bun.hash.crc32(out.subarray(0, 60)) >>> 0, true);
    let at = LOG_OBJECT_HEADER_BYTES;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

/** What a reader expects of an increment (from the manifest). */
export interface LogObjectExpectation {
  /** Object name, for messages. */
  readonly name: string;
  readonly fromLsn: number;
  readonly toLsn: number;
  /** Oldest acceptable epoch (the last unit's of the previous increment). */
  readonly minEpoch: number;
}

/**
 * The units of an increment, each passed through the log's unit checker, in order; throws a
 * `CorruptionError` naming the object at the first thing that does not check out.
 */
export function* readLogObject(bytes: Uint8Array, expect: LogObjectExpectation): Generator<LogUnit> {
  const fail = (message: string): never => {
    throw new BackupCorruptionError(expect.name, `backup increment ${expect.name}: ${message}`);
  };
  if (bytes.length < LOG_OBJECT_HEADER_BYTES) fail(`${bytes.length} bytes is shorter than its header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, LOG_OBJECT_HEADER_BYTES);
  if (!MAGIC.every((b, i) => bytes[i] === b)) fail("not an increment (bad magic)");
  if (view.getUint32(60, true) !== Bun.hash.crc32(bytes.subarray(0, 60)) >>> 0) fail("header checksum mismatch");
  if (view.getUint32(8, true) !== VERSION) fail(`increment version ${view.getUint32(8, true)} is not one this bloom-lss reads`);
  const units = view.getUint32(12, true);
  const fromLsn = view.getFloat64(16, true);
  const toLsn = view.getFloat64(24, true);
  if (fromLsn !== expect.fromLsn || toLsn !== expect.toLsn) {
    fail(`holds the log [${fromLsn}, ${toLsn}), the manifest says [${expect.fromLsn}, ${expect.toLsn})`);
  }
  let at = LOG_OBJECT_HEADER_BYTES;
  let prevEnd: number | undefined;
  let minEpoch = expect.minEpoch;
  for (let i = 0; i < units; i++) {
    const header = decodeUnitHeader(bytes.subarray(at, at + UNIT_HEADER_BYTES));
    if (header === undefined) return fail(`unit ${i} at byte ${at}: its header does not check out`);
    const expectedPrev = prevEnd ?? firstPrevEnd(fromLsn, header.address);
    if (i === 0 && header.address + unitFileBytes(header.payloadBytes) <= fromLsn) {
      fail(`its first unit at ${header.address} ends before the increment's start ${fromLsn}`);
    }
    const unit = checkUnit(bytes.subarray(at), {
      address: header.address,
      segmentIndex: 0,
      roomBytes: Number.MAX_SAFE_INTEGER,
      prevEnd: expectedPrev,
      minEpoch,
    });
    if (unit === undefined) return fail(`unit ${i} (log address ${header.address}) does not check out (checksum, chain or epoch)`);
    const endAddress = header.address + unit.fileBytes;
    yield { address: header.address, endAddress, epoch: header.epoch, payload: unit.payload };
    at += UNIT_HEADER_BYTES + header.payloadBytes;
    prevEnd = endAddress;
    minEpoch = header.epoch;
  }
  if (at !== bytes.length) fail(`${bytes.length - at} bytes after its last unit`);
  if ((prevEnd ?? fromLsn) !== toLsn) fail(`its units end at ${prevEnd ?? fromLsn}, not at ${toLsn}`);
}
