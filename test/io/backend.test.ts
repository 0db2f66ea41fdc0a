import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import path from "node:path";
import { ALIGNMENT_BYTES, type FileHandle, type IoBackend, type IoCompletion } from "../../src/io/backend.ts";
import { openBackend } from "../../src/io/open.ts";
import { IoQueue } from "../../src/io/queue.ts";
import {
  CorruptionError,
  InvalidArgumentError,
  IoError,
  IoUnavailableError,
  StoreClosedError,
  StoreLockedError,
} from "../../src/errors.ts";
import { BACKENDS, fillPattern, rng, rssBytes, scratchDir, reapAll } from "../helpers.ts";


for (const io of BACKENDS) {
  describe(`io backend: ${io}`, () => {
    let backend: IoBackend;
    let file: FileHandle;
    let cleanup: () => void;
    let dir: string;

    beforeEach(async () => {
      ({ dir, cleanup } = scratchDir(`io-${io}`));
      backend = await openBackend({ io, queueDepth: 512 });
      file = backend.openFile(path.join(dir, "data.bin"), { create: true, direct: true });
    });

    afterEach(() => {
      if (!backend.closed) {
        backend.closeFile(file);
        backend.close();
      }
      cleanup();
    });

    test("reports the backend really in use, and O_DIRECT on ext4", () => {
      expect(backend.kind).toBe(io === "uring" ? "io_uring" : "portable");
      expect(file.direct).toBe(true);
    });

    test("random aligned writes round-trip through reads at random offsets", async () => {
      const queue = new IoQueue(backend);
      const blockCount = 64;
      const fileBytes = blockCount * ALIGNMENT_BYTES;
      const expected = new Uint8Array(fileBytes);
      const buffer = backend.alloc(fileBytes);
      const next = rng(7);
      // Write blocks in a random order, each in a random-length aligned run.
      const order = Array.from({ length: blockCount }, (_, i) => i).sort(() => next() - 0.5);
      for (const block of order) {
        const offset = block * ALIGNMENT_BYTES;
        fillPattern(buffer.bytes.subarray(offset, offset + ALIGNMENT_BYTES), block + 1000);
        expected.set(buffer.bytes.subarray(offset, offset + ALIGNMENT_BYTES), offset);
        await queue.write(file, buffer, offset, ALIGNMENT_BYTES, offset);
      }
      await queue.datasync(file);
      const readBuffer = backend.alloc(fileBytes);
      for (let i = 0; i < 200; i++) {
        const startBlock = Math.floor(next() * blockCount);
        const blocks = 1 + Math.floor(next() * (blockCount - startBlock));
        const offset = startBlock * ALIGNMENT_BYTES;
        const length = blocks * ALIGNMENT_BYTES;
        readBuffer.bytes.fill(0xee, 0, length);
        await queue.read(file, readBuffer, 0, length, offset);
        expect(Buffer.compare(readBuffer.bytes.subarray(0, length), expected.subarray(offset, offset + length))).toBe(0);
      }
      backend.free(buffer);
      backend.free(readBuffer);
    });

    test("256 writes submitted at once complete, each user data seen exactly once", async () => {
      const count = 256;
      const buffer = backend.alloc(count * ALIGNMENT_BYTES);
      const ops = [];
      for (let i = 0; i < count; i++) {
        fillPattern(buffer.bytes.subarray(i * ALIGNMENT_BYTES, (i + 1) * ALIGNMENT_BYTES), i);
        ops.push({
          op: "write" as const,
          fd: file.fd,
          buffer,
          bufferOffset: i * ALIGNMENT_BYTES,
          lengthBytes: ALIGNMENT_BYTES,
          fileOffset: (count - 1 - i) * ALIGNMENT_BYTES,
          userData: 1_000_000 + i * 3,
        });
      }
      backend.submit(ops);
      const completions = await reapAll(backend, count);
      expect(completions.length).toBe(count);
      const seen = new Set<number>();
      for (const c of completions) {
        expect(c.result).toBe(ALIGNMENT_BYTES);
        expect(seen.has(c.userData)).toBe(false);
        seen.add(c.userData);
      }
      for (let i = 0; i < count; i++) expect(seen.has(1_000_000 + i * 3)).toBe(true);
      expect(backend.inFlight).toBe(0);
      // And the bytes landed where each op said.
      const queue = new IoQueue(backend);
      const check = backend.alloc(ALIGNMENT_BYTES);
      for (const i of [0, 1, 128, 255]) {
        await queue.read(file, check, 0, ALIGNMENT_BYTES, (count - 1 - i) * ALIGNMENT_BYTES);
        expect(Buffer.compare(check.bytes, buffer.bytes.subarray(i * ALIGNMENT_BYTES, (i + 1) * ALIGNMENT_BYTES))).toBe(0);
      }
      backend.free(check);
      backend.free(buffer);
    });

    test("datasync after writes succeeds", async () => {
      const queue = new IoQueue(backend);
      const buffer = backend.alloc(ALIGNMENT_BYTES * 4);
      fillPattern(buffer.bytes, 99);
      await Promise.all([0, 1, 2, 3].map((i) => queue.write(file, buffer, i * ALIGNMENT_BYTES, ALIGNMENT_BYTES, i * ALIGNMENT_BYTES)));
      await queue.datasync(file);
      expect(backend.fileSizeBytes(file)).toBe(4 * ALIGNMENT_BYTES);
      backend.syncNow(file);
      backend.free(buffer);
    });

    test("a misaligned O_DIRECT request gives a typed error and the process survives", async () => {
      const queue = new IoQueue(backend);
      const buffer = backend.alloc(ALIGNMENT_BYTES * 2);
      const misalignedOffset = queue.write(file, buffer, 0, ALIGNMENT_BYTES, 100);
      await expect(misalignedOffset).rejects.toBeInstanceOf(IoError);
      await expect(queue.write(file, buffer, 0, ALIGNMENT_BYTES, 100)).rejects.toMatchObject({ errnoName: "EINVAL" });
      // A length that is not a whole number of logical blocks.
      await expect(queue.write(file, buffer, 0, 100, 0)).rejects.toBeInstanceOf(IoError);
      // Still works afterwards.
      await queue.write(file, buffer, 0, ALIGNMENT_BYTES, 0);
      backend.free(buffer);
    });

    test("reads past the end of the file are typed errors", async () => {
      const queue = new IoQueue(backend);
      const buffer = backend.alloc(ALIGNMENT_BYTES);
      await queue.write(file, buffer, 0, ALIGNMENT_BYTES, 0);
      await expect(queue.read(file, buffer, 0, ALIGNMENT_BYTES, 8 * ALIGNMENT_BYTES)).rejects.toBeInstanceOf(CorruptionError);
      backend.free(buffer);
    });

    test("a bad descriptor gives a typed error", async () => {
      const queue = new IoQueue(backend);
      const buffer = backend.alloc(ALIGNMENT_BYTES);
      const bad: FileHandle = { fd: 987_654, path: "bad", direct: false };
      await expect(queue.write(bad, buffer, 0, ALIGNMENT_BYTES, 0)).rejects.toMatchObject({ errnoName: "EBADF" });
      expect(() => backend.fileSizeBytes(bad)).toThrow(IoError);
      backend.free(buffer);
    });

    test("oversized submissions and foreign buffers are refused", () => {
      const buffer = backend.alloc(ALIGNMENT_BYTES);
      const tooMany = Array.from({ length: backend.queueDepth + 1 }, (_, i) => ({ op: "datasync" as const, fd: file.fd, userData: i }));
      expect(() => backend.submit(tooMany)).toThrow(InvalidArgumentError);
      expect(backend.inFlight).toBe(0);
      backend.free(buffer);
      expect(() => backend.free(buffer)).toThrow(InvalidArgumentError);
    });

    test("a second lock on the same file is refused", async () => {
      await backend.lockFile(file);
      const second = backend.openFile(file.path, {});
      await expect(backend.lockFile(second)).rejects.toThrow(StoreLockedError);
      backend.closeFile(second);
    });

    test("a closed backend refuses work", () => {
      backend.closeFile(file);
      backend.close();
      expect(() => backend.alloc(ALIGNMENT_BYTES)).toThrow(StoreClosedError);
      expect(() => backend.submit([])).toThrow(StoreClosedError);
    });

    test("100,000 aligned alloc/free cycles leave RSS flat", () => {
      const sizes = [4096, 65536, 1 << 20];
      for (let i = 0; i < 2000; i++) backend.free(backend.alloc(sizes[i % 3] as number));
      Bun.gc(true);
      const before = rssBytes();
      for (let i = 0; i < 100_000; i++) {
        const buffer = backend.alloc(sizes[i % 3] as number);
        buffer.bytes[0] = 1;
        buffer.bytes[buffer.sizeBytes - 1] = 2;
        if (buffer.ptr % ALIGNMENT_BYTES !== 0) throw new Error(`misaligned ${buffer.ptr}`);
        backend.free(buffer);
      }
      Bun.gc(true);
      const grownBytes = rssBytes() - before;
      expect(grownBytes).toBeLessThan(8 * 1024 * 1024);
    });
  });
}

