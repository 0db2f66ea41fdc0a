import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { InvalidArgumentError, Store, StoreClosedError, TransactionError } from "../../src/index.ts";
import { BACKENDS, fillPattern, rng, scratchDir } from "../helpers.ts";

const SEGMENT = 256 << 10;
const BUFFER = 64 << 10;
const SMALL = { segmentSize: SEGMENT, bufferSize: BUFFER } as const;

/** Write `value` through a write stream in random chunk sizes. */
async function streamIn(store: Store, seid: bigint, value: Uint8Array, next: () => number): Promise<void> {
  await store.transaction(async (tx) => {
    const writer = tx.writeStream(seid).getWriter();
    let offset = 0;
    while (offset < value.length) {
      const length = Math.min(value.length - offset, 1 + Math.floor(next() * 100_000));
      await writer.write(value.subarray(offset, offset + length));
      offset += length;
    }
    await writer.close();
  });
}

async function streamOut(store: Store, seid: bigint): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of store.readStream(seid)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

for (const io of BACKENDS) {
  describe(`streams on ${io}`, () => {
    let dir: string;
    let cleanup: () => void;
    let file: string;
    beforeEach(() => {
      ({ dir, cleanup } = scratchDir(`streams-${io}`));
      file = path.join(dir, "s.lss");
    });
    afterEach(() => cleanup());

    test("round trips at the edges of buffers, parts and segments, in random chunk sizes", async () => {
      const next = rng(io === "uring" ? 1 : 2);
      const sizes = [0, 1, 4095, 4096, 4097, BUFFER - 1, BUFFER, BUFFER + 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 7];
      for (let i = 0; i < 6; i++) sizes.push(Math.floor(next() * 4 * SEGMENT));
      let store = await Store.open(file, { io, ...SMALL });
      const values = new Map<bigint, Uint8Array>();
      for (const [i, size] of sizes.entries()) {
        const value = new Uint8Array(size);
        fillPattern(value, i + 1);
        const seid = BigInt(i + 1);
        await streamIn(store, seid, value, next);
        values.set(seid, value);
        expect(store.sizeOf(seid)).toBe(size);
      }
      for (const [seid, value] of values) {
        expect(Buffer.compare(await streamOut(store, seid), value)).toBe(0);
        expect(Buffer.compare((await store.read(seid)) as Uint8Array, value)).toBe(0);
      }
      await store.close();
      store = await Store.open(file, { io });
      for (const [seid, value] of values) expect(Buffer.compare(await streamOut(store, seid), value)).toBe(0);
      await store.checkpoint();
      await store.close();
      store = await Store.open(file, { io });
      for (const [seid, value] of values) expect(Buffer.compare(await streamOut(store, seid), value)).toBe(0);
      await store.close();
    });

    test("a transaction that throws mid-stream, or an aborted stream, leaves the earlier version", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const original = new Uint8Array(300_000).fill(1);
      await store.transaction((tx) => tx.write(9n, original));
      await expect(
        store.transaction(async (tx) => {
          const writer = tx.writeStream(9n).getWriter();
          await writer.write(new Uint8Array(700_000).fill(2));
          throw new Error("midway");
        }),
      ).rejects.toThrow("midway");
      expect(Buffer.compare((await store.read(9n)) as Uint8Array, original)).toBe(0);
      await store.transaction(async (tx) => {
        const writer = tx.writeStream(9n).getWriter();
        await writer.write(new Uint8Array(700_000).fill(3));
        await writer.abort(new Error("changed my mind"));
        tx.write(10n, new Uint8Array([1]));
      });
      expect(Buffer.compare((await store.read(9n)) as Uint8Array, original)).toBe(0);
      expect(store.has(10n)).toBe(true);
      // A stream left open fails the commit with TransactionError, and nothing is applied.
      await expect(
        store.transaction(async (tx) => {
          await tx.writeStream(9n).getWriter().write(new Uint8Array(10).fill(4));
          tx.write(11n, new Uint8Array([1]));
        }),
      ).rejects.toBeInstanceOf(TransactionError);
      expect(store.has(11n)).toBe(false);
      expect(Buffer.compare((await store.read(9n)) as Uint8Array, original)).toBe(0);
    });

    test("a reader gets the old bytes whole while the element is overwritten and deleted", async () => {
      await using store = await Store.open(file, { io, ...SMALL, numSegmentsPerCheckpoint: 1 });
      const old = new Uint8Array(6 * SEGMENT);
      fillPattern(old, 77);
      await store.transaction((tx) => tx.write(3n, old));
      const stream = store.readStream(3n);
      const chunks: Uint8Array[] = [];
      const reader = stream.getReader();
      const first = await reader.read();
      chunks.push(first.value as Uint8Array);
      // Overwrite, delete, and churn enough to trigger checkpoints that free segments.
      await store.transaction((tx) => tx.write(3n, new Uint8Array(5 * SEGMENT).fill(9)));
      await store.transaction((tx) => tx.delete(3n));
      for (let i = 0; i < 20; i++) await store.transaction((tx) => tx.write(100n, new Uint8Array(SEGMENT / 2).fill(i)));
      await store.checkpoint();
      await store.checkpoint();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        chunks.push(value);
      }
      expect(Buffer.compare(Buffer.concat(chunks), old)).toBe(0);
      expect(store.has(3n)).toBe(false);
    });

    test("a BYOB reader gets the bytes into its own buffers, across parts, and may switch readers", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const value = new Uint8Array(3 * SEGMENT + 7);
      fillPattern(value, 31);
      await store.transaction((tx) => tx.write(5n, value));
      const next = rng(io === "uring" ? 5 : 6);
      const stream = store.readStream(5n);
      const byob = stream.getReader({ mode: "byob" });
      const out = new Uint8Array(value.length);
      let filled = 0;
      let reads = 0;
      // Views of random sizes, so reads end inside parts and span their boundaries.
      while (filled < SEGMENT) {
        const size = 1 + Math.floor(next() * 3 * BUFFER);
        const { value: got, done } = await byob.read(new Uint8Array(size));
        expect(done).toBe(false);
        expect((got as Uint8Array).length).toBeGreaterThan(0);
        expect((got as Uint8Array).length).toBeLessThanOrEqual(size);
        out.set(got as Uint8Array, filled);
        filled += (got as Uint8Array).length;
        reads++;
      }
      byob.releaseLock();
      // The rest through a default reader: its chunks continue exactly where the BYOB reads ended.
      for await (const chunk of stream) {
        out.set(chunk, filled);
        filled += chunk.length;
      }
      expect(filled).toBe(value.length);
      expect(Buffer.compare(out, value)).toBe(0);
      expect(reads).toBeGreaterThan(3);
    });

    test("a stream left open over close() rejects with StoreClosedError and touches no freed memory", async () => {
      const store = await Store.open(file, { io, ...SMALL });
      const value = new Uint8Array(4 * SEGMENT);
      fillPattern(value, 41);
      await store.transaction((tx) => tx.write(6n, value));
      await store.close();
      const reopened = await Store.open(file, { io, ...SMALL });
      const reader = reopened.readStream(6n).getReader({ mode: "byob" });
      const first = await reader.read(new Uint8Array(1000));
      expect(Buffer.compare(first.value as Uint8Array, value.subarray(0, 1000))).toBe(0);
      await reopened.close();
      await expect(reader.read(new Uint8Array(1000))).rejects.toBeInstanceOf(StoreClosedError);
    });

    test("pipes from and to Bun files", async () => {
      await using store = await Store.open(file, { io, ...SMALL });
      const source = path.join(dir, "in.bin");
      const target = path.join(dir, "out.bin");
      const value = new Uint8Array(2 * SEGMENT + 12345);
      fillPattern(value, 5);
      fs.writeFileSync(source, value);
      await store.transaction(async (tx) => {
        await Bun.file(source).stream().pipeTo(tx.writeStream(20n));
      });
      await Bun.write(target, new Response(store.readStream(20n)));
      expect(Buffer.compare(fs.readFileSync(target), value)).toBe(0);
    });

    test("read() of an element over maxReadBytes points to readStream", async () => {
      await using store = await Store.open(file, { io, ...SMALL, maxReadBytes: 100_000 });
      await store.transaction((tx) => tx.write(1n, new Uint8Array(200_000)));
      await expect(store.read(1n)).rejects.toThrow(/readStream/);
      await expect(store.read(1n)).rejects.toBeInstanceOf(InvalidArgumentError);
      expect((await streamOut(store, 1n)).length).toBe(200_000);
      expect(() => store.readStream(2n)).toThrow(InvalidArgumentError);
    });

    test("SIGKILL in the middle of a streamed write leaves the earlier version after reopen", async () => {
      const original = new Uint8Array(100_000).fill(0x11);
      const store = await Store.open(file, { io, ...SMALL });
      await store.transaction((tx) => tx.write(5n, original));
      await store.close();
      const child = Bun.spawn([process.execPath, path.join(import.meta.dir, "stream-killed-writer.ts"), file, io], { stdout: "pipe" });
      const reader = child.stdout.getReader();
      let seen = "";
      while (!seen.includes("streaming")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
      expect(seen).toContain("streaming");
      await Bun.sleep(50);
      child.kill("SIGKILL");
      await child.exited;
      const reopened = await Store.open(file, { io });
      expect(Buffer.compare((await reopened.read(5n)) as Uint8Array, original)).toBe(0);
      // The streamed transaction's parts reached the log before the kill; recovery dropped them.
      expect(child.signalCode).toBe("SIGKILL");
      expect(reopened.stats().recovery.transactionsDiscarded).toBeGreaterThanOrEqual(1);
      await reopened.close();
    });
  });
}

