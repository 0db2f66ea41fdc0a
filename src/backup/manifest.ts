/**
 * The layout of a backup on its target, and the manifest that makes it valid.
 *
 * ## Layout
 *
 * ```
 * base-<tx>-<lsn>-<nonce>/chunk-<index>.bin                       a full backup, in chunks
 * inc-<seq>-<firstTx>-<lastTx>-<fromLsn>-<toLsn>.log              the durable log between two points
 * manifest-<seq>.json                                             one per backup; the highest wins
 * ```
 * Numbers are zero-padded decimal (`seq` to 10 digits, the others to 16, enough for any safe
 * integer), so names sort in chain order and a listing reads like the chain. A transaction field
 * of an increment without commits is `none`.
 *
 * Every object is immutable and named by what it holds: a base by the transaction and log
 * position it was taken at (plus a random nonce, so two attempts at the same point never collide
 * on different bytes), an increment by its sequence number, transactions and log range. A
 * target therefore never needs an in-place rewrite, which S3 cannot do atomically.
 *
 * - A **base** holds the live data at one committed transaction `T`: every transaction `≤ T`.
 *   Its bytes are split into chunk objects (so a large base uploads, verifies and retries in
 *   bounded pieces), each with its own size, crc32 and sha256 in the manifest. Its `lsn` is the
 *   log position from which increments continue.
 * - An **increment** is the durable log `[fromLsn, toLsn)`. Its `firstTransaction` /
 *   `lastTransaction` and commit times are those of the commits it adds to the chain (`null`
 *   when it adds none). Increments are numbered (`seq`, consecutive): with the log range
 *   chaining (`fromLsn` = previous `toLsn`), a missing, repeated or reordered increment is caught
 *   by {@link validateChain} before any byte is restored.
 * - A **manifest** lists the chain: the base, then the increments in order. It is written last
 *   (`BackupTarget.commitManifest`), after every object it names is durable, so it is the commit
 *   point of a backup: a crash leaves the previous manifest in force. Each backup writes a new
 *   `manifest-<seq>.json` (never rewriting one: S3 has no atomic replace), and
 *   {@link latestManifest} takes the highest. Old manifests and objects no manifest names are
 *   garbage for pruning.
 *
 * ## Manifest bytes
 *
 * UTF-8 JSON, readable with any JSON tool, in exactly this shape:
 * ```
 * {"checksum":"sha256:<64 hex>","manifest":<body>}\n
 * ```
 * The checksum covers the exact bytes of `<body>`, so checking it needs no canonical re-encoding
 * (which would tie the format to one JSON serializer). The body carries `format` and `version`;
 * a reader refuses a version it does not know instead of guessing.
 *
 * @module
 */
import { BackupChainError, CorruptionError, InvalidArgumentError } from "../errors.ts";
import { describeBytes, type ObjectInfo } from "./objects.ts";
import type { BackupTarget } from "./target.ts";

/** The `format` field of every manifest. */
export const MANIFEST_FORMAT = "bloom-lss-backup-manifest";
/** The manifest format version this code writes and reads. */
export const MANIFEST_VERSION = 1;
/** Largest manifest accepted, in bytes (encode and decode). */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
/** Most chunks in one base. */
export const MAX_BASE_CHUNKS = 100_000;
/** Most increments in one chain (take a new base long before this). */
export const MAX_CHAIN_INCREMENTS = 100_000;
/** Largest manifest or increment sequence number (10 decimal digits in names). */
export const MAX_SEQ = 9_999_999_999;

const SEQ_DIGITS = 10;
const NUMBER_DIGITS = 16;
const NONCE = /^[0-9a-f]{8}$/;

/** One chunk object of a base (name, size, checksums). */
export type ChunkEntry = ObjectInfo;

