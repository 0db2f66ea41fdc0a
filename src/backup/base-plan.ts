/**
 * The plan of a full backup's base: from the copy of the map taken at the consistent point, which
 * live record is where (single-part elements grouped by segment, ascending by address; multipart
 * elements with their parts), and how many uses each pinned segment has, so it can be unpinned
 * as soon as the copy is done with it.
 *
 * **Made where the copy runs.** A base copied in a Worker (base-thread.ts) is planned there too:
 * the store's thread only takes the point (a memcpy of the map's slot array under the turn) and
 * posts that array in the transfer list. Planning on the store's thread took 65–80 ms of it per
 * 60 k elements (paced, but in stretches of up to 13 ms), and posting the finished plan (a few
 * typed arrays per segment) another 19–31 ms in one piece: the writers' commits waited behind
 * both (`bun bench/backup.ts`, p99 during a backup). The walk reads the slot array directly
 * (MappingTable.forEachLocation): no BigInt, tuple or Location object per element.
 *
 * @module
 */
import { seidFromHalves, type MappingTable } from "../store/state/mapping.ts";
import type { Part } from "../store/format/extents.ts";
import { RECORD_HEADER_BYTES } from "../store/format/records.ts";

/** The live single-part records of one segment, ascending by address (typed arrays: they cross to a Worker in one copy). */
export interface PlanSegment {
  readonly seq: number;
  readonly seids: BigUint64Array;
  readonly addresses: Float64Array;
  readonly sizes: Float64Array;
  /** Bytes of its live records, headers included. */
  readonly liveBytes: number;
}

/** A multipart element: its parts' record addresses and body sizes, in order. */
export interface PlanMultipart {
  readonly seid: bigint;
  readonly addresses: Float64Array;
  readonly bodyBytes: Float64Array;
}

/** What the base holds and where each record is. */
export interface BasePlan {
  readonly baseId: string;
  readonly chunkBytes: number;
  readonly segmentSize: number;
  /** The transaction the base is the state at, and its commit time (ms) when known. */
  readonly transaction: number;
  readonly commitTime: number | null;
  /** The seid spaces' high-water marks at the point. */
  readonly spaces: Array<[number, number]>;
  readonly segments: PlanSegment[];
  readonly multiparts: PlanMultipart[];
  /** Bytes of records to copy (headers included; the base pads each to 8 bytes). */
  readonly totalBytes: number;
}

/** The parts of every multipart element at the point, flat (so they cross to a Worker as four arrays). */
export interface PartsTable {
  readonly seids: BigUint64Array<ArrayBuffer>;
  /** Parts per element, in the order of `seids`. */
  readonly counts: Uint32Array<ArrayBuffer>;
  /** Every element's parts, one after another. */
  readonly addresses: Float64Array<ArrayBuffer>;
  readonly bodyBytes: Float64Array<ArrayBuffer>;
}

/** The fixed facts of a plan (the rest comes from the map and the parts). */
export type PlanHeader = Omit<BasePlan, "segments" | "multiparts" | "totalBytes">;

/** Flatten the store's multipart index (a copy of it, taken at the point). */
export function flattenParts(parts: ReadonlyMap<bigint, { readonly parts: readonly Part[] }>): PartsTable {
  let total = 0;
  for (const element of parts.values()) total += element.parts.length;
  const table: PartsTable = {
    seids: new BigUint64Array(parts.size),
    counts: new Uint32Array(parts.size),
    addresses: new Float64Array(total),
    bodyBytes: new Float64Array(total),
  };
  let e = 0;
  let p = 0;
  for (const [seid, element] of parts) {
    table.seids[e] = seid;
    table.counts[e] = element.parts.length;
    e += 1;
    for (const part of element.parts) {
      table.addresses[p] = part.address;
      table.bodyBytes[p] = part.bodyBytes;
      p += 1;
    }
  }
  return table;
}

/** The buffers of a {@link PartsTable}, for a transfer list. */
export function partsBuffers(parts: PartsTable): ArrayBuffer[] {
  return [parts.seids.buffer, parts.counts.buffer, parts.addresses.buffer, parts.bodyBytes.buffer];
}

