/**
 * A run of a transaction's small writes and deletes appended in one reservation
 * (write-path.ts `tryAppendRun`): the records are the very bytes one-record appends make, at
 * consecutive padded addresses, each intact when read back from the file; a run never takes a
 * value that needs parts, never more than the open buffer's room, and never fewer than four
 * records. (What a run means after a crash is the torture's: its transactions hold up to 8 ops.)
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { LogStructuredStore } from "../../src/log/log.ts";
import { paddedRecordBytes, RECORD_HEADER_BYTES, RecordType, verifyRecord } from "../../src/store/format/records.ts";
import { partBytesFor, tryAppendRecord, tryAppendRun, type RunOp } from "../../src/store/write-path.ts";
import { fillPattern, scratchDir } from "../helpers.ts";

const BUFFER = 64 << 10;

function value(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  fillPattern(bytes, seed);
  return bytes;
}

function recordBytesOf(op: RunOp): number {
  return RECORD_HEADER_BYTES + (op.value?.length ?? 0);
}

async function readRecord(log: LogStructuredStore, address: number, lengthBytes: number): Promise<Uint8Array> {
  const held = await log.readHeld(address, lengthBytes);
  try {
    return held.bytes.slice();
  } finally {
    held.release();
  }
}

test("a run lands as one-record appends would: the same bytes, consecutive padded addresses, each record intact on disk", async () => {
  const { dir, cleanup } = scratchDir("write-run");
  const log = await LogStructuredStore.open(path.join(dir, "run.lss"), { bufferSize: BUFFER, segmentSize: 1 << 20 });
  try {
    const sizes = [0, 1, 7, 8, 9, 100, 255, 256, 1000, 4096, 3];
    const ops: RunOp[] = sizes.flatMap((size, i) => {
      const write: RunOp = { kind: "write", seid: BigInt(1000 + i), value: value(size, i + 1) };
      return i % 3 === 2 ? [write, { kind: "delete", seid: BigInt(5000 + i) }] : [write];
    });
    const addresses: number[] = [];
    const appended = tryAppendRun(log, 42, ops, 0, (op, address) => {
      expect(op).toBe(ops[addresses.length] as RunOp);
      addresses.push(address);
    });
    expect(appended).toBe(ops.length);
    for (let i = 1; i < ops.length; i++) {
      expect((addresses[i] as number) - (addresses[i - 1] as number)).toBe(paddedRecordBytes(recordBytesOf(ops[i - 1] as RunOp)));
    }
    // The same ops one record each, for comparison.
    const singles = ops.map((op) =>
      op.kind === "delete"
        ? (tryAppendRecord(log, RecordType.Delete, 42, op.seid, 0, new Uint8Array(0)) as number)
        : (tryAppendRecord(log, RecordType.Data, 42, op.seid, 0, op.value as Uint8Array) as number),
    );
    await log.flush();
    for (const [i, op] of ops.entries()) {
      const length = recordBytesOf(op);
      const fromRun = await readRecord(log, addresses[i] as number, length);
      const header = verifyRecord(fromRun, { type: op.kind === "delete" ? RecordType.Delete : RecordType.Data, seid: op.seid });
      expect(header.txId).toBe(42);
      expect(Buffer.compare(fromRun.subarray(RECORD_HEADER_BYTES), op.value ?? new Uint8Array(0))).toBe(0);
      expect(Buffer.compare(fromRun, await readRecord(log, singles[i] as number, length))).toBe(0);
    }
  } finally {
    await log.close();
    cleanup();
  }
});

test("a run stops before a value that needs parts, before the open buffer's room runs out, and is never under four records", async () => {
  const { dir, cleanup } = scratchDir("write-run-limits");
  const log = await LogStructuredStore.open(path.join(dir, "run.lss"), { bufferSize: BUFFER, segmentSize: 1 << 20 });
  try {
    const small = (i: number): RunOp => ({ kind: "write", seid: BigInt(1 + i), value: value(100, i) });
    const none = (): void => {
      throw new Error("nothing was appended: no callback expected");
    };
    const roomBefore = log.openRoomBytes;
    // Three records: the one-record path is as cheap, so nothing is appended.
    expect(tryAppendRun(log, 1, [small(0), small(1), small(2)], 0, none)).toBe(0);
    expect(log.openRoomBytes).toBe(roomBefore);
    // A value over a part's size ends the run before it.
    const big: RunOp = { kind: "write", seid: 99n, value: value(partBytesFor(log) + 1, 9) };
    const seen: bigint[] = [];
    expect(tryAppendRun(log, 1, [small(0), small(1), small(2), small(3), small(4), big, small(5)], 0, (op) => seen.push(op.seid))).toBe(5);
    expect(seen).toEqual([1n, 2n, 3n, 4n, 5n]);
    // ... and starting at it, the run is empty (the caller takes the multipart path).
    expect(tryAppendRun(log, 1, [big, small(0), small(1), small(2), small(3)], 0, none)).toBe(0);
    // The run takes what fits the open buffer's room, whole records only.
    const room = log.openRoomBytes;
    const perRecord = paddedRecordBytes(RECORD_HEADER_BYTES + 100);
    const many = Array.from({ length: Math.floor(room / perRecord) + 50 }, (_, i) => small(i));
    const fits = Math.floor(room / perRecord);
    expect(tryAppendRun(log, 1, many, 0, () => {})).toBe(fits);
    expect(log.openRoomBytes).toBe(room - fits * perRecord);
  } finally {
    await log.close();
    cleanup();
  }
});
