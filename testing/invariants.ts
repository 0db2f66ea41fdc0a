/**
 * The store's in-memory invariants, for tests and torture runs (not shipped): the segment
 * utilisation table equals what the mapping table implies, and every location lies in a live
 * segment. Reads the store through `storeInternals`, the seam the package does not export.
 *
 * @module
 */
import { paddedRecordBytes, RECORD_HEADER_BYTES } from "../src/store/format/records.ts";
import { storeInternals, type Store } from "../src/store/store.ts";

/** The problems found (empty when every invariant holds). */
export function checkInvariants(store: Store): string[] {
  const { core } = storeInternals(store);
  const { log } = core;
  const problems: string[] = [];
  const expected = new Map<number, number>();
  const count = (address: number, bytes: number, what: string) => {
    const seq = log.segmentSeqOf(address);
    if (!log.isLiveSegment(seq)) problems.push(`${what} at ${address} lies in segment ${seq}, which is not live`);
    expected.set(seq, (expected.get(seq) ?? 0) + bytes);
  };
  for (const [seid, location] of core.map.entries()) {
    if (!location.multipart) {
      count(location.address, paddedRecordBytes(RECORD_HEADER_BYTES + location.sizeBytes), `seid ${seid}`);
      continue;
    }
    const multipart = core.parts.get(seid);
    if (multipart === undefined) {
      problems.push(`seid ${seid} is multipart without a part list`);
      continue;
    }
    for (const part of multipart.parts) count(part.address, paddedRecordBytes(RECORD_HEADER_BYTES + part.bodyBytes), `seid ${seid} part`);
    for (const record of multipart.meta) count(record.address, record.recordBytes, `seid ${seid} extents`);
  }
  const actual = new Map(core.sut.entries());
  for (const seq of new Set([...expected.keys(), ...actual.keys()])) {
    if ((expected.get(seq) ?? 0) !== (actual.get(seq) ?? 0)) {
      problems.push(`segment ${seq}: utilisation table says ${actual.get(seq) ?? 0} live bytes, the mapping table implies ${expected.get(seq) ?? 0}`);
    }
  }
  return problems;
}
