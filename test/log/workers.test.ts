/**
 * Workers writing through the shared ring at once: several Bun Workers reserve and write with
 * RingWriter on the owner's ringDescriptor while the owner serves them (serveWorkers) and appends
 * itself. Then the owner flushes and reads back every address the workers reported.
 */
import { describe, expect, test } from "bun:test";
import path from "node:path";
import { BACKENDS, scratchDir } from "../helpers.ts";
import type { WorkerJob, WorkerReport } from "./ring-worker.ts";
import { append, closeRecorded, expectDisjoint, expectIntact, KiB, openRecorded, payload, type Written } from "./util.ts";

const WORKER = path.join(import.meta.dir, "ring-worker.ts");

for (const io of BACKENDS) {
  describe(`log workers: ${io}`, () => {
    for (const writeMode of ["tailLocalized", "serialized"] as const) {
      test(`3 Workers and the owner append at once (${writeMode}): all intact, no overlap`, async () => {
        const { dir, cleanup } = scratchDir(`log-workers-${io}`);
        const file = path.join(dir, "a.lss");
        const workers: Worker[] = [];
        try {
          const bufferSize = 16 * KiB;
          const options = { writeMode, bufferSize, segmentSize: 256 * KiB, ringSize: 8 };
          const { log, backend } = await openRecorded(file, io, options);
          let stopServing!: () => void;
          const stop = new Promise<void>((resolve) => (stopServing = resolve));
          const serving = log.serveWorkers(stop);

          const reports = Array.from({ length: 3 }, (_, id) => {
            const worker = new Worker(WORKER);
            workers.push(worker);
            return new Promise<WorkerReport>((resolve, reject) => {
              worker.onmessage = (event: MessageEvent<WorkerReport>) => resolve(event.data);
              worker.onerror = (event) => reject(new Error(`worker ${id}: ${event.message}`));
              worker.postMessage({ descriptor: log.ringDescriptor, id: id + 1, count: 2500, maxLength: bufferSize - 64 } satisfies WorkerJob);
            });
          });

          // The owner appends too, yielding so serveWorkers and the I/O completions keep running.
          const own: Written[] = [];
          for (let i = 0; i < 1500; i++) {
            const length = (i * 131) % 1500;
            const r = await append(log, payload(length, 7_000_000 + i));
            own.push({ address: r.address, length, seed: 7_000_000 + i });
            if (i % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
          }

          const results = await Promise.all(reports);
          stopServing();
          await serving;
          for (const report of results) expect(report.error).toBeUndefined();
          const written: Written[] = [
            ...own,
            ...results.flatMap((report) => report.records.map(([address, length, seed]) => ({ address, length, seed }))),
          ];
          expect(written.length).toBe(1500 + 3 * 2500);
          for (const report of results) expect(report.records.length).toBe(2500);
          expectDisjoint(written);

          await log.flush();
          for (const w of written) expect(w.address + w.length).toBeLessThanOrEqual(log.stableAddress);
          await expectIntact(log, written);
          expect(new Set(backend.unitWrites.map((w) => w.header.address)).size).toBe(backend.unitWrites.length);
          if (writeMode === "serialized") expect(backend.maxUnitWritesInFlight).toBe(1);
          for (const worker of workers) worker.terminate();
          workers.length = 0;
          await closeRecorded(log, backend);

          const reopened = await openRecorded(file, io, options);
          await expectIntact(reopened.log, written);
          await closeRecorded(reopened.log, reopened.backend);
        } finally {
          for (const worker of workers) worker.terminate();
          cleanup();
        }
      });
    }
  });
}
