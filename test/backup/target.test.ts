/**
 * Backup targets: the same contract suite on a DirectoryTarget (in a scratch directory) and on
 * an S3Target (against s3rver, started here and stopped after), then what only one of them has:
 * crash safety of the directory's puts, multipart uploads, retries and the S3 error paths.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import {
  BackupObjectExistsError,
  BackupObjectMissingError,
  BackupTargetError,
  InvalidArgumentError,
} from "../../src/errors.ts";
import { DirectoryTarget } from "../../src/backup/directory-target.ts";
import type { NativeBuffer } from "../../src/io/backend.ts";
import { allocAligned, freeAligned } from "../../src/io/libc.ts";
import { parseS3Url, S3Target, type S3TargetOptions } from "../../src/backup/s3-target.ts";
import { openTarget, type BackupTarget } from "../../src/backup/target.ts";
import { startS3rver, type RunningS3rver } from "../../testing/s3rver.ts";
import { fillPattern, scratchDir } from "../helpers.ts";

const MIB = 1024 * 1024;
/** The smallest part size S3 allows, so a 20 MiB object takes 4 parts. */
const PART = 5 * MIB;
const BIG = 20 * MIB;

function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  fillPattern(bytes, seed);
  return bytes;
}

/** `bytes` as an async iterable of `chunk`-sized pieces (the last one shorter). */
function chunked(bytes: Uint8Array, chunk: number): () => AsyncIterable<Uint8Array> {
  return async function* () {
    for (let i = 0; i < bytes.length; i += chunk) yield bytes.subarray(i, Math.min(bytes.length, i + chunk));
  };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(c);
  return new Uint8Array(Buffer.concat(parts));
}

