/**
 * Deterministic regression tests for defects found in the log layer. Each reproduces, on one
 * thread, an interleaving that Workers (or many async tasks) produce by chance. A second
 * RingWriter attached to the log's own ringDescriptor plays the part of a Worker.
 */
import { describe, expect, test } from "bun:test";
import path from "node:path";
import { FlushBuffer, MAX_WRITERS, SLOT_WORDS, WORD_BYTES } from "../../src/log/flush-buffer.ts";
import { RingWriter, type Reservation } from "../../src/log/ring.ts";
import { BACKENDS, scratchDir } from "../helpers.ts";
import { append, closeRecorded, expectIntact, KiB, openRecorded, payload, staleCapacityOnce, type Written } from "./util.ts";

const BUFFER = 16 * KiB;
const SEGMENT = 256 * KiB;

for (const io of BACKENDS) {
  describe(`log regressions: ${io}`, () => {
    test("a read is not served from a flushing buffer whose offset ran past its fill (overrun reservation)", async () => {
      const { dir, cleanup } = scratchDir(`log-reg-read-${io}`);
      try {
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, { bufferSize: BUFFER, segmentSize: SEGMENT, ringSize: 4 });
        const worker = new RingWriter(log.ringDescriptor);
        const first = await append(log, payload(100, 1)); // unit X, slot 0, at address 64
        // The "worker" asks for more than X has left, and (as if X's slot had been reused between
        // its capacity check and its CAS) takes the overrun path: X is sealed with its offset
        // past its fill.
        staleCapacityOnce(worker.slots[log.currentCounter % log.ringSize] as FlushBuffer, 1 << 30);
        expect(worker.tryReserve(BUFFER - 64)).toBeUndefined(); // the owner has not rotated yet
        const x = log.slots[log.currentCounter % log.ringSize] as FlushBuffer;
        expect(x.offsetBytes).toBeGreaterThan(x.finalFillBytes);
        log.pollCompletions(); // owner: finalize X (fill 104), start its write, open Y right after it
        const second = await append(log, payload(62, 2)); // lands in Y, inside X's stale window
        expect(second.address).toBeGreaterThan(first.address);
        expect(second.address).toBeLessThan(first.address + BUFFER - 64);
        // X's write is still in flight (its completion cannot have run: no await since), so the
        // read below is served from memory: it must come from Y, not from X's stale bytes.
        expect(Buffer.from(await log.read(second.address, 62)).equals(Buffer.from(payload(62, 2)))).toBe(true);
        await log.flush();
        await expectIntact(log, [
          { address: first.address, length: 100, seed: 1 },
          { address: second.address, length: 62, seed: 2 },
        ]);
        await closeRecorded(log, backend);
      } finally {
        cleanup();
      }
    });

    test("a unit is not finalized while a reserver that overran it has yet to lower its fill", async () => {
      const { dir, cleanup } = scratchDir(`log-reg-fill-${io}`);
      const file = path.join(dir, "a.lss");
      try {
        const options = { bufferSize: BUFFER, segmentSize: SEGMENT, ringSize: 4 };
        const { log, backend } = await openRecorded(file, io, options);
        const written: Written[] = [];
        let seed = 1;
        const add = async (length: number): Promise<void> => {
          const r = await append(log, payload(length, seed));
          written.push({ address: r.address, length, seed: seed++ });
        };
        await add(100);
        // A Worker in the middle of FlushBuffer.reserve on its overrun path (the slot was reused
        // between its capacity check and its CAS): its CAS has added its words and a writer to
        // the open buffer, but it has not yet re-checked the capacity, lowered the fill limit,
        // sealed and released. Reproduce exactly that state in the shared words.
        const { shared } = log.ringDescriptor;
        const words = new Int32Array(shared);
        const slot = log.currentCounter % log.ringSize;
        const at = slot * SLOT_WORDS;
        const before = Atomics.load(words, at);
        const startWords = before & 0xffffff;
        const overrun = (BUFFER - 64) / WORD_BYTES;
        expect(Atomics.compareExchange(words, at, before, (before + overrun + (1 << 24)) | 0)).toBe(before);
        // Meanwhile the owner flushes: it seals the buffer (the worker still holds a writer).
        const flushed = log.flush();
        // The worker resumes: it does not fit, so it lowers the fill limit to its own start,
        // seals (already sealed) and releases, handing the flush to the owner.
        const fillLimitIndex = at + 4;
        Atomics.store(words, fillLimitIndex, Math.min(Atomics.load(words, fillLimitIndex), startWords));
        const buffer = new FlushBuffer(words, slot);
        buffer.release();
        expect(buffer.startFlush).toBe(true);
        const ringWorker = new RingWriter(log.ringDescriptor);
        (ringWorker as unknown as { onFlushReady(slot: number): void }).onFlushReady(slot);
        log.pollCompletions();
        await flushed;
        for (let i = 0; i < 40; i++) await add(1000 + i * 97);
        await log.flush();
        await expectIntact(log, written);
        const stable = log.stableAddress;
        await closeRecorded(log, backend);
        // Every unit chains to the next: the reopened log recovers all of it.
        const reopened = await openRecorded(file, io, options);
        expect(reopened.log.stableAddress).toBe(stable);
        await expectIntact(reopened.log, written);
        await closeRecorded(reopened.log, reopened.backend);
      } finally {
        cleanup();
      }
    });

    test(`a reservation refused because ${MAX_WRITERS} writers are active succeeds once they release`, async () => {
      const { dir, cleanup } = scratchDir(`log-reg-busy-${io}`);
      try {
        const { log, backend } = await openRecorded(path.join(dir, "a.lss"), io, { bufferSize: BUFFER, segmentSize: SEGMENT, ringSize: 2 });
        const held: Reservation[] = [];
        for (let i = 0; i < MAX_WRITERS; i++) held.push(await log.reserveSpace(8));
        let done = false;
        const extra = log.reserveSpace(8).then((r) => {
          done = true;
          return r;
        });
        await Bun.sleep(20);
        expect(done).toBe(false); // all writer slots are taken
        held.forEach((r, i) => log.writePayload(payload(8, i + 1), r));
        const outcome = await Promise.race([extra, Bun.sleep(3000).then(() => "stuck" as const)]);
        expect(outcome).not.toBe("stuck");
        const r = outcome as Reservation;
        log.writePayload(payload(8, 999), r);
        await log.flush();
        await expectIntact(log, [
          ...held.map((h, i) => ({ address: h.address, length: 8, seed: i + 1 })),
          { address: r.address, length: 8, seed: 999 },
        ]);
        await closeRecorded(log, backend);
      } finally {
        cleanup();
      }
    });
  });
}
