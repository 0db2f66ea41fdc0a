/**
 * The durable tail at the store's level: a follower that sees only what the log hands out
 * (durable units, in order) and decodes their records on its own rebuilds exactly the committed
 * state, through rotations, checkpoints, cleaner relocations and segment reuse. It is what backup
 * increments and a standby's log shipping will rely on, checked against an independent decoder.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { decodeExtents, FLAG_EXTENTS_CHUNK, FLAG_EXTENTS_INDIRECT, FLAG_PART } from "../../src/store/format/extents.ts";
import { RecordType, scanRecords } from "../../src/store/format/records.ts";
import { storeInternals } from "../../src/store/store.ts";
import { UNIT_HEADER_BYTES } from "../../src/log/format.ts";
import type { DurableUnit } from "../../src/log/tail.ts";
import { withTimeout } from "../../testing/torture/util.ts";
import { BACKENDS, fillPattern, rng, scratchDir } from "../helpers.ts";

type ShadowOp = { kind: "write"; seid: bigint; value: Uint8Array } | { kind: "delete"; seid: bigint };

/**
 * Committed state rebuilt from durable units alone: records grouped by transaction, applied at
 * the transaction's Commit record; a Commit drops older transactions still open (they never
 * committed), as replay does. Parts are kept by address until the Extents record names them.
 */
class Shadow {
  readonly state = new Map<bigint, Uint8Array>();
  private readonly open = new Map<number, ShadowOp[]>();
  private readonly parts = new Map<number, Uint8Array>();
  private readonly chunks = new Map<number, Array<{ address: number; bodyBytes: number }>>();
  commits = 0;
  units = 0;
  lastEnd = 0;

  visit(unit: DurableUnit): void {
    expect(unit.address).toBeGreaterThanOrEqual(this.lastEnd); // in order, never twice
    this.lastEnd = unit.endAddress;
    this.units += 1;
    const base = unit.address + UNIT_HEADER_BYTES;
    for (const record of scanRecords(unit.payload)) {
      const { type, txId, seid, flags } = record.header;
      const address = base + record.offset;
      const ops = this.open.get(txId) ?? [];
      switch (type) {
        case RecordType.Data:
          if ((flags & FLAG_PART) !== 0) this.parts.set(address, record.body.slice());
          else ops.push({ kind: "write", seid, value: record.body.slice() });
          break;
        case RecordType.Delete:
          ops.push({ kind: "delete", seid });
          break;
        case RecordType.Extents: {
          const entries = decodeExtents(record.body);
          if ((flags & FLAG_EXTENTS_CHUNK) !== 0) {
            this.chunks.set(address, entries);
            break;
          }
          const list = (flags & FLAG_EXTENTS_INDIRECT) !== 0 ? entries.flatMap((chunk) => this.chunks.get(chunk.address) ?? []) : entries;
          const value = new Uint8Array(list.reduce((sum, part) => sum + part.bodyBytes, 0));
          let at = 0;
          for (const part of list) {
            const body = this.parts.get(part.address);
            if (body === undefined) throw new Error(`part at ${part.address} of seid ${seid} was not seen before its extents`);
            value.set(body, at);
            at += body.length;
          }
          ops.push({ kind: "write", seid, value });
          break;
        }
        case RecordType.Commit: {
          for (const op of this.open.get(txId) ?? []) {
            if (op.kind === "write") this.state.set(op.seid, op.value);
            else this.state.delete(op.seid);
          }
          for (const older of [...this.open.keys()]) if (older <= txId) this.open.delete(older);
          this.commits += 1;
          continue;
        }
        default:
          continue; // Alloc, Checkpoint: no element state
      }
      this.open.set(txId, ops);
    }
  }
}

for (const io of BACKENDS) {
  describe(`durable tail of a store on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    beforeEach(() => ({ dir, cleanup } = scratchDir(`store-tail-${io}`)));
    afterEach(() => cleanup());

    test("a follower from the first byte rebuilds exactly the committed state through rotations, checkpoints, cleaning and segment reuse", async () => {
      const store = await Store.open(path.join(dir, "t.lss"), {
        io,
        segmentSize: 64 << 10,
        bufferSize: 16 << 10,
        numSegmentsPerCheckpoint: 4,
        cleanerHighWaterSegments: 8,
        cacheBytes: 0,
      });
      const log = storeInternals(store).core.log;
      const shadow = new Shadow();
      const abort = new AbortController();
      const follower = (async () => {
        for await (const unit of log.durableUnits(0, { signal: abort.signal })) {
          // Handed out only once durable.
          expect(log.isDurable(unit.endAddress - 1)).toBe(true);
          shadow.visit(unit);
        }
      })();
      const model = new Map<bigint, Uint8Array>();
      const random = rng(io === "uring" ? 11 : 12);
      const universe = Array.from({ length: 64 }, (_, i) => BigInt(i + 1));
      let aborted = 0;
      try {
        for (let round = 0; round < 600; round++) {
          const ops: Array<[bigint, Uint8Array | undefined]> = [];
          for (let i = 0; i < 1 + Math.floor(random() * 6); i++) {
            const seid = universe[Math.floor(random() * universe.length)] as bigint;
            if (random() < 0.2) {
              ops.push([seid, undefined]);
              continue;
            }
            // Mostly small values; some span several parts (a part is about half a buffer).
            const length = random() < 0.05 ? 20_000 + Math.floor(random() * 30_000) : Math.floor(random() * 1500);
            const value = new Uint8Array(length);
            fillPattern(value, round * 100 + i);
            ops.push([seid, value]);
          }
          const fail = random() < 0.1;
          const done = store.transaction((tx) => {
            for (const [seid, value] of ops) {
              if (value === undefined) tx.delete(seid);
              else tx.write(seid, value);
            }
            if (fail) throw new Error("abort");
          });
          if (fail) {
            await expect(done).rejects.toThrow("abort");
            aborted += 1;
            continue;
          }
          await done; // acknowledged: durable
          for (const [seid, value] of ops) {
            if (value === undefined) model.delete(seid);
            else model.set(seid, value);
          }
        }
        await store.compact();
        await store.flush();
        const stable = log.stableAddress;
        await withTimeout(
          (async () => {
            while (shadow.lastEnd < stable) await Bun.sleep(5);
          })(),
          20_000,
          "the follower reaching the stable address",
        );
        // What the follower rebuilt is exactly the store's committed state and the model.
        expect(shadow.state.size).toBe(model.size);
        for (const seid of universe) {
          const expected = model.get(seid);
          expect(shadow.state.get(seid)).toEqual(expected);
          expect(await store.read(seid)).toEqual(expected);
        }
        // The run went through what the follower must survive, and the follower saw it all.
        const stats = store.stats();
        expect(aborted).toBeGreaterThan(0);
        expect(stats.checkpoints).toBeGreaterThan(0);
        expect(stats.cleaner.segmentsCleaned).toBeGreaterThan(0);
        expect(shadow.commits).toBe(stats.commits); // user and cleaner commits alike
        // Segments were reused: the log moved through more segments than the file ever held.
        expect(log.tailSegmentSeq).toBeGreaterThan(log.fileSegments);
      } finally {
        abort.abort();
        await withTimeout(follower, 10_000, "the follower ending on abort");
        await store.close();
      }
    });
  });
}
