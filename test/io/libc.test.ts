import { describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SYNC_FILE_RANGE_WAIT_AFTER, SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, syncFileRange } from "../../src/io/libc.ts";

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
