/**
 * The log's pooled read buffers under a burst of large reads: many in flight at once reuse
 * buffers (the pool grows for the burst, within READ_POOL_BURST_BYTES), every value reads back
 * exactly, and once the burst is over the pool gives the excess back (idle memory stays bounded).
 */
import { afterAll, expect, test } from "bun:test";
import path from "node:path";
import { READ_POOL_BURST_BYTES, READ_POOL_MAX, READ_POOL_TRIM_MS } from "../../src/log/reader.ts";
import { Store, storeInternals } from "../../src/store/store.ts";
import { fillPattern, scratchDir } from "../helpers.ts";

const scratch = scratchDir("read-pools");
afterAll(() => scratch.cleanup());

test("16 reads of 1 MiB values in flight keep their buffers pooled for the burst, then the pool shrinks back", async () => {
  const store = await Store.open(path.join(scratch.dir, "a.lss"), { cacheBytes: 0 });
  try {
    const values = new Map<bigint, Uint8Array>();
    for (let i = 0; i < 48; i++) {
      const seid = store.allocateSeid();
      const value = new Uint8Array(1 << 20);
      fillPattern(value, i);
      values.set(seid, value);
      await store.transaction((tx) => tx.write(seid, value));
    }
    const log = storeInternals(store).core.log;
    const seids = [...values.keys()];
    for (let round = 0; round < 3; round++) {
      for (let first = 0; first < seids.length; first += 16) {
        const batch = seids.slice(first, first + 16);
        const read = await Promise.all(batch.map((seid) => store.read(seid)));
        for (const [i, bytes] of read.entries()) {
          if (!Buffer.from(bytes as Uint8Array).equals(Buffer.from(values.get(batch[i] as bigint) as Uint8Array))) throw new Error(`seid ${batch[i]} read back wrong`);
        }
      }
    }
    const burstMax = Math.max(READ_POOL_MAX, Math.floor(READ_POOL_BURST_BYTES / log.unitReadBytes));
    const afterBurst = log.pooledReadBuffers.unit;
    // Held for the burst (more than the idle pool), never past its bound.
    expect(afterBurst).toBeGreaterThan(READ_POOL_MAX);
    expect(afterBurst).toBeLessThanOrEqual(burstMax);
    // Given back once reads are idle (within a deadline).
    const deadline = performance.now() + READ_POOL_TRIM_MS * 5;
    while (log.pooledReadBuffers.unit > READ_POOL_MAX) {
      if (performance.now() > deadline) throw new Error(`the pool still holds ${log.pooledReadBuffers.unit} unit buffers`);
      await Bun.sleep(100);
    }
    expect(log.pooledReadBuffers.unit).toBe(READ_POOL_MAX);
  } finally {
    await store.close();
  }
}, 60_000);
