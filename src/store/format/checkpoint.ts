/**
 * The checkpoint blob: everything recovery needs so that it only replays the log written after
 * it. Written as Checkpoint records (chunks) through the log, then named by the root block.
 *
 * Layout (little-endian), version 1:
 * ```
 * u32 magic "BCKP" | u32 version | f64 lastTxId | f64 commits
 * u32 spaces  | u32 sutEntries | u32 segLive | u32 segFree | u32 fileSegments | u32 pad
 * f64 mapEntries
 * spaces × (u32 space, u32 pad, f64 next)
 * sutEntries × (f64 seq, f64 liveBytes)
 * segLive × (f64 seq, u32 index, u32 pad)
 * segFree × (u32 index)  (+ u32 pad if odd)
 * mapEntries × (u64 seid, f64 address (negative − 1 = multipart), f64 sizeBytes)
 * then for each multipart entry, in map order: u32 parts, u32 meta,
 *   parts × (f64 address, u32 bodyBytes, u32 pad), meta × (f64 address, u32 recordBytes, u32 pad)
 * ```
 * The part lists are in the checkpoint so that recovery reads no element data: a segment the
 * cleaner emptied before the checkpoint can be reused even if the checkpoint's map still points
 * into it (the relocation, replayed after the checkpoint, replaces those entries).
 *
 * @module
 */
import { CorruptionError } from "../../errors.ts";
import type { SegmentTableState } from "../../log/segments.ts";
import type { Location } from "../state/mapping.ts";
import type { Multipart } from "./extents.ts";

const MAGIC = 0x504b4342; // "BCKP"
const VERSION = 1;
const HEADER_BYTES = 48;
/** Byte offset of the mapping-entry count in a checkpoint blob's header. */
const MAP_COUNT_OFFSET = 44;

/** What a checkpoint holds. */
export interface CheckpointState {
  lastTxId: number;
  commits: number;
  spaces: Array<[number, number]>;
  sut: Array<[number, number]>;
  segments: SegmentTableState;
  map: Iterable<[bigint, Location]>;
  mapEntries: number;
  /** Part lists of the multipart elements. */
  parts: ReadonlyMap<bigint, Multipart>;
}

/** Decoded checkpoint; map entries are handed to `onEntry` to avoid building a big array. */
export interface DecodedCheckpoint {
  lastTxId: number;
  commits: number;
  spaces: Array<[number, number]>;
  sut: Array<[number, number]>;
  segments: SegmentTableState;
}

export function encodeCheckpoint(state: CheckpointState): Uint8Array {
  const freeWords = state.segments.free.length + (state.segments.free.length % 2);
  const bytes =
    HEADER_BYTES +
    state.spaces.length * 16 +
    state.sut.length * 16 +
    state.segments.live.length * 16 +
    freeWords * 4 +
    state.mapEntries * 24;
  let multipartBytes = 0;
  for (const multipart of state.parts.values()) multipartBytes += 8 + (multipart.parts.length + multipart.meta.length) * 16;
  const out = new Uint8Array(bytes + multipartBytes);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, VERSION, true);
  view.setFloat64(8, state.lastTxId, true);
  view.setFloat64(16, state.commits, true);
  view.setUint32(24, state.spaces.length, true);
  view.setUint32(28, state.sut.length, true);
  view.setUint32(32, state.segments.live.length, true);
  view.setUint32(36, state.segments.free.length, true);
  view.setUint32(40, state.segments.fileSegments, true);
  let at = HEADER_BYTES;
  for (const [space, next] of state.spaces) {
    view.setUint32(at, space, true);
    view.setFloat64(at + 8, next, true);
    at += 16;
  }
  for (const [seq, live] of state.sut) {
    view.setFloat64(at, seq, true);
    view.setFloat64(at + 8, live, true);
    at += 16;
  }
  for (const [seq, index] of state.segments.live) {
    view.setFloat64(at, seq, true);
    view.setUint32(at + 8, index, true);
    at += 16;
  }
  for (const index of state.segments.free) {
    view.setUint32(at, index, true);
    at += 4;
  }
  at = HEADER_BYTES + state.spaces.length * 16 + state.sut.length * 16 + state.segments.live.length * 16 + freeWords * 4;
  // Map entries last; the count goes in the header's last word pair (f64 at 40..48 would clash).
  let written = 0;
  const multiparts: Multipart[] = [];
  for (const [seid, location] of state.map) {
    view.setBigUint64(at, seid, true);
    view.setFloat64(at + 8, location.multipart ? -location.address - 1 : location.address, true);
    view.setFloat64(at + 16, location.sizeBytes, true);
    at += 24;
    written += 1;
    if (location.multipart) {
      const multipart = state.parts.get(seid);
      if (multipart === undefined) throw new Error(`checkpoint: multipart seid ${seid} has no part list`);
      multiparts.push(multipart);
    }
  }
  if (written !== state.mapEntries) throw new Error(`checkpoint map has ${written} entries, expected ${state.mapEntries}`);
  view.setUint32(MAP_COUNT_OFFSET, written, true);
  for (const multipart of multiparts) {
    view.setUint32(at, multipart.parts.length, true);
    view.setUint32(at + 4, multipart.meta.length, true);
    at += 8;
    for (const part of multipart.parts) {
      view.setFloat64(at, part.address, true);
      view.setUint32(at + 8, part.bodyBytes, true);
      at += 16;
    }
    for (const record of multipart.meta) {
      view.setFloat64(at, record.address, true);
      view.setUint32(at + 8, record.recordBytes, true);
      at += 16;
    }
  }
  if (at !== out.length) throw new Error(`checkpoint encoded ${at} bytes, expected ${out.length}`);
  return out;
}

