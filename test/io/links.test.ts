/**
 * Linked ops (IoOp.link, io_uring's IOSQE_IO_LINK) end to end: both backends, the IoQueue (never
 * a chain split across submissions, emulation when a chain cannot fit), the fault-injecting
 * harness's durability model with links, and the stability tracker's rule for a linked datasync
 * reaped before its write (the shuffling recorder's model with links is checked by
 * test/log/ordering.test.ts, where linked datasyncs complete while their writes are held back).
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { ALIGNMENT_BYTES, type FileHandle, type IoBackend, type IoCompletion, type IoOp } from "../../src/io/backend.ts";
import { ECANCELED } from "../../src/io/errno.ts";
import { openBackend } from "../../src/io/open.ts";
import { IoQueue, SLOW_SYNC_BACKOFF_CHAINS } from "../../src/io/queue.ts";
import { InvalidArgumentError, IoError } from "../../src/errors.ts";
import { StabilityTracker } from "../../src/log/durability.ts";
import { FaultBackend } from "../../testing/fault-backend.ts";
import { BACKENDS, fillPattern, scratchDir, reapAll } from "../helpers.ts";

const BLOCK = ALIGNMENT_BYTES;


/** `inner`, with every submitted batch shown to `see` first. */
function recording(inner: IoBackend, see: (ops: readonly IoOp[]) => void): IoBackend {
  return new Proxy(inner, {
    get(target, property) {
      if (property === "submit") {
        return (ops: readonly IoOp[]) => {
          see(ops);
          target.submit(ops);
        };
      }
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

for (const io of BACKENDS) {
  describe(`linked ops: ${io}`, () => {
    let backend: IoBackend;
    let file: FileHandle;
    let cleanup: () => void;
    let dir: string;

    beforeEach(async () => {
      ({ dir, cleanup } = scratchDir(`links-${io}`));
      backend = await openBackend({ io, queueDepth: 8 });
      file = backend.openFile(path.join(dir, "data.bin"), { create: true, direct: true });
    });

    afterEach(() => {
      if (!backend.closed) {
        backend.closeFile(file);
        backend.close();
      }
      cleanup();
    });

    test("a write linked to a datasync: both complete, the datasync after the write", async () => {
      const buffer = backend.alloc(BLOCK);
      fillPattern(buffer.bytes, 3);
      backend.submit([
        { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: BLOCK, fileOffset: 0, userData: 1, link: true },
        { op: "datasync", fd: file.fd, userData: 2 },
      ]);
      const done = await reapAll(backend, 2);
      expect(done.map((c) => c.userData)).toEqual([1, 2]);
      expect(done.map((c) => c.result)).toEqual([BLOCK, 0]);
      backend.free(buffer);
    });

    test("a failed write cancels the rest of its chain with ECANCELED; an unlinked op beside it runs", async () => {
      const buffer = backend.alloc(2 * BLOCK);
      backend.submit([
        // Misaligned under O_DIRECT: EINVAL.
        { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: BLOCK, fileOffset: 100, userData: 1, link: true },
        { op: "write", fd: file.fd, buffer, bufferOffset: BLOCK, lengthBytes: BLOCK, fileOffset: 0, userData: 2, link: true },
        { op: "datasync", fd: file.fd, userData: 3 },
        { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: BLOCK, fileOffset: BLOCK, userData: 4 },
      ]);
      const done = await reapAll(backend, 4);
      const result = new Map(done.map((c) => [c.userData, c.result]));
      expect(result.get(1)).toBeLessThan(0);
      expect(result.get(1)).not.toBe(-ECANCELED);
      expect(result.get(2)).toBe(-ECANCELED);
      expect(result.get(3)).toBe(-ECANCELED);
      expect(result.get(4)).toBe(BLOCK);
      // The cancelled write never landed: only block 1 was written.
      expect(backend.fileSizeBytes(file)).toBe(2 * BLOCK);
      backend.free(buffer);
    });

    test("a chain must end inside its batch and fit the queue; a refused batch changes nothing", () => {
      const buffer = backend.alloc(BLOCK);
      const write = (userData: number, link: boolean): IoOp => ({
        op: "write",
        fd: file.fd,
        buffer,
        bufferOffset: 0,
        lengthBytes: BLOCK,
        fileOffset: 0,
        userData,
        link,
      });
      expect(() => backend.submit([write(1, false), write(2, true)])).toThrow(InvalidArgumentError);
      expect(() => backend.submit(Array.from({ length: 8 }, (_, i) => write(i, i < 7)))).not.toThrow();
      expect(backend.inFlight).toBe(8);
      return reapAll(backend, 8).then((done) => {
        expect(done.every((c) => c.result === BLOCK)).toBe(true);
        expect(backend.inFlight).toBe(0);
        backend.free(buffer);
      });
    });

    test("IoQueue.writeThenSync: resolves both; a failing write rejects both (the datasync with ECANCELED)", async () => {
      const queue = new IoQueue(backend);
      const buffer = backend.alloc(BLOCK);
      fillPattern(buffer.bytes, 5);
      const ok = queue.writeThenSync(file, buffer, 0, BLOCK, 0);
      await Promise.all([ok.written, ok.synced]);
      const bad = queue.writeThenSync(file, buffer, 0, BLOCK, 100);
      const [written, synced] = await Promise.allSettled([bad.written, bad.synced]);
      expect(written.status === "rejected" && written.reason instanceof IoError).toBe(true);
      expect(synced.status === "rejected" && (synced.reason as IoError).errnoName).toBe("ECANCELED");
      backend.free(buffer);
    });
  });
}

describe("IoQueue and link chains at the queue depth limit", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("links-queue"));
  });
  afterEach(() => cleanup());

  test("a full queue never splits a chain: every submitted batch ends its chains", async () => {
    for (const depth of [2, 3, 5]) {
      const inner = await openBackend({ io: "portable", queueDepth: depth });
      const batches: IoOp[][] = [];
      const recorder = recording(inner, (ops) => batches.push([...ops]));
      const file = inner.openFile(path.join(dir, `q${depth}.bin`), { create: true, direct: false });
      const queue = new IoQueue(recorder);
      const buffer = inner.alloc(BLOCK);
      const work: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) {
        // Single writes between chains keep the queue partly full when a chain arrives.
        work.push(queue.write(file, buffer, 0, BLOCK, (i % 4) * BLOCK));
        const chain = queue.writeThenSync(file, buffer, 0, BLOCK, (i % 4) * BLOCK);
        work.push(chain.written, chain.synced);
      }
      await Promise.all(work);
      expect(batches.length).toBeGreaterThan(1);
      for (const batch of batches) {
        expect(batch.length).toBeLessThanOrEqual(depth);
        expect(batch[batch.length - 1]?.link === true).toBe(false);
      }
      // Some chain had to wait for room rather than be split: a batch starting with a linked write.
      expect(batches.some((batch) => batch[0]?.link === true)).toBe(true);
      inner.free(buffer);
      inner.closeFile(file);
      inner.close();
    }
  });

  test("queueDepth 1: a chain cannot fit, so the queue runs it one op at a time, in order", async () => {
    const backend = await openBackend({ io: "portable", queueDepth: 1 });
    const seen: IoOp[] = [];
    const recorder = recording(backend, (ops) => seen.push(...ops));
    const file = backend.openFile(path.join(dir, "q1.bin"), { create: true, direct: false });
    const queue = new IoQueue(recorder);
    const buffer = backend.alloc(BLOCK);
    const ok = queue.writeThenSync(file, buffer, 0, BLOCK, 0);
    await Promise.all([ok.written, ok.synced]);
    expect(seen.map((op) => op.op)).toEqual(["write", "datasync"]);
    expect(seen.every((op) => op.link !== true)).toBe(true);
    // A failing write: the datasync is never issued and rejects with ECANCELED.
    const bad = queue.writeThenSync({ ...file, fd: 1_000_000 }, buffer, 0, BLOCK, 0);
    const [written, synced] = await Promise.allSettled([bad.written, bad.synced]);
    expect(written.status === "rejected" && written.reason instanceof IoError).toBe(true);
    expect(synced.status === "rejected" && (synced.reason as IoError).errnoName).toBe("ECANCELED");
    expect(seen.map((op) => op.op)).toEqual(["write", "datasync", "write"]);
    backend.free(buffer);
    backend.closeFile(file);
    backend.close();
  });
});

