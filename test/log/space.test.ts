/**
 * The rarer ways of the log's writer through a file that grows as needed (src/log/space.ts),
 * each followed by a power cut and a reopen that must find every durable payload:
 *
 * - **a free segment renamed as successor**: the writer is in the file's last segment, which the
 *   file holds only in part, and its successor is a slot the file does not hold yet; segments
 *   given back become free, and the writer names one of them instead, enters it, and the file
 *   does not grow;
 * - **the rest of a segment skipped**: the file cannot grow (ENOSPC at every fallocate), so the
 *   writer leaves the part of its segment the file does not hold and goes on in the successor;
 * - **a rename undone**: the free segment was named only after the segment's last unit, so no
 *   unit names it, and the writer enters the successor the last unit named (recovery follows
 *   unit headers, so entering the other would lose what is written there);
 * - **a successor far past the file's end**: the file was cut back to the writer's segment (the
 *   cleaner's shrink), leaving free slots it does not hold between its end and the successor;
 *   growing must reach the successor (the file always grows from its end), not stop in the free
 *   slots before it, which no unit can reach first.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { openLog, type LogOptions, type LogStructuredStore } from "../../src/log/log.ts";
import { LogGeometry, MIN_UNIT_ROOM_BYTES } from "../../src/log/address.ts";
import type { SegmentPrewriter } from "../../src/log/prewrite.ts";
import { SegmentSpace } from "../../src/log/space.ts";
import { ROOT_REGION_BYTES } from "../../src/log/format.ts";
import { ENOSPC, FaultBackend } from "../../testing/fault-backend.ts";
import { scratchDir } from "../helpers.ts";
import { append, expectIntact, KiB, payload, type Written } from "./util.ts";

const SEGMENT = 256 * KiB;
const OPTIONS: LogOptions = { segmentSize: SEGMENT, bufferSize: 16 * KiB };

const scratch = scratchDir("log-space");
afterAll(() => scratch.cleanup());

function faultBackend(seed: number): FaultBackend {
  return new FaultBackend({ seed, syncIo: true, simulateSync: true, direct: false });
}

/** Append payloads of `length` bytes, one unit each, until `until()` holds (at most `max`). */
async function writeUntil(log: LogStructuredStore, written: Written[], length: number, until: () => boolean, max = 2000): Promise<void> {
  for (let i = 0; i < max && !until(); i++) {
    const seed = written.length + 1;
    const reservation = await append(log, payload(length, seed));
    written.push({ address: reservation.address, length, seed });
    await log.flush();
  }
  expect(until()).toBe(true);
}

/** Give back every segment before the tail's, then anchor a checkpoint position so they go free. */
async function freeSegmentsBehind(log: LogStructuredStore): Promise<void> {
  for (const seq of log.liveSegmentSeqs()) if (seq < log.tailSegmentSeq) log.releaseSegment(seq);
  // Free once the log is durable past where they were given back, and behind a checkpoint.
  await append(log, payload(100, 1));
  await log.flush();
  const position = log.tailPosition();
  await log.writeRoot({ checkpoint: { start: position, endAddress: position.address }, replayFrom: position });
  expect(log.freeSegments).toBeGreaterThan(0);
}

/** Power cut (everything flushed is durable), then a reopen on a clean backend: `written` reads back. */
async function cutAndReopen(log: LogStructuredStore, fault: FaultBackend, file: string, written: readonly Written[]): Promise<void> {
  await log.flush();
  fault.cutPower();
  await fault.powerCut();
  await log.close().catch(() => {});
  fault.close();
  const clean = faultBackend(99);
  try {
    const again = await openLog(file, OPTIONS, clean);
    try {
      await expectIntact(again, written);
      // And it goes on: one more payload, read back.
      const more = await append(again, payload(3000, 7777));
      await again.flush();
      await expectIntact(again, [{ address: more.address, length: 3000, seed: 7777 }]);
    } finally {
      await again.close();
    }
  } finally {
    clean.close();
  }
}

