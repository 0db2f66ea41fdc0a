import { describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "../../src/errors.ts";
import { SYNC_FILE_RANGE_WAIT_AFTER, SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, allocSlab, freeAligned, syncFileRange } from "../../src/io/libc.ts";

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
