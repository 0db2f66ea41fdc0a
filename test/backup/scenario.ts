/**
 * The backup suite's workload and model, shared by the directory and S3 runs: a writer that
 * commits continuously (small, medium and multipart values, overwrites, deletes, streamed
 * elements) and remembers every transaction's operations by id, so the committed state at any
 * transaction can be rebuilt exactly; time marks between transactions for restores by time; and
 * the comparison of a restored store with the model.
 */
import { expect } from "bun:test";
import { Store } from "../../src/index.ts";
import { fillPattern, rng } from "../helpers.ts";

/** Store options of the suite: small segments and buffers so the cleaner runs and elements go multipart. */
export const STORE_OPTIONS = {
  segmentSize: 256 << 10,
  bufferSize: 16 << 10,
  cleanerUtilisationPercent: 60,
  cleanerLowWaterSegments: 2,
  cleanerHighWaterSegments: 4,
} as const;

type Op = { kind: "write"; seid: bigint; value: Uint8Array } | { kind: "delete"; seid: bigint };

/** A point in time strictly between two commits: restoring to it gives the state at `afterTx`. */
export interface TimeMark {
  readonly time: number;
  readonly afterTx: number;
}

/** A writer committing continuously, with the model of everything it committed. */
export class ModelWriter {
  /** Committed user transactions in id order. */
  readonly txs: Array<{ id: number; ops: Op[] }> = [];
  readonly marks: TimeMark[] = [];
  private readonly store: Store;
  private readonly next: () => number;
  private readonly seids: bigint[] = [];
  private stopping = false;
  private loop: Promise<void> | undefined;
  private seed = 1;

  constructor(store: Store, seed: number) {
    this.store = store;
    this.next = rng(seed);
  }

  /** Highest committed (acknowledged) transaction id, 0 before any. */
  get lastTx(): number {
    return this.txs.at(-1)?.id ?? 0;
  }

  private value(size: number): Uint8Array {
    const bytes = new Uint8Array(size);
    fillPattern(bytes, this.seed++);
    return bytes;
  }

  private size(): number {
    const r = this.next();
    if (r < 0.7) return Math.floor(this.next() * 500);
    if (r < 0.92) return 500 + Math.floor(this.next() * 6000);
    return 9_000 + Math.floor(this.next() * 25_000); // more than one part
  }

  private pick(): bigint {
    if (this.seids.length === 0 || this.next() < 0.3) {
      const seid = this.store.allocateSeid();
      this.seids.push(seid);
      return seid;
    }
    return this.seids[Math.floor(this.next() * this.seids.length)] as bigint;
  }

  /** One transaction of 1..4 random operations (sometimes a streamed element). */
  async step(): Promise<number> {
    const ops: Op[] = [];
    const count = 1 + Math.floor(this.next() * 4);
    for (let i = 0; i < count; i++) {
      if (this.next() < 0.2) ops.push({ kind: "delete", seid: this.pick() });
      else ops.push({ kind: "write", seid: this.pick(), value: this.value(this.size()) });
    }
    const streamed = this.next() < 0.1 ? { seid: this.pick(), chunks: Array.from({ length: 3 + Math.floor(this.next() * 3) }, () => this.value(3000 + Math.floor(this.next() * 4000))) } : undefined;
    let id = 0;
    await this.store.transaction(async (tx) => {
      id = tx.id;
      for (const op of ops) {
        if (op.kind === "write") tx.write(op.seid, op.value);
        else tx.delete(op.seid);
      }
      if (streamed !== undefined) {
        const writer = tx.writeStream(streamed.seid).getWriter();
        for (const chunk of streamed.chunks) await writer.write(chunk);
        await writer.close();
      }
    });
    if (streamed !== undefined) {
      const whole = new Uint8Array(streamed.chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of streamed.chunks) {
        whole.set(c, at);
        at += c.length;
      }
      ops.push({ kind: "write", seid: streamed.seid, value: whole });
    }
    this.txs.push({ id, ops });
    return id;
  }

  /** Commit `n` transactions now. */
  async run(n: number): Promise<void> {
    for (let i = 0; i < n; i++) await this.step();
  }

  /** Commit continuously (with an occasional time mark) until {@link stop}. */
  start(): void {
    this.stopping = false;
    this.loop = (async () => {
      while (!this.stopping) {
        await this.step();
        if (this.next() < 0.05) await this.mark();
        // Let the backup's own work interleave.
        if (this.next() < 0.3) await Bun.sleep(0);
      }
    })();
  }

  /** Stop the continuous writer; resolves when its last transaction is acknowledged. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  /** A time strictly after the last commit and strictly before the next one. */
  async mark(): Promise<void> {
    await Bun.sleep(3);
    const time = Date.now();
    await Bun.sleep(3);
    this.marks.push({ time, afterTx: this.lastTx });
  }

  /** The committed state at transaction `txId` (every acknowledged transaction ≤ it). */
  modelAt(txId: number): Map<bigint, Uint8Array> {
    const state = new Map<bigint, Uint8Array>();
    for (const tx of this.txs) {
      if (tx.id > txId) break;
      for (const op of tx.ops) {
        if (op.kind === "write") state.set(op.seid, op.value);
        else state.delete(op.seid);
      }
    }
    return state;
  }

  /** Wait (with a deadline) until transaction `txId` is acknowledged. */
  async waitFor(txId: number, deadlineMs = 30_000): Promise<void> {
    const until = Date.now() + deadlineMs;
    while (this.lastTx < txId) {
      if (Date.now() > until) throw new Error(`transaction ${txId} not acknowledged within ${deadlineMs} ms (last ${this.lastTx})`);
      await Bun.sleep(2);
    }
  }
}

/** Open a restored store and check it holds exactly `expected`, byte for byte. */
export async function expectStoreEquals(path: string, expected: Map<bigint, Uint8Array>, label: string): Promise<void> {
  const store = await Store.open(path, { readOnly: true });
  try {
    const seids = store.seids();
    const missing = [...expected.keys()].filter((s) => !store.has(s));
    const extra = seids.filter((s) => !expected.has(s));
    expect({ label, missing, extra }).toEqual({ label, missing: [], extra: [] });
    for (const [seid, value] of expected) {
      const got = await store.read(seid);
      if (got === undefined || got.length !== value.length || Buffer.compare(got, value) !== 0) {
        throw new Error(`${label}: seid ${seid} holds ${got?.length} bytes that differ from the ${value.length} committed`);
      }
    }
  } finally {
    await store.close();
  }
}

/** sha256 over a state (seids in order, each with its length and bytes): the child and parent of the kill test compare states by it. */
export function stateDigest(state: Map<bigint, Uint8Array>): string {
  const hasher = new Bun.CryptoHasher("sha256");
  const head = new DataView(new ArrayBuffer(12));
  for (const seid of [...state.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const value = state.get(seid) as Uint8Array;
    head.setBigUint64(0, seid, true);
    head.setUint32(8, value.length, true);
    hasher.update(new Uint8Array(head.buffer));
    hasher.update(value);
  }
  return hasher.digest("hex");
}

/** The whole state of a store (space 1), for {@link stateDigest}. */
export async function storeState(store: Store): Promise<Map<bigint, Uint8Array>> {
  const state = new Map<bigint, Uint8Array>();
  for (const seid of store.seids()) state.set(seid, (await store.read(seid)) as Uint8Array);
  return state;
}
