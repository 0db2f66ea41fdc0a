/**
 * The base stream (src/backup/base.ts): what BaseWriter writes, readBase reads back exactly,
 * whatever sizes the bytes arrive in — records cut anywhere, headers included, across pieces of
 * 1 byte to whole chunks — and damage is refused naming the piece where the record starts.
 */
import { expect, test } from "bun:test";
import { BaseWriter, readBase, type BaseEvent } from "../../src/backup/base.ts";
import { BackupCorruptionError } from "../../src/errors.ts";
import { FLAG_PART } from "../../src/store/format/extents.ts";
import { RECORD_HEADER_BYTES, RecordType, sealRecord } from "../../src/store/format/records.ts";
import { rng } from "../helpers.ts";

/** A Data record as the log holds it: a whole element, or part `part` of one. */
function sealedRecord(seid: bigint, body: Uint8Array, part?: number): Uint8Array {
  const raw = new Uint8Array(RECORD_HEADER_BYTES + body.length);
  raw.set(body, RECORD_HEADER_BYTES);
  sealRecord(raw, RecordType.Data, 7, seid, part ?? 0, part === undefined ? 0 : FLAG_PART);
  return raw;
}

/** A base of `n` elements of 0..5000 bytes and one multipart element, as its chunks' bytes. */
async function makeBase(n: number): Promise<{ stream: Uint8Array; elements: Map<bigint, Uint8Array>; parts: Uint8Array[] }> {
  const next = rng(9);
  const chunks: Uint8Array[] = [];
  const writer = new BaseWriter(64 << 10, async (_index, pieces) => {
    chunks.push(Buffer.concat(pieces.map((p) => Buffer.from(p))));
  });
  writer.spaces([[0, n + 10]]);
  const elements = new Map<bigint, Uint8Array>();
  for (let i = 1; i <= n; i++) {
    const value = new Uint8Array(Math.floor(next() * 5000));
    for (let k = 0; k < value.length; k++) value[k] = (i * 31 + k) & 0xff;
    elements.set(BigInt(i), value);
    writer.logRecord(sealedRecord(BigInt(i), value), true);
    await writer.drain();
  }
  const parts = [new Uint8Array(70_000).fill(1), new Uint8Array(3).fill(2), new Uint8Array(40_000).fill(3)];
  parts.forEach((part, index) => writer.logRecord(sealedRecord(999_999n, part, index), false));
  writer.endMultipart(999_999n, parts.map((p) => p.length));
  await writer.finish(1234, 1_700_000_000_000);
  return { stream: Buffer.concat(chunks), elements, parts };
}

async function* inPieces(stream: Uint8Array, size: number): AsyncGenerator<{ name: string; bytes: Uint8Array }> {
  for (let at = 0, i = 0; at < stream.length; at += size, i++) yield { name: `piece-${i}`, bytes: stream.slice(at, at + size) };
}

async function readAll(source: AsyncIterable<{ name: string; bytes: Uint8Array }>): Promise<BaseEvent[]> {
  const events: BaseEvent[] = [];
  // Element values are views valid until the next event: copy them, as a consumer must.
  for await (const event of readBase(source)) events.push(event.kind === "element" ? { ...event, value: event.value.slice() } : event);
  return events;
}

test("the base reads back exactly in pieces of any size, records and headers cut anywhere", async () => {
  const { stream, elements, parts } = await makeBase(300);
  for (const size of [1, 7, 31, 32, 33, 1000, 4093, 65_536, stream.length]) {
    // One-byte pieces over the whole stream would take long: the first 60 KiB of it, then the rest whole.
    const source = size === 1 ? (async function* () {
      yield* inPieces(stream.subarray(0, 60_000), 1);
      yield { name: "rest", bytes: stream.slice(60_000) };
    })() : inPieces(stream, size);
    const events = await readAll(source);
    expect(events[0]).toEqual({ kind: "spaces", entries: [[0, 310]] });
    const got = events.filter((e) => e.kind === "element");
    expect(got.length).toBe(elements.size);
    for (const e of got) if (e.kind === "element") expect(Buffer.from(e.value).equals(Buffer.from(elements.get(e.seid) as Uint8Array))).toBe(true);
    const partEvents = events.filter((e) => e.kind === "part");
    expect(partEvents.map((e) => (e.kind === "part" ? e.body : undefined))).toEqual(parts);
    expect(events.at(-2)).toEqual({ kind: "multipart-end", seid: 999_999n, parts: 3, sizeBytes: 110_003 });
    expect(events.at(-1)).toEqual({ kind: "end", transaction: 1234, commitTime: 1_700_000_000_000, elements: 301 });
  }
});

test("a flipped byte in a record cut across pieces is refused, naming the piece the record starts in", async () => {
  const { stream } = await makeBase(50);
  const size = 1000;
  // The record that crosses the boundary at 5 × size (records are padded to 8 bytes).
  let start = 0;
  for (;;) {
    const length = Math.ceil(new DataView(stream.buffer, stream.byteOffset + start, 4).getUint32(0, true) / 8) * 8;
    if (start + length > 5 * size) break;
    start += length;
  }
  expect(start).toBeLessThan(5 * size);
  const damaged = stream.slice();
  damaged[5 * size + 1] = (damaged[5 * size + 1] as number) ^ 0xff;
  const error = await readAll(inPieces(damaged, size)).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(BackupCorruptionError);
  expect((error as Error).message).toContain(`backup base piece-${Math.floor(start / size)}:`);

  // Cut short inside a record: refused at the end.
  const cut = stream.slice(0, stream.length - 20_000);
  await expect(readAll(inPieces(cut, 4096))).rejects.toBeInstanceOf(BackupCorruptionError);
});