function sha256(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

// --- fixtures -------------------------------------------------------------------------------

const scratch = scratchDir("backup-target");
let s3: RunningS3rver;
let prefixCounter = 0;

function s3Options(extra: Partial<S3TargetOptions> = {}): S3TargetOptions {
  return {
    endpoint: s3.endpoint,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    region: "us-east-1",
    env: {},
    partSize: PART,
    retry: { attempts: 4, baseDelayMs: 20, maxDelayMs: 200, attemptTimeoutMs: 20_000 },
    ...extra,
  };
}

beforeAll(async () => {
  s3 = await startS3rver({ parentDir: scratch.dir });
});

afterAll(async () => {
  await s3?.stop();
  scratch.cleanup();
});

interface Kind {
  name: string;
  /** A fresh, empty target. */
  make(): Promise<BackupTarget>;
}

const KINDS: Kind[] = [
  {
    name: "directory",
    make: () => DirectoryTarget.open(path.join(scratch.dir, `dir-${++prefixCounter}`)),
  },
  {
    name: "s3",
    // A fresh prefix per test isolates tests sharing the one bucket.
    make: async () => new S3Target(`s3://${s3.bucket}/t${++prefixCounter}/backups`, s3Options()),
  },
];

// --- the contract, on both kinds ------------------------------------------------------------

for (const kind of KINDS) {
  describe(`${kind.name} target`, () => {
    test("put/get round-trips 0 bytes, small and 20 MiB objects exactly, with their checksums", async () => {
      const target = await kind.make();
      for (const [name, bytes] of [
        ["empty.bin", new Uint8Array(0)],
        ["small.bin", pattern(1000, 1)],
        ["big/object.bin", pattern(BIG, 2)],
      ] as const) {
        const info = await target.put(name, bytes);
        expect(info).toEqual({ name, size: bytes.length, crc32: Bun.hash.crc32(bytes) >>> 0, sha256: sha256(bytes) });
        const back = await target.get(name);
        expect(back.length).toBe(bytes.length);
        expect(sha256(back)).toBe(sha256(bytes));
        expect(await target.stat(name)).toEqual({ size: bytes.length });
        expect(await target.exists(name)).toBe(true);
      }
    });

    test("streamed puts (replayable and one-shot) store exactly the chunks given", async () => {
      const target = await kind.make();
      const bytes = pattern(BIG + 12345, 3);
      const info = await target.put("stream/replayable.bin", chunked(bytes, 3 * MIB + 7));
      expect(info.size).toBe(bytes.length);
      expect(info.sha256).toBe(sha256(bytes));
      const oneShot = chunked(bytes, MIB)();
      expect((await target.put("stream/once.bin", oneShot)).sha256).toBe(sha256(bytes));
      expect(sha256(await target.get("stream/once.bin"))).toBe(sha256(bytes));
      expect(sha256(await target.get("stream/replayable.bin"))).toBe(sha256(bytes));
      // An empty stream is an empty object.
      expect((await target.put("stream/empty.bin", chunked(new Uint8Array(0), 1))).size).toBe(0);
      expect((await target.get("stream/empty.bin")).length).toBe(0);
    });

    test("ranged and streamed reads return exactly the bytes asked for", async () => {
      const target = await kind.make();
      const bytes = pattern(3 * MIB + 17, 4);
      await target.put("r.bin", bytes);
      expect(await target.getRange("r.bin", 5, 100)).toEqual(bytes.subarray(5, 105));
      expect((await target.getRange("r.bin", bytes.length, 0)).length).toBe(0);
      const streamed = await collect(target.getStream("r.bin", { chunkBytes: MIB }));
      expect(sha256(streamed)).toBe(sha256(bytes));
      const part = await collect(target.getStream("r.bin", { chunkBytes: 1000, offset: MIB - 10, length: 2500 }));
      expect(part).toEqual(bytes.subarray(MIB - 10, MIB + 2490));
      expect(await rejection(target.getRange("r.bin", bytes.length - 1, 2))).toBeInstanceOf(InvalidArgumentError);
    });

    test("a missing object: get and streams throw BackupObjectMissingError, stat is undefined", async () => {
      const target = await kind.make();
      expect(await target.stat("nope.bin")).toBeUndefined();
      expect(await target.exists("nope.bin")).toBe(false);
      const error = await rejection(target.get("nope.bin"));
      expect(error).toBeInstanceOf(BackupObjectMissingError);
      expect((error as BackupObjectMissingError).code).toBe("LSS_BACKUP_OBJECT_MISSING");
      expect(await rejection(target.getRange("nope.bin", 0, 1))).toBeInstanceOf(BackupObjectMissingError);
      expect(await rejection(collect(target.getStream("nope.bin")))).toBeInstanceOf(BackupObjectMissingError);
    });

    test("list returns the names under a prefix, sorted, and nothing else", async () => {
      const target = await kind.make();
      const names = ["b", "a/c", "ab", "a/b/2", "a/b/1", "manifest-0000000002.json", "manifest-0000000001.json"];
      for (const name of names) await target.put(name, new TextEncoder().encode(name));
      expect(await target.list("")).toEqual([...names].sort());
      expect(await target.list("a/")).toEqual(["a/b/1", "a/b/2", "a/c"]);
      expect(await target.list("a")).toEqual(["a/b/1", "a/b/2", "a/c", "ab"]);
      expect(await target.list("a/b/")).toEqual(["a/b/1", "a/b/2"]);
      expect(await target.list("a/b/1")).toEqual(["a/b/1"]);
      expect(await target.list("manifest-")).toEqual(["manifest-0000000001.json", "manifest-0000000002.json"]);
      expect(await target.list("zzz")).toEqual([]);
    });

    test("objects are immutable: the same bytes again succeed, different bytes are refused", async () => {
      const target = await kind.make();
      const bytes = pattern(4096, 5);
      await target.put("imm.bin", bytes);
      expect((await target.put("imm.bin", bytes.slice())).sha256).toBe(sha256(bytes));
      expect((await target.put("imm.bin", chunked(bytes, 1000))).size).toBe(4096);
      const other = bytes.slice();
      other[100] = (other[100] ?? 0) ^ 1;
      const error = await rejection(target.put("imm.bin", other));
      expect(error).toBeInstanceOf(BackupObjectExistsError);
      expect((error as BackupObjectExistsError).code).toBe("LSS_BACKUP_OBJECT_EXISTS");
      expect((error as BackupObjectExistsError).objectName).toBe("imm.bin");
      expect(await rejection(target.put("imm.bin", chunked(bytes.subarray(0, 4000), 1000)))).toBeInstanceOf(BackupObjectExistsError);
      // The stored object is untouched.
      expect(sha256(await target.get("imm.bin"))).toBe(sha256(bytes));
      // A manifest commit is immutable too, and reads back what it wrote.
      const manifest = new TextEncoder().encode("{}\n");
      expect((await target.commitManifest("manifest-0000000001.json", manifest)).size).toBe(3);
      expect(await rejection(target.commitManifest("manifest-0000000001.json", new TextEncoder().encode("[]\n")))).toBeInstanceOf(BackupObjectExistsError);
    });

    test("bad names and bad chunks are refused with InvalidArgumentError before anything is written", async () => {
      const target = await kind.make();
      for (const name of ["", "/abs", "a//b", "../up", "a/../b", ".hidden", "a/.tmp-x", "sp ace", "a/", "x".repeat(513)]) {
        expect(await rejection(target.put(name, new Uint8Array(1)))).toBeInstanceOf(InvalidArgumentError);
      }
      async function* strings(): AsyncGenerator<Uint8Array> {
        yield "not bytes" as unknown as Uint8Array;
      }
      expect(await rejection(target.put("bad-chunk.bin", strings()))).toBeInstanceOf(InvalidArgumentError);
      expect(await target.list("")).toEqual([]);
      expect(await rejection(target.list("../"))).toBeInstanceOf(InvalidArgumentError);
    });

    test("a body that throws: its error comes through unchanged, is not retried, and nothing is stored", async () => {
      const target = await kind.make();
      const failure = new Error("the source broke");
      let calls = 0;
      const body = async function* (): AsyncGenerator<Uint8Array> {
        calls++;
        yield pattern(6 * MIB, 19); // over one part: the S3 upload is multipart
        throw failure;
      };
      expect(await rejection(target.put("broken.bin", body))).toBe(failure);
      expect(calls).toBe(1);
      expect(await rejection(target.put("broken.bin", body()))).toBe(failure);
      expect(await target.exists("broken.bin")).toBe(false);
      expect(await target.list("")).toEqual([]);
    });

    test("delete removes an object; deleting a missing one is fine", async () => {
      const target = await kind.make();
      await target.put("base-1/chunk-000000.bin", pattern(10, 6));
      await target.put("keep.bin", pattern(10, 7));
      await target.delete("base-1/chunk-000000.bin");
      await target.delete("base-1/chunk-000000.bin");
      expect(await target.exists("base-1/chunk-000000.bin")).toBe(false);
      expect(await target.list("")).toEqual(["keep.bin"]);
    });
  });
}

// --- directory only -------------------------------------------------------------------------

describe("directory target", () => {
  test("a put that fails midway leaves nothing under the final name and no temp file behind", async () => {
    const target = await DirectoryTarget.open(path.join(scratch.dir, "fail-midway"));
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield pattern(MIB, 8);
      throw new Error("source failed");
    }
    expect(await rejection(target.put("x/partial.bin", failing()))).toBeInstanceOf(Error);
    expect(await target.exists("x/partial.bin")).toBe(false);
    expect(fs.readdirSync(path.join(target.root, "x"))).toEqual([]);
    expect(await target.list("")).toEqual([]);
  });

  test("SIGKILL during a put: the final name never appears; the temp file is hidden and removable", async () => {
    const dir = path.join(scratch.dir, "killed");
    const child = Bun.spawn([process.execPath, path.join(import.meta.dir, "fixtures", "put-then-hang.ts"), dir, "base-1/chunk-000000.bin"], {
      stdout: "pipe",
      stderr: "inherit",
    });
    try {
      // Wait (bounded) until the child has written half of the object.
      const reader = child.stdout.getReader();
      let seen = "";
      const deadline = Date.now() + 30_000;
      while (!seen.includes("HALF")) {
        if (Date.now() > deadline) throw new Error("child did not reach the middle of its put within 30 s");
        const { value, done } = await Promise.race([
          reader.read(),
          Bun.sleep(Math.max(1, deadline - Date.now())).then(() => ({ value: undefined, done: true })),
        ]);
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
      expect(seen).toContain("HALF");
    } finally {
      child.kill("SIGKILL");
      await Promise.race([child.exited, Bun.sleep(10_000)]);
    }
    const target = await DirectoryTarget.open(dir);
    expect(await target.exists("base-1/chunk-000000.bin")).toBe(false);
    expect(await target.list("")).toEqual([]);
    const leftovers = fs.readdirSync(path.join(dir, "base-1"));
    expect(leftovers.length).toBe(1);
    expect(leftovers[0]?.startsWith(".tmp-chunk-000000.bin-")).toBe(true);
    expect(fs.statSync(path.join(dir, "base-1", leftovers[0] ?? "")).size).toBe(MIB);
    expect(await target.removeTemporaries()).toBe(1);
    expect(fs.readdirSync(path.join(dir, "base-1"))).toEqual([]);
    // The name is free for a complete put afterwards.
    await target.put("base-1/chunk-000000.bin", pattern(100, 9));
    expect((await target.get("base-1/chunk-000000.bin")).length).toBe(100);
  });

  test("1 MiB pieces go to disk with O_DIRECT, an unaligned tail and unaligned pieces through the page cache: the bytes are exact", async () => {
    const root = path.join(scratch.dir, "direct");
    const target = await DirectoryTarget.open(root);
    // Pieces as a base writes them (1 MiB each, on a page boundary: native memory here, so the
    // test does not depend on where the engine puts a 1 MiB array), then a tail of 100 bytes.
    const memory = [0, 1, 2, 3].map(() => allocAligned(MIB + 4096));
    try {
      const pieces = [0, 1, 2].map((seed) => {
        const piece = (memory[seed] as NativeBuffer).bytes.subarray(0, MIB);
        fillPattern(piece, seed);
        return piece;
      });
      const tail = pattern(100, 3);
      const whole = new Uint8Array(3 * MIB + 100);
      pieces.forEach((piece, i) => whole.set(piece, i * MIB));
      whole.set(tail, 3 * MIB);
      const info = await target.put("base/aligned.bin", async function* () {
        for (const piece of pieces) yield piece;
        yield tail;
      });
      expect(info.size).toBe(whole.length);
      expect(Buffer.compare(fs.readFileSync(path.join(root, "base/aligned.bin")), whole)).toBe(0);
      expect(target.writtenBytes).toEqual({ direct: 3 * MIB, buffered: 100 });
      // A piece that starts 8 bytes into its array (not on a page) and everything after it (its
      // 1 MiB + 4 bytes leave the file offset off a block boundary) go through the page cache.
      const odd = (memory[3] as NativeBuffer).bytes.subarray(8, MIB + 12);
      fillPattern(odd, 9);
      await target.put("base/unaligned.bin", async function* () {
        yield odd;
        yield pieces[0] as Uint8Array;
      });
      expect(target.writtenBytes).toEqual({ direct: 3 * MIB, buffered: 100 + 2 * MIB + 4 });
      const back = fs.readFileSync(path.join(root, "base/unaligned.bin"));
      expect(Buffer.compare(back.subarray(0, MIB + 4), odd)).toBe(0);
      expect(Buffer.compare(back.subarray(MIB + 4), pieces[0] as Uint8Array)).toBe(0);
      await target.close();
    } finally {
      for (const buffer of memory) freeAligned(buffer);
    }
  });

  test("directWrites: false writes every byte through the page cache", async () => {
    const target = await DirectoryTarget.open(path.join(scratch.dir, "buffered"), { directWrites: false });
    const piece = pattern(MIB, 4);
    await target.put("a.bin", piece);
    await target.put("b.bin", async function* () {
      yield piece;
      yield piece;
    });
    expect(target.writtenBytes).toEqual({ direct: 0, buffered: 3 * MIB });
    const back = fs.readFileSync(path.join(target.root, "b.bin"));
    expect(Buffer.compare(back.subarray(0, MIB), piece)).toBe(0);
    expect(Buffer.compare(back.subarray(MIB), piece)).toBe(0);
    await target.close();
  });

  test("puts fsync through: the object is complete on disk when put resolves (no temp left)", async () => {
    const target = await DirectoryTarget.open(path.join(scratch.dir, "complete"));
    await target.put("a/b/c.bin", pattern(MIB, 10));
    expect(fs.readdirSync(path.join(target.root, "a", "b"))).toEqual(["c.bin"]);
    expect(fs.statSync(path.join(target.root, "a", "b", "c.bin")).size).toBe(MIB);
  });

  test("delete removes directories it leaves empty", async () => {
    const target = await DirectoryTarget.open(path.join(scratch.dir, "prune"));
    await target.put("base-2/chunk-000000.bin", pattern(10, 11));
    await target.delete("base-2/chunk-000000.bin");
    expect(fs.existsSync(path.join(target.root, "base-2"))).toBe(false);
    expect(fs.existsSync(target.root)).toBe(true);
  });

  test("open refuses a path that is not a directory, or a missing one with create: false", async () => {
    const file = path.join(scratch.dir, "plain-file");
    fs.writeFileSync(file, "x");
    expect(await rejection(DirectoryTarget.open(file))).toBeInstanceOf(InvalidArgumentError);
    expect(await rejection(DirectoryTarget.open(path.join(scratch.dir, "missing"), { create: false }))).toBeInstanceOf(InvalidArgumentError);
    expect(fs.readFileSync(file, "utf8")).toBe("x");
  });

  test("get refuses an object over maxGetBytes (use getStream)", async () => {
    const target = await DirectoryTarget.open(path.join(scratch.dir, "maxget"), { maxGetBytes: 1000 });
    await target.put("big.bin", pattern(1001, 12));
    expect(await rejection(target.get("big.bin"))).toBeInstanceOf(InvalidArgumentError);
    expect((await collect(target.getStream("big.bin"))).length).toBe(1001);
  });
});

// --- S3 only --------------------------------------------------------------------------------

describe("s3 target", () => {
  test("a 20 MiB object goes up in 4 multipart parts; a small one in one PUT", async () => {
    const target = new S3Target(`s3://${s3.bucket}/multipart`, s3Options());
    const before = (await s3.requestLog()).length;
    const bytes = pattern(BIG, 13);
    await target.put("big.bin", bytes);
    await target.put("small.bin", pattern(100, 14));
    const log = (await s3.requestLog()).slice(before);
    const parts = log.filter((r) => r.method === "PUT" && r.url.startsWith(`/${s3.bucket}/multipart/big.bin?`) && r.url.includes("partNumber="));
    expect(parts.length).toBe(BIG / PART);
    expect(log.some((r) => r.method === "POST" && r.url.startsWith(`/${s3.bucket}/multipart/big.bin?uploads`))).toBe(true);
    expect(log.filter((r) => r.url.startsWith(`/${s3.bucket}/multipart/small.bin`) && r.url.includes("partNumber=")).length).toBe(0);
    // s3rver keeps the assembled object as one file: it holds exactly our bytes.
    const stored = fs.readFileSync(path.join(s3.directory, s3.bucket, "multipart", "big.bin._S3rver_object"));
    expect(sha256(new Uint8Array(stored))).toBe(sha256(bytes));
  });

  test("keys live under the URL's prefix; two prefixes do not see each other", async () => {
    const a = new S3Target(`s3://${s3.bucket}/iso/a`, s3Options());
    const b = new S3Target(`s3://${s3.bucket}/iso/a2/`, s3Options());
    await a.put("x.bin", pattern(10, 15));
    await b.put("y.bin", pattern(10, 16));
    expect(await a.list("")).toEqual(["x.bin"]);
    expect(await b.list("")).toEqual(["y.bin"]);
    expect(fs.existsSync(path.join(s3.directory, s3.bucket, "iso", "a", "x.bin._S3rver_object"))).toBe(true);
  });

  test("list pages through ListObjectsV2 and stops at maxListEntries", async () => {
    const target = new S3Target(`s3://${s3.bucket}/paging`, s3Options({ listPageSize: 2 }));
    const names = Array.from({ length: 7 }, (_, i) => `n${i}.bin`);
    for (const name of names) await target.put(name, new Uint8Array([1]));
    expect(await target.list("")).toEqual(names);
    const capped = new S3Target(`s3://${s3.bucket}/paging`, s3Options({ listPageSize: 2, maxListEntries: 5 }));
    expect(await rejection(capped.list(""))).toBeInstanceOf(BackupTargetError);
  });

  test("a server that goes away and comes back: the put is retried and lands", async () => {
    // Budget: 60 attempts × up to 250 ms of backoff (mean about 7 s) against a restart of about
    // 0.4 s + the node child's start (1-2 s on a loaded machine).
    const target = new S3Target(`s3://${s3.bucket}/outage`, s3Options({ retry: { attempts: 60, baseDelayMs: 50, maxDelayMs: 250, attemptTimeoutMs: 10_000 } }));
    const bytes = pattern(64 * 1024, 17);
    await s3.halt();
    let resumed = false;
    const resume = Bun.sleep(400).then(async () => {
      await s3.resume();
      resumed = true;
    });
    try {
      const info = await target.put("after-outage.bin", bytes);
      expect(resumed).toBe(true);
      expect(info.sha256).toBe(sha256(bytes));
    } finally {
      await resume;
    }
    expect(sha256(await target.get("after-outage.bin"))).toBe(sha256(bytes));
  });

  test("an unreachable endpoint: bounded retries, then BackupTargetError (never a hang)", async () => {
    const port = await closedPort();
    const target = new S3Target("s3://nowhere/x", {
      ...s3Options({ endpoint: `http://127.0.0.1:${port}` }),
      retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 50, attemptTimeoutMs: 5_000 },
    });
    const started = Date.now();
    for (const op of [
      () => target.put("a.bin", new Uint8Array(10)),
      () => target.get("a.bin"),
      () => target.list(""),
      () => target.put("big.bin", chunked(pattern(6 * MIB, 18), MIB)),
    ]) {
      const error = await rejection(op());
      expect(error).toBeInstanceOf(BackupTargetError);
      expect((error as BackupTargetError).code).toBe("LSS_BACKUP_TARGET");
      expect((error as BackupTargetError).attempts).toBeGreaterThanOrEqual(1);
    }
    const error = await rejection(target.exists("a.bin"));
    expect((error as BackupTargetError).attempts).toBe(3);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  test("a permanent error (bad credentials) fails at once, without retries", async () => {
    const target = new S3Target(`s3://${s3.bucket}/denied`, s3Options({ accessKeyId: "WRONG", secretAccessKey: "WRONG" }));
    const error = await rejection(target.put("a.bin", new Uint8Array(1)));
    expect(error).toBeInstanceOf(BackupTargetError);
    expect((error as BackupTargetError).attempts).toBe(1);
    expect((error as BackupTargetError).message).toContain("InvalidAccessKeyId");
  });

  test("credentials and endpoint come from options, else S3_* then AWS_* environment variables", async () => {
    const env = {
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      S3_ENDPOINT: s3.endpoint,
      AWS_ENDPOINT: "http://127.0.0.1:1",
      AWS_REGION: "us-east-1",
    };
    const target = new S3Target(`s3://${s3.bucket}/fromenv`, { env, partSize: PART });
    expect(target.endpoint).toBe(s3.endpoint);
    await target.put("e.bin", new Uint8Array([1, 2]));
    expect(await target.get("e.bin")).toEqual(new Uint8Array([1, 2]));
    expect(() => new S3Target(`s3://${s3.bucket}/x`, { env: {} })).toThrow(InvalidArgumentError);
  });

  test("URLs and limits are checked", () => {
    expect(parseS3Url("s3://my-bucket")).toEqual({ bucket: "my-bucket", prefix: "" });
    expect(parseS3Url("s3://my-bucket/a/b/")).toEqual({ bucket: "my-bucket", prefix: "a/b/" });
    for (const url of ["s3://", "s3://UPPER/x", "s3://b/../x", "s3://b//x", "s3://a_b/x"]) {
      expect(() => parseS3Url(url)).toThrow(InvalidArgumentError);
    }
    expect(() => new S3Target(`s3://${s3.bucket}`, s3Options({ partSize: MIB }))).toThrow(InvalidArgumentError);
    expect(() => new S3Target(`s3://${s3.bucket}`, s3Options({ retry: { attempts: 0 } }))).toThrow(InvalidArgumentError);
  });
});

describe("openTarget", () => {
  test("s3:// is S3, other schemes are refused, anything else is a directory", async () => {
    const s3Target = await openTarget(`s3://${s3.bucket}/open/here`, { s3: s3Options() });
    expect(s3Target.kind).toBe("s3");
    expect((s3Target as S3Target).prefix).toBe("open/here/");
    const dir = path.join(scratch.dir, "opened");
    const dirTarget = await openTarget(dir);
    expect(dirTarget.kind).toBe("directory");
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    for (const bad of ["http://host/x", "file:///tmp/x", "S3://b/x", "s3:/b/x", ""]) {
      expect(await rejection(openTarget(bad))).toBeInstanceOf(InvalidArgumentError);
    }
  });
});