describe("a big element streamed in and out", () => {
  const sizeBytes = Number(process.env.BLOOM_LSS_BIG_STREAM_BYTES ?? 4 * 2 ** 30);
  // Read back through a BYOB reader into one reused buffer: the store's own memory is what is
  // bounded here. (With `for await`, each chunk is new garbage the GC reclaims when it decides:
  // 172-328 MiB peaks were seen across runs, unrelated to the store.)
  test(`${(sizeBytes / 2 ** 30).toFixed(2)} GiB through io_uring with peak RSS under 256 MiB`, async () => {
    const { dir, cleanup } = scratchDir("big-stream");
    try {
      const child = Bun.spawnSync([process.execPath, path.join(import.meta.dir, "big-stream.ts"), path.join(dir, "big.lss"), "uring", String(sizeBytes)], {
        stderr: "pipe",
      });
      const out = child.stdout.toString();
      if (child.exitCode !== 0) throw new Error(`big-stream child failed: ${child.stderr.toString()}`);
      const result = JSON.parse(out.trim().split("\n").pop() as string);
      console.log(`big stream: write ${result.writeMiBps.toFixed(0)} MiB/s, read ${result.readMiBps.toFixed(0)} MiB/s, peak RSS ${(result.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
      expect(result.written).toBe(sizeBytes);
      expect(result.read).toBe(sizeBytes);
      expect(result.size).toBe(sizeBytes);
      expect(result.outHash).toBe(result.inHash);
      expect(result.peakRssBytes).toBeLessThan(256 * 2 ** 20);
    } finally {
      cleanup();
    }
  }, 600_000);
});
