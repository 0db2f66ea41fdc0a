/**
 * Worker side of the ring stress test: attaches a RingWriter to the owner's ring descriptor,
 * reserves and writes `count` seeded payloads (awaiting `reserve`, or `tryReserve` when it has
 * room), and posts back where each one went.
 */
import { RingWriter, type RingDescriptor } from "../../src/log/ring.ts";
import { fillPattern, rng } from "../helpers.ts";

declare const self: Worker;

export interface WorkerJob {
  descriptor: RingDescriptor;
  id: number;
  count: number;
  maxLength: number;
}

export interface WorkerReport {
  id: number;
  /** [address, length, seed] of every payload written. */
  records: Array<[number, number, number]>;
  error?: string;
}

self.onmessage = async (event: MessageEvent<WorkerJob>) => {
  const { descriptor, id, count, maxLength } = event.data;
  const records: Array<[number, number, number]> = [];
  try {
    const writer = new RingWriter(descriptor);
    const next = rng(1000 + id);
    for (let i = 0; i < count; i++) {
      const length = next() < 0.05 ? maxLength : Math.floor(next() * 2000);
      const seed = id * 1_000_000 + i;
      const bytes = new Uint8Array(length);
      fillPattern(bytes, seed);
      const reservation = next() < 0.5 ? (writer.tryReserve(length) ?? (await writer.reserve(length))) : await writer.reserve(length);
      writer.writePayload(bytes, reservation);
      records.push([reservation.address, length, seed]);
    }
    self.postMessage({ id, records } satisfies WorkerReport);
  } catch (error) {
    self.postMessage({ id, records, error: String((error as Error)?.stack ?? error) } satisfies WorkerReport);
  }
};
