/**
 * Raw block devices (loop devices over sparse files) as stores, and the paths bloom-lss must
 * refuse without writing a byte.
 *
 * - A device holding no store is refused without `format: true` (ext4, zeros), unchanged; with
 *   it, it becomes a store whose size comes from the device; data written reads back after a
 *   reopen without `format`; a mounted device is refused, even with `format`.
 * - Churning three times the device's size: the cleaner keeps the store inside the device, every
 *   acknowledged transaction reads back (also after a reopen), and a store that fills up gets
 *   `NoSpaceError`, never a write past the end of the device.
 * - A device that held an earlier store is formatted: its new segments are zeroed before use, so
 *   the earlier store's units, which line up with the new log's, are never replayed into it; a
 *   store whose root blocks are damaged is never formatted over.
 * - `bloom-lss stat` reads a store on a device; a second opener gets `StoreLockedError`.
 * - `/dev/null`, a `/proc` file, a directory and a non-empty text file: typed errors, unchanged.
 *
 * Loop devices need root and `losetup`; without them the device tests are skipped with the
 * reason on stderr. Every loop device is detached in afterAll, also when a test fails.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  CorruptionError,
  DeviceBusyError,
  NoSpaceError,
  NotAStoreError,
  Store,
  type LssError,
} from "../../src/index.ts";
import { BACKENDS, fillPattern, rng, scratchDir } from "../helpers.ts";
import { valueFor } from "../workers/model.ts";
import { MappedFile } from "../../src/io/mapped-file.ts";
import { blockDeviceBytes } from "../../src/io/libc.ts";
import { startJob, withTimeout } from "../workers/util.ts";

const DEVICE_BYTES = 32 << 20;
/** The devices the fill-up tests fill: smaller, so filling them is quick. */
const SMALL_DEVICE_BYTES = 24 << 20;
const SEGMENT_BYTES = 1 << 20;
const MAIN = path.resolve(import.meta.dir, "..", "..", "src", "cli", "main.ts");
const CHILD = path.resolve(import.meta.dir, "raw-device-writer.ts");

const scratch = scratchDir("raw-device");
const attached: string[] = [];

function sh(command: string, args: string[]): { ok: boolean; out: string } {
  const ran = spawnSync(command, args, { encoding: "utf8", timeout: 60_000, killSignal: "SIGKILL" });
  return { ok: ran.status === 0, out: `${ran.stdout ?? ""}${ran.stderr ?? ""}${ran.error !== undefined ? String(ran.error) : ""}`.trim() };
}

/** A loop device over a new sparse file of `bytes`, or the reason there is none. */
function newLoopDevice(name: string, bytes: number): string | { reason: string } {
  const backing = path.join(scratch.dir, `${name}.img`);
  fs.writeFileSync(backing, "");
  fs.truncateSync(backing, bytes);
  const made = sh("losetup", ["-f", "--show", backing]);
  if (!made.ok || !made.out.startsWith("/dev/")) return { reason: `losetup -f --show failed: ${made.out}` };
  const device = made.out.split("\n")[0] as string;
  attached.push(device);
  return device;
}

// Set up at load: whether the device tests can run must be known when they are declared.
const loops: Record<string, string> = {};
let skipReason: string | undefined;
if (process.getuid?.() !== 0) {
  skipReason = "not running as root (loop devices need it)";
} else {
  for (const name of ["ext4", "mounted", "previous", ...BACKENDS.map((io) => `store-${io}`), ...BACKENDS.map((io) => `full-${io}`)]) {
    const made = newLoopDevice(name, name.startsWith("full-") ? SMALL_DEVICE_BYTES : DEVICE_BYTES);
    if (typeof made !== "string") {
      skipReason = made.reason;
      break;
    }
    loops[name] = made;
  }
}
if (skipReason !== undefined) console.warn(`raw-device.test.ts: skipping the loop-device tests: ${skipReason}`);
const noLoops = skipReason !== undefined;
const haveMkfs = !noLoops && sh("mkfs.ext4", ["-V"]).ok;

afterAll(() => {
  sh("umount", [path.join(scratch.dir, "mnt")]);
  for (const device of attached) {
    const detached = sh("losetup", ["-d", device]);
    if (!detached.ok) console.warn(`raw-device.test.ts: losetup -d ${device} failed: ${detached.out}`);
  }
  scratch.cleanup();
}, 60_000);

function loop(name: string): string {
  return loops[name] as string;
}

/** SHA-256 of the whole device (or file). */
function hashOf(target: string): string {
  const hash = createHash("sha256");
  const fd = fs.openSync(target, "r");
  try {
    const chunk = Buffer.alloc(4 << 20);
    for (let at = 0; ; ) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, at);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      at += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest("hex");
}

