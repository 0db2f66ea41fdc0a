/**
 * Crash recovery of the log: a writer stopped without close (SIGKILL of a child process, or an
 * in-process crash that drops the log object), optionally followed by damage to the file
 * (truncation inside the last units, zeroed 4 KiB blocks), then reopen.
 *
 * Checked: the reopened log recovers exactly the intact prefix, every payload below the reopened
 * stableAddress reads back intact, every payload whose flush() had resolved is in that prefix,
 * and new appends after reopen work and survive another reopen (never chaining into stale units
 * left past the recovered tail).
 */
import { describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { LogStructuredStore, type LogOptions, type WriteMode } from "../../src/log/log.ts";
import { LogGeometry } from "../../src/log/address.ts";
import { BACKENDS, rng, scratchDir } from "../helpers.ts";
import {
  append,
  closeRecorded,
  crashRecorded,
  expectIntact,
  KiB,
  openRecorded,
  payload,
  type Written,
} from "./util.ts";

const BUFFER = 16 * KiB;
const SEGMENT = 256 * KiB;
const WRITER = path.join(import.meta.dir, "crash-writer.ts");

interface UnitOnDisk {
  address: number;
  prevEnd: number;
  end: number;
  fileOffset: number;
  fileBytes: number;
}

/** Walk the log read-only (nothing is written): its intact units and where the walk ended. */
async function listUnits(file: string, io: "portable" | "uring"): Promise<{ units: UnitOnDisk[]; end: number }> {
  const log = await LogStructuredStore.open(file, { io, readOnly: true, deferRecovery: true, bufferSize: BUFFER });
  try {
    const units: UnitOnDisk[] = [];
    await log.recover(undefined, (unit) => {
      const fileBytes = unit.next.prevEnd - unit.header.address;
      units.push({
        address: unit.header.address,
        prevEnd: unit.header.prevEnd,
        end: unit.next.prevEnd,
        fileOffset: new LogGeometry(log.segmentSize).physicalOffset(unit.header.segmentIndex, unit.header.address),
        fileBytes,
      });
    });
    return { units, end: log.stableAddress };
  } finally {
    await log.close();
  }
}

/**
 * Run the crash writer in a child process until it has reported `flushes` completed flushes and
 * some appends after the last one, then SIGKILL it. Returns what it reported.
 */
async function runAndKill(
  file: string,
  io: string,
  seed: number,
  writeMode: WriteMode,
  flushes: number,
): Promise<{ written: Written[]; durable: number }> {
  const child = Bun.spawn([process.execPath, WRITER, file, io, String(seed), writeMode], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const written: Written[] = [];
  let durable = 0;
  let flushesSeen = 0;
  let appendsAfterFlush = 0;
  let killed = false;
  const decoder = new TextDecoder();
  let pending = "";
  const reader = child.stdout.getReader();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      newline = pending.indexOf("\n");
      const [kind, a, b, c] = line.split(" ");
      if (kind === "a") {
        written.push({ address: Number(a), length: Number(b), seed: Number(c) });
        if (flushesSeen > 0) appendsAfterFlush += 1;
      } else if (kind === "d") {
        durable = Number(a);
        flushesSeen += 1;
        appendsAfterFlush = 0;
      }
    }
    if (!killed && ((flushesSeen >= flushes && appendsAfterFlush >= 20) || Date.now() > deadline)) {
      child.kill("SIGKILL");
      killed = true; // keep reading: what it wrote before dying is still in the pipe
    }
  }
  // An incomplete last line (cut by the kill) is ignored.
  const code = await child.exited;
  if (!killed) throw new Error(`crash writer exited by itself (code ${code}): ${await new Response(child.stderr).text()}`);
  expect(child.signalCode).toBe("SIGKILL");
  expect(flushesSeen).toBeGreaterThanOrEqual(flushes);
  return { written, durable };
}

/** Every payload wholly below `stable` reads back intact; returns those. */
async function expectPrefixIntact(log: LogStructuredStore, written: readonly Written[]): Promise<Written[]> {
  const stable = log.stableAddress;
  const inPrefix = written.filter((w) => w.address + w.length <= stable);
  await expectIntact(log, inPrefix);
  return inPrefix;
}