describe("IoQueue: blocking waits for a lone chain (loneChainBlockUs)", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("links-block"));
  });
  afterEach(() => cleanup());

  /**
   * `inner`, with the `blockUs` of every wait recorded, and the ops in flight then. Without its
   * `writeThenSyncNow` unless `syscalls` (a lone chain would not go through the queue at all).
   */
  function waitRecording(inner: IoBackend, blocks: number[], inFlight: number[] = [], syscalls = false): IoBackend {
    return new Proxy(inner, {
      get(target, property) {
        if (property === "writeThenSyncNow" && !syscalls) return undefined;
        if (property === "wait") {
          return (minReady: number, timeoutMs: number, blockUs?: number) => {
            blocks.push(blockUs ?? 0);
            inFlight.push(target.inFlight);
            return target.wait(minReady, timeoutMs, blockUs);
          };
        }
        const value = Reflect.get(target, property, target) as unknown;
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  for (const io of BACKENDS) {
    test(`${io}: only a chain alone in flight may block, and its bytes land`, async () => {
      const inner = await openBackend({ io, queueDepth: 16 });
      const blocks: number[] = [];
      const inFlight: number[] = [];
      const file = inner.openFile(path.join(dir, `b-${io}.bin`), { create: true, direct: true });
      const buffer = inner.alloc(4 * BLOCK);
      try {
        const queue = new IoQueue(waitRecording(inner, blocks, inFlight), { loneChainBlockUs: 700 });
        // Alone: every wait of the pump may block (20 rounds: a round whose chain completes
        // within the pump's first event-loop turn records no wait at all).
        for (let round = 0; round < 20; round++) {
          fillPattern(buffer.bytes.subarray(0, BLOCK), round);
          const lone = queue.writeThenSync(file, buffer, 0, BLOCK, 0);
          await Promise.all([lone.written, lone.synced]);
        }
        expect(blocks.length).toBeGreaterThan(0);
        expect(blocks.every((us) => us === 700)).toBe(true);
        // A chain with plain writes issued beside it: a round's first wait may not block (the
        // writes' callers wait too); a later one only once the chain is alone again.
        let roundsWaited = 0;
        for (let round = 0; round < 20; round++) {
          blocks.length = 0;
          inFlight.length = 0;
          fillPattern(buffer.bytes.subarray(BLOCK, 4 * BLOCK), 100 + round);
          const chain = queue.writeThenSync(file, buffer, BLOCK, BLOCK, BLOCK);
          const plain = [queue.write(file, buffer, 2 * BLOCK, BLOCK, 2 * BLOCK), queue.write(file, buffer, 3 * BLOCK, BLOCK, 3 * BLOCK)];
          await Promise.all([chain.written, chain.synced, ...plain]);
          if (blocks.length === 0) continue;
          roundsWaited += 1;
          expect(blocks[0]).toBe(0);
          blocks.forEach((us, i) => {
            if (us > 0) expect(inFlight[i]).toBeLessThanOrEqual(2);
          });
        }
        expect(roundsWaited).toBeGreaterThan(0);
        // Turned off: never blocks.
        blocks.length = 0;
        queue.loneChainBlockUs = 0;
        const off = queue.writeThenSync(file, buffer, 0, BLOCK, 0);
        await Promise.all([off.written, off.synced]);
        expect(blocks.every((us) => us === 0)).toBe(true);
        const back = inner.alloc(4 * BLOCK);
        await queue.read(file, back, 0, 4 * BLOCK, 0);
        expect(Buffer.from(back.bytes).equals(Buffer.from(buffer.bytes))).toBe(true);
        inner.free(back);
      } finally {
        inner.free(buffer);
        inner.closeFile(file);
        inner.close();
      }
    });
  }

  test("uring wait(…, blockUs): each linked pair's two completions come back, the bytes land; with nothing in flight it returns empty", async () => {
    const backend = await openBackend({ io: "uring", queueDepth: 8 });
    const file = backend.openFile(path.join(dir, "u.bin"), { create: true, direct: true });
    const buffer = backend.alloc(BLOCK);
    try {
      // Nothing in flight: the 1 ms timeout passes on a timer, whatever blockUs says.
      await backend.wait(1, 1, 1000);
      const out: IoCompletion[] = [];
      expect(backend.reap(out)).toBe(0);
      for (let i = 0; i < 20; i++) {
        fillPattern(buffer.bytes, i);
        backend.submit([
          { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: BLOCK, fileOffset: i * BLOCK, userData: 1, link: true },
          { op: "datasync", fd: file.fd, userData: 2 },
        ]);
        out.length = 0;
        const deadline = performance.now() + 10_000;
        while (out.length < 2 && performance.now() < deadline) {
          await backend.wait(2 - out.length, 1000, 1000);
          backend.reap(out);
        }
        expect(out.map((c) => [c.userData, c.result]).sort()).toEqual([[1, BLOCK], [2, 0]]);
      }
      const expected = new Uint8Array(BLOCK);
      for (let i = 0; i < 20; i++) {
        backend.submit([{ op: "read", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: BLOCK, fileOffset: i * BLOCK, userData: 3 }]);
        out.length = 0;
        const deadline = performance.now() + 10_000;
        while (out.length < 1 && performance.now() < deadline) {
          await backend.wait(1, 1000, 1000);
          backend.reap(out);
        }
        expect(out[0]?.result).toBe(BLOCK);
        fillPattern(expected, i);
        expect(Buffer.from(buffer.bytes).equals(Buffer.from(expected))).toBe(true);
      }
    } finally {
      backend.free(buffer);
      backend.closeFile(file);
      backend.close();
    }
  });
});

describe("IoQueue: a lone awaited write + datasync with system calls (writeThenSyncNext)", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("links-syscalls"));
  });
  afterEach(() => cleanup());

  for (const io of BACKENDS) {
    test(`${io}: a chain alone goes through system calls when blocking is allowed, else through the queue; the bytes land either way`, async () => {
      const backend = await openBackend({ io, queueDepth: 16 });
      const submitted: number[] = [];
      const counting = recording(backend, (ops) => submitted.push(ops.length));
      const file = backend.openFile(path.join(dir, `s-${io}.bin`), { create: true, direct: true });
      const buffer = backend.alloc(4 * BLOCK);
      const back = backend.alloc(4 * BLOCK);
      try {
        // Generous bound: none of these 4 KiB writes + datasyncs should take a whole second.
        const queue = new IoQueue(counting, { loneChainBlockUs: 1_000_000 });
        for (let round = 0; round < 10; round++) {
          fillPattern(buffer.bytes.subarray(0, BLOCK), round);
          const lone = queue.writeThenSync(file, buffer, 0, BLOCK, round * BLOCK, true);
          await Promise.all([lone.written, lone.synced]);
        }
        expect(queue.syncCallChains).toBe(10);
        expect(submitted).toEqual([]);
        // Something else in flight: the chain goes through the queue beside it.
        const read = queue.read(file, back, 0, BLOCK, 0);
        const beside = queue.writeThenSync(file, buffer, BLOCK, BLOCK, 10 * BLOCK, true);
        await Promise.all([read, beside.written, beside.synced]);
        expect(queue.syncCallChains).toBe(10);
        expect(submitted.reduce((a, b) => a + b, 0)).toBe(3);
        // Nobody waits for the datasync (units piling up under a stream): through the queue.
        const unawaited = queue.writeThenSync(file, buffer, 2 * BLOCK, BLOCK, 11 * BLOCK);
        await Promise.all([unawaited.written, unawaited.synced]);
        expect(queue.syncCallChains).toBe(10);
        // Blocking not allowed: through the queue.
        queue.loneChainBlockUs = 0;
        const off = queue.writeThenSync(file, buffer, 2 * BLOCK, BLOCK, 11 * BLOCK, true);
        await Promise.all([off.written, off.synced]);
        expect(queue.syncCallChains).toBe(10);
        // What each wrote is in the file.
        for (let round = 0; round < 10; round++) {
          await queue.read(file, back, 0, BLOCK, round * BLOCK);
          fillPattern(buffer.bytes.subarray(3 * BLOCK, 4 * BLOCK), round);
          expect(Buffer.from(back.bytes.subarray(0, BLOCK)).equals(Buffer.from(buffer.bytes.subarray(3 * BLOCK, 4 * BLOCK)))).toBe(true);
        }
        await queue.read(file, back, 0, BLOCK, 10 * BLOCK);
        expect(Buffer.from(back.bytes.subarray(0, BLOCK)).equals(Buffer.from(buffer.bytes.subarray(BLOCK, 2 * BLOCK)))).toBe(true);
      } finally {
        backend.free(buffer);
        backend.free(back);
        backend.closeFile(file);
        backend.close();
      }
    });

    test(`${io}: a failed write is a typed error and no datasync follows; a slow call sends the next chains through the queue`, async () => {
      const backend = await openBackend({ io, queueDepth: 16 });
      const filePath = path.join(dir, `e-${io}.bin`);
      const file = backend.openFile(filePath, { create: true, direct: true });
      const buffer = backend.alloc(BLOCK);
      try {
        // A read-only descriptor of the same file: the write fails with EBADF.
        const readOnly = backend.openFile(filePath, { readOnly: true, direct: true });
        try {
          const queue = new IoQueue(backend, { loneChainBlockUs: 1_000_000 });
          const bad = queue.writeThenSync(readOnly, buffer, 0, BLOCK, 0, true);
          const [written, synced] = await Promise.allSettled([bad.written, bad.synced]);
          expect(queue.syncCallChains).toBe(1);
          expect(written.status).toBe("rejected");
          expect((written as PromiseRejectedResult).reason).toBeInstanceOf(IoError);
          expect(synced.status).toBe("rejected");
          expect(((synced as PromiseRejectedResult).reason as IoError).errno).toBe(ECANCELED);
        } finally {
          backend.closeFile(readOnly);
        }
        // A bound no call can keep (1 µs): after the first, SLOW_SYNC_BACKOFF_CHAINS go through the queue.
        const queue = new IoQueue(backend, { loneChainBlockUs: 1 });
        for (let i = 0; i < SLOW_SYNC_BACKOFF_CHAINS + 2; i++) {
          const chain = queue.writeThenSync(file, buffer, 0, BLOCK, 0, true);
          await Promise.all([chain.written, chain.synced]);
        }
        expect(queue.syncCallChains).toBe(2);
      } finally {
        backend.free(buffer);
        backend.closeFile(file);
        backend.close();
      }
    });
  }
});