/** Bytes of physical segment `index` the file holds. */
function heldOf(file: string, index: number): number {
  return Math.max(0, Math.min(SEGMENT, fs.statSync(file).size - (ROOT_REGION_BYTES + index * SEGMENT)));
}

describe("the log's writer in a file that grows as needed", () => {
  test("a free segment is named as successor instead of one the file does not hold; the file does not grow; a power cut loses nothing durable", async () => {
    const file = path.join(scratch.dir, "rename.lss");
    const fault = faultBackend(1);
    const log = await openLog(file, OPTIONS, fault);
    const written: Written[] = [];
    // Into segment 3, which the file holds only in part; its successor (a new slot) not at all.
    await writeUntil(log, written, 6000, () => log.tailSegmentSeq === 3 && log.appendedEnd > 3 * SEGMENT + 40 * KiB);
    expect(heldOf(file, 3)).toBeLessThan(SEGMENT);
    expect(heldOf(file, 4)).toBe(0);
    await freeSegmentsBehind(log);
    const kept = written.filter((w) => w.address >= log.rootBlock.replayFrom.address);
    const sizeBefore = fs.statSync(file).size;
    // On into the next segment: the writer takes a free one (lowest: 0), not slot 4.
    const from = written.length;
    await writeUntil(log, written, 6000, () => log.tailSegmentSeq === 5);
    expect(log.stats().space.successorsRenamed).toBeGreaterThanOrEqual(1);
    expect(heldOf(file, 4)).toBe(0);
    // Segment 3 was grown to its end, and nothing past it.
    expect(fs.statSync(file).size).toBeLessThanOrEqual(Math.max(sizeBefore, ROOT_REGION_BYTES + 4 * SEGMENT));
    await cutAndReopen(log, fault, file, [...kept, ...written.slice(from)]);
  });

  test("when the file cannot grow, the writer skips the part of its segment the file does not hold and goes on in the successor", async () => {
    const file = path.join(scratch.dir, "skip.lss");
    const fault = faultBackend(2);
    const log = await openLog(file, OPTIONS, fault);
    const written: Written[] = [];
    await writeUntil(log, written, 6000, () => log.tailSegmentSeq === 2 && log.appendedEnd > 2 * SEGMENT + 8 * KiB);
    await freeSegmentsBehind(log);
    const kept = written.filter((w) => w.address >= log.rootBlock.replayFrom.address);
    // The disk is full from now on.
    fault.injectError({ nth: 1, errno: ENOSPC, sticky: true, sites: ["allocateSpace"] });
    const size = fs.statSync(file).size;
    expect(heldOf(file, 2)).toBeLessThan(SEGMENT);
    const from = written.length;
    await writeUntil(log, written, 6000, () => log.tailSegmentSeq === 3 && log.appendedEnd > 3 * SEGMENT + 20 * KiB);
    expect(fault.counts.injectedErrors).toBeGreaterThan(0);
    expect(log.stats().space.segmentsSkipped).toBeGreaterThanOrEqual(1);
    expect(fs.statSync(file).size).toBe(size);
    // What follows the skip is the free segment the writer went on in, read back through the skip.
    await cutAndReopen(log, fault, file, [...kept, ...written.slice(from)]);
  });

  test("a rename no unit names is undone: the writer enters the successor the segment's last unit named", async () => {
    const file = path.join(scratch.dir, "undo.lss");
    const fault = faultBackend(3);
    const log = await openLog(file, OPTIONS, fault);
    const written: Written[] = [];
    // Segment 2, with less than a buffer left in it: the open buffer's room ends at the segment's end.
    await writeUntil(log, written, 6000, () => log.tailSegmentSeq === 2 && 3 * SEGMENT - log.appendedEnd < 16 * KiB && 3 * SEGMENT - log.appendedEnd > 8 * KiB);
    await freeSegmentsBehind(log);
    const kept = written.filter((w) => w.address >= log.rootBlock.replayFrom.address);
    // Bigger than what is left of the segment: checking its room names a free successor, then it
    // does not fit, the segment ends with no unit naming that one, and the writer moves on.
    const from = written.length;
    const big = 12 * KiB;
    const reservation = await append(log, payload(big, 5000));
    written.push({ address: reservation.address, length: big, seed: 5000 });
    await log.flush();
    expect(log.tailSegmentSeq).toBe(3);
    const counters = log.stats().space;
    expect(counters.successorsRenamed).toBeGreaterThanOrEqual(1);
    expect(counters.renamesUndone).toBeGreaterThanOrEqual(1);
    await writeUntil(log, written, 6000, () => log.appendedEnd > 3 * SEGMENT + 30 * KiB);
    await cutAndReopen(log, fault, file, [...kept, ...written.slice(from)]);
  });
});

