/**
 * A deterministic workload shared by the crash writer (a child process) and the tests that check
 * what survived: transaction k's effects are a pure function of k, so the model state after any
 * prefix of transactions can be rebuilt.
 */

/** Seid holding the number of the last committed transaction. */
export const COUNTER_SEID = 1_000_000n;
const KEYS = 40;

/** The operations of transaction k (k ≥ 1). */
export function workloadTx(k: number): Array<{ seid: bigint; value: Uint8Array | undefined }> {
  const ops: Array<{ seid: bigint; value: Uint8Array | undefined }> = [];
  const count = 1 + (k % 4);
  for (let i = 0; i < count; i++) {
    const seid = BigInt(1 + ((k * 7 + i * 11) % KEYS));
    if ((k + i) % 6 === 0) {
      ops.push({ seid, value: undefined });
    } else {
      const length = (k * 131 + i * 17) % 3000;
      const value = new Uint8Array(length);
      for (let j = 0; j < length; j++) value[j] = (k * 31 + j * 7 + i) & 0xff;
      ops.push({ seid, value });
    }
  }
  const counter = new Uint8Array(8);
  new DataView(counter.buffer).setFloat64(0, k, true);
  ops.push({ seid: COUNTER_SEID, value: counter });
  return ops;
}

/** Model state after transactions 1..n. */
export function modelAfter(n: number): Map<bigint, Uint8Array> {
  const model = new Map<bigint, Uint8Array>();
  for (let k = 1; k <= n; k++) {
    for (const op of workloadTx(k)) {
      if (op.value === undefined) model.delete(op.seid);
      else model.set(op.seid, op.value);
    }
  }
  return model;
}

/** Decode the counter element. */
export function counterValue(bytes: Uint8Array | undefined): number {
  if (bytes === undefined) return 0;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat64(0, true);
}

export const WORKLOAD_KEYS = KEYS;
