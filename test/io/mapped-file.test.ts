/**
 * The read-only mapping (src/io/mapped-file.ts): it shows the file's bytes, and what an O_DIRECT
 * write put there afterwards (the store's owner writes that way while Workers read through a
 * mapping); it grows when the file did, never serves a range past the file's end, and serves
 * nothing after close; `readInto` copies the same bytes from the mapping or, without one, with
 * `pread`.
 */
import { afterAll, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { MappedFile } from "../../src/io/mapped-file.ts";
import { openBackend } from "../../src/io/open.ts";
import { IoQueue } from "../../src/io/queue.ts";
import { ALIGNMENT_BYTES } from "../../src/io/backend.ts";
import { BACKENDS, fillPattern, scratchDir } from "../helpers.ts";

const scratch = scratchDir("mapped-file");
afterAll(() => scratch.cleanup());

for (const io of BACKENDS) {
  test(`${io}: bytes as the file holds them, an O_DIRECT write seen at once, growth seen, nothing past the end or after close`, async () => {
    const file = path.join(scratch.dir, `m-${io}.bin`);
    const first = new Uint8Array(64 << 10);
    fillPattern(first, 1);
    fs.writeFileSync(file, first);
    const fd = fs.openSync(file, "r");
    const mapped = new MappedFile(fd);
    const backend = await openBackend({ io, queueDepth: 8 });
    const handle = backend.openFile(file, { direct: true });
    const buffer = backend.alloc(2 * ALIGNMENT_BYTES);
    try {
      const view = mapped.bytes(4096, 8192);
      expect(view !== undefined && Buffer.from(view).equals(Buffer.from(first.subarray(4096, 12288)))).toBe(true);
      expect(mapped.mappedBytes).toBe(first.length);
      // The owner overwrites a block with O_DIRECT: the mapping shows the new bytes.
      fillPattern(buffer.bytes, 2);
      await new IoQueue(backend).write(handle, buffer, 0, ALIGNMENT_BYTES, 8192);
      const after = mapped.bytes(8192, ALIGNMENT_BYTES);
      expect(after !== undefined && Buffer.from(after).equals(Buffer.from(buffer.bytes.subarray(0, ALIGNMENT_BYTES)))).toBe(true);
      // Past the end: nothing (touching it would be SIGBUS).
      expect(mapped.bytes(first.length - 10, 20)).toBeUndefined();
      // The file grows (an O_DIRECT write past its end): the next read past the old map sees it.
      await new IoQueue(backend).write(handle, buffer, 0, 2 * ALIGNMENT_BYTES, first.length);
      await Bun.sleep(2); // a mapping is replaced at most once a millisecond
      const grown = mapped.bytes(first.length, 2 * ALIGNMENT_BYTES);
      expect(grown !== undefined && Buffer.from(grown).equals(Buffer.from(buffer.bytes))).toBe(true);
      expect(mapped.mappedBytes).toBe(first.length + 2 * ALIGNMENT_BYTES);
      // readInto: from the mapping, short only where the file ends.
      const total = first.length + 2 * ALIGNMENT_BYTES;
      const whole = new Uint8Array(total);
      expect(mapped.readInto(0, whole)).toBe(total);
      expect(Buffer.from(whole.subarray(8192, 8192 + ALIGNMENT_BYTES)).equals(Buffer.from(buffer.bytes.subarray(0, ALIGNMENT_BYTES)))).toBe(true);
      expect(mapped.readInto(total - 100, new Uint8Array(300))).toBe(100);
      mapped.close();
      expect(mapped.bytes(0, 16)).toBeUndefined();
      expect(mapped.mappedBytes).toBe(0);
      // Closed (or never mappable): readInto reads the same bytes with pread.
      const again = new Uint8Array(total);
      expect(mapped.readInto(0, again)).toBe(total);
      expect(Buffer.from(again).equals(Buffer.from(whole))).toBe(true);
      expect(mapped.readInto(total - 100, new Uint8Array(300))).toBe(100);
    } finally {
      mapped.close();
      backend.free(buffer);
      backend.closeFile(handle);
      backend.close();
      fs.closeSync(fd);
    }
  });
}
