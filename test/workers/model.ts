/**
 * Values and jobs of the Workers tests. A value names the transaction write that made it (its tag)
 * and its seid, and its bytes follow from both, so every read is checked byte for byte.
 */

/** Jobs a test Worker (driver.ts) runs. */
export type DriverJob =
  | { kind: "random"; thread: number; seed: number; transactions: number; keys: bigint[] }
  | { kind: "stripe"; keys: bigint[]; ms: number }
  | { kind: "hold"; keys: bigint[]; streamSeid: bigint }
  | { kind: "queue"; keys: bigint[] }
  | { kind: "commit-loop"; keys: bigint[]; count: number; ack: boolean | "first"; base?: number }
  | { kind: "scan"; keys: bigint[]; ms: number; sync?: boolean }
  | { kind: "tags"; keys: bigint[]; sync?: boolean }
  | { kind: "both-ways"; keys: bigint[]; stream?: boolean }
  | { kind: "pins-full"; seid: bigint }
  | { kind: "entries"; options: Array<{ space?: number; from?: bigint; to?: bigint }> }
  | { kind: "misuse"; seid: bigint }
  | { kind: "alloc"; byHand: bigint[]; count: number }
  | { kind: "flush" }
  | { kind: "levels"; keys: bigint[] }
  | { kind: "backup"; target: string; keys: bigint[] }
  | { kind: "closed"; seid: bigint }
  | { kind: "big"; read: bigint; small: bigint; streamed: bigint; whole: bigint; sizes: [number, number] }
  | { kind: "timed-loop"; keys: bigint[]; count: number }
  | { kind: "reads"; keys: bigint[]; ms: number; seed: number };

import type { Transaction } from "../../src/index.ts";
import { rng } from "../../testing/prng.ts";

/** What the workload needs of a store: a `Store` or an attached one. */
export interface StoreLike {
  transaction<T>(fn: (tx: Transaction) => T | Promise<T>): Promise<T>;
  read(seid: bigint): Promise<Uint8Array | undefined>;
}

/** What a random workload observed. */
export interface RandomResult {
  records: TxRecord[];
  outside: Array<{ seid: string; tag: number | null; afterTx: number }>;
}

/**
 * Random transactions and reads over shared keys. Inside each transaction it reads keys it has
 * not written yet: they show the state just before it in turn order. After each, a read outside.
 */
export async function randomWorkload(store: StoreLike, job: { thread: number; seed: number; transactions: number; keys: bigint[] }): Promise<RandomResult> {
  const next = rng(job.seed);
  const records: TxRecord[] = [];
  const outside: RandomResult["outside"] = [];
  for (let i = 0; i < job.transactions; i++) {
    const record = await store.transaction(async (tx) => {
      const rec: TxRecord = { txId: tx.id, thread: job.thread, reads: [], writes: [] };
      const written = new Set<bigint>();
      const ops = 1 + Math.floor(next() * 4);
      for (let k = 0; k < ops; k++) {
        const seid = job.keys[Math.floor(next() * job.keys.length)] as bigint;
        const roll = next();
        if (roll < 0.3 && !written.has(seid)) {
          rec.reads.push([`${seid}`, decodeValue(await store.read(seid))]);
        } else if (roll < 0.85) {
          const tag = tx.id * 16 + k;
          tx.write(seid, valueFor(tag, seid));
          rec.writes.push([`${seid}`, tag]);
          written.add(seid);
        } else {
          tx.delete(seid);
          rec.writes.push([`${seid}`, null]);
          written.add(seid);
        }
        if (next() < 0.3) await Promise.resolve();
      }
      return rec;
    });
    records.push(record);
    const seid = job.keys[Math.floor(next() * job.keys.length)] as bigint;
    outside.push({ seid: `${seid}`, tag: decodeValue(await store.read(seid)), afterTx: record.txId });
  }
  return { records, outside };
}

/** One transaction as a thread saw it: reads inside it, then its writes (tag, or null for a delete). */
export interface TxRecord {
  txId: number;
  thread: number;
  reads: Array<[string, number | null]>;
  writes: Array<[string, number | null]>;
}

/** The bytes of write `tag` of `seid`: 16-byte header (tag, seid) and a tag-derived body. */
export function valueFor(tag: number, seid: bigint): Uint8Array {
  const length = 16 + ((tag * 7919) % 3000);
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  view.setFloat64(0, tag, true);
  view.setBigUint64(8, seid, true);
  let x = (tag * 2654435761) >>> 0 || 1;
  for (let i = 16; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** The tag of `value` (null for no element), after checking every byte. */
export function decodeValue(value: Uint8Array | undefined): number | null {
  if (value === undefined) return null;
  if (value.length < 16) throw new Error(`value of ${value.length} bytes is not one the tests wrote`);
  const view = new DataView(value.buffer, value.byteOffset, 16);
  const tag = view.getFloat64(0, true);
  const expected = valueFor(tag, view.getBigUint64(8, true));
  if (Buffer.compare(Buffer.from(expected), Buffer.from(value)) !== 0) throw new Error(`value of tag ${tag} is not byte-exact`);
  return tag;
}

/** `length` bytes derived from `seed` (for large elements). */
export function bigValue(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}
