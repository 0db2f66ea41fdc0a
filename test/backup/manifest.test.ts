/**
 * The backup layout and manifest: names, encode/decode with its checksum, the chain checks,
 * and finding the latest manifest on a target.
 */
import { afterAll, describe, expect, test } from "bun:test";
import path from "node:path";
import { BackupChainError, CorruptionError, InvalidArgumentError } from "../../src/errors.ts";
import { DirectoryTarget } from "../../src/backup/directory-target.ts";
import {
  appendIncrement,
  baseChunkName,
  decodeManifest,
  encodeManifest,
  incrementName,
  latestManifest,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  manifestName,
  newBaseId,
  parseIncrementName,
  parseManifestName,
  validateChain,
  type BackupManifest,
  type IncrementEntry,
} from "../../src/backup/manifest.ts";
import { describeBytes } from "../../src/backup/objects.ts";
import { scratchDir } from "../helpers.ts";

const scratch = scratchDir("backup-manifest");
afterAll(() => scratch.cleanup());

function increment(seq: number, fromLsn: number, toLsn: number, firstTx: number | null, lastTx: number | null): IncrementEntry {
  const fields = { seq, fromLsn, toLsn, firstTransaction: firstTx, lastTransaction: lastTx };
  const name = incrementName(fields);
  return {
    ...describeBytes(name, new TextEncoder().encode(name)),
    ...fields,
    firstCommitTime: firstTx === null ? null : 1_700_000_000_000 + firstTx,
    lastCommitTime: lastTx === null ? null : 1_700_000_000_000 + lastTx,
  };
}

/** A base at transaction 10, log position 4096, two chunks; then four increments. */
function sampleManifest(): BackupManifest {
  const id = newBaseId(10, 4096, "0badf00d");
  const chunks = [0, 1].map((i) => describeBytes(baseChunkName(id, i), new Uint8Array(100 + i)));
  return {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    seq: 5,
    createdAt: 1_700_000_123_456,
    storeId: "store-1234",
    base: { id, transaction: 10, commitTime: 1_700_000_000_010, lsn: 4096, bytes: 201, chunks },
    increments: [
      increment(1, 4096, 8192, 11, 20),
      increment(2, 8192, 12288, null, null), // only log, no commit (e.g. a long transaction's data)
      increment(3, 12288, 20480, 21, 21),
      increment(4, 20480, 24576, 22, 40),
    ],
  };
}

function chainError(manifest: BackupManifest): BackupChainError {
  try {
    validateChain(manifest);
  } catch (error) {
    expect(error).toBeInstanceOf(BackupChainError);
    expect((error as BackupChainError).code).toBe("LSS_BACKUP_CHAIN");
    return error as BackupChainError;
  }
  throw new Error("expected validateChain to refuse the chain");
}

describe("names", () => {
  test("objects are named by what they hold, sortable, and parse back", () => {
    expect(newBaseId(10, 4096, "0badf00d")).toBe("base-0000000000000010-0000000000004096-0badf00d");
    expect(newBaseId(1, 2)).toMatch(/^base-0000000000000001-0000000000000002-[0-9a-f]{8}$/);
    expect(baseChunkName("base-x", 3)).toBe("base-x/chunk-000003.bin");
    const fields = { seq: 7, firstTransaction: 11, lastTransaction: 20, fromLsn: 4096, toLsn: 8192 };
    const name = incrementName(fields);
    expect(name).toBe("inc-0000000007-0000000000000011-0000000000000020-0000000000004096-0000000000008192.log");
    expect(parseIncrementName(name)).toEqual(fields);
    const empty = { seq: 8, firstTransaction: null, lastTransaction: null, fromLsn: 8192, toLsn: 9000 };
    expect(incrementName(empty)).toBe("inc-0000000008-none-none-0000000000008192-0000000000009000.log");
    expect(parseIncrementName(incrementName(empty))).toEqual(empty);
    expect(parseIncrementName("inc-1-2-3-4-5.log")).toBeUndefined();
    expect(manifestName(12)).toBe("manifest-0000000012.json");
    expect(parseManifestName("manifest-0000000012.json")).toBe(12);
    expect(parseManifestName("manifest-12.json")).toBeUndefined();
    // Padding makes name order chain order.
    expect([manifestName(10), manifestName(9)].sort()).toEqual([manifestName(9), manifestName(10)]);
    expect(() => manifestName(-1)).toThrow(InvalidArgumentError);
    expect(() => newBaseId(1, 1.5)).toThrow(InvalidArgumentError);
    expect(() => newBaseId(1, 1, "XYZ")).toThrow(InvalidArgumentError);
  });
});