/** Zero `length` bytes at `offset`; true if that changed anything. */
function zeroRange(file: string, offset: number, length: number): boolean {
  const fd = fs.openSync(file, "r+");
  try {
    const before = Buffer.alloc(length);
    const got = fs.readSync(fd, before, 0, length, offset);
    const changed = before.subarray(0, got).some((byte) => byte !== 0);
    fs.writeSync(fd, Buffer.alloc(length), 0, length, offset);
    fs.fsyncSync(fd);
    return changed;
  } finally {
    fs.closeSync(fd);
  }
}

type Damage = "none" | "truncate" | "zero-last-4k" | "zero-middle";

for (const io of BACKENDS) {
  describe(`log recovery: ${io}`, () => {
    const cases: Array<{ damage: Damage; writeMode: WriteMode; seed: number }> = [
      { damage: "none", writeMode: "tailLocalized", seed: 11 },
      { damage: "none", writeMode: "serialized", seed: 12 },
      { damage: "truncate", writeMode: "tailLocalized", seed: 13 },
      { damage: "zero-last-4k", writeMode: "tailLocalized", seed: 14 },
      { damage: "zero-middle", writeMode: "serialized", seed: 15 },
    ];
    for (const { damage, writeMode, seed } of cases) {
      test(`SIGKILLed child writer (${writeMode}), damage: ${damage} → the intact prefix is recovered and appends survive reopen`, async () => {
        const { dir, cleanup } = scratchDir(`log-crash-${io}-${damage}`);
        const file = path.join(dir, "a.lss");
        try {
          const { written, durable } = await runAndKill(file, io, seed, writeMode, 6);
          const { units, end: walkedEnd } = await listUnits(file, io);
          expect(units.length).toBeGreaterThan(3);
          // Everything flush() had acknowledged is in the intact log.
          for (const w of written.slice(0, durable)) expect(w.address + w.length).toBeLessThanOrEqual(walkedEnd);

          // Damage the tail of the log.
          let expected = walkedEnd;
          const random = rng(seed);
          const last = units[units.length - 1] as UnitOnDisk;
          if (damage === "truncate") {
            const victim = units[units.length - 1 - Math.floor(random() * Math.min(3, units.length - 1))] as UnitOnDisk;
            const cut = victim.fileOffset + 1 + Math.floor(random() * (victim.fileBytes - 1));
            fs.truncateSync(file, cut);
            expected = victim.prevEnd;
          } else if (damage === "zero-last-4k") {
            if (zeroRange(file, last.fileOffset + last.fileBytes - 4096, 4096)) expected = last.prevEnd;
          } else if (damage === "zero-middle") {
            const victim = units[units.length - 3] as UnitOnDisk;
            const block = Math.floor(random() * (victim.fileBytes / 4096));
            if (zeroRange(file, victim.fileOffset + block * 4096, 4096)) expected = victim.prevEnd;
          }

          // Reopen: exactly the intact prefix, every payload in it intact.
          const options = { writeMode, bufferSize: BUFFER, segmentSize: SEGMENT, ringSize: 4 };
          const first = await openRecorded(file, io, options);
          expect(first.log.stableAddress).toBe(expected);
          expect(first.log.rootBlock.uncleanShutdowns).toBe(1);
          const kept = await expectPrefixIntact(first.log, written);
          if (damage === "none") expect(kept.length).toBeGreaterThanOrEqual(durable);

          // New appends work, and survive another reopen together with the recovered prefix.
          const fresh: Written[] = [];
          const next = rng(seed * 7);
          for (let i = 0; i < 120; i++) {
            const length = next() < 0.1 ? BUFFER - 64 : Math.floor(next() * 3000);
            const r = await append(first.log, payload(length, 5_000_000 + i));
            expect(r.address).toBeGreaterThanOrEqual(expected);
            fresh.push({ address: r.address, length, seed: 5_000_000 + i });
          }
          await first.log.flush();
          const end = first.log.sealedEnd;
          await closeRecorded(first.log, first.backend);

          const second = await openRecorded(file, io, options);
          expect(second.log.stableAddress).toBe(end); // not one stale unit past the new tail
          expect(second.log.rootBlock.uncleanShutdowns).toBe(1);
          await expectIntact(second.log, [...kept, ...fresh]);
          await closeRecorded(second.log, second.backend);
        } finally {
          cleanup();
        }
      });
    }

    test("in-process crash after flush, with more written but not flushed: flushed payloads survive", async () => {
      const { dir, cleanup } = scratchDir(`log-crash-inproc-${io}`);
      const file = path.join(dir, "a.lss");
      try {
        const options = { bufferSize: BUFFER, segmentSize: SEGMENT, ringSize: 4 };
        const { log, backend } = await openRecorded(file, io, options);
        const written: Written[] = [];
        const next = rng(21);
        const add = async (count: number): Promise<void> => {
          for (let i = 0; i < count; i++) {
            const length = Math.floor(next() * 6000);
            const seed = written.length + 1;
            const r = await append(log, payload(length, seed));
            written.push({ address: r.address, length, seed });
          }
        };
        await add(300);
        await log.flush();
        const flushed = written.length;
        const flushedEnd = log.stableAddress;
        await add(40); // some units sealed and written, the rest still in buffers
        await crashRecorded(log, backend);

        const reopened = await openRecorded(file, io, options);
        expect(reopened.log.stableAddress).toBeGreaterThanOrEqual(flushedEnd);
        expect(reopened.log.rootBlock.uncleanShutdowns).toBe(1);
        const kept = await expectPrefixIntact(reopened.log, written);
        expect(kept.length).toBeGreaterThanOrEqual(flushed);
        const extra: Written[] = [];
        for (let i = 0; i < 50; i++) {
          const r = await append(reopened.log, payload(100 + i, 9_000 + i));
          extra.push({ address: r.address, length: 100 + i, seed: 9_000 + i });
        }
        await reopened.log.flush();
        const end = reopened.log.sealedEnd;
        await closeRecorded(reopened.log, reopened.backend);

        const again = await openRecorded(file, io, options);
        expect(again.log.stableAddress).toBe(end);
        await expectIntact(again.log, [...kept, ...extra]);
        await closeRecorded(again.log, again.backend);
      } finally {
        cleanup();
      }
    });

    test("stale units past a hole that line up exactly with new ones are refused (epochs)", async () => {
      const { dir, cleanup } = scratchDir(`log-epoch-${io}`);
      const file = path.join(dir, "a.lss");
      try {
        const options = { bufferSize: BUFFER, segmentSize: SEGMENT, ringSize: 4 };
        // Ten one-block units: a 4000-byte payload each, flushed one by one.
        const { log, backend } = await openRecorded(file, io, options);
        const old: Written[] = [];
        for (let i = 0; i < 10; i++) {
          const r = await append(log, payload(4000, 100 + i));
          old.push({ address: r.address, length: 4000, seed: 100 + i });
          await log.flush();
        }
        expect(log.stableAddress).toBe(10 * 4096);
        await crashRecorded(log, backend);

        // Unit 6 is destroyed; units 7..10 stay on disk, intact but past the hole.
        const units = (await listUnits(file, io)).units;
        expect(units.map((u) => u.address)).toEqual(old.map((_, i) => i * 4096));
        expect(zeroRange(file, (units[5] as UnitOnDisk).fileOffset, 4096)).toBe(true);

        const reopened = await openRecorded(file, io, options);
        expect(reopened.log.stableAddress).toBe(5 * 4096);
        await expectIntact(reopened.log, old.slice(0, 5));
        // Four new units of exactly the same sizes: they land where units 6..9 were, so stale
        // unit 10 sits exactly where the next unit would start, with a matching prevEnd.
        const fresh: Written[] = [];
        for (let i = 0; i < 4; i++) {
          const r = await append(reopened.log, payload(4000, 200 + i));
          expect(r.address).toBe(old[5 + i]?.address as number);
          fresh.push({ address: r.address, length: 4000, seed: 200 + i });
          await reopened.log.flush();
        }
        await crashRecorded(reopened.log, reopened.backend);

        const again = await openRecorded(file, io, options);
        expect(again.log.stableAddress).toBe(9 * 4096); // stale unit 10 (older epoch) is not taken
        expect(again.log.rootBlock.uncleanShutdowns).toBe(2);
        await expectIntact(again.log, [...old.slice(0, 5), ...fresh]);
        const last = await append(again.log, payload(10, 300));
        expect(last.address).toBe(9 * 4096 + 64);
        await again.log.flush();
        await closeRecorded(again.log, again.backend);
        const final = await openRecorded(file, io, options);
        expect(final.log.stableAddress).toBe(10 * 4096);
        await expectIntact(final.log, [...old.slice(0, 5), ...fresh, { address: last.address, length: 10, seed: 300 }]);
        await closeRecorded(final.log, final.backend);
      } finally {
        cleanup();
      }
    });
  });
}
