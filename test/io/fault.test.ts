import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { openStore } from "../../src/store/store.ts";
import fs from "node:fs";
import path from "node:path";
import { EIO, ENOSPC, FaultBackend, SECTOR_BYTES } from "../../testing/fault-backend.ts";
import { IoQueue } from "../../src/io/queue.ts";
import { PortableBackend } from "../../src/io/portable.ts";
import { IoError, NoSpaceError, Store, StoreLockedError } from "../../src/index.ts";
import type { FileHandle, NativeBuffer } from "../../src/io/backend.ts";
import { scratchDir } from "../helpers.ts";

const BLOCK = 4096;

describe("FaultBackend", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("fault"));
  });
  afterEach(() => cleanup());

  /** Open `name` through a new FaultBackend; returns helpers that write/sync through an IoQueue. */
  async function setup(name: string, options: ConstructorParameters<typeof FaultBackend>[0] = {}) {
    const file = path.join(dir, name);
    const fault = new FaultBackend({ simulateSync: true, ...options });
    const handle = fault.openFile(file, { create: true });
    await fault.lockFile(handle);
    const queue = new IoQueue(fault);
    const buffer = fault.alloc(16 * BLOCK);
    const write = async (offset: number, length: number, fill: number) => {
      buffer.bytes.fill(fill, 0, length);
      await queue.write(handle, buffer, 0, length, offset);
    };
    const release = () => {
      fault.free(buffer);
      if (!fault.isCut) fault.closeFile(handle);
      fault.close();
    };
    return { file, fault, handle, queue, buffer, write, sync: () => queue.datasync(handle), release };
  }

  test("forwards reads and writes to the real file", async () => {
    const t = await setup("rw.bin");
    await t.write(0, 2 * BLOCK, 7);
    await t.queue.read(t.handle, t.buffer, 0, BLOCK, BLOCK);
    expect(t.buffer.bytes[0]).toBe(7);
    expect(t.fault.kind).toBe("portable");
    expect(fs.statSync(t.file).size).toBe(2 * BLOCK);
    expect(t.fault.counts.calls).toBe(4); // openFile, lockFile, write, read
    t.release();
  });

  test("a power cut keeps synced writes and can drop the rest", async () => {
    const t = await setup("drop.bin", { powerCut: { keep: 0, drop: 1, torn: 0 }, keepSizeProbability: 0 });
    await t.write(0, BLOCK, 1);
    await t.sync();
    await t.write(BLOCK, BLOCK, 2);
    await t.write(0, BLOCK, 3); // overwrites the durable block, never synced
    const cut = await t.fault.powerCut();
    expect(cut[0]?.dropped).toBe(2);
    const image = fs.readFileSync(t.file);
    expect(image.length).toBe(BLOCK);
    expect(image.every((b) => b === 1)).toBe(true);
    expect(t.fault.counts).toMatchObject({ powerCuts: 1, droppedWrites: 2, keptWrites: 0, tornWrites: 0, durableWrites: 1 });
    t.release();
  });

  test("kept writes land whole; the file keeps its current size when asked", async () => {
    const t = await setup("keep.bin", { powerCut: { keep: 1, drop: 0, torn: 0 }, keepSizeProbability: 1 });
    await t.write(0, BLOCK, 1);
    await t.sync();
    await t.write(BLOCK, 2 * BLOCK, 2);
    await t.fault.powerCut();
    const image = fs.readFileSync(t.file);
    expect(image.length).toBe(3 * BLOCK);
    expect(image.subarray(BLOCK).every((b) => b === 2)).toBe(true);
    expect(t.fault.counts.keptWrites).toBe(1);
    t.release();
  });

  test("torn writes mix old and new 512-byte sectors, never bytes within a sector", async () => {
    let torn = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const t = await setup(`torn-${seed}.bin`, { seed, powerCut: { keep: 0, drop: 0, torn: 1 } });
      await t.write(0, 16 * BLOCK, 0xaa);
      await t.sync();
      await t.write(0, 16 * BLOCK, 0x55);
      await t.fault.powerCut();
      const image = fs.readFileSync(t.file);
      expect(image.length).toBe(16 * BLOCK);
      const kinds = new Set<number>();
      for (let s = 0; s < image.length / SECTOR_BYTES; s++) {
        const sector = image.subarray(s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES);
        const first = sector[0] as number;
        expect(first === 0xaa || first === 0x55).toBe(true);
        expect(sector.every((b) => b === first)).toBe(true);
        kinds.add(first);
      }
      if (kinds.size === 2) torn += 1;
      t.release();
    }
    expect(torn).toBeGreaterThan(10);
  });

  test("a datasync covers only writes completed before it was submitted", async () => {
    const t = await setup("cover.bin", { powerCut: { keep: 0, drop: 1, torn: 0 }, keepSizeProbability: 0 });
    await t.write(0, BLOCK, 1);
    // Submit the datasync and a later write together: the later one is not covered.
    const other = t.fault.alloc(BLOCK);
    other.bytes.fill(9);
    const sync = t.sync();
    const late = t.queue.write(t.handle, other, 0, BLOCK, BLOCK);
    await Promise.all([sync, late]);
    await t.fault.powerCut();
    const image = fs.readFileSync(t.file);
    expect(image.length).toBe(BLOCK);
    expect(image.every((b) => b === 1)).toBe(true);
    t.fault.free(other);
    t.release();
  });

  test("real fdatasync mode (simulateSync off) gives the same durability model", async () => {
    const t = await setup("realsync.bin", { simulateSync: false, powerCut: { keep: 0, drop: 1, torn: 0 }, keepSizeProbability: 0 });
    await t.write(0, BLOCK, 4);
    await t.sync();
    await t.write(BLOCK, BLOCK, 5);
    await t.fault.powerCut();
    expect(fs.readFileSync(t.file).length).toBe(BLOCK);
    t.release();
  });

  test("injects EIO and ENOSPC into the Nth call: completions for ops, typed throws for sync calls", async () => {
    const t = await setup("inject.bin");
    t.fault.injectError({ nth: 2, errno: EIO });
    await t.write(0, BLOCK, 1); // call 1
    await expect(t.write(BLOCK, BLOCK, 1)).rejects.toBeInstanceOf(IoError); // call 2
    await t.write(BLOCK, BLOCK, 1); // call 3: a one-shot fault has cleared
    t.fault.injectError({ nth: 1, errno: ENOSPC, sites: ["allocateSpace"] });
    expect(() => t.fault.allocateSpace(t.handle, 0, 16 * BLOCK)).toThrow(NoSpaceError);
    t.fault.allocateSpace(t.handle, 0, 16 * BLOCK);
    t.fault.injectError({ nth: 1, errno: ENOSPC, sticky: true, sites: ["write"] });
    await expect(t.write(0, BLOCK, 1)).rejects.toBeInstanceOf(NoSpaceError);
    await expect(t.write(0, BLOCK, 1)).rejects.toBeInstanceOf(NoSpaceError);
    await t.sync(); // datasync is not a matching site
    t.fault.clearFaults();
    await t.write(0, BLOCK, 1);
    expect(t.fault.counts.injectedErrors).toBe(4);
    t.release();
  });

  test("random errors are seeded: the same seed fails the same calls", async () => {
    const failures: number[][] = [];
    for (let run = 0; run < 2; run++) {
      const t = await setup(`random-${run}.bin`, { seed: 42 });
      t.fault.failRandomly({ probability: 0.3, sites: ["write"] });
      const failed: number[] = [];
      for (let i = 0; i < 40; i++) {
        try {
          await t.write(0, BLOCK, i);
        } catch (error) {
          expect(error).toBeInstanceOf(IoError);
          failed.push(i);
        }
      }
      failures.push(failed);
      expect(t.fault.counts.injectedErrors).toBe(failed.length);
      t.release();
    }
    expect(failures[0]?.length).toBeGreaterThan(3);
    expect(failures[0]).toEqual(failures[1] as number[]);
  });

  test("the same seed makes the same power-cut image", async () => {
    const images: Buffer[] = [];
    for (let run = 0; run < 2; run++) {
      const t = await setup(`same-${run}.bin`, { seed: 7 });
      for (let i = 0; i < 8; i++) await t.write(i * 2 * BLOCK, 2 * BLOCK, i + 1);
      await t.fault.powerCut();
      images.push(fs.readFileSync(t.file));
      t.release();
    }
    expect(Buffer.compare(images[0] as Buffer, images[1] as Buffer)).toBe(0);
  });

  test("after a cut every call fails, the lock is released and a fresh backend reopens the image", async () => {
    const t = await setup("dead.bin");
    await t.write(0, BLOCK, 3);
    await t.sync();
    t.fault.cutPowerAtCall(2);
    await t.write(BLOCK, BLOCK, 4); // call 1
    await expect(t.write(2 * BLOCK, BLOCK, 5)).rejects.toBeInstanceOf(IoError); // call 2: the cut
    expect(t.fault.isCut).toBe(true);
    await expect(t.sync()).rejects.toBeInstanceOf(IoError);
    expect(() => t.fault.allocateSpace(t.handle, 0, BLOCK)).toThrow(IoError);
    // Before the cut reaches the disk, the old descriptor still holds the lock.
    const probe = new PortableBackend();
    const held = probe.openFile(t.file);
    await expect(probe.lockFile(held)).rejects.toThrow(StoreLockedError);
    probe.closeFile(held);
    await t.fault.powerCut();
    const fresh = new PortableBackend();
    const handle = fresh.openFile(t.file);
    await fresh.lockFile(handle);
    const bytes = fs.readFileSync(t.file);
    expect(bytes.subarray(0, BLOCK).every((b) => b === 3)).toBe(true);
    fresh.closeFile(handle);
    fresh.close();
    probe.close();
    expect(t.fault.counts.powerCuts).toBe(1);
    t.release();
  });

  test("syncIo: transfers done at submit, completions released in a seeded order (out of order, replayable)", async () => {
    const orders: number[][] = [];
    for (let run = 0; run < 2; run++) {
      const t = await setup(`syncio-${run}.bin`, { seed: 11, syncIo: true, holdProbability: 0.5 });
      const buffers = Array.from({ length: 12 }, (_, i) => {
        const b = t.fault.alloc(BLOCK);
        b.bytes.fill(i + 1);
        return b;
      });
      t.fault.submit(buffers.map((b, i) => ({ op: "write" as const, fd: t.handle.fd, buffer: b, bufferOffset: 0, lengthBytes: BLOCK, fileOffset: i * BLOCK, userData: i })));
      const order: number[] = [];
      while (order.length < 12) {
        await t.fault.wait(1, 1000);
        const out: { userData: number; result: number }[] = [];
        t.fault.reap(out);
        for (const c of out) {
          expect(c.result).toBe(BLOCK);
          order.push(c.userData);
        }
      }
      orders.push(order);
      const image = fs.readFileSync(t.file);
      for (let i = 0; i < 12; i++) expect(image[i * BLOCK]).toBe(i + 1);
      for (const b of buffers) t.fault.free(b);
      t.release();
    }
    expect(orders[0]).toEqual(orders[1] as number[]);
    expect(orders[0]).not.toEqual([...Array(12).keys()]); // some finished out of order
  });

  test("a cut at the nth datasync leaves every write since the previous one to chance", async () => {
    const t = await setup("cut-sync.bin", { powerCut: { keep: 0, drop: 1, torn: 0 }, keepSizeProbability: 0 });
    t.fault.cutPowerAtCall(2, ["datasync"]);
    await t.write(0, BLOCK, 1);
    await t.sync(); // datasync 1
    await t.write(BLOCK, BLOCK, 2);
    await t.write(2 * BLOCK, BLOCK, 3);
    await expect(t.sync()).rejects.toBeInstanceOf(IoError); // datasync 2: the cut
    const cut = await t.fault.powerCut();
    expect(cut[0]?.dropped).toBe(2);
    expect(fs.readFileSync(t.file).length).toBe(BLOCK);
    t.release();
  });

  test("quarantined frees catch a write into a buffer after it was freed", () => {
    const fault = new FaultBackend({ quarantineFrees: true });
    const buffer = fault.alloc(BLOCK);
    const clean = fault.alloc(BLOCK);
    fault.free(buffer);
    fault.free(clean);
    buffer.bytes[100] = 1; // use after free
    fault.close();
    expect(fault.counts.useAfterFree).toBe(1);
    expect(fault.useAfterFreeReports[0]).toContain("offset 100");
  });

  test("a store on the wrapper: acknowledged transactions survive a power cut at any call", async () => {
    let cuts = 0;
    let survivors = 0;
    for (let seed = 1; seed <= 12; seed++) {
      const file = path.join(dir, `store-${seed}.lss`);
      const fault = new FaultBackend({ seed, simulateSync: true, direct: false });
      const store = await openStore(file, { segmentSize: 256 << 10, bufferSize: 64 << 10 }, fault);
      fault.cutPowerAtCall(1 + seed * 3);
      let acked = 0;
      for (let k = 1; k <= 20 && !fault.isCut; k++) {
        try {
          await store.transaction((tx) => tx.write(1n, new Uint8Array([k, k, k])));
          acked = k;
        } catch (error) {
          expect(fault.isCut as boolean).toBe(true);
          void error;
        }
      }
      if (fault.isCut) cuts += 1; // the cut came at its call, in the middle of the workload
      await fault.powerCut();
      await store.close().catch(() => {});
      fault.close();
      const reopened = await Store.open(file, { io: "portable" });
      const value = await reopened.read(1n);
      const k = value === undefined ? 0 : (value[0] as number);
      expect(k).toBeGreaterThanOrEqual(acked);
      if (k > 0) survivors += 1;
      await reopened.close();
    }
    expect(cuts).toBe(12);
    expect(survivors).toBeGreaterThan(0);
  });
});

// Used only for types in the helpers above.
export type { FileHandle, NativeBuffer };
