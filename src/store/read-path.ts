/**
 * The read path: from a mapping-table location to verified bytes. Every record read back, from a
 * flush buffer or from the file, is checked (length, CRC, type, seid, part index) before any of
 * its bytes are returned; a mismatch is a `CorruptionError`, never wrong bytes.
 *
 * @module
 */
import type { LogStructuredStore } from "../log/lss.ts";
import { CorruptionError } from "../errors.ts";
import type { Location } from "./mapping.ts";
import { RECORD_HEADER_BYTES, RecordType, verifyRecord } from "./records.ts";
import { FLAG_PART, type Part } from "./write-path.ts";

/** Read and verify a single-part element's Data record; returns its body. */
export async function readSingle(log: LogStructuredStore, seid: bigint, location: Location): Promise<Uint8Array> {
  const record = await log.read(location.address, RECORD_HEADER_BYTES + location.sizeBytes);
  const header = verifyRecord(record, { type: RecordType.Data, seid });
  if ((header.flags & FLAG_PART) !== 0) throw new CorruptionError(`seid ${seid}: a part record where a whole element was expected`);
  return record.subarray(RECORD_HEADER_BYTES);
}

/** Read and verify part `index` of a multipart element; returns its body. */
export async function readPart(log: LogStructuredStore, seid: bigint, part: Part, index: number): Promise<Uint8Array> {
  const record = await log.read(part.address, RECORD_HEADER_BYTES + part.bodyBytes);
  const header = verifyRecord(record, { type: RecordType.Data, seid });
  if ((header.flags & FLAG_PART) === 0 || header.aux !== index) {
    throw new CorruptionError(`seid ${seid}: part ${index} record is not the part expected (aux ${header.aux})`);
  }
  return record.subarray(RECORD_HEADER_BYTES);
}

/** Read a whole multipart element into one buffer, verifying every part. */
export async function readMultipart(log: LogStructuredStore, seid: bigint, location: Location, parts: readonly Part[]): Promise<Uint8Array> {
  const out = new Uint8Array(location.sizeBytes);
  let offset = 0;
  // Read a few parts at once: the backend overlaps them.
  const window = 4;
  for (let first = 0; first < parts.length; first += window) {
    const batch = parts.slice(first, first + window);
    const bodies = await Promise.all(batch.map((part, i) => readPart(log, seid, part, first + i)));
    for (const body of bodies) {
      if (offset + body.length > out.length) throw new CorruptionError(`seid ${seid}: parts add up to more than its size`);
      out.set(body, offset);
      offset += body.length;
    }
  }
  if (offset !== out.length) throw new CorruptionError(`seid ${seid}: parts add up to ${offset} bytes, expected ${out.length}`);
  return out;
}