describe("backend selection", () => {
  test("auto falls back to portable when io_uring is unavailable, and says why", async () => {
    const backend = await openBackend({ io: "auto", disableUring: true });
    expect(backend.kind).toBe("portable");
    expect(backend.fallbackReason).toContain("disableUring");
    backend.close();
  });

  test("the environment variable disables io_uring too", async () => {
    const saved = process.env.BLOOM_LSS_DISABLE_URING;
    process.env.BLOOM_LSS_DISABLE_URING = "1";
    try {
      const backend = await openBackend({ io: "auto" });
      expect(backend.kind).toBe("portable");
      expect(backend.fallbackReason).toContain("BLOOM_LSS_DISABLE_URING");
      backend.close();
      await expect(openBackend({ io: "uring" })).rejects.toBeInstanceOf(IoUnavailableError);
    } finally {
      if (saved === undefined) delete process.env.BLOOM_LSS_DISABLE_URING;
      else process.env.BLOOM_LSS_DISABLE_URING = saved;
    }
  });

  test("forcing uring where it cannot work throws IoUnavailableError naming the cause", async () => {
    await expect(openBackend({ io: "uring", disableUring: true })).rejects.toThrow(/disableUring/);
  });

  test("auto picks io_uring on this machine", async () => {
    const backend = await openBackend({ io: "auto" });
    expect(backend.kind).toBe("io_uring");
    expect(backend.fallbackReason).toBeUndefined();
    backend.close();
  });

  test("an unknown io choice is an InvalidArgumentError", async () => {
    await expect(openBackend({ io: "magic" as never })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});