/** The full backup a chain starts from. */
export interface BaseEntry {
  /** `base-<tx>-<lsn>-<nonce>`: the folder its chunks are named under. */
  readonly id: string;
  /** The committed transaction the base was taken at: it holds every transaction `≤` this. */
  readonly transaction: number;
  /** Commit time of that transaction, ms since the epoch; `null` when unknown (an empty store). */
  readonly commitTime: number | null;
  /** Log position increments continue from. */
  readonly lsn: number;
  /** Sum of the chunks' sizes. */
  readonly bytes: number;
  /** The chunks, in order: `<id>/chunk-000000.bin`, `…-000001.bin`, … */
  readonly chunks: readonly ChunkEntry[];
}

/** One increment of a chain: the durable log between two points. */
export interface IncrementEntry extends ObjectInfo {
  /** Position in the chain; consecutive from one increment to the next. */
  readonly seq: number;
  /** First log position it holds. */
  readonly fromLsn: number;
  /** Log position just past the last byte it holds (the next increment's `fromLsn`). */
  readonly toLsn: number;
  /** First transaction it adds to the chain, or `null` when it adds none. */
  readonly firstTransaction: number | null;
  /** Last transaction it adds to the chain, or `null` when it adds none. */
  readonly lastTransaction: number | null;
  /** Commit time of `firstTransaction`, ms since the epoch, or `null`. */
  readonly firstCommitTime: number | null;
  /** Commit time of `lastTransaction`, ms since the epoch, or `null`. */
  readonly lastCommitTime: number | null;
}

/** The contents of a manifest: one backup chain. */
export interface BackupManifest {
  /** Always {@link MANIFEST_FORMAT}. */
  readonly format: typeof MANIFEST_FORMAT;
  /** Always {@link MANIFEST_VERSION} for manifests this code writes. */
  readonly version: number;
  /** This manifest's number (its name is `manifest-<seq>.json`); each backup adds one. */
  readonly seq: number;
  /** When the manifest was made, ms since the epoch. */
  readonly createdAt: number;
  /** Identity of the store backed up; a chain never mixes stores. Opaque, 1..128 characters. */
  readonly storeId: string;
  /** The full backup the chain starts from. */
  readonly base: BaseEntry;
  /** The increments after the base, in order. */
  readonly increments: readonly IncrementEntry[];
}

// ---------------------------------------------------------------------------------------------
// Names

function pad(value: number, digits: number): string {
  return String(value).padStart(digits, "0");
}

function checkNumber(value: number, what: string, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new InvalidArgumentError(`${what} must be an integer in [0, ${max}], got ${String(value)}`);
  }
}

/**
 * A new base id for a full backup taken at `transaction`, continuing the log at `lsn`.
 *
 * @param nonce - 8 lowercase hex digits; random by default (tests pass a fixed one)
 */
export function newBaseId(transaction: number, lsn: number, nonce?: string): string {
  checkNumber(transaction, "base transaction");
  checkNumber(lsn, "base lsn");
  const n = nonce ?? crypto.randomUUID().replaceAll("-", "").slice(0, 8);
  if (!NONCE.test(n)) throw new InvalidArgumentError(`base nonce must be 8 lowercase hex digits, got ${JSON.stringify(n)}`);
  return `base-${pad(transaction, NUMBER_DIGITS)}-${pad(lsn, NUMBER_DIGITS)}-${n}`;
}

/** Name of chunk `index` of base `baseId`: `<baseId>/chunk-<index, 6 digits>.bin`. */
export function baseChunkName(baseId: string, index: number): string {
  checkNumber(index, "chunk index", MAX_BASE_CHUNKS - 1);
  return `${baseId}/chunk-${pad(index, 6)}.bin`;
}

/** The fields an increment's name is made of. */
export type IncrementNameFields = Pick<IncrementEntry, "seq" | "firstTransaction" | "lastTransaction" | "fromLsn" | "toLsn">;