describe("FaultBackend with link chains", () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(() => {
    ({ dir, cleanup } = scratchDir("links-fault"));
  });
  afterEach(() => cleanup());

  function setup(name: string, options: ConstructorParameters<typeof FaultBackend>[0] = {}) {
    const fault = new FaultBackend({ simulateSync: true, powerCut: { keep: 0, drop: 1, torn: 0 }, keepSizeProbability: 0, ...options });
    const file = path.join(dir, name);
    const handle = fault.openFile(file, { create: true });
    const queue = new IoQueue(fault);
    const buffers = [fault.alloc(BLOCK), fault.alloc(BLOCK)];
    const release = () => {
      for (const b of buffers) fault.free(b);
      if (!fault.isCut) fault.closeFile(handle);
      fault.close();
    };
    return { fault, file, handle, queue, buffers, release };
  }

  for (const simulateSync of [true, false]) {
    test(`a linked datasync makes its own write durable (simulateSync ${simulateSync})`, async () => {
      const t = setup(`own-${simulateSync}.bin`, { simulateSync });
      const [a] = t.buffers as [ReturnType<FaultBackend["alloc"]>];
      a.bytes.fill(1);
      const chain = t.queue.writeThenSync(t.handle, a, 0, BLOCK, 0);
      await Promise.all([chain.written, chain.synced]);
      await t.fault.powerCut();
      const image = fs.readFileSync(t.file);
      expect(image.length).toBe(BLOCK);
      expect(image.every((byte) => byte === 1)).toBe(true);
      t.release();
    });
  }

  test("syncIo with held completions: the datasync may be reaped first, its write is still durable; a write beside it is not", async () => {
    for (let seed = 1; seed <= 8; seed++) {
      const t = setup(`held-${seed}.bin`, { syncIo: true, holdProbability: 0.7, seed });
      const [a, b] = t.buffers as [ReturnType<FaultBackend["alloc"]>, ReturnType<FaultBackend["alloc"]>];
      a.bytes.fill(1);
      b.bytes.fill(2);
      const order: string[] = [];
      const chain = t.queue.writeThenSync(t.handle, a, 0, BLOCK, 0);
      // Submitted with the chain, not linked: its completion comes whenever; the datasync does not cover it.
      const beside = t.queue.write(t.handle, b, 0, BLOCK, BLOCK);
      await Promise.all([
        chain.written.then(() => order.push("write")),
        chain.synced.then(() => order.push("sync")),
        beside,
      ]);
      expect(order.sort()).toEqual(["sync", "write"]);
      await t.fault.powerCut();
      const image = fs.readFileSync(t.file);
      expect(image.subarray(0, BLOCK).every((byte) => byte === 1)).toBe(true);
      // drop: 1 — the unlinked write was not covered unless it completed before the datasync started.
      if (image.length > BLOCK) expect(image.subarray(BLOCK).every((byte) => byte === 2)).toBe(true);
      t.release();
    }
  });

  test("an injected write failure cancels the linked datasync: nothing becomes durable, and the call count skips it", async () => {
    const t = setup("inject.bin");
    const [a] = t.buffers as [ReturnType<FaultBackend["alloc"]>];
    a.bytes.fill(7);
    await Promise.all([t.queue.write(t.handle, a, 0, BLOCK, 0), t.queue.datasync(t.handle)]).catch(() => undefined);
    const callsBefore = t.fault.counts.calls;
    t.fault.injectError({ nth: 1, sites: ["write"] });
    const chain = t.queue.writeThenSync(t.handle, a, 0, BLOCK, BLOCK);
    const [written, synced] = await Promise.allSettled([chain.written, chain.synced]);
    expect(written.status === "rejected" && written.reason instanceof IoError).toBe(true);
    expect(synced.status === "rejected" && (synced.reason as IoError).errnoName).toBe("ECANCELED");
    expect(t.fault.counts.calls - callsBefore).toBe(1); // the cancelled datasync never ran
    await t.fault.powerCut();
    expect(fs.readFileSync(t.file).length).toBeLessThanOrEqual(BLOCK);
    t.release();
  });

  test("an injected datasync failure after a good write: the write completes, nothing more is durable", async () => {
    const t = setup("inject-sync.bin");
    const [a] = t.buffers as [ReturnType<FaultBackend["alloc"]>];
    a.bytes.fill(7);
    t.fault.injectError({ nth: 1, sites: ["datasync"] });
    const chain = t.queue.writeThenSync(t.handle, a, 0, BLOCK, 0);
    const [written, synced] = await Promise.allSettled([chain.written, chain.synced]);
    expect(written.status).toBe("fulfilled");
    expect(synced.status === "rejected" && synced.reason instanceof IoError).toBe(true);
    await t.fault.powerCut();
    expect(fs.readFileSync(t.file).length).toBe(0);
    t.release();
  });
});