/** Something that yields to the event loop now and then (the store's thread must; a Worker need not). */
export interface Yielder {
  tick(): Promise<void>;
}

/** Entries (or map slots) between checks of the yielder. */
const ENTRIES_PER_TICK = 8192;

/** Walk the whole map, checking the yielder between ranges of slots. */
async function walk(map: MappingTable, yielder: Yielder | undefined, visit: Parameters<MappingTable["forEachLocation"]>[0]): Promise<void> {
  if (yielder === undefined) return map.forEachLocation(visit);
  for (let from = 0; from < map.slotCount; from += ENTRIES_PER_TICK) {
    map.forEachLocation(visit, from, from + ENTRIES_PER_TICK);
    await yielder.tick();
  }
}


/**
 * Make the plan: a counting sort of the map's single-part records by segment into three flat
 * arrays (each segment's records are a slice of them), then each segment's slice sorted by
 * address, so the copy reads it front to back. The seid is written as its two halves straight
 * into the BigUint64Array's words (no BigInt per record), and a segment is sorted by numeric keys
 * (`offset × count + index`) without a comparator: made per segment with comparator sorts and
 * fresh arrays, a million records took 290–460 ms; this way 205–270 (a throwaway benchmark over
 * a synthetic map, 5 runs each; most of what is left is faulting in the fresh output arrays).
 *
 * @throws Error when the map names a multipart element whose parts are unknown (an internal bug)
 */
