import { describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "../../src/errors.ts";
import { scratchDir } from "../helpers.ts";
import { constants } from "node:fs";
import {
  SYNC_FILE_RANGE_WAIT_AFTER,
  SYNC_FILE_RANGE_WAIT_BEFORE,
  SYNC_FILE_RANGE_WRITE,
  allocAligned,
  allocSlab,
  freeAligned,
  readNoWait,
  setThreadIdle,
  syncFileRange,
} from "../../src/io/libc.ts";

describe("libc: syncFileRange", () => {
  test("starts writeback of written bytes (0); a bad descriptor or a pipe is a positive errno, never a throw", () => {
    const dir = mkdtempSync(join(tmpdir(), "lss-libc-"));
    try {
      const file = join(dir, "f.bin");
      const fd = openSync(file, "w+");
      const bytes = new Uint8Array(3 << 20).map((_, i) => i * 7);
      writeSync(fd, bytes);
      expect(syncFileRange(fd, 0, 1 << 20, SYNC_FILE_RANGE_WRITE)).toBe(0);
      expect(syncFileRange(fd, 1 << 20, 2 << 20, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)).toBe(0);
      closeSync(fd);
      expect(new Uint8Array(readFileSync(file))).toEqual(bytes);
      expect(syncFileRange(fd, 0, 4096, SYNC_FILE_RANGE_WRITE)).toBe(9); // EBADF: closed
      expect(syncFileRange(0x7fff_fff0, 0, 4096, SYNC_FILE_RANGE_WRITE)).toBe(9);
      // A negative offset is EINVAL, not a silent success.
      const again = openSync(file, "r+");
      expect(syncFileRange(again, -4096, 4096, SYNC_FILE_RANGE_WRITE)).toBe(22);
      closeSync(again);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("libc: allocSlab", () => {
  test("a slab of 2 MiB or more starts on a 2 MiB boundary (huge pages may back it) and holds what is written to all of it", () => {
    for (const sizeBytes of [2 << 20, (5 << 20) + 4096, 32 << 20]) {
      const slab = allocSlab(sizeBytes);
      try {
        expect(slab.ptr % (2 << 20)).toBe(0);
        expect(slab.sizeBytes).toBe(sizeBytes);
        expect(slab.bytes.length).toBe(sizeBytes);
        // One byte per 4 KiB page, and the last byte: every page is usable, none shared.
        for (let at = 0; at < sizeBytes; at += 4096) slab.bytes[at] = (at >>> 12) & 0xff;
        slab.bytes[sizeBytes - 1] = 0xa5;
        for (let at = 0; at < sizeBytes; at += 4096) expect(slab.bytes[at]).toBe((at >>> 12) & 0xff);
        expect(slab.bytes[sizeBytes - 1]).toBe(0xa5);
      } finally {
        freeAligned(slab);
      }
    }
  });

  test("a small slab is plain 4 KiB-aligned memory; a bad size is a typed error", () => {
    const small = allocSlab(64 << 10);
    try {
      expect(small.ptr % 4096).toBe(0);
      expect(small.bytes.length).toBe(64 << 10);
    } finally {
      freeAligned(small);
    }
    expect(() => allocSlab(0)).toThrow(InvalidArgumentError);
    expect(() => allocSlab(-1)).toThrow(InvalidArgumentError);
    expect(() => allocSlab((4 << 20) + 0.5)).toThrow(InvalidArgumentError);
    expect(() => allocSlab(2 ** 31)).toThrow(InvalidArgumentError);
  });
});

describe("libc: readNoWait", () => {
  test("reads what the page cache holds, exactly; refuses (false) what only the disk holds; bad ranges are InvalidArgumentError", () => {
    // On the project's filesystem (helpers.ts): a tmpfs file would be in the page cache from the start.
    const { dir, cleanup } = scratchDir("nowait");
    const buffer = allocAligned(64 << 10);
    try {
      const file = join(dir, "f.bin");
      const bytes = new Uint8Array(1 << 20).map((_, i) => (i * 13) & 0xff);
      // Written with O_DIRECT: the bytes are on the disk and not in the page cache.
      const source = allocAligned(bytes.length);
      source.bytes.set(bytes);
      const direct = openSync(file, constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT);
      expect(writeSync(direct, source.bytes, 0, bytes.length, 0)).toBe(bytes.length);
      closeSync(direct);
      freeAligned(source);
      const fd = openSync(file, "r");
      try {
        expect(readNoWait(fd, buffer, 0, 8192, 512 << 10)).toBe(false);
        // A buffered read brings the pages in; then the same range is served at once.
        expect(new Uint8Array(readFileSync(file))).toEqual(bytes);
        expect(readNoWait(fd, buffer, 4096, 8192, 512 << 10)).toBe(true);
        expect(buffer.bytes.subarray(4096, 4096 + 8192)).toEqual(bytes.subarray(512 << 10, (512 << 10) + 8192));
        // Past the end of the file: a short read is not a read.
        expect(readNoWait(fd, buffer, 0, 8192, bytes.length - 4096)).toBe(false);
        expect(() => readNoWait(fd, buffer, 60 << 10, 8192, 0)).toThrow(InvalidArgumentError);
        expect(() => readNoWait(fd, buffer, 0, 0, 0)).toThrow(InvalidArgumentError);
      } finally {
        closeSync(fd);
      }
      expect(readNoWait(fd, buffer, 0, 4096, 0)).toBe(false); // closed: EBADF, never a throw
    } finally {
      freeAligned(buffer);
      cleanup();
    }
  });
});

describe("libc: setThreadIdle", () => {
  test("makes the calling thread SCHED_IDLE and leaves the process's other threads as they were", async () => {
    const worker = new Worker(new URL("./fixtures/idle-thread.ts", import.meta.url));
    try {
      const report = await new Promise<{ rc: number; own: number; main: number }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("the Worker did not report within 10 s")), 10_000);
        worker.onmessage = (event: MessageEvent<{ rc: number; own: number; main: number }>) => (clearTimeout(timer), resolve(event.data));
        worker.onerror = (event) => (clearTimeout(timer), reject(new Error(event.message)));
      });
      expect(report).toEqual({ rc: 0, own: 5, main: 0 });
    } finally {
      void worker.terminate();
    }
  });
});
