/**
 * The model the torture checks a store against: a base state plus the transactions issued since,
 * in commit order, each with its outcome. After a power cut (or any reopen) the store must equal
 * the model after some prefix of them that ends with a transaction that may have committed, and
 * includes every transaction acknowledged as durable.
 *
 * Every transaction writes its own number into {@link COUNTER_SEID}, so the counter read back
 * names the prefix that survived; the whole state is then compared with that prefix.
 *
 * @module
 */

/** Seid holding the number of the last committed transaction (space 0). */
export const COUNTER_SEID = 1_000_000n;

/** Fixed seids the workload writes (space 0): 1 … FIXED_KEYS. */
export const FIXED_KEYS = 40;

/** A state of the store: seid → value. */
export type State = Map<bigint, Uint8Array>;

/** One effect of a transaction, in order. */
export type Effect = { seid: bigint; value: Uint8Array | undefined };

/** How a transaction ended, as far as the caller knows. */
export type Outcome =
  /** Not settled yet. */
  | "pending"
  /** Resolved: applied (and durable, with `durability: "sync"`). */
  | "committed"
  /** Rejected with an I/O-related error: it may or may not have committed. */
  | "unknown"
  /** Certainly not committed (a later transaction committed after it failed). */
  | "dropped";

/** A transaction of the model. */
export interface ModelTx {
  /** Its number, written into the counter element. */
  readonly number: number;
  readonly effects: readonly Effect[];
  /** Largest seid it allocated with `allocateSeid()`, or 0n. */
  readonly maxAllocated: bigint;
  outcome: Outcome;
  /** Its durability was acknowledged (sync commit resolved, or a later flush resolved). */
  durable: boolean;
}

/** Encode a transaction number for the counter element. */
export function encodeCounter(number: number): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setFloat64(0, number, true);
  return bytes;
}

/** Decode the counter element (0 when missing). */
export function decodeCounter(bytes: Uint8Array | undefined): number {
  if (bytes === undefined) return 0;
  if (bytes.length !== 8) return Number.NaN;
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getFloat64(0, true);
}

/** Base state plus the transactions since it. */
export class History {
  /** State the transactions apply to (what the last verified recovery found). */
  private base: State;
  /** Counter value of the base state. */
  baseNumber: number;
  /** Largest seid allocated by the base state's transactions. */
  baseMaxAllocated: bigint;
  readonly txs: ModelTx[] = [];
  private nextNumber: number;

  constructor(base: State = new Map(), baseNumber = 0, nextNumber = baseNumber + 1, baseMaxAllocated = 0n) {
    this.base = base;
    this.baseNumber = baseNumber;
    this.nextNumber = nextNumber;
    this.baseMaxAllocated = baseMaxAllocated;
  }

  /** The number the next transaction gets (never reused, even after a drop). */
  takeNumber(): number {
    return this.nextNumber++;
  }

  /** Record a transaction about to be issued (its effects already include the counter write). */
  add(number: number, effects: Effect[], maxAllocated: bigint): ModelTx {
    const tx: ModelTx = { number, effects, maxAllocated, outcome: "pending", durable: false };
    this.txs.push(tx);
    return tx;
  }

  /**
   * A transaction committed: every earlier transaction that failed did not commit (a failure
   * that could leave a commit behind makes the store read-only, so nothing commits after it).
   */
  committed(tx: ModelTx): void {
    tx.outcome = "committed";
    for (const other of this.txs) {
      if (other === tx) break;
      if (other.outcome === "unknown") other.outcome = "dropped";
    }
  }

  /**
   * A flush that was called after `tx` was issued resolved: `tx` and every transaction before it
   * that committed or is still pending (it committed before the flush ran) is durable.
   */
  durableThrough(tx: ModelTx): void {
    for (const other of this.txs) {
      if (other.outcome === "committed" || other.outcome === "pending") other.durable = true;
      if (other === tx) break;
    }
  }

  /** Number of the last transaction acknowledged durable (the base's when none). */
  get lastDurable(): number {
    let last = this.baseNumber;
    for (const tx of this.txs) if (tx.durable && tx.outcome !== "dropped") last = tx.number;
    return last;
  }

  /** Transactions that may be part of the recovered prefix, in order. */
  candidates(): ModelTx[] {
    return this.txs.filter((tx) => tx.outcome !== "dropped");
  }

  /** The latest state of the model if every candidate committed. */
  latest(): State {
    return this.stateThrough(this.candidates().at(-1)?.number ?? this.baseNumber) as State;
  }

  /**
   * The state after the prefix ending at transaction `number` (the base when it is the base's
   * number), or undefined when no candidate has that number.
   */
  stateThrough(number: number): State | undefined {
    if (number === this.baseNumber) return this.base;
    const state = new Map(this.base);
    for (const tx of this.candidates()) {
      for (const effect of tx.effects) {
        if (effect.value === undefined) state.delete(effect.seid);
        else state.set(effect.seid, effect.value);
      }
      if (tx.number === number) return state;
    }
    return undefined;
  }

  /** Largest seid allocated by the prefix ending at `number`. */
  maxAllocatedThrough(number: number): bigint {
    let max = this.baseMaxAllocated;
    if (number === this.baseNumber) return max;
    for (const tx of this.candidates()) {
      if (tx.maxAllocated > max) max = tx.maxAllocated;
      if (tx.number === number) break;
    }
    return max;
  }

  /** Every seid any candidate state may hold (for reads that must find nothing). */
  universe(): bigint[] {
    const seids = new Set<bigint>(this.base.keys());
    for (let i = 1; i <= FIXED_KEYS; i++) seids.add(BigInt(i));
    seids.add(COUNTER_SEID);
    for (const tx of this.txs) for (const effect of tx.effects) seids.add(effect.seid);
    return [...seids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Start again from the recovered prefix ending at `number`. */
  rebase(number: number): void {
    const state = this.stateThrough(number);
    if (state === undefined) throw new Error(`rebase onto unknown transaction ${number}`);
    this.baseMaxAllocated = this.maxAllocatedThrough(number);
    this.base = state;
    this.baseNumber = number;
    this.txs.length = 0;
  }
}

/** A value whose bytes identify it: tag (8 bytes) then a cheap pseudo-random fill. */
export function makeValue(length: number, tag: number): Uint8Array {
  const value = new Uint8Array(length);
  let x = (tag * 2654435761) >>> 0 || 1;
  const words = Math.floor(length / 4);
  if (words > 0) {
    const view = new Uint32Array(value.buffer, 0, words);
    for (let i = 0; i < words; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      view[i] = x >>> 0;
    }
  }
  for (let i = words * 4; i < length; i++) value[i] = (tag + i) & 0xff;
  if (length >= 8) new DataView(value.buffer).setFloat64(0, tag, true);
  return value;
}

/** Byte equality. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
