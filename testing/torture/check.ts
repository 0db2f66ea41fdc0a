/**
 * The recovery check shared by the fault tests: a reopened store must equal the model after a
 * prefix of its transactions that ends at one that may have committed and includes every
 * transaction acknowledged durable; every element must read back exactly.
 *
 * @module
 */
import type { Store } from "../../src/store/store.ts";
import { COUNTER_SEID, decodeCounter, sameBytes, type History } from "./model.ts";

/** What {@link checkRecovered} found. */
export interface RecoveredCheck {
  /** Transaction number the recovered state ends at (NaN when unreadable). */
  number: number;
  /** Checks made. */
  checks: number;
  /** Everything that did not hold (empty when the store is right). */
  problems: string[];
}

/** Compare `store` with `history`; on success, rebase the history onto the recovered prefix. */
export async function checkRecovered(store: Store, history: History, rebase = true): Promise<RecoveredCheck> {
  const problems: string[] = [];
  let checks = 1;
  let number: number;
  try {
    number = decodeCounter(await store.read(COUNTER_SEID));
  } catch (error) {
    return { number: Number.NaN, checks, problems: [`reading the counter threw ${String(error)}`] };
  }
  if (!Number.isInteger(number)) return { number, checks, problems: ["the counter element is not a counter"] };
  if (number < history.lastDurable) {
    problems.push(`acknowledged transactions lost: recovered through ${number}, but ${history.lastDurable} was acknowledged durable`);
  }
  const state = history.stateThrough(number);
  if (state === undefined) {
    problems.push(`recovered through ${number}, not a transaction that may have committed`);
    return { number, checks, problems };
  }
  for (const seid of history.universe()) {
    checks += 1;
    const expected = state.get(seid);
    let got: Uint8Array | undefined;
    try {
      got = await store.read(seid);
    } catch (error) {
      problems.push(`seid ${seid}: read threw ${String(error)}`);
      continue;
    }
    const ok =
      expected === undefined
        ? got === undefined && !store.has(seid)
        : got !== undefined && sameBytes(got, expected) && store.sizeOf(seid) === expected.length;
    if (!ok) problems.push(`seid ${seid}: reads ${got === undefined ? "nothing" : `${got.length} bytes`}, expected ${expected === undefined ? "nothing" : `${expected.length} bytes`}`);
  }
  checks += 1;
  if (store.stats().elements !== state.size) problems.push(`${store.stats().elements} elements, the model has ${state.size}`);
  if (problems.length === 0 && rebase) history.rebase(number);
  return { number, checks, problems };
}
