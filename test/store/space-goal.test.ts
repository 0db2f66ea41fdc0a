/**
 * The cleaner's space goal without `maxFileBytes` (issue 17: under steady overwrite churn with
 * default settings the file grew to 2.2-3.5x the live data, the cleaner waiting for pressure
 * that never came). With default settings it keeps the file to `cleanerSpaceAmplification`
 * (1.5) times the live records, cleaning rather than growing past that. The file is whole
 * segments, and grows while the garbage is spread too thin over them for the cleaner to take
 * (fresh data, most of it live); over the second half of a dozen passes over the live set it is
 * within three and a half segments of the goal on average, and four at the end (1.94x and 2x the
 * live records here; it was 2.2x and more before the goal). It
 * gives free room back to the filesystem when the live data shrinks, without `compact()`.
 * Everything acknowledged reads back, before and after a reopen.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { InvalidArgumentError, Store } from "../../src/index.ts";
import { storeInternals } from "../../src/store/store.ts";
import { seededRandom } from "../../testing/prng.ts";
import { BACKENDS, fillPattern, scratchDir } from "../helpers.ts";

const SEGMENT = 1 << 20;
const VALUE_BYTES = 1000;
/** A 1000-byte value's record: 32 bytes of header, padded to 8. */
const RECORD_BYTES = 1032;
const ROOT_BYTES = 8192;

const scratch = scratchDir("space-goal");
afterAll(() => scratch.cleanup());

function valueOf(key: number, version: number): Uint8Array {
  const bytes = new Uint8Array(VALUE_BYTES);
  fillPattern(bytes, key * 1000 + version);
  return bytes;
}

/**
 * Write `keys` elements, then overwrite uniformly at random `churn` times the live set, 50 per
 * transaction. With mulberry32 ({@link seededRandom}), not the helpers' `rng`: that one repeats
 * after 4095 draws for most seeds (1323 for 23), so "uniform" overwrites of 8128 keys touched
 * about 1500 of them and left four in five cold, a hot/cold workload whose result depended on
 * where the cold segments happened to lie (this test failed one run in three or four that way).
 */
async function churn(store: Store, keys: number, times: number, versions: Map<number, number>, seed: number, onTransaction?: () => void): Promise<void> {
  for (let first = 1; first <= keys; first += 500) {
    await store.transaction((tx) => {
      for (let k = first; k < Math.min(keys + 1, first + 500); k++) {
        tx.write(BigInt(k), valueOf(k, 0));
        versions.set(k, 0);
      }
    });
  }
  const next = seededRandom(seed);
  for (let done = 0; done < times * keys; done += 50) {
    await store.transaction((tx) => {
      for (let j = 0; j < 50; j++) {
        const k = 1 + Math.floor(next() * keys);
        const version = (versions.get(k) as number) + 1;
        versions.set(k, version);
        tx.write(BigInt(k), valueOf(k, version));
      }
    });
    onTransaction?.();
  }
}

async function expectValues(store: Store, versions: Map<number, number>): Promise<void> {
  for (const [k, version] of versions) {
    const got = await store.read(BigInt(k));
    if (got === undefined || Buffer.compare(got, valueOf(k, version)) !== 0) throw new Error(`seid ${k}: not version ${version}`);
  }
  expect(store.stats().elements).toBe(versions.size);
}