export async function makeBasePlan(header: PlanHeader, map: MappingTable, parts: PartsTable, yielder?: Yielder): Promise<BasePlan> {
  const segmentSize = header.segmentSize;
  // Pass 1: records per segment, and the multipart elements' seids.
  const counts = new Map<number, number>();
  const multipartSeids: bigint[] = [];
  let singles = 0;
  await walk(map, yielder, (lo, hi, address, _size, multipart) => {
    if (multipart) {
      multipartSeids.push(seidFromHalves(lo, hi));
      return;
    }
    const seq = Math.floor(address / segmentSize);
    counts.set(seq, (counts.get(seq) ?? 0) + 1);
    singles += 1;
  });

  // Each segment's slice, in ascending segment order.
  const order = [...counts.keys()].sort((a, b) => a - b);
  const cursor = new Map<number, number>();
  const starts: number[] = [];
  let largest = 0;
  for (let i = 0, at = 0; i < order.length; i++) {
    const count = counts.get(order[i] as number) as number;
    cursor.set(order[i] as number, at);
    starts.push(at);
    at += count;
    largest = Math.max(largest, count);
  }

  // Pass 2: every record into its segment's slice.
  const seids = new BigUint64Array(singles);
  const halves = new Uint32Array(seids.buffer);
  const addresses = new Float64Array(singles);
  const sizes = new Float64Array(singles);
  let totalBytes = 0;
  await walk(map, yielder, (lo, hi, address, size, multipart) => {
    if (multipart) return;
    const seq = Math.floor(address / segmentSize);
    const at = cursor.get(seq) as number;
    cursor.set(seq, at + 1);
    // Little-endian words: the low half first (the same split MappingTable uses).
    halves[2 * at] = lo;
    halves[2 * at + 1] = hi;
    addresses[at] = address;
    sizes[at] = size;
    totalBytes += RECORD_HEADER_BYTES + size;
  });

  // Each slice sorted by address, through reused scratch arrays.
  const keys = new Float64Array(largest);
  const oldHalves = new Uint32Array(2 * largest);
  const oldAddresses = new Float64Array(largest);
  const oldSizes = new Float64Array(largest);
  const segments: PlanSegment[] = [];
  let sinceTick = 0;
  for (let i = 0; i < order.length; i++) {
    const seq = order[i] as number;
    const from = starts[i] as number;
    const count = counts.get(seq) as number;
    const to = from + count;
    const segmentStart = seq * segmentSize;
    const slice = keys.subarray(0, count);
    // offset < 2^31 (MAX_SEGMENT_BYTES), so the key is exact while offset × count < 2^53.
    if (segmentSize * count < Number.MAX_SAFE_INTEGER) {
      for (let k = 0; k < count; k++) slice[k] = ((addresses[from + k] as number) - segmentStart) * count + k;
      slice.sort();
      for (let k = 0; k < count; k++) slice[k] = (slice[k] as number) % count;
    } else {
      for (let k = 0; k < count; k++) slice[k] = k;
      slice.sort((x, y) => (addresses[from + x] as number) - (addresses[from + y] as number));
    }
    oldHalves.set(halves.subarray(2 * from, 2 * to));
    oldAddresses.set(addresses.subarray(from, to));
    oldSizes.set(sizes.subarray(from, to));
    let liveBytes = 0;
    for (let k = 0; k < count; k++) {
      const was = slice[k] as number;
      halves[2 * (from + k)] = oldHalves[2 * was] as number;
      halves[2 * (from + k) + 1] = oldHalves[2 * was + 1] as number;
      addresses[from + k] = oldAddresses[was] as number;
      const size = oldSizes[was] as number;
      sizes[from + k] = size;
      liveBytes += RECORD_HEADER_BYTES + size;
    }
    segments.push({ seq, seids: seids.subarray(from, to), addresses: addresses.subarray(from, to), sizes: sizes.subarray(from, to), liveBytes });
    sinceTick += count;
    if (yielder !== undefined && sinceTick >= ENTRIES_PER_TICK) {
      sinceTick = 0;
      await yielder.tick();
    }
  }

  // The multipart elements, with their parts.
  const partsOf = new Map<bigint, number>();
  const firstPart = new Float64Array(parts.seids.length);
  for (let e = 0, p = 0; e < parts.seids.length; p += parts.counts[e] as number, e++) {
    partsOf.set(parts.seids[e] as bigint, e);
    firstPart[e] = p;
  }
  const multiparts: PlanMultipart[] = [];
  for (const seid of multipartSeids) {
    const e = partsOf.get(seid);
    if (e === undefined) throw new Error(`seid ${seid} is multipart but its parts are unknown`);
    const from = firstPart[e] as number;
    const to = from + (parts.counts[e] as number);
    const element: PlanMultipart = { seid, addresses: parts.addresses.slice(from, to), bodyBytes: parts.bodyBytes.slice(from, to) };
    for (const body of element.bodyBytes) totalBytes += RECORD_HEADER_BYTES + body;
    multiparts.push(element);
  }
  return { ...header, segments, multiparts, totalBytes };
}

/**
 * How many uses each pinned segment still has: one for all of its single-part records, one per
 * multipart part in it. {@link release} returns the segments that just ran out, for the caller
 * to unpin; a pinned segment the plan never uses is {@link unused} from the start.
 */
export class SegmentUses {
  private readonly uses = new Map<number, number>();
  private readonly idle: number[] = [];

  constructor(plan: BasePlan, pinned: Iterable<number>) {
    const segmentSize = plan.segmentSize;
    for (const segment of plan.segments) this.add(segment.seq);
    for (const element of plan.multiparts) for (const address of element.addresses) this.add(Math.floor(address / segmentSize));
    for (const seq of pinned) if (!this.uses.has(seq)) this.idle.push(seq);
  }

  private add(seq: number): void {
    this.uses.set(seq, (this.uses.get(seq) ?? 0) + 1);
  }

  /** Pinned segments the plan does not read. */
  unused(): number[] {
    return this.idle.splice(0);
  }

  /** One use of each of `seqs` is done; returns those with none left. */
  release(seqs: Iterable<number>): number[] {
    const done: number[] = [];
    for (const seq of seqs) {
      const left = (this.uses.get(seq) ?? 0) - 1;
      if (left > 0) {
        this.uses.set(seq, left);
      } else if (this.uses.delete(seq)) {
        done.push(seq);
      }
    }
    return done;
  }
}
