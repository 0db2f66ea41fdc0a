/**
 * The base's plan (src/backup/base-plan.ts) against a plan made the obvious way from the same
 * map: every live single-part record in its segment, ascending by address, with its own seid and
 * size; every multipart element with its parts; the byte total; and segment uses that run out
 * exactly when the copy is done with a segment.
 */
import { expect, test } from "bun:test";
import { flattenParts, makeBasePlan, SegmentUses, type PlanHeader } from "../../src/backup/base-plan.ts";
import { MappingTable } from "../../src/store/state/mapping.ts";
import { RECORD_HEADER_BYTES } from "../../src/store/format/records.ts";
import { rng } from "../helpers.ts";

const SEGMENT = 1 << 20;
const HEADER: PlanHeader = { baseId: "b", chunkBytes: 1 << 20, segmentSize: SEGMENT, transaction: 7, commitTime: null, spaces: [[0, 9]] };

function world(seed: number) {
  const next = rng(seed);
  const map = new MappingTable();
  const singles: Array<{ seid: bigint; address: number; size: number }> = [];
  const parts = new Map<bigint, { parts: Array<{ address: number; bodyBytes: number }> }>();
  const used = new Set<number>();
  const taken = new Set<number>();
  for (let i = 1; i <= 3_000; i++) {
    const seid = (BigInt(i % 3) << 32n) | BigInt(i);
    if (i % 50 === 0) {
      const list = Array.from({ length: 1 + (i % 5) }, () => ({ address: Math.floor(next() * 40 * SEGMENT), bodyBytes: 1 + Math.floor(next() * 100_000) }));
      for (const part of list) used.add(Math.floor(part.address / SEGMENT));
      parts.set(seid, { parts: list });
      map.set(seid, { address: Math.floor(next() * 40 * SEGMENT), sizeBytes: list.reduce((a, p) => a + p.bodyBytes, 0), multipart: true });
    } else {
      let address = Math.floor(next() * 30 * SEGMENT);
      // Records never share an address (the order within a segment is by address).
      while (taken.has(address)) address += 1;
      taken.add(address);
      const size = Math.floor(next() * 5_000);
      singles.push({ seid, address, size });
      used.add(Math.floor(address / SEGMENT));
      map.set(seid, { address, sizeBytes: size, multipart: false });
    }
  }
  return { map, singles, parts, used };
}

test("the plan holds every live record in its segment, ascending, with its seid and size, and the multipart elements' parts", async () => {
  const { map, singles, parts } = world(3);
  let ticks = 0;
  const plan = await makeBasePlan(HEADER, map, flattenParts(parts), { tick: async () => void ticks++ });
  expect(ticks).toBeGreaterThan(0);
  expect(plan.baseId).toBe("b");
  expect(plan.transaction).toBe(7);

  const expected = new Map<number, typeof singles>();
  for (const single of singles) {
    const seq = Math.floor(single.address / SEGMENT);
    expected.set(seq, [...(expected.get(seq) ?? []), single]);
  }
  expect(plan.segments.map((s) => s.seq)).toEqual([...expected.keys()].sort((a, b) => a - b));
  for (const segment of plan.segments) {
    const want = (expected.get(segment.seq) ?? []).sort((a, b) => a.address - b.address);
    expect(Array.from(segment.addresses)).toEqual(want.map((w) => w.address));
    expect(Array.from(segment.seids)).toEqual(want.map((w) => w.seid));
    expect(Array.from(segment.sizes)).toEqual(want.map((w) => w.size));
    expect(segment.liveBytes).toBe(want.reduce((a, w) => a + RECORD_HEADER_BYTES + w.size, 0));
  }
  expect(plan.multiparts.length).toBe(parts.size);
  for (const element of plan.multiparts) {
    const want = parts.get(element.seid)?.parts ?? [];
    expect(Array.from(element.addresses)).toEqual(want.map((p) => p.address));
    expect(Array.from(element.bodyBytes)).toEqual(want.map((p) => p.bodyBytes));
  }
  let total = 0;
  for (const single of singles) total += RECORD_HEADER_BYTES + single.size;
  for (const { parts: list } of parts.values()) for (const part of list) total += RECORD_HEADER_BYTES + part.bodyBytes;
  expect(plan.totalBytes).toBe(total);

  // The same plan without a yielder (as in the Worker), and from a table that crossed a structured clone.
  const transfer = map.detach();
  const again = await makeBasePlan(HEADER, MappingTable.attach(structuredClone(transfer, { transfer: [transfer.slots.buffer] })), flattenParts(parts));
  expect(again).toEqual(plan);
});

test("a segment too large for exact numeric sort keys is sorted by address all the same", async () => {
  const { map, singles } = world(5);
  // offset × count ≥ 2^53 here: the comparator sort takes over.
  const plan = await makeBasePlan({ ...HEADER, segmentSize: 2 ** 51 }, map, flattenParts(new Map()), undefined).catch((error: unknown) => error);
  // The world has multipart elements and no parts given: refused; without them, one segment in address order.
  expect(plan).toBeInstanceOf(Error);
  const plain = new MappingTable();
  for (const single of singles) plain.set(single.seid, { address: single.address, sizeBytes: single.size, multipart: false });
  const sorted = await makeBasePlan({ ...HEADER, segmentSize: 2 ** 51 }, plain, flattenParts(new Map()));
  expect(sorted.segments.length).toBe(1);
  const want = [...singles].sort((a, b) => a.address - b.address);
  expect(Array.from(sorted.segments[0]?.addresses ?? [])).toEqual(want.map((w) => w.address));
  expect(Array.from(sorted.segments[0]?.seids ?? [])).toEqual(want.map((w) => w.seid));
});

test("a multipart element whose parts are unknown is refused", async () => {
  const map = new MappingTable();
  map.set(5n, { address: 100, sizeBytes: 10, multipart: true });
  await expect(makeBasePlan(HEADER, map, flattenParts(new Map()))).rejects.toThrow("seid 5 is multipart but its parts are unknown");
});

test("segment uses: unused pinned segments at once, each used one exactly when its last use is released", async () => {
  const { map, parts, used } = world(4);
  const plan = await makeBasePlan(HEADER, map, flattenParts(parts));
  const pinned = Array.from({ length: 45 }, (_, i) => i);
  const uses = new SegmentUses(plan, pinned);
  expect(uses.unused().sort((a, b) => a - b)).toEqual(pinned.filter((s) => !used.has(s)));
  expect(uses.unused()).toEqual([]);

  // Release in the copy's order: each segment's single-part records once, then each part.
  const freed: number[] = [];
  for (const segment of plan.segments) freed.push(...uses.release([segment.seq]));
  for (const element of plan.multiparts) freed.push(...uses.release(Array.from(element.addresses, (a) => Math.floor(a / SEGMENT))));
  expect(freed.sort((a, b) => a - b)).toEqual([...used].sort((a, b) => a - b));
  expect(new Set(freed).size).toBe(freed.length);
  // Nothing is released twice, and unknown segments are ignored.
  expect(uses.release([...used, 999])).toEqual([]);

  // A segment with single-part records and a part is freed only by the later of the two.
  const shared = plan.multiparts.flatMap((e) => Array.from(e.addresses, (a) => Math.floor(a / SEGMENT))).find((s) => plan.segments.some((g) => g.seq === s));
  if (shared !== undefined) {
    const again = new SegmentUses(plan, pinned);
    expect(again.release([shared])).toEqual([]);
  }
});
