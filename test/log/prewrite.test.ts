/**
 * Pre-writing fresh segments (src/log/prewrite.ts): small durable appends get their segments
 * zero-filled ahead of use, the zeros really are zeros whatever the backend's allocator hands
 * back, and a log that grows past several segments this way reopens with every payload intact.
 */
import { describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { openBackend } from "../../src/io/open.ts";
import { ROOT_REGION_BYTES } from "../../src/log/format.ts";
import { LogStructuredStore, openLog } from "../../src/log/log.ts";
import { BACKENDS, scratchDir } from "../helpers.ts";
import { append, expectIntact, KiB, payload, type Written } from "./util.ts";

const BUFFER = 16 * KiB;
const SEGMENT = 256 * KiB;

for (const io of BACKENDS) {
  describe(`segment pre-writes: ${io}`, () => {
    test("fresh segments are zero-filled even when alloc hands back dirty memory; the log reopens intact", async () => {
      const { dir, cleanup } = scratchDir(`log-prewrite-${io}`);
      const file = path.join(dir, "a.lss");
      try {
        const backend = await openBackend({ io });
        // Native memory as a reused allocation may come back: full of an old log's bytes.
        const alloc = backend.alloc.bind(backend);
        let dirtied = 0;
        backend.alloc = (sizeBytes: number) => {
          const buffer = alloc(sizeBytes);
          buffer.bytes.fill(0xab);
          dirtied += 1;
          return buffer;
        };
        const log = await openLog(file, { bufferSize: BUFFER, segmentSize: SEGMENT }, backend);
        const written: Written[] = [];
        // Small durable appends (a unit each) through three segments: pre-writing pays here.
        for (let i = 0; i < 60; i++) {
          const length = 2000 + ((i * 977) % 9000);
          const r = await append(log, payload(length, i));
          written.push({ address: r.address, length, seed: i });
          await log.flush();
        }
        const stats = log.stats();
        expect(dirtied).toBeGreaterThan(0);
        expect(stats.segmentsPrewritten).toBeGreaterThanOrEqual(3);
        // One pass through fresh segments: segment seq s is physical segment s, so the log's end
        // is at this file offset, and the file grew ahead of it.
        const logEnd = ROOT_REGION_BYTES + stats.stableAddress;
        await log.close();
        backend.close();

        // What the file holds past the log's end was pre-written and is unused: zeros, not 0xab.
        const bytes = fs.readFileSync(file);
        expect(bytes.length).toBeGreaterThan(logEnd);
        const unused = bytes.subarray(logEnd);
        expect(unused.includes(0xab)).toBe(false);
        expect(unused.every((byte) => byte === 0)).toBe(true);

        const again = await LogStructuredStore.open(file, { io, bufferSize: BUFFER, segmentSize: SEGMENT });
        try {
          await expectIntact(again, written);
        } finally {
          await again.close();
        }
      } finally {
        cleanup();
      }
    });
  });
}