describe("growing the file for room", () => {
  /**
   * The state a power-cut torture run found (NoSpaceError "the file cannot grow" for a
   * transaction, with no fault): the writer in slot 0 near its segment's end, its successor slot
   * 40, and slots 1-39 free but cut off the file by the cleaner's shrink (it keeps the table's
   * slots up to the successor); the store's full-disk reserve (320 KiB) lies past the segment.
   * `named`: a unit of the writer's segment names the successor (the position is mid-segment),
   * so it may be renamed to a free slot; else (at the segment's start) it may not.
   */
  function farSuccessor(name: string, named: boolean): { space: SegmentSpace; file: string; done: () => void } {
    const file = path.join(scratch.dir, name);
    const backend = faultBackend(4);
    const handle = backend.openFile(file, { create: true });
    backend.allocateSpace(handle, 0, ROOT_REGION_BYTES + SEGMENT);
    const geometry = new LogGeometry(SEGMENT);
    const prewriter = { onFreshRange: () => {}, overlaps: () => false, zeroSegment: () => {} } as unknown as SegmentPrewriter;
    const space = new SegmentSpace(backend, handle, geometry, prewriter, Number.MAX_SAFE_INTEGER);
    space.restore({ live: [], free: Array.from({ length: 39 }, (_, i) => i + 1), fileSegments: 41 });
    const start = geometry.segmentStart(8);
    const at = named ? start + 4 * KiB : start;
    space.startAt({ address: at, segmentIndex: 0, prevEnd: at, nextSegmentIndex: 40 }, true);
    space.attachWriter(() => start + SEGMENT - 32 * KiB);
    expect(space.successorIndex).toBe(40);
    expect(space.allocatedIn(1)).toBe(0);
    space.keepReserve(() => ({ upkeepBytes: 320 * KiB, deleteBytes: 0 }));
    return {
      space,
      file,
      done: () => {
        expect(backend.counts.injectedErrors).toBe(0);
        backend.closeFile(handle);
        backend.close();
      },
    };
  }

  test("the successor lies past free slots the file does not hold and cannot be renamed: growth reaches it, and a user write that fits gets its room", () => {
    const { space, file, done } = farSuccessor("far-successor.lss", false);
    // Before the fix, growing for that room stopped at slot 1 (free), where growth adds no room
    // while the successor cannot take a unit; four rounds later (a few hundred KiB, not the
    // 9.75 MiB to the successor) it gave up, and this threw.
    space.assertRoomFor("write", 6000);
    expect(space.roomBytes).toBeGreaterThanOrEqual(320 * KiB + 6000);
    expect(space.successorIndex).toBe(40);
    expect(space.allocatedIn(40)).toBeGreaterThanOrEqual(MIN_UNIT_ROOM_BYTES);
    expect(fs.statSync(file).size).toBe(space.allocatedBytes);
    done();
  });

  test("…and when a unit names it, the successor is renamed to the lowest free slot the file grows into, not grown to", () => {
    const { space, file, done } = farSuccessor("far-successor-named.lss", true);
    space.assertRoomFor("write", 6000);
    expect(space.roomBytes).toBeGreaterThanOrEqual(320 * KiB + 6000);
    expect(space.successorIndex).toBe(1);
    expect(space.allocatedIn(40)).toBe(0);
    expect(fs.statSync(file).size).toBeLessThanOrEqual(ROOT_REGION_BYTES + 3 * SEGMENT);
    expect(fs.statSync(file).size).toBe(space.allocatedBytes);
    done();
  });
});