/** Mapping entries a checkpoint blob holds (0 for a blob too short to say): to size the table first. */
export function checkpointMapCount(blob: Uint8Array): number {
  if (blob.length < HEADER_BYTES) return 0;
  return new DataView(blob.buffer, blob.byteOffset, blob.length).getUint32(MAP_COUNT_OFFSET, true);
}

/** Decode a checkpoint blob, handing each mapping entry to `onEntry`. */
export function decodeCheckpoint(
  blob: Uint8Array,
  onEntry: (seid: bigint, location: Location) => void,
  onMultipart: (seid: bigint, multipart: Multipart) => void,
): DecodedCheckpoint {
  if (blob.length < HEADER_BYTES) throw new CorruptionError(`checkpoint blob of ${blob.length} bytes is too short`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.length);
  if (view.getUint32(0, true) !== MAGIC) throw new CorruptionError("checkpoint blob has a bad magic number");
  const version = view.getUint32(4, true);
  if (version !== VERSION) throw new CorruptionError(`checkpoint version ${version} is not supported (expected ${VERSION})`);
  const spaceCount = view.getUint32(24, true);
  const sutCount = view.getUint32(28, true);
  const liveCount = view.getUint32(32, true);
  const freeCount = view.getUint32(36, true);
  const fileSegments = view.getUint32(40, true);
  const mapCount = view.getUint32(MAP_COUNT_OFFSET, true);
  const freeWords = freeCount + (freeCount % 2);
  const fixedBytes = HEADER_BYTES + spaceCount * 16 + sutCount * 16 + liveCount * 16 + freeWords * 4 + mapCount * 24;
  if (fixedBytes > blob.length) throw new CorruptionError(`checkpoint blob is ${blob.length} bytes, its header needs at least ${fixedBytes}`);
  let at = HEADER_BYTES;
  const spaces: Array<[number, number]> = [];
  for (let i = 0; i < spaceCount; i++, at += 16) spaces.push([view.getUint32(at, true), view.getFloat64(at + 8, true)]);
  const sut: Array<[number, number]> = [];
  for (let i = 0; i < sutCount; i++, at += 16) sut.push([view.getFloat64(at, true), view.getFloat64(at + 8, true)]);
  const live: Array<[number, number]> = [];
  for (let i = 0; i < liveCount; i++, at += 16) live.push([view.getFloat64(at, true), view.getUint32(at + 8, true)]);
  const free: number[] = [];
  for (let i = 0; i < freeCount; i++, at += 4) free.push(view.getUint32(at, true));
  at += (freeWords - freeCount) * 4;
  const multipartSeids: bigint[] = [];
  for (let i = 0; i < mapCount; i++, at += 24) {
    const stored = view.getFloat64(at + 8, true);
    const seid = view.getBigUint64(at, true);
    if (stored < 0) multipartSeids.push(seid);
    onEntry(seid, { address: stored < 0 ? -stored - 1 : stored, multipart: stored < 0, sizeBytes: view.getFloat64(at + 16, true) });
  }
  const need = (bytes: number) => {
    if (at + bytes > blob.length) throw new CorruptionError("checkpoint blob ends inside its part lists");
  };
  for (const seid of multipartSeids) {
    need(8);
    const partCount = view.getUint32(at, true);
    const metaCount = view.getUint32(at + 4, true);
    at += 8;
    need((partCount + metaCount) * 16);
    const parts = [];
    for (let i = 0; i < partCount; i++, at += 16) parts.push({ address: view.getFloat64(at, true), bodyBytes: view.getUint32(at + 8, true) });
    const meta = [];
    for (let i = 0; i < metaCount; i++, at += 16) meta.push({ address: view.getFloat64(at, true), recordBytes: view.getUint32(at + 8, true) });
    onMultipart(seid, { parts, meta });
  }
  if (at !== blob.length) throw new CorruptionError(`checkpoint blob has ${blob.length - at} bytes past its end`);
  return {
    lastTxId: view.getFloat64(8, true),
    commits: view.getFloat64(16, true),
    spaces,
    sut,
    segments: { live, free, fileSegments },
  };
}
