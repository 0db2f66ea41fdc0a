/**
 * The native shim, directly and through UringBackend: probe, rings, aligned memory, batched
 * writes, errno completions, flock, typed errors, and a wait() that leaves the event loop alone.
 * Scratch files live under .tmp-test/ in the project (not /tmp, which may be tmpfs).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { toArrayBuffer } from "bun:ffi";
import { ALIGNMENT_BYTES, type IoCompletion, type IoOp } from "../../src/io/backend.ts";
import { EBADF, EINVAL, EWOULDBLOCK } from "../../src/io/errno.ts";
import {
  COMPLETION_ENTRY_BYTES,
  cString,
  loadShim,
  O_CREAT,
  O_DIRECT,
  O_RDWR,
  OP_DATASYNC,
  OP_FLAG_LINK,
  OP_WRITE,
  shimAlloc,
  shimFree,
  shimInfo,
  shimProbe,
  shimRingCreate,
  shimRingDestroy,
  SUBMISSION_ENTRY_BYTES,
} from "../../src/io/shim.ts";
import { UringBackend } from "../../src/io/uring.ts";
import { InvalidArgumentError, IoError, IoUnavailableError, StoreClosedError, StoreLockedError } from "../../src/errors.ts";

const TMP_ROOT = path.resolve(import.meta.dir, "..", "..", ".tmp-test");
let dir: string;

beforeAll(() => {
  fs.mkdirSync(TMP_ROOT, { recursive: true });
  dir = fs.mkdtempSync(path.join(TMP_ROOT, "shim-"));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  try {
    fs.rmdirSync(TMP_ROOT); // only when no other test still uses it
  } catch {
    // not empty: leave it to its other users
  }
});

function file(name: string): string {
  return path.join(dir, name);
}

async function reapAll(backend: UringBackend, count: number, timeoutMs = 10_000): Promise<IoCompletion[]> {
  const out: IoCompletion[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count && Date.now() < deadline) {
    await backend.wait(count - out.length, 100);
    backend.reap(out);
  }
  return out;
}

describe("shim ABI", () => {
  test("loads, and the probe sets up an io_uring", () => {
    const info = shimInfo();
    expect(info.path.endsWith("libbloom_lss_shim.so")).toBe(true);
    expect(shimProbe()).toBe(0);
  });

  test("rings are created and destroyed; bad handles are -EBADF, not crashes", () => {
    const ring = shimRingCreate(64);
    expect(ring).toBeGreaterThan(0);
    expect(shimRingDestroy(ring)).toBe(0);
    expect(shimRingDestroy(ring)).toBe(-EBADF);
    expect(shimRingDestroy(0)).toBe(-EBADF);
    expect(shimRingDestroy(123_456)).toBe(-EBADF);
    expect(shimRingCreate(0)).toBe(-EINVAL);
    const lib = loadShim();
    expect(lib.lss_submit(ring, 0, 1)).toBe(-EBADF);
    expect(lib.lss_reap(ring, 0, 1)).toBe(-EBADF);
    expect(lib.lss_wait(ring, 1, 1000)).toBe(-EBADF);
  });

  test("alloc returns zeroed 4096-aligned memory; alloc(0) is 0", () => {
    const addresses: number[] = [];
    for (const size of [1, 100, 4096, 4097, 65_536, 1 << 20]) {
      const address = shimAlloc(size);
      expect(address).toBeGreaterThan(0);
      expect(address % 4096).toBe(0);
      const view = new Uint8Array(toArrayBuffer(address, 0, size));
      expect(view.every((b) => b === 0)).toBe(true);
      view.fill(0xab);
      addresses.push(address);
    }
    for (const address of addresses) shimFree(address);
    expect(shimAlloc(0)).toBe(0);
    shimFree(0); // ignored
  });

  test("raw submit: a linked write → datasync pair completes with its user data; bad ops are -EINVAL", async () => {
    const lib = loadShim();
    const ring = shimRingCreate(8);
    const fd = lib.lss_open(cString(file("raw.bin")), O_RDWR | O_CREAT | O_DIRECT, 0o644);
    expect(fd).toBeGreaterThanOrEqual(0);
    const data = shimAlloc(4096);
    const ops = shimAlloc(2 * SUBMISSION_ENTRY_BYTES);
    const out = shimAlloc(4 * COMPLETION_ENTRY_BYTES);
    try {
      new Uint8Array(toArrayBuffer(data, 0, 4096)).fill(7);
      const v = new DataView(toArrayBuffer(ops, 0, 2 * SUBMISSION_ENTRY_BYTES));
      v.setUint32(0, OP_WRITE, true);
      v.setInt32(4, fd, true);
      v.setBigUint64(8, BigInt(data), true);
      v.setUint32(16, 4096, true);
      v.setUint32(20, OP_FLAG_LINK, true);
      v.setBigUint64(24, 8192n, true);
      v.setBigUint64(32, 0xdead_beef_cafen, true);
      v.setUint32(40, OP_DATASYNC, true);
      v.setInt32(44, fd, true);
      v.setBigUint64(72, 2n ** 63n + 5n, true);
      expect(lib.lss_submit(ring, ops, 2)).toBe(2);
      let ready = 0;
      for (let i = 0; i < 1000 && ready < 2; i++) ready = lib.lss_wait(ring, 2, 10_000);
      expect(ready).toBe(2);
      expect(lib.lss_reap(ring, out, 4)).toBe(2);
      const c = new DataView(toArrayBuffer(out, 0, 4 * COMPLETION_ENTRY_BYTES));
      const got = new Map<bigint, number>([
        [c.getBigUint64(0, true), c.getInt32(8, true)],
        [c.getBigUint64(16, true), c.getInt32(24, true)],
      ]);
      expect(got.get(0xdead_beef_cafen)).toBe(4096);
      expect(got.get(2n ** 63n + 5n)).toBe(0);
      expect(Number(lib.lss_file_size(fd))).toBe(12_288);
      // Unknown op code or flag bits: refused whole, nothing queued.
      v.setUint32(0, 9, true);
      expect(lib.lss_submit(ring, ops, 1)).toBe(-EINVAL);
      v.setUint32(0, OP_WRITE, true);
      v.setUint32(20, 0x80, true);
      expect(lib.lss_submit(ring, ops, 1)).toBe(-EINVAL);
      expect(lib.lss_submit(ring, 0, 1)).toBe(-14); // EFAULT
      // A timeout with nothing in flight is not an error: just the count (0).
      const t0 = performance.now();
      expect(lib.lss_wait(ring, 1, 2000)).toBe(0);
      expect(performance.now() - t0).toBeLessThan(500);
    } finally {
      shimFree(data);
      shimFree(ops);
      shimFree(out);
      lib.lss_close(fd);
      shimRingDestroy(ring);
    }
  });

  test("raw submit takes what fits in the SQ and never splits a link chain", async () => {
    const lib = loadShim();
    const ring = shimRingCreate(4); // SQ of 4 entries
    const fd = lib.lss_open(cString(file("chain.bin")), O_RDWR | O_CREAT, 0o644);
    const ops = shimAlloc(6 * SUBMISSION_ENTRY_BYTES);
    const out = shimAlloc(16 * COMPLETION_ENTRY_BYTES);
    const v = new DataView(toArrayBuffer(ops, 0, 6 * SUBMISSION_ENTRY_BYTES));
    const encode = (flags: number[]): void => {
      flags.forEach((f, i) => {
        v.setUint32(i * 40, OP_DATASYNC, true);
        v.setInt32(i * 40 + 4, fd, true);
        v.setUint32(i * 40 + 20, f, true);
        v.setBigUint64(i * 40 + 32, BigInt(i), true);
      });
    };
    const drain = async (count: number): Promise<number> => {
      let got = 0;
      for (let i = 0; i < 1000 && got < count; i++) {
        lib.lss_wait(ring, count - got, 10_000);
        got += lib.lss_reap(ring, out, 16);
      }
      return got;
    };
    try {
      encode([0, 0, 0, 0, 0, 0]);
      expect(lib.lss_submit(ring, ops, 6)).toBe(4); // only 4 fit
      expect(await drain(4)).toBe(4);
      encode([0, 0, OP_FLAG_LINK, OP_FLAG_LINK, 0, 0]); // the chain 2→3→4 does not fit after 0, 1
      expect(lib.lss_submit(ring, ops, 6)).toBe(2);
      expect(await drain(2)).toBe(2);
      encode([OP_FLAG_LINK, OP_FLAG_LINK, OP_FLAG_LINK, OP_FLAG_LINK, 0]); // a chain of 5 never fits in 4
      expect(lib.lss_submit(ring, ops, 5)).toBe(-EINVAL);
      encode([OP_FLAG_LINK, OP_FLAG_LINK, OP_FLAG_LINK, 0]); // a chain of exactly 4 does
      expect(lib.lss_submit(ring, ops, 4)).toBe(4);
      expect(await drain(4)).toBe(4);
      expect(lib.lss_submit(ring, ops, 0)).toBe(0); // nothing left over to flush
    } finally {
      shimFree(ops);
      shimFree(out);
      lib.lss_close(fd);
      shimRingDestroy(ring);
    }
  });

  test("flock on two descriptors of one file: the second is refused", () => {
    const lib = loadShim();
    const name = cString(file("lock.bin"));
    const a = lib.lss_open(name, O_RDWR | O_CREAT, 0o644);
    const b = lib.lss_open(name, O_RDWR, 0o644);
    expect(a).toBeGreaterThanOrEqual(0);
    expect(b).toBeGreaterThanOrEqual(0);
    expect(lib.lss_lock(a, 1, 1)).toBe(0);
    expect(lib.lss_lock(b, 1, 1)).toBe(-EWOULDBLOCK);
    expect(lib.lss_unlock(a)).toBe(0);
    expect(lib.lss_lock(b, 1, 1)).toBe(0);
    expect(lib.lss_close(a)).toBe(0);
    expect(lib.lss_close(b)).toBe(0);
    expect(lib.lss_close(b)).toBe(-EBADF);
  });

  test("file calls on bad descriptors are -errno", () => {
    const lib = loadShim();
    expect(Number(lib.lss_file_size(987_654))).toBe(-EBADF);
    expect(lib.lss_datasync(987_654)).toBe(-EBADF);
    expect(lib.lss_ftruncate(987_654, 0)).toBe(-EBADF);
    expect(lib.lss_fallocate(987_654, 0, 0, 4096)).toBe(-EBADF);
    expect(lib.lss_lock(987_654, 1, 1)).toBe(-EBADF);
    expect(lib.lss_open(cString(file("missing/nowhere")), O_RDWR, 0o644)).toBe(-2);
    expect(lib.lss_open(null, O_RDWR, 0o644)).toBe(-14);
  });
});

describe("UringBackend", () => {
  test("256 writes submitted at once: every user data completes exactly once, bytes land right", async () => {
    const backend = UringBackend.create({ queueDepth: 256 });
    expect(backend.kind).toBe("io_uring");
    const handle = backend.openFile(file("batch.bin"), { create: true, direct: true });
    expect(handle.direct).toBe(true);
    const count = 256;
    const buffer = backend.alloc(count * ALIGNMENT_BYTES);
    expect(buffer.ptr % ALIGNMENT_BYTES).toBe(0);
    const ops: IoOp[] = [];
    for (let i = 0; i < count; i++) {
      buffer.bytes.fill(i & 0xff, i * ALIGNMENT_BYTES, (i + 1) * ALIGNMENT_BYTES);
      ops.push({
        op: "write",
        fd: handle.fd,
        buffer,
        bufferOffset: i * ALIGNMENT_BYTES,
        lengthBytes: ALIGNMENT_BYTES,
        fileOffset: (count - 1 - i) * ALIGNMENT_BYTES,
        userData: 2 ** 40 + i * 7, // beyond 32 bits on purpose
      });
    }
    backend.submit(ops);
    expect(backend.inFlight).toBe(count);
    expect(() => backend.free(buffer)).toThrow(InvalidArgumentError); // in flight
    const completions = await reapAll(backend, count);
    expect(completions.length).toBe(count);
    const seen = new Set<number>();
    for (const c of completions) {
      expect(c.result).toBe(ALIGNMENT_BYTES);
      expect(seen.has(c.userData)).toBe(false);
      seen.add(c.userData);
    }
    for (let i = 0; i < count; i++) expect(seen.has(2 ** 40 + i * 7)).toBe(true);
    expect(backend.inFlight).toBe(0);
    expect(backend.fileSizeBytes(handle)).toBe(count * ALIGNMENT_BYTES);

    // Read it all back in one op and check the reversed order.
    const check = backend.alloc(count * ALIGNMENT_BYTES);
    backend.submit([{ op: "read", fd: handle.fd, buffer: check, bufferOffset: 0, lengthBytes: count * ALIGNMENT_BYTES, fileOffset: 0, userData: -1.5 }]);
    const [read] = await reapAll(backend, 1);
    expect(read).toEqual({ userData: -1.5, result: count * ALIGNMENT_BYTES });
    for (let i = 0; i < count; i++) expect(check.bytes[(count - 1 - i) * ALIGNMENT_BYTES + 17]).toBe(i & 0xff);

    backend.free(buffer);
    backend.free(check);
    backend.closeFile(handle);
    backend.close();
  });

  test("a misaligned O_DIRECT write completes with -EINVAL and the process carries on", async () => {
    const backend = UringBackend.create({ queueDepth: 8 });
    const handle = backend.openFile(file("misaligned.bin"), { create: true });
    expect(handle.direct).toBe(true);
    const buffer = backend.alloc(2 * ALIGNMENT_BYTES);
    const base = { op: "write", fd: handle.fd, buffer } as const;
    backend.submit([
      { ...base, bufferOffset: 0, lengthBytes: ALIGNMENT_BYTES, fileOffset: 100, userData: 1 }, // misaligned offset
      { ...base, bufferOffset: 0, lengthBytes: 100, fileOffset: 0, userData: 2 }, // misaligned length
      // Misaligned memory across a page. (On this kernel a 512-byte write from address +1 is
      // accepted, so only the page-crossing case is asserted.)
      { ...base, bufferOffset: 1, lengthBytes: ALIGNMENT_BYTES, fileOffset: 0, userData: 3 },
      { ...base, bufferOffset: 0, lengthBytes: ALIGNMENT_BYTES, fileOffset: ALIGNMENT_BYTES, userData: 4 }, // fine
    ]);
    const completions = await reapAll(backend, 4);
    const byData = new Map(completions.map((c) => [c.userData, c.result]));
    expect(byData.get(1)).toBe(-EINVAL);
    expect(byData.get(2)).toBe(-EINVAL);
    expect(byData.get(3)).toBe(-EINVAL);
    expect(byData.get(4)).toBe(ALIGNMENT_BYTES);
    // And the ring still works afterwards.
    backend.submit([{ ...base, bufferOffset: 0, lengthBytes: ALIGNMENT_BYTES, fileOffset: 0, userData: 5 }]);
    expect(await reapAll(backend, 1)).toEqual([{ userData: 5, result: ALIGNMENT_BYTES }]);
    backend.free(buffer);
    backend.closeFile(handle);
    backend.close();
  });

  test("a second exclusive lock on the same file is a StoreLockedError", async () => {
    const backend = UringBackend.create({ queueDepth: 4 });
    const first = backend.openFile(file("locked.bin"), { create: true });
    const second = backend.openFile(file("locked.bin"));
    await backend.lockFile(first);
    await expect(backend.lockFile(second)).rejects.toThrow(StoreLockedError);
    backend.closeFile(second);
    backend.closeFile(first);
    backend.close();
  });

  test("a bad descriptor gives a typed IoError (synchronously) and an -EBADF completion (queued)", async () => {
    const backend = UringBackend.create({ queueDepth: 4 });
    const bad = { fd: 987_654, path: "bad", direct: false };
    let thrown: unknown;
    try {
      backend.fileSizeBytes(bad);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(IoError);
    expect((thrown as IoError).errnoName).toBe("EBADF");
    expect(() => backend.syncNow(bad)).toThrow(IoError);
    expect(() => backend.truncate(bad, 0)).toThrow(IoError);
    await expect(backend.lockFile(bad)).rejects.toThrow(IoError);
    expect(() => backend.openFile(file("no/such/dir/x"))).toThrow(IoError);
    const buffer = backend.alloc(ALIGNMENT_BYTES);
    backend.submit([
      { op: "write", fd: bad.fd, buffer, bufferOffset: 0, lengthBytes: ALIGNMENT_BYTES, fileOffset: 0, userData: 5 },
      { op: "datasync", fd: bad.fd, userData: 6 },
    ]);
    const completions = await reapAll(backend, 2);
    expect(completions.map((c) => c.result)).toEqual([-EBADF, -EBADF]);
    backend.free(buffer);
    backend.close();
  });

  test("limits: queue depth, foreign and double frees, bad ranges; a rejected batch changes nothing", () => {
    expect(() => UringBackend.create({ queueDepth: 0 })).toThrow(InvalidArgumentError);
    expect(() => UringBackend.create({ queueDepth: 1_000_000 })).toThrow(InvalidArgumentError);
    const backend = UringBackend.create({ queueDepth: 4 });
    const handle = backend.openFile(file("limits.bin"), { create: true });
    const buffer = backend.alloc(ALIGNMENT_BYTES);
    const sync = (userData: number): IoOp => ({ op: "datasync", fd: handle.fd, userData });
    expect(() => backend.submit([sync(1), sync(2), sync(3), sync(4), sync(5)])).toThrow(InvalidArgumentError);
    expect(backend.inFlight).toBe(0);
    const overrun: IoOp = { op: "write", fd: handle.fd, buffer, bufferOffset: 4000, lengthBytes: 4096, fileOffset: 0, userData: 9 };
    expect(() => backend.submit([sync(1), overrun])).toThrow(InvalidArgumentError);
    expect(backend.inFlight).toBe(0);
    const foreign = { ptr: 4096 * 1000, sizeBytes: 4096, bytes: new Uint8Array(4096) };
    expect(() => backend.submit([{ ...overrun, buffer: foreign, bufferOffset: 0 }])).toThrow(InvalidArgumentError);
    expect(() => backend.free(foreign)).toThrow(InvalidArgumentError);
    expect(() => backend.alloc(0)).toThrow(InvalidArgumentError);
    backend.free(buffer);
    expect(() => backend.free(buffer)).toThrow(InvalidArgumentError);
    backend.closeFile(handle);
    backend.close();
  });

  test("close refuses while ops are in flight; afterwards every method throws StoreClosedError", async () => {
    const backend = UringBackend.create({ queueDepth: 4 });
    const handle = backend.openFile(file("closing.bin"), { create: true });
    backend.submit([{ op: "datasync", fd: handle.fd, userData: 1 }]);
    expect(() => backend.close()).toThrow(IoError);
    await reapAll(backend, 1);
    backend.closeFile(handle);
    const leaked = backend.alloc(ALIGNMENT_BYTES); // freed by close
    backend.close();
    backend.close(); // idempotent
    expect(backend.closed).toBe(true);
    expect(() => backend.alloc(ALIGNMENT_BYTES)).toThrow(StoreClosedError);
    expect(() => backend.free(leaked)).toThrow(StoreClosedError);
    expect(() => backend.submit([])).toThrow(StoreClosedError);
    expect(() => backend.reap([])).toThrow(StoreClosedError);
    expect(() => backend.openFile(file("closing.bin"))).toThrow(StoreClosedError);
    expect(() => backend.fileSizeBytes(handle)).toThrow(StoreClosedError);
    await expect(backend.lockFile(handle)).rejects.toThrow(StoreClosedError);
    expect(() => backend.closeFile(handle)).toThrow(StoreClosedError);
    expect(() => backend.syncNow(handle)).toThrow(StoreClosedError);
    expect(() => backend.truncate(handle, 0)).toThrow(StoreClosedError);
    expect(() => backend.allocateSpace(handle, 0, 4096)).toThrow(StoreClosedError);
    await expect(backend.wait(1, 10)).rejects.toBeInstanceOf(StoreClosedError);
  });

  test("allocateSpace, truncate and syncNow", () => {
    const backend = UringBackend.create({ queueDepth: 4 });
    const handle = backend.openFile(file("space.bin"), { create: true });
    backend.allocateSpace(handle, 0, 1 << 20);
    expect(backend.fileSizeBytes(handle)).toBe(1 << 20);
    backend.truncate(handle, 8192);
    expect(backend.fileSizeBytes(handle)).toBe(8192);
    backend.syncNow(handle);
    backend.closeFile(handle);
    backend.close();
  });

  test("wait() keeps the event loop running while an op is outstanding, and times out cleanly", async () => {
    const fifo = file("fifo");
    const made = spawnSync("mkfifo", [fifo]);
    if (made.status !== 0) throw new Error(`mkfifo failed: ${made.stderr}`);
    const backend = UringBackend.create({ queueDepth: 4 });
    // O_RDWR on a FIFO opens without waiting for a writer; the read stays pending until data comes.
    const reader = backend.openFile(fifo, { direct: false });
    const buffer = backend.alloc(ALIGNMENT_BYTES);
    backend.submit([{ op: "read", fd: reader.fd, buffer, bufferOffset: 0, lengthBytes: 5, fileOffset: 0, userData: 42 }]);

    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const t0 = performance.now();
    await backend.wait(1, 150);
    const waited = performance.now() - t0;
    clearInterval(timer);
    expect(waited).toBeGreaterThanOrEqual(145);
    expect(waited).toBeLessThan(1000);
    expect(ticks).toBeGreaterThan(10); // timers ran during the wait
    const none: IoCompletion[] = [];
    expect(backend.reap(none)).toBe(0);

    // Data arrives from another descriptor while we wait: the wait resolves promptly.
    const writerFd = fs.openSync(fifo, "r+");
    setTimeout(() => fs.writeSync(writerFd, "hello"), 20);
    const t1 = performance.now();
    await backend.wait(1, 5000);
    expect(performance.now() - t1).toBeLessThan(1000);
    const done: IoCompletion[] = [];
    expect(backend.reap(done)).toBe(1);
    expect(done[0]).toEqual({ userData: 42, result: 5 });
    expect(new TextDecoder().decode(buffer.bytes.subarray(0, 5))).toBe("hello");
    fs.closeSync(writerFd);

    // Nothing in flight at all: a wait for one completion just times out.
    const t2 = performance.now();
    await backend.wait(1, 30);
    expect(performance.now() - t2).toBeGreaterThanOrEqual(25);
    await backend.wait(0, 10_000); // resolves at once
    backend.free(buffer);
    backend.closeFile(reader);
    backend.close();
  });

  test("a missing shim is an IoUnavailableError naming the path", () => {
    // Run in a child so this process's cached, working shim is not disturbed.
    const script = `
      process.env.BLOOM_LSS_SHIM = "/nonexistent/libbloom_lss_shim.so";
      const { UringBackend } = await import(${JSON.stringify(path.resolve(import.meta.dir, "../../src/io/uring.ts"))});
      try { UringBackend.create({}); console.log("loaded"); }
      catch (e) { console.log(e.constructor.name + ": " + e.message); }
    `;
    const result = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    expect(result.stdout).toContain(IoUnavailableError.name);
    expect(result.stdout).toContain("/nonexistent/libbloom_lss_shim.so");
  });
});