/** Name of an increment object, from what it holds (see the module doc). */
export function incrementName(fields: IncrementNameFields): string {
  checkNumber(fields.seq, "increment seq", MAX_SEQ);
  checkNumber(fields.fromLsn, "increment fromLsn");
  checkNumber(fields.toLsn, "increment toLsn");
  const tx = (value: number | null, what: string): string => {
    if (value === null) return "none";
    checkNumber(value, what);
    return pad(value, NUMBER_DIGITS);
  };
  return (
    `inc-${pad(fields.seq, SEQ_DIGITS)}-${tx(fields.firstTransaction, "firstTransaction")}-` +
    `${tx(fields.lastTransaction, "lastTransaction")}-${pad(fields.fromLsn, NUMBER_DIGITS)}-${pad(fields.toLsn, NUMBER_DIGITS)}.log`
  );
}

const INCREMENT_NAME = /^inc-(\d{10})-(\d{16}|none)-(\d{16}|none)-(\d{16})-(\d{16})\.log$/;

/** The fields of an increment name, or `undefined` when `name` is not one. */
export function parseIncrementName(name: string): IncrementNameFields | undefined {
  const m = INCREMENT_NAME.exec(name);
  if (!m) return undefined;
  const tx = (s: string | undefined): number | null => (s === undefined || s === "none" ? null : Number(s));
  const fields = {
    seq: Number(m[1]),
    firstTransaction: tx(m[2]),
    lastTransaction: tx(m[3]),
    fromLsn: Number(m[4]),
    toLsn: Number(m[5]),
  };
  const safe = [fields.seq, fields.fromLsn, fields.toLsn, fields.firstTransaction ?? 0, fields.lastTransaction ?? 0].every(Number.isSafeInteger);
  return safe ? fields : undefined;
}

/** Name of manifest number `seq`: `manifest-<seq, 10 digits>.json`. */
export function manifestName(seq: number): string {
  checkNumber(seq, "manifest seq", MAX_SEQ);
  return `manifest-${pad(seq, SEQ_DIGITS)}.json`;
}

const MANIFEST_NAME = /^manifest-(\d{10})\.json$/;

