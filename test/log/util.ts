/**
 * Helpers shared by the log tests: opening a log over a recording (optionally shuffling) backend,
 * simulating a crash in-process, and checking payloads against what was written.
 */
import { expect } from "bun:test";
import type { FileHandle, IoBackend } from "../../src/io/backend.ts";
import { openBackend } from "../../src/io/open.ts";
import { openLog, type LogOptions, type LogStructuredStore } from "../../src/log/log.ts";
import type { Reservation } from "../../src/log/ring.ts";
import { FlushBuffer } from "../../src/log/flush-buffer.ts";
import { fillPattern } from "../helpers.ts";
import { ShufflingBackend, type ShufflingOptions } from "../../testing/shuffling-backend.ts";

export const KiB = 1024;

/** A payload the test wrote: where, how long, and the seed of its bytes. */
export interface Written {
  address: number;
  length: number;
  seed: number;
}

export function payload(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  fillPattern(bytes, seed);
  return bytes;
}

/** Open a log over a fresh recording backend wrapping a real one of kind `io`. */
export async function openRecorded(
  path: string,
  io: "portable" | "uring",
  options: LogOptions = {},
  shuffling: ShufflingOptions = {},
): Promise<{ log: LogStructuredStore; backend: ShufflingBackend }> {
  const backend = new ShufflingBackend(await openBackend({ io, queueDepth: 256 }), shuffling);
  try {
    const log = await openLog(path, options, backend);
    return { log, backend };
  } catch (error) {
    if (backend.inFlight === 0) backend.close();
    throw error;
  }
}

/** Close the log, then the backend it does not own. */
export async function closeRecorded(log: LogStructuredStore, backend: IoBackend): Promise<void> {
  await log.close();
  backend.close();
}

/**
 * Stop the log as a crash would: no flush, no clean root block; the file handle is closed (which
 * drops the lock) and the backend torn down once nothing is in flight. The log object is dropped.
 */
export async function crashRecorded(log: LogStructuredStore, backend: IoBackend): Promise<void> {
  const file = (log as unknown as { file: FileHandle }).file;
  const deadline = Date.now() + 10_000;
  while (backend.inFlight > 0 && Date.now() < deadline) await Bun.sleep(1);
  // Let the log's own I/O pump see its last completions before the backend goes away.
  await Bun.sleep(5);
  backend.closeFile(file);
  backend.close();
}

/** Reserve (synchronously when the open buffer has room) and write one payload. */
export async function append(log: LogStructuredStore, bytes: Uint8Array): Promise<Reservation> {
  const reservation = log.tryReserve(bytes.length) ?? (await log.reserveSpace(bytes.length));
  log.writePayload(bytes, reservation);
  return reservation;
}

/** Every payload reads back byte for byte (up to 32 reads in flight at once). */
export async function expectIntact(log: LogStructuredStore, written: readonly Written[]): Promise<void> {
  let next = 0;
  const reader = async (): Promise<void> => {
    while (next < written.length) {
      const w = written[next++] as Written;
      const got = await log.read(w.address, w.length);
      const want = payload(w.length, w.seed);
      if (!Buffer.from(got).equals(Buffer.from(want))) {
        throw new Error(`payload seed ${w.seed} at ${w.address} (+${w.length}) does not read back intact`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(32, written.length) }, reader));
}

/** No two reservations overlap. */
export function expectDisjoint(ranges: ReadonlyArray<{ address: number; length: number }>): void {
  const sorted = [...ranges].sort((a, b) => a.address - b.address);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1] as { address: number; length: number };
    const cur = sorted[i] as { address: number; length: number };
    // Zero-length reservations still take one 8-byte word, so addresses are distinct too.
    expect(cur.address).toBeGreaterThanOrEqual(prev.address + Math.max(prev.length, 1));
  }
}

/**
 * Make the next read of `buffer.capacityWords` return `stale`, as if the slot had been reused by
 * another incarnation between the reserver's capacity check and its CAS; later reads are real.
 */
export function staleCapacityOnce(buffer: FlushBuffer, stale: number): void {
  const real = Object.getOwnPropertyDescriptor(FlushBuffer.prototype, "capacityWords")?.get as () => number;
  let first = true;
  Object.defineProperty(buffer, "capacityWords", {
    configurable: true,
    get(this: FlushBuffer) {
      if (!first) return real.call(this);
      first = false;
      return stale;
    },
  });
}