describe("StabilityTracker with linked datasyncs", () => {
  test("a linked datasync reaped before its write's completion: stable waits for the write, then moves", () => {
    const tracker = new StabilityTracker(0);
    const a = tracker.register(4096);
    const b = tracker.register(8192);
    tracker.markWritten(a);
    // b's write is issued with a linked datasync: it covers a (written before) and b.
    const ids = tracker.beginLinkedSync(b);
    expect(ids).toEqual([a, b]);
    expect(tracker.unsyncedUnits).toBe(0);
    expect(tracker.completeSync(ids)).toBe(true);
    expect(tracker.stableAddress).toBe(4096); // b is durable but its completion was not seen yet
    expect(tracker.markWritten(b)).toBe(true);
    expect(tracker.stableAddress).toBe(8192);
    expect(tracker.unsyncedUnits).toBe(0); // nothing left for another datasync
  });

  test("a write completed while its linked datasync is in flight is not synced again", () => {
    const tracker = new StabilityTracker(0);
    const a = tracker.register(4096);
    const ids = tracker.beginLinkedSync(a);
    expect(tracker.markWritten(a)).toBe(false);
    expect(tracker.unsyncedUnits).toBe(0);
    tracker.completeSync(ids);
    expect(tracker.stableAddress).toBe(4096);
  });

  test("a failed linked datasync gives back only the units whose writes completed", () => {
    const tracker = new StabilityTracker(0);
    const a = tracker.register(4096);
    const b = tracker.register(8192);
    tracker.markWritten(a);
    const ids = tracker.beginLinkedSync(b);
    tracker.failSync(ids);
    expect(tracker.unsyncedUnits).toBe(1); // a; b's write has not completed
    tracker.markWritten(b);
    expect(tracker.unsyncedUnits).toBe(2);
    tracker.completeSync(tracker.beginSync());
    expect(tracker.stableAddress).toBe(8192);
  });
});