/** The sequence number in a manifest name, or `undefined` when `name` is not one. */
export function parseManifestName(name: string): number | undefined {
  const m = MANIFEST_NAME.exec(name);
  return m ? Number(m[1]) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const PREFIX_TEXT = '{"checksum":"sha256:';
const PREFIX_BYTES = PREFIX_TEXT.length + 64 + '","manifest":'.length;
const SUFFIX_TEXT = "}\n";

/** Encode a manifest to its bytes (see the module doc). The manifest's shape is checked first. */
export function encodeManifest(manifest: BackupManifest): Uint8Array {
  checkShape(manifest, (message) => new InvalidArgumentError(`bad manifest: ${message}`));
  // Fields written in a fixed order so equal manifests give equal bytes (an idempotent retry).
  const body = JSON.stringify({
    format: manifest.format,
    version: manifest.version,
    seq: manifest.seq,
    createdAt: manifest.createdAt,
    storeId: manifest.storeId,
    base: {
      id: manifest.base.id,
      transaction: manifest.base.transaction,
      commitTime: manifest.base.commitTime,
      lsn: manifest.base.lsn,
      bytes: manifest.base.bytes,
      chunks: manifest.base.chunks.map(objectFields),
    },
    increments: manifest.increments.map((inc) => ({
      ...objectFields(inc),
      seq: inc.seq,
      fromLsn: inc.fromLsn,
      toLsn: inc.toLsn,
      firstTransaction: inc.firstTransaction,
      lastTransaction: inc.lastTransaction,
      firstCommitTime: inc.firstCommitTime,
      lastCommitTime: inc.lastCommitTime,
    })),
  });
  const bodyBytes = new TextEncoder().encode(body);
  const sha = new Bun.CryptoHasher("sha256").update(bodyBytes).digest("hex");
  const out = new TextEncoder().encode(`${PREFIX_TEXT}${sha}","manifest":${body}${SUFFIX_TEXT}`);
  if (out.length > MAX_MANIFEST_BYTES) throw new InvalidArgumentError(`manifest is ${out.length} bytes, over ${MAX_MANIFEST_BYTES}`);
  return out;
}

function objectFields(o: ObjectInfo): ObjectInfo {
  return { name: o.name, size: o.size, crc32: o.crc32, sha256: o.sha256 };
}

/**
 * Decode and check a manifest: its checksum, then its shape (every field present, of the right
 * type and range). The chain itself is checked by {@link validateChain}.
 *
 * @param what - where the bytes came from, for messages (e.g. the object name)
 * @throws CorruptionError on a bad checksum, bad JSON, a bad shape, or an unknown version
 */
export function decodeManifest(bytes: Uint8Array, what = "manifest"): BackupManifest {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new CorruptionError(`${what}: ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES} a manifest may have`);
  if (bytes.length < PREFIX_BYTES + SUFFIX_TEXT.length) throw new CorruptionError(`${what}: too short to be a manifest (${bytes.length} bytes)`);
  const head = new TextDecoder().decode(bytes.subarray(0, PREFIX_BYTES));
  const m = /^\{"checksum":"sha256:([0-9a-f]{64})","manifest":$/.exec(head);
  if (!m) throw new CorruptionError(`${what}: does not start like a bloom-lss backup manifest`);
  const tail = new TextDecoder().decode(bytes.subarray(bytes.length - SUFFIX_TEXT.length));
  if (tail !== SUFFIX_TEXT) throw new CorruptionError(`${what}: truncated (does not end with "}\\n")`);
  const body = bytes.subarray(PREFIX_BYTES, bytes.length - SUFFIX_TEXT.length);
  const actual = new Bun.CryptoHasher("sha256").update(body).digest("hex");
  if (actual !== m[1]) throw new CorruptionError(`${what}: checksum mismatch (stored sha256 ${m[1]}, computed ${actual})`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (error) {
    throw new CorruptionError(`${what}: its checksum matches but its body is not JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  checkShape(parsed, (message) => new CorruptionError(`${what}: ${message}`));
  return parsed;
}

type Fail = (message: string) => Error;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkInt(value: unknown, path: string, fail: Fail, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > max) {
    throw fail(`${path} must be an integer in [0, ${max}], got ${JSON.stringify(value)}`);
  }
}

function checkIntOrNull(value: unknown, path: string, fail: Fail): asserts value is number | null {
  if (value !== null) checkInt(value, path, fail);
}

function checkObjectInfo(value: unknown, path: string, fail: Fail): asserts value is ObjectInfo {
  if (!isRecord(value)) throw fail(`${path} must be an object`);
  if (typeof value.name !== "string" || value.name.length === 0) throw fail(`${path}.name must be a non-empty string`);
  checkInt(value.size, `${path}.size`, fail);
  checkInt(value.crc32, `${path}.crc32`, fail, 0xffffffff);
  if (typeof value.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(value.sha256)) throw fail(`${path}.sha256 must be 64 lowercase hex digits`);
}

/** Check every field of a manifest (types, ranges, limits); `fail` makes the error to throw. */
function checkShape(value: unknown, fail: Fail): asserts value is BackupManifest {
  if (!isRecord(value)) throw fail("not a JSON object");
  if (value.format !== MANIFEST_FORMAT) throw fail(`format is ${JSON.stringify(value.format)}, not ${JSON.stringify(MANIFEST_FORMAT)}`);
  if (value.version !== MANIFEST_VERSION) {
    throw fail(`manifest format version ${JSON.stringify(value.version)} is not one this bloom-lss reads (${MANIFEST_VERSION})`);
  }
  checkInt(value.seq, "seq", fail, MAX_SEQ);
  checkInt(value.createdAt, "createdAt", fail);
  if (typeof value.storeId !== "string" || value.storeId.length === 0 || value.storeId.length > 128) {
    throw fail("storeId must be a string of 1..128 characters");
  }
  const base = value.base;
  if (!isRecord(base)) throw fail("base must be an object");
  if (typeof base.id !== "string") throw fail("base.id must be a string");
  checkInt(base.transaction, "base.transaction", fail);
  checkIntOrNull(base.commitTime, "base.commitTime", fail);
  checkInt(base.lsn, "base.lsn", fail);
  checkInt(base.bytes, "base.bytes", fail);
  if (!Array.isArray(base.chunks) || base.chunks.length > MAX_BASE_CHUNKS) throw fail(`base.chunks must be an array of at most ${MAX_BASE_CHUNKS}`);
  base.chunks.forEach((chunk, i) => checkObjectInfo(chunk, `base.chunks[${i}]`, fail));
  if (!Array.isArray(value.increments) || value.increments.length > MAX_CHAIN_INCREMENTS) {
    throw fail(`increments must be an array of at most ${MAX_CHAIN_INCREMENTS}`);
  }
  value.increments.forEach((inc: unknown, i) => {
    const path = `increments[${i}]`;
    checkObjectInfo(inc, path, fail);
    const r = inc as unknown as Record<string, unknown>;
    checkInt(r.seq, `${path}.seq`, fail, MAX_SEQ);
    checkInt(r.fromLsn, `${path}.fromLsn`, fail);
    checkInt(r.toLsn, `${path}.toLsn`, fail);
    checkIntOrNull(r.firstTransaction, `${path}.firstTransaction`, fail);
    checkIntOrNull(r.lastTransaction, `${path}.lastTransaction`, fail);
    checkIntOrNull(r.firstCommitTime, `${path}.firstCommitTime`, fail);
    checkIntOrNull(r.lastCommitTime, `${path}.lastCommitTime`, fail);
  });
}

// ---------------------------------------------------------------------------------------------
// The chain

function describeIncrement(inc: IncrementEntry): string {
  return `increment ${inc.seq} (${inc.name})`;
}

/**
 * Check that a manifest describes one unbroken chain: the base's chunks are all there and named
 * in order, and each increment follows the one before it (the base, for the first) with no gap,
 * overlap or reordering, in sequence number, log range and transactions; every object is named
 * by what it holds.
 *
 * @throws BackupChainError naming the last good link and the one that does not follow it
 */
export function validateChain(manifest: BackupManifest): void {
  const base = manifest.base;
  const baseLabel = `base ${base.id}`;
  const parsedBase = /^base-(\d{16})-(\d{16})-[0-9a-f]{8}$/.exec(base.id);
  if (!parsedBase || Number(parsedBase[1]) !== base.transaction || Number(parsedBase[2]) !== base.lsn) {
    throw new BackupChainError(`${baseLabel}: its id does not name its transaction ${base.transaction} and log position ${base.lsn}`, {
      after: "(start of chain)",
      next: baseLabel,
    });
  }
  let total = 0;
  base.chunks.forEach((chunk, index) => {
    const expected = baseChunkName(base.id, index);
    if (chunk.name !== expected) {
      const after = index === 0 ? baseLabel : `chunk ${base.chunks[index - 1]?.name}`;
      throw new BackupChainError(`${baseLabel}: chunk ${index} is ${chunk.name}, expected ${expected} (a chunk is missing or out of order)`, {
        after,
        next: `chunk ${chunk.name}`,
      });
    }
    total += chunk.size;
  });
  if (total !== base.bytes) {
    throw new BackupChainError(`${baseLabel}: its chunks hold ${total} bytes, the base says ${base.bytes}`, { after: "(start of chain)", next: baseLabel });
  }

  let after = baseLabel;
  let prevSeq: number | undefined;
  let lsn = base.lsn;
  let watermark = base.transaction;
  for (const inc of manifest.increments) {
    const label = describeIncrement(inc);
    const fail = (message: string): never => {
      throw new BackupChainError(`backup chain breaks after ${after}: ${label} ${message}`, { after, next: label });
    };
    if (inc.name !== incrementName(inc)) fail(`is not named by what it holds (expected ${incrementName(inc)})`);
    if (prevSeq === undefined) {
      if (inc.seq < 1) fail("has sequence number 0; increments count from 1");
    } else if (inc.seq > prevSeq + 1) {
      fail(`follows increment ${prevSeq}: increment${inc.seq - prevSeq > 2 ? `s ${prevSeq + 1}..${inc.seq - 1} are` : ` ${prevSeq + 1} is`} missing`);
    } else if (inc.seq <= prevSeq) {
      fail(`is out of order (its sequence number ${inc.seq} is not after ${prevSeq})`);
    }
    if (inc.fromLsn > lsn) fail(`starts at log position ${inc.fromLsn}: the log [${lsn}, ${inc.fromLsn}) is missing`);
    if (inc.fromLsn < lsn) fail(`starts at log position ${inc.fromLsn}, before ${lsn} where the chain is (out of order or overlapping)`);
    if (inc.toLsn <= inc.fromLsn) fail(`has an empty or reversed log range [${inc.fromLsn}, ${inc.toLsn})`);
    if ((inc.firstTransaction === null) !== (inc.lastTransaction === null)) fail("has only one of firstTransaction / lastTransaction");
    if ((inc.firstCommitTime === null) !== (inc.firstTransaction === null) || (inc.lastCommitTime === null) !== (inc.lastTransaction === null)) {
      fail("has commit times that do not match its transactions");
    }
    if (inc.firstTransaction !== null && inc.lastTransaction !== null) {
      if (inc.firstTransaction <= watermark) {
        fail(`starts at transaction ${inc.firstTransaction}, not after ${watermark} which the chain already holds (out of order or overlapping)`);
      }
      if (inc.lastTransaction < inc.firstTransaction) fail(`has its last transaction ${inc.lastTransaction} before its first ${inc.firstTransaction}`);
      watermark = inc.lastTransaction;
    }
    prevSeq = inc.seq;
    lsn = inc.toLsn;
    after = label;
  }
}

/**
 * The manifest that follows `previous` with one more increment: `seq + 1`, the same base,
 * the chain checked.
 *
 * @throws BackupChainError when `increment` does not follow the chain
 */
export function appendIncrement(previous: BackupManifest, increment: IncrementEntry, createdAt = Date.now()): BackupManifest {
  const next: BackupManifest = { ...previous, seq: previous.seq + 1, createdAt, increments: [...previous.increments, increment] };
  validateChain(next);
  return next;
}

/** The newest manifest on a target, as {@link latestManifest} returns it. */
export interface LatestManifest {
  /** Object name, `manifest-<seq>.json`. */
  readonly name: string;
  /** The decoded manifest (its checksum and shape checked; its chain not: see {@link validateChain}). */
  readonly manifest: BackupManifest;
  /** Size and checksums of the manifest object. */
  readonly info: ObjectInfo;
}

/**
 * The manifest with the highest sequence number on a target, or `undefined` when there is none.
 * The highest one wins even when it is damaged: falling back to an older one would silently lose
 * the newest backups, so damage is an error instead.
 *
 * @throws CorruptionError when the highest manifest fails its checksum or shape, or its `seq` is not its name's
 */
export async function latestManifest(target: BackupTarget): Promise<LatestManifest | undefined> {
  let best: { name: string; seq: number } | undefined;
  for (const name of await target.list("manifest-")) {
    const seq = parseManifestName(name);
    if (seq !== undefined && (best === undefined || seq > best.seq)) best = { name, seq };
  }
  if (!best) return undefined;
  const bytes = await target.get(best.name);
  const manifest = decodeManifest(bytes, `${target.location}/${best.name}`);
  if (manifest.seq !== best.seq) {
    throw new CorruptionError(`${target.location}/${best.name}: holds manifest number ${manifest.seq}, not ${best.seq}`);
  }
  return { name: best.name, manifest, info: describeBytes(best.name, bytes) };
}