for (const io of BACKENDS) {
  describe(`the cleaner's space goal (${io})`, () => {
    test("default settings, uniform overwrites of 8 MiB of live records: the file comes back to 1.5x of them (and the segments it grows by)", async () => {
      const file = path.join(scratch.dir, `churn-${io}.lss`);
      const store = await Store.open(file, { io, segmentSize: SEGMENT });
      const keys = Math.floor((8 * SEGMENT) / RECORD_BYTES);
      const liveBytes = keys * RECORD_BYTES;
      const versions = new Map<number, number>();
      const passes = 12;
      let largest = 0;
      let transactions = 0;
      let lateSum = 0;
      let lateCount = 0;
      try {
        const before = store.stats();
        await churn(store, keys, passes, versions, 17, () => {
          const written = ++transactions * 50;
          const fileBytes = store.stats().fileBytes;
          // After the first pass over the live set: the steady state; its second half, averaged.
          if (written > keys) largest = Math.max(largest, fileBytes);
          if (written > (passes / 2) * keys) {
            lateSum += fileBytes;
            lateCount += 1;
          }
        });
        const late = lateSum / lateCount;
        const stats = store.stats();
        const wa = (stats.bytesWritten - before.bytesWritten) / (stats.userBytesWritten - before.userBytesWritten);
        console.log(
          `space goal (${io}): file ${(stats.fileBytes / liveBytes).toFixed(3)}x the live records at the end, ${(late / liveBytes).toFixed(3)}x on average over the second half, ${(largest / liveBytes).toFixed(3)}x at most; ` +
            `write amplification ${wa.toFixed(2)}; ${stats.cleaner.segmentsCleaned} segments cleaned, ${stats.cleaner.bytesShrunk} B given back`,
        );
        expect(stats.cleaner.segmentsCleaned).toBeGreaterThan(0);
        // The goal, and the segments a file that grew while the cleaner had nothing to take holds
        // until it can cut them off again (before: 2.2x).
        expect(late).toBeLessThanOrEqual(1.5 * liveBytes + 3.5 * SEGMENT + ROOT_BYTES);
        expect(stats.fileBytes).toBeLessThanOrEqual(1.5 * liveBytes + 4 * SEGMENT + ROOT_BYTES);
        expect(stats.fileBytes).toBeLessThanOrEqual(fs.statSync(file).size);
        await expectValues(store, versions);
      } finally {
        await store.close();
      }
      const again = await Store.open(file, { io });
      try {
        await expectValues(again, versions);
      } finally {
        await again.close();
      }
      fs.rmSync(file);
    }, 60_000);
  });
}