describe("encode / decode", () => {
  test("round trip, deterministic bytes, readable JSON", () => {
    const manifest = sampleManifest();
    const bytes = encodeManifest(manifest);
    expect(decodeManifest(bytes)).toEqual(manifest);
    expect(encodeManifest(decodeManifest(bytes))).toEqual(bytes);
    const json = JSON.parse(new TextDecoder().decode(bytes)) as { checksum: string; manifest: BackupManifest };
    expect(json.checksum).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(json.manifest).toEqual(manifest);
  });

  test("every flipped byte is a CorruptionError (checksum, body, framing)", () => {
    const bytes = encodeManifest(sampleManifest());
    let checked = 0;
    // Every byte position (a manifest is small): flipping any one bit must be caught.
    for (let i = 0; i < bytes.length; i++) {
      const bad = bytes.slice();
      bad[i] = (bad[i] ?? 0) ^ 0x04;
      expect(() => decodeManifest(bad, "m")).toThrow(CorruptionError);
      checked++;
    }
    expect(checked).toBe(bytes.length);
  });

  test("truncated, empty, extended or foreign bytes are CorruptionErrors", () => {
    const bytes = encodeManifest(sampleManifest());
    for (const bad of [
      bytes.subarray(0, bytes.length - 1),
      bytes.subarray(0, 50),
      new Uint8Array(0),
      new Uint8Array([...bytes, 0x20]),
      new TextEncoder().encode(`{"manifest":{}}\n`),
    ]) {
      expect(() => decodeManifest(bad)).toThrow(CorruptionError);
    }
  });

  test("a valid checksum over a bad shape or an unknown version is still refused", () => {
    const reseal = (body: string): Uint8Array => {
      const sha = new Bun.CryptoHasher("sha256").update(body).digest("hex");
      return new TextEncoder().encode(`{"checksum":"sha256:${sha}","manifest":${body}}\n`);
    };
    const good = JSON.parse(new TextDecoder().decode(encodeManifest(sampleManifest()))).manifest as Record<string, unknown>;
    expect(decodeManifest(reseal(JSON.stringify(good)))).toEqual(sampleManifest());
    const newer = reseal(JSON.stringify({ ...good, version: MANIFEST_VERSION + 1 }));
    expect(() => decodeManifest(newer)).toThrow(/version 2 is not one this bloom-lss reads/);
    expect(() => decodeManifest(reseal(JSON.stringify({ ...good, seq: -1 })))).toThrow(CorruptionError);
    expect(() => decodeManifest(reseal(JSON.stringify({ ...good, storeId: "" })))).toThrow(CorruptionError);
    expect(() => decodeManifest(reseal(JSON.stringify({ ...good, increments: [{ name: "x" }] })))).toThrow(CorruptionError);
    expect(() => decodeManifest(reseal("[1,2]"))).toThrow(CorruptionError);
  });

  test("encode refuses a malformed manifest", () => {
    const m = sampleManifest();
    expect(() => encodeManifest({ ...m, seq: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => encodeManifest({ ...m, base: { ...m.base, lsn: -1 } })).toThrow(InvalidArgumentError);
  });
});

describe("validateChain", () => {
  test("an unbroken chain passes, also with no increments", () => {
    validateChain(sampleManifest());
    validateChain({ ...sampleManifest(), increments: [] });
  });

  test("a missing increment is refused, naming the gap", () => {
    const m = sampleManifest();
    const error = chainError({ ...m, increments: [m.increments[0]!, m.increments[2]!, m.increments[3]!] });
    expect(error.gap.after).toBe(`increment 1 (${m.increments[0]!.name})`);
    expect(error.gap.next).toBe(`increment 3 (${m.increments[2]!.name})`);
    expect(error.message).toContain("increment 2 is missing");
  });

  test("several missing increments are named as a range", () => {
    const m = sampleManifest();
    const error = chainError({ ...m, increments: [m.increments[0]!, m.increments[3]!] });
    expect(error.message).toContain("increments 2..3 are missing");
  });

  test("a missing first increment is refused (the log after the base is not there)", () => {
    const m = sampleManifest();
    const error = chainError({ ...m, increments: m.increments.slice(1) });
    expect(error.gap.after).toBe(`base ${m.base.id}`);
    expect(error.gap.next).toBe(`increment 2 (${m.increments[1]!.name})`);
    expect(error.message).toContain("the log [4096, 8192) is missing");
  });

  test("swapped increments are refused as out of order", () => {
    const m = sampleManifest();
    const error = chainError({ ...m, increments: [m.increments[0]!, m.increments[2]!, m.increments[1]!, m.increments[3]!] });
    expect(error.gap.after).toBe(`increment 1 (${m.increments[0]!.name})`);
    expect(error.gap.next).toBe(`increment 3 (${m.increments[2]!.name})`);
    const swappedFirst = chainError({ ...m, increments: [m.increments[1]!, m.increments[0]!] });
    expect(swappedFirst.gap.after).toBe(`base ${m.base.id}`);
  });

  test("a repeated increment, overlapping log or transactions, or a bad name is refused", () => {
    const m = sampleManifest();
    const [i1, i2, i3] = [m.increments[0]!, m.increments[1]!, m.increments[2]!];
    expect(chainError({ ...m, increments: [i1, i1] }).message).toContain("out of order");
    // Same seq numbers in order, but the log range overlaps the previous one.
    const overlapping = increment(2, 6000, 12288, null, null);
    expect(chainError({ ...m, increments: [i1, overlapping] }).message).toContain("before 8192");
    // Transactions the chain already holds (≤ the base's transaction).
    expect(chainError({ ...m, increments: [increment(1, 4096, 8192, 5, 12)] }).message).toContain("not after 10");
    // A name that does not say what the object holds.
    expect(chainError({ ...m, increments: [{ ...i1, toLsn: 8000 }] }).message).toContain("not named by what it holds");
    // An increment with only one of its transaction bounds.
    const half = { ...i3, lastTransaction: null };
    expect(chainError({ ...m, increments: [i1, i2, { ...half, name: incrementName(half) }] }).message).toContain("only one of");
  });

  test("a base with a missing or misnamed chunk, or a wrong byte count, is refused", () => {
    const m = sampleManifest();
    const missing = chainError({ ...m, base: { ...m.base, chunks: [m.base.chunks[1]!], bytes: 101 } });
    expect(missing.gap.next).toBe(`chunk ${m.base.chunks[1]!.name}`);
    expect(chainError({ ...m, base: { ...m.base, bytes: 999 } }).message).toContain("hold 201 bytes");
    expect(chainError({ ...m, base: { ...m.base, transaction: 11 } }).message).toContain("does not name its transaction");
  });

  test("appendIncrement makes the next manifest and checks the link", () => {
    const m = sampleManifest();
    const next = appendIncrement(m, increment(5, 24576, 30000, 41, 45), 1_800_000_000_000);
    expect(next.seq).toBe(6);
    expect(next.increments.length).toBe(5);
    expect(next.createdAt).toBe(1_800_000_000_000);
    expect(m.increments.length).toBe(4); // the previous one is untouched
    expect(() => appendIncrement(m, increment(6, 24576, 30000, 41, 45))).toThrow(BackupChainError);
  });
});

describe("latestManifest", () => {
  test("none, then the highest sequence number wins; a damaged highest one is an error", async () => {
    const target = await DirectoryTarget.open(path.join(scratch.dir, "latest"));
    expect(await latestManifest(target)).toBeUndefined();
    const m = sampleManifest();
    for (const seq of [3, 10, 9]) await target.commitManifest(manifestName(seq), encodeManifest({ ...m, seq }));
    await target.put("manifest-junk.json", new Uint8Array([1])); // not a manifest name: ignored
    const latest = await latestManifest(target);
    expect(latest?.name).toBe("manifest-0000000010.json");
    expect(latest?.manifest.seq).toBe(10);
    expect(latest?.info.size).toBe(encodeManifest({ ...m, seq: 10 }).length);

    // A manifest whose content says another number than its name.
    await target.commitManifest(manifestName(11), encodeManifest({ ...m, seq: 4 }));
    await expect(latestManifest(target)).rejects.toThrow(/holds manifest number 4, not 11/);

    // A damaged highest manifest is not skipped in favour of an older one.
    const bytes = encodeManifest({ ...m, seq: 12 });
    bytes[bytes.length - 10] = (bytes[bytes.length - 10] ?? 0) ^ 1;
    await target.commitManifest(manifestName(12), bytes);
    await expect(latestManifest(target)).rejects.toThrow(CorruptionError);
  });
});