/** The rejection of `promise` (fails the test if it resolves; closes what it opened). */
async function rejectionOf(promise: Promise<Store>): Promise<LssError> {
  try {
    const store = await promise;
    await store.close();
  } catch (error) {
    return error as LssError;
  }
  throw new Error("expected the open to be refused, and it succeeded");
}

function value(seed: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  fillPattern(out, seed);
  return out;
}

/** Every entry of `model` reads back equal; every seid of `deleted` reads back as missing. */
async function expectModel(store: Store, model: Map<bigint, number>, sizeOf: (seed: number) => number, deleted: Iterable<bigint>): Promise<void> {
  for (const [seid, seed] of model) {
    const got = await store.read(seid);
    if (got === undefined || Buffer.compare(Buffer.from(got), Buffer.from(value(seed, sizeOf(seed)))) !== 0) {
      throw new Error(`seid ${seid} does not read back its last acknowledged value (seed ${seed}): got ${got === undefined ? "nothing" : `${got.length} bytes`}`);
    }
  }
  for (const seid of deleted) if (!model.has(seid)) expect(await store.read(seid)).toBeUndefined();
}

describe.skipIf(noLoops)("a raw block device as a store", () => {
  test.skipIf(!haveMkfs)("a device holding ext4 is refused, byte for byte unchanged, without and with format (mounted)", async () => {
    const device = loop("ext4");
    const made = sh("mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device]);
    expect(made.out).toBe("");
    const before = hashOf(device);
    for (const io of BACKENDS) {
      const error = await rejectionOf(Store.open(device, { io }));
      expect(error).toBeInstanceOf(NotAStoreError);
      expect(error.code).toBe("LSS_NOT_A_STORE");
      expect(error.message).toContain("format: true");
      // Read-only opens write nothing either, and say the same.
      expect((await rejectionOf(Store.open(device, { io, readOnly: true }))).code).toBe("LSS_NOT_A_STORE");
      expect(hashOf(device)).toBe(before);
    }
    // Mounted (read-only, so the filesystem itself writes nothing meanwhile): in use, so even
    // format: true is refused.
    const mnt = path.join(scratch.dir, "mnt");
    fs.mkdirSync(mnt, { recursive: true });
    const mounted = sh("mount", ["-o", "ro", device, mnt]);
    if (!mounted.ok) {
      console.warn(`raw-device.test.ts: cannot mount the ext4 loop device (${mounted.out}); the mounted case is not checked`);
      return;
    }
    try {
      const whileMounted = hashOf(device);
      for (const io of BACKENDS) {
        const error = await rejectionOf(Store.open(device, { io, format: true }));
        expect(error).toBeInstanceOf(DeviceBusyError);
        expect(error.code).toBe("LSS_DEVICE_BUSY");
      }
      expect(hashOf(device)).toBe(whileMounted);
    } finally {
      expect(sh("umount", [mnt]).ok).toBe(true);
    }
  }, 60_000);

  test("a device of zeros is not taken for an empty file: refused without format, unchanged", async () => {
    const device = loop("mounted"); // fresh: all zeros
    const before = hashOf(device);
    for (const io of BACKENDS) {
      const error = await rejectionOf(Store.open(device, { io }));
      expect(error.code).toBe("LSS_NOT_A_STORE");
    }
    expect(hashOf(device)).toBe(before);
  }, 60_000);

  for (const io of BACKENDS) {
    test(`${io}: format, write, reopen without format; size from the device; churn 3× the device inside it`, async () => {
      const device = loop(`store-${io}`);
      const options = { io, segmentSize: SEGMENT_BYTES, bufferSize: 256 << 10 } as const;
      const sizeOf = (seed: number): number => 1024 + (seed % 29) * 1024;
      const model = new Map<bigint, number>();
      const everWritten = new Set<bigint>();

      let store = await Store.open(device, { ...options, format: true });
      expect(store.io).toBe(io === "uring" ? "io_uring" : "portable");
      expect(store.stats().deviceBytes).toBe(DEVICE_BYTES);
      await store.transaction((tx) => {
        for (let i = 1; i <= 50; i++) {
          tx.write(BigInt(i), value(i, sizeOf(i)));
          model.set(BigInt(i), i);
          everWritten.add(BigInt(i));
        }
      });
      await store.close();

      // format: true again on a device that holds a store opens it: nothing is erased.
      store = await Store.open(device, { ...options, format: true });
      await expectModel(store, model, sizeOf, everWritten);
      await store.close();
      store = await Store.open(device, options);
      await expectModel(store, model, sizeOf, everWritten);

      // Churn: overwrites and deletes of a live set of about a third of the device, until the
      // log has written three times the device's size.
      const next = rng(io === "uring" ? 11 : 12);
      const keys = 300;
      let seed = 1000;
      let transactions = 0;
      const limitSegments = Math.floor((DEVICE_BYTES - 8192) / SEGMENT_BYTES);
      while (store.stats().bytesWritten < 3 * DEVICE_BYTES) {
        const writes: Array<[bigint, number]> = [];
        const deletes: bigint[] = [];
        for (let i = 0; i < 48; i++) writes.push([BigInt(1 + Math.floor(next() * keys)), seed++]);
        for (let i = 0; i < 12; i++) deletes.push(BigInt(1 + Math.floor(next() * keys)));
        await store.transaction((tx) => {
          for (const [seid, s] of writes) tx.write(seid, value(s, sizeOf(s)));
          for (const seid of deletes) tx.delete(seid);
        });
        // Acknowledged: the model follows, in the order the transaction applied them.
        for (const [seid, s] of writes) {
          model.set(seid, s);
          everWritten.add(seid);
        }
        for (const seid of deletes) model.delete(seid);
        transactions += 1;
        const stats = store.stats();
        expect(stats.fileBytes).toBeLessThanOrEqual(DEVICE_BYTES);
        expect(stats.segmentsUsed + stats.segmentsFree + stats.segmentsPending).toBeLessThanOrEqual(limitSegments);
        expect(stats.readOnly).toBe(false);
      }
      const stats = store.stats();
      console.log(
        `raw device (${io}): ${transactions} transactions, ${stats.bytesWritten} B written to a ${DEVICE_BYTES} B device, ` +
          `${stats.cleaner.segmentsCleaned} segments cleaned, ${stats.segmentsUsed} used / ${stats.segmentsFree} free / ${stats.segmentsPending} pending, ` +
          `store extent ${stats.fileBytes} B, write amplification ${stats.writeAmplification.toFixed(2)}`,
      );
      expect(stats.elements).toBe(model.size);
      await expectModel(store, model, sizeOf, everWritten);
      // compact({ shrink }) never truncates a device.
      const compacted = await store.compact({ shrink: true });
      expect(compacted.bytesFreed).toBe(0);
      await store.close();

      // Without caches, so every read goes to the device; readSync too (its own descriptor).
      store = await Store.open(device, { ...options, cacheBytes: 0, blockCacheBytes: 0 });
      await expectModel(store, model, sizeOf, everWritten);
      for (const [seid, s] of [...model].slice(0, 50)) expect(Buffer.from(store.readSync(seid) as Uint8Array)).toEqual(Buffer.from(value(s, sizeOf(s))));
      expect(store.stats().elements).toBe(model.size);
      // A Worker reads the device through a mapping of it (io/mapped-file.ts sizes a device by
      // ioctl, not fstat): every value byte-exact, before and after the owner overwrites them.
      const tagged = Array.from({ length: 40 }, (_, i) => BigInt(10_000 + i));
      for (const round of [1, 2]) {
        await store.transaction((tx) => {
          for (const seid of tagged) tx.write(seid, valueFor(round * 1_000 + Number(seid), seid));
        });
        await store.flush();
        const job = startJob<{ tags: Array<number | null> }>(store.share(), { kind: "tags", keys: tagged });
        try {
          const { tags } = await withTimeout(job.result, 60_000, "a Worker's reads of the device");
          expect(tags).toEqual(tagged.map((seid) => round * 1_000 + Number(seid)));
        } finally {
          job.worker.terminate();
        }
      }
      await store.close({ detachWorkers: true });
      // And it was through the mapping: a device maps whole, sized by ioctl (fstat says 0).
      const fd = fs.openSync(device, "r");
      const mapped = new MappedFile(fd);
      try {
        expect(mapped.bytes(0, 4096)).toBeDefined();
        expect(mapped.mappedBytes).toBe(blockDeviceBytes(fd));
        expect(mapped.mappedBytes).toBeGreaterThan(0);
      } finally {
        mapped.close();
        fs.closeSync(fd);
      }
    }, 180_000);

    test(`${io}: a store that fills its device gets NoSpaceError, keeps every acknowledged transaction, and makes room by deleting and compacting`, async () => {
      const device = loop(`full-${io}`);
      const options = { io, segmentSize: SEGMENT_BYTES, bufferSize: 256 << 10 } as const;
      const sizeOf = (): number => 200 << 10;
      const model = new Map<bigint, number>();
      let store = await Store.open(device, { ...options, format: true });
      let refusal: unknown;
      // Unique seids only, nothing to clean: the device must fill. Bounded: the device holds far
      // fewer than this many 200 KiB values.
      for (let i = 1; i <= 2 * (SMALL_DEVICE_BYTES / sizeOf()); i++) {
        try {
          await store.transaction((tx) => tx.write(BigInt(i), value(i, sizeOf())));
          model.set(BigInt(i), i);
        } catch (error) {
          refusal = error;
          break;
        }
      }
      console.log(`raw device full (${io}): ${model.size} values of ${sizeOf()} B acknowledged, then ${String(refusal)}; readOnly ${store.stats().readOnly}`);
      expect(refusal).toBeInstanceOf(NoSpaceError);
      expect((refusal as LssError).code).toBe("LSS_NO_SPACE");
      const stats = store.stats();
      expect(stats.deviceBytes).toBe(SMALL_DEVICE_BYTES);
      expect(stats.fileBytes).toBeLessThanOrEqual(SMALL_DEVICE_BYTES);
      expect(model.size).toBeGreaterThan(SMALL_DEVICE_BYTES / sizeOf() / 2);
      await expectModel(store, model, sizeOf, []);
      // Refused, not stopped: the store empties itself in its full-disk reserve, and writes go on.
      expect(stats.readOnly).toBe(false);
      expect(stats.outOfSpace).toBe(true);
      const doomed = [...model.keys()].filter((_, i) => i % 4 !== 0);
      await store.transaction((tx) => {
        for (const seid of doomed) tx.delete(seid);
      });
      for (const seid of doomed) model.delete(seid);
      await store.compact();
      expect(store.stats().outOfSpace).toBe(false);
      for (let i = 100_001; i <= 100_010; i++) {
        await store.transaction((tx) => tx.write(BigInt(i), value(i, sizeOf())));
        model.set(BigInt(i), i);
      }
      await expectModel(store, model, sizeOf, doomed);
      await store.close();
      store = await Store.open(device, options);
      await expectModel(store, model, sizeOf, doomed);
      await store.close();
    }, 120_000);
  }

  test("a device that held an earlier store: formatting zeroes each new segment, so none of its units are replayed", async () => {
    const device = loop("previous");
    // The children write on both backends, and the parent opens right after each one died (its
    // io_uring I/O may still be in flight then: the open waits for it, see src/io/lock.ts). The
    // parent reads on every backend.
    let children = 0;
    // Both stores run the same workload (same seids and sizes, so the same units at the same
    // places), each dying without close; the earlier one gets further. Then the earlier store's
    // root is wiped (as a partition is "emptied") and the device is formatted for the new one.
    const child = (label: string, count: number): void => {
      const childIo = BACKENDS[children++ % BACKENDS.length] as string;
      const ran = spawnSync(process.execPath, [CHILD, device, childIo, label, String(count)], { encoding: "utf8", timeout: 60_000, killSignal: "SIGKILL" });
      expect(`${ran.stdout}${ran.stderr}`.trim()).toBe(`${label}: ${count} transactions`);
    };
    const wipeRoot = async (): Promise<void> => {
      const fd = fs.openSync(device, "r+");
      fs.writeSync(fd, Buffer.alloc(8192), 0, 8192, 0);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      for (const io of BACKENDS) expect((await rejectionOf(Store.open(device, { io }))).code).toBe("LSS_NOT_A_STORE");
    };
    const expectOnly = async (label: string, count: number): Promise<void> => {
      for (const io of BACKENDS) await expectOnlyOn(io, label, count);
    };
    const expectOnlyOn = async (io: (typeof BACKENDS)[number], label: string, count: number): Promise<void> => {
      // Read-only: a writable open would add a checkpoint, and the next backend would replay none.
      const store = await Store.open(device, { io, readOnly: true });
      try {
        expect(store.stats().recovery.transactionsReplayed).toBe(count);
        for (let i = 1; i <= 60; i++) {
          const got = await store.read(BigInt(i));
          if (i <= count) expect(new TextDecoder().decode(got?.subarray(0, label.length))).toBe(label);
          else expect(got).toBeUndefined();
        }
      } finally {
        await store.close();
      }
    };
    child("earlier", 60);
    await wipeRoot();
    // 25 transactions reach into the fifth segment: the segments taken after the first.
    child("newer", 25);
    await expectOnly("newer", 25);
    // 2 stay inside the first segment, which formatting itself zeroes.
    await wipeRoot();
    child("newest", 2);
    await expectOnly("newest", 2);

    // A store whose root blocks are both damaged is never formatted over: it may be restored.
    const fd = fs.openSync(device, "r+");
    for (const copy of [0, 4096]) {
      const byte = Buffer.alloc(1);
      fs.readSync(fd, byte, 0, 1, copy + 200);
      byte[0] = (byte[0] as number) ^ 0xff;
      fs.writeSync(fd, byte, 0, 1, copy + 200);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const damaged = hashOf(device);
    for (const io of BACKENDS) {
      const refused = await rejectionOf(Store.open(device, { io, format: true }));
      expect(refused).toBeInstanceOf(CorruptionError);
      expect(refused.message).toContain("never formatted over");
    }
    expect(hashOf(device)).toBe(damaged);
  }, 120_000);

  test("bloom-lss stat reads a store on a device", async () => {
    const device = loop(`store-${BACKENDS[0]}`);
    const store = await Store.open(device, { format: true, segmentSize: SEGMENT_BYTES });
    await store.transaction((tx) => tx.write(7n, new Uint8Array([7])));
    // A second opener of the device is told the store is locked (not that the device is busy).
    expect((await rejectionOf(Store.open(device, { format: true }))).code).toBe("LSS_STORE_LOCKED");
    await store.close();
    const ran = spawnSync(process.execPath, [MAIN, "stat", device, "--json"], { encoding: "utf8", timeout: 60_000, killSignal: "SIGKILL" });
    expect(ran.stderr).toBe("");
    expect(ran.status).toBe(0);
    const stats = JSON.parse(ran.stdout);
    expect(stats.path).toBe(device);
    expect(stats.deviceBytes).toBe(DEVICE_BYTES);
    expect(stats.elements).toBeGreaterThan(0);
  }, 60_000);
});

describe("paths that are not a store are refused, unchanged", () => {
  for (const io of BACKENDS) {
    test(`${io}: /dev/null, a /proc file, a directory, a non-empty text file`, async () => {
      const nullBefore = fs.statSync("/dev/null");
      const error = await rejectionOf(Store.open("/dev/null", { io }));
      expect(error).toBeInstanceOf(NotAStoreError);
      expect(error.code).toBe("LSS_NOT_A_STORE");
      expect((await rejectionOf(Store.open("/dev/null", { io, format: true }))).code).toBe("LSS_NOT_A_STORE");
      const nullAfter = fs.statSync("/dev/null");
      expect([nullAfter.rdev, nullAfter.mode]).toEqual([nullBefore.rdev, nullBefore.mode]);

      // (A writable /proc/sys file would show a write, but a failing run would then change the
      // machine's settings; /proc/self/status only shows the refusal.)
      const refused = await rejectionOf(Store.open("/proc/self/status", { io }));
      expect(refused).toBeInstanceOf(NotAStoreError);
      expect(refused.message).toContain("proc");

      const dir = path.join(scratch.dir, `dir-${io}`);
      fs.mkdirSync(dir);
      const dirBefore = fs.statSync(dir).mtimeMs;
      for (const options of [{}, { readOnly: true }, { format: true }]) {
        const refused = await rejectionOf(Store.open(dir, { io, ...options }));
        expect(refused.code).toBe("LSS_NOT_A_STORE");
      }
      expect(fs.readdirSync(dir)).toEqual([]);
      expect(fs.statSync(dir).mtimeMs).toBe(dirBefore);

      const text = path.join(scratch.dir, `notes-${io}.txt`);
      fs.writeFileSync(text, "a shopping list, not a store\n".repeat(1000));
      const textHash = hashOf(text);
      const textTime = fs.statSync(text).mtimeMs;
      for (const options of [{}, { format: true }]) {
        const refused = await rejectionOf(Store.open(text, { io, ...options }));
        expect(refused).toBeInstanceOf(CorruptionError);
        expect(refused.code).toBe("LSS_CORRUPTION");
      }
      expect(hashOf(text)).toBe(textHash);
      expect(fs.statSync(text).mtimeMs).toBe(textTime);
    }, 60_000);
  }

  test("an empty regular file still becomes a store; format with readOnly is refused", async () => {
    const file = path.join(scratch.dir, "empty.lss");
    fs.writeFileSync(file, "");
    const store = await Store.open(file, { io: "portable" });
    await store.transaction((tx) => tx.write(1n, new Uint8Array([1, 2, 3])));
    await store.close();
    expect(fs.statSync(file).size).toBeGreaterThan(0);
    expect((await rejectionOf(Store.open(file, { io: "portable", format: true, readOnly: true }))).code).toBe("LSS_INVALID_ARGUMENT");
  }, 60_000);
});