describe("the cleaner's space goal", () => {
  test("the default 8 MiB segments, 8 MiB of live records overwritten 12 times: emptied segments are freed by a checkpoint, not left for the periodic one while the file grows (regression: 14.9x)", async () => {
    const file = path.join(scratch.dir, "pending.lss");
    const store = await Store.open(file); // every setting its default: 8 MiB segments
    const segment = store.stats().segmentSize;
    expect(segment).toBe(8 << 20);
    const keys = Math.floor((8 << 20) / RECORD_BYTES);
    const liveBytes = keys * RECORD_BYTES;
    const versions = new Map<number, number>();
    let largest = 0;
    let mostPending = 0;
    let transactions = 0;
    try {
      await churn(store, keys, 12, versions, 29, () => {
        if (++transactions * 50 <= keys) return; // the first pass fills the file
        largest = Math.max(largest, store.stats().fileBytes);
        mostPending = Math.max(mostPending, storeInternals(store).core.log.stats().segmentsPending);
      });
      const stats = store.stats();
      console.log(
        `pending segments (default settings): file ${(stats.fileBytes / liveBytes).toFixed(2)}x the live records at the end, ${(largest / liveBytes).toFixed(2)}x at most; ` +
          `${mostPending} segments pending at most; ${stats.cleaner.segmentsCleaned} cleaned`,
      );
      expect(stats.cleaner.segmentsCleaned).toBeGreaterThan(0);
      // With 8 MiB of live records in 8 MiB segments the goal's floor rules: the live records,
      // the reserve and the segments being written and emptied. Before, emptied segments waited
      // for a checkpoint 16 segments of log later: 11 pending, the file 14.9x the live records.
      expect(mostPending).toBeLessThanOrEqual(3);
      expect(largest).toBeLessThanOrEqual(liveBytes + 6 * segment);
      await expectValues(store, versions);
    } finally {
      await store.close();
    }
    fs.rmSync(file);
  }, 60_000);

  test("emptied segments a tail reader still holds stay pending: the cleaner does not take a checkpoint for them after every commit", async () => {
    const file = path.join(scratch.dir, "held.lss");
    const store = await Store.open(file); // default settings: 8 MiB segments
    const keys = Math.floor((8 << 20) / RECORD_BYTES);
    const versions = new Map<number, number>();
    const log = storeInternals(store).core.log;
    // Hold the log from the start, as a standby or an archive that fell behind would: nothing
    // the cleaner empties can be reused.
    const hold = log.retain(log.segmentSize);
    let transactions = 0;
    let mostPending = 0;
    try {
      const before = store.stats().checkpoints;
      await churn(store, keys, 6, versions, 41, () => {
        transactions += 1;
        mostPending = Math.max(mostPending, log.stats().segmentsPending);
      });
      const checkpoints = store.stats().checkpoints - before;
      console.log(`held log: ${transactions} transactions, ${checkpoints} checkpoints, ${mostPending} segments pending at most`);
      // Segments did go pending (held), so the rule for them was asked after every commit...
      expect(mostPending).toBeGreaterThanOrEqual(3);
      // ...and took a checkpoint only as segments newly went pending, not per commit.
      expect(checkpoints).toBeLessThanOrEqual(mostPending + 4);
      await expectValues(store, versions);
    } finally {
      hold[Symbol.dispose]();
      await store.close();
    }
    fs.rmSync(file);
  }, 60_000);

  test("live data deleted: the cleaner gives the room back to the filesystem by itself, no compact()", async () => {
    const file = path.join(scratch.dir, "shrink.lss");
    const store = await Store.open(file, { segmentSize: SEGMENT });
    const keys = Math.floor((8 * SEGMENT) / RECORD_BYTES);
    const versions = new Map<number, number>();
    try {
      await churn(store, keys, 2, versions, 23);
      const full = store.stats().fileBytes;
      // Three quarters of the data go, in one transaction.
      const doomed = [...versions.keys()].filter((k) => k % 4 !== 0);
      await store.transaction((tx) => {
        for (const k of doomed) tx.delete(BigInt(k));
      });
      for (const k of doomed) versions.delete(k);
      // Ordinary traffic goes on (the cleaner works after commits); no compact().
      const next = seededRandom(29);
      const remaining = [...versions.keys()];
      const deadline = Date.now() + 20_000;
      let rounds = 0;
      while (store.stats().fileBytes > full / 2 && Date.now() < deadline) {
        await store.transaction((tx) => {
          for (let j = 0; j < 20; j++) {
            const k = remaining[Math.floor(next() * remaining.length)] as number;
            const version = (versions.get(k) as number) + 1;
            versions.set(k, version);
            tx.write(BigInt(k), valueOf(k, version));
          }
        });
        rounds += 1;
      }
      const stats = store.stats();
      console.log(`space goal, after deleting 3/4: file ${full} B -> ${stats.fileBytes} B in ${rounds} transactions, ${stats.cleaner.bytesShrunk} B given back`);
      expect(stats.cleaner.bytesShrunk).toBeGreaterThan(0);
      expect(stats.fileBytes).toBeLessThanOrEqual(full / 2);
      expect(fs.statSync(file).size).toBe(stats.fileBytes);
      await expectValues(store, versions);
    } finally {
      await store.close();
    }
    const again = await Store.open(file);
    try {
      await expectValues(again, versions);
    } finally {
      await again.close();
    }
  }, 60_000);

  test("cleanerSpaceAmplification is checked: a number from 1.1 to 1000", async () => {
    const file = path.join(scratch.dir, "option.lss");
    for (const bad of [1, 1.05, 0, -2, Number.NaN, Number.POSITIVE_INFINITY, 1001, "1.5"]) {
      const error = await Store.open(file, { cleanerSpaceAmplification: bad as number }).then(
        (store) => store.close().then(() => undefined),
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).code).toBe("LSS_INVALID_ARGUMENT");
      expect(fs.existsSync(file)).toBe(false);
    }
    const store = await Store.open(file, { cleanerSpaceAmplification: 2.5 });
    await store.close();
  });
});
