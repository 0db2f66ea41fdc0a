/**
 * A backup target in S3 (or any S3-compatible store) through Bun's built-in `S3Client`: no SDK
 * dependency, no sidecar process.
 *
 * Choices and their reasons:
 * - **Path-style requests** (Bun's default): works with AWS and with MinIO, s3rver, R2 and other
 *   compatible servers at a custom `endpoint`.
 * - **Multipart for large objects**: a body larger than `partSize` (or any streamed body) goes
 *   through `S3File.writer({ partSize, queueSize, retry })`, which uploads parts in parallel and
 *   retries each part; the object appears only when the upload completes, so a failed or
 *   abandoned upload never shows a half object (an incomplete multipart upload is invisible and
 *   is reaped by a bucket lifecycle rule). Smaller bodies are one PUT.
 * - **Bounded retries** (`./retry.ts`) around every request: transient errors (connection
 *   refused or reset, timeouts, 5xx, throttling) are retried with backoff up to
 *   `retry.attempts`; permanent ones (access denied, no such bucket, bad credentials) fail at once.
 * - **Immutability**: S3 PUT replaces silently and Bun's client offers no conditional put, so a
 *   put first checks whether the name exists; if it does, the new body is hashed and compared
 *   with the stored object: same bytes succeed (a retried backup), different bytes are refused.
 *   The check and the PUT are two requests, so two writers racing on one name are not caught;
 *   one writer per target is the rule (the backup code serializes its own puts).
 * - **Listing** pages through ListObjectsV2 and sorts the result itself: s3rver, for one, does
 *   not return keys in byte order as AWS does.
 * - **Ranged reads** use `S3File.slice()` (an HTTP Range request), so restore and verify read any
 *   object in bounded chunks, each chunk retried on its own.
 *
 * Credentials, endpoint and region come from the options, else from the environment:
 * `S3_ACCESS_KEY_ID` / `AWS_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` / `AWS_SECRET_ACCESS_KEY`,
 * `S3_SESSION_TOKEN` / `AWS_SESSION_TOKEN`, `S3_ENDPOINT` / `AWS_ENDPOINT`, `S3_REGION` /
 * `AWS_REGION` (the `S3_` name wins when both are set, as in Bun).
 *
 * @module
 */
import { S3Client, type S3File } from "bun";
import { BackupObjectExistsError, BackupObjectMissingError, BackupTargetError, InvalidArgumentError, LssError } from "../errors.ts";
import {
  bodyChunks,
  checkChunk,
  describeBytes,
  isReplayable,
  ObjectHasher,
  sameObject,
  validateObjectName,
  validateObjectPrefix,
  type ObjectInfo,
  type PutBody,
} from "./objects.ts";
import { AttemptTimeoutError, describeError, resolveRetryPolicy, retrying, withDeadline, type ErrorVerdict, type RetryPolicy } from "./retry.ts";
import type { BackupTarget, GetStreamOptions, ObjectStat } from "./target.ts";

/** Options of an {@link S3Target}. Unset credentials and endpoint come from the environment. */
export interface S3TargetOptions {
  /** Access key id. Env: `S3_ACCESS_KEY_ID`, `AWS_ACCESS_KEY_ID`. */
  accessKeyId?: string;
  /** Secret access key. Env: `S3_SECRET_ACCESS_KEY`, `AWS_SECRET_ACCESS_KEY`. */
  secretAccessKey?: string;
  /** Session token of temporary credentials. Env: `S3_SESSION_TOKEN`, `AWS_SESSION_TOKEN`. */
  sessionToken?: string;
  /** Endpoint URL of an S3-compatible service. Env: `S3_ENDPOINT`, `AWS_ENDPOINT`. Default: AWS. */
  endpoint?: string;
  /** Region. Env: `S3_REGION`, `AWS_REGION`. Default: Bun's (us-east-1). */
  region?: string;
  /** Where unset options are looked up. Default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Multipart part size in bytes, 5 MiB..5 GiB (S3's limits). Default 8 MiB. */
  partSize?: number;
  /** Parts uploaded in parallel, 1..64. Default 4 (memory: about `partSize × queueSize`). */
  queueSize?: number;
  /** Retries of each request; see {@link RetryPolicy}. */
  retry?: Partial<RetryPolicy>;
  /** Largest object {@link S3Target.get} reads into memory, bytes. Default 256 MiB. */
  maxGetBytes?: number;
  /** Most names {@link S3Target.list} returns before failing. Default 1 000 000. */
  maxListEntries?: number;
  /** Keys asked for per ListObjectsV2 page, 1..1000. Default 1000. */
  listPageSize?: number;
}

/** Bucket and key prefix of an `s3://bucket/prefix` URL. */
export interface S3Location {
  /** Bucket name. */
  readonly bucket: string;
  /** Key prefix, `""` or ending with `/`. */
  readonly prefix: string;
}

const MIB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MIB;
const MAX_PART_SIZE = 5120 * MIB;
const DEFAULT_PART_SIZE = 8 * MIB;
const DEFAULT_QUEUE_SIZE = 4;
const MAX_QUEUE_SIZE = 64;
const DEFAULT_MAX_GET_BYTES = 256 * MIB;
const DEFAULT_MAX_LIST_ENTRIES = 1_000_000;
const DEFAULT_STREAM_CHUNK_BYTES = 8 * MIB;
const MAX_STREAM_CHUNK_BYTES = 256 * MIB;
/** Bun's own per-part retry count is capped at 255. */
const MAX_BUN_PART_RETRY = 255;
/** S3's bucket naming rule (the DNS-compatible subset). */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Parse `s3://bucket/prefix`: the prefix is optional and always ends with `/` when present, so
 * objects live "in" it like files in a directory.
 *
 * @throws InvalidArgumentError for a bad bucket name or prefix
 */
export function parseS3Url(url: string): S3Location {
  if (!url.startsWith("s3://")) throw new InvalidArgumentError(`not an s3:// URL: ${JSON.stringify(url)}`);
  const rest = url.slice("s3://".length);
  const slash = rest.indexOf("/");
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  let prefix = slash < 0 ? "" : rest.slice(slash + 1);
  if (!BUCKET.test(bucket)) throw new InvalidArgumentError(`bad S3 bucket name ${JSON.stringify(bucket)} in ${url}`);
  prefix = prefix.replace(/\/+$/, "");
  if (prefix !== "") {
    validateObjectName(prefix); // same rules as names: no "..", no empty segments
    prefix += "/";
  }
  return { bucket, prefix };
}

/** S3 error codes that retrying cannot fix. Anything else (network, 5xx, throttling) is retried. */
const PERMANENT_CODES = new Set([
  "AccessDenied",
  "AccountProblem",
  "AllAccessDisabled",
  "InvalidAccessKeyId",
  "InvalidArgument",
  "InvalidBucketName",
  "InvalidObjectState",
  "InvalidRange",
  "InvalidRequest",
  "InvalidSecurity",
  "InvalidToken",
  "MethodNotAllowed",
  "NoSuchBucket",
  "NoSuchKey",
  "NotImplemented",
  "SignatureDoesNotMatch",
  "ExpiredToken",
  "EntityTooLarge",
  "EntityTooSmall",
  "KeyTooLongError",
]);

/**
 * How {@link retrying} treats an error thrown while talking to S3. Bun's client throws `S3Error`
 * with a `code` (an S3 error code, or one of its own such as `ConnectionRefused`); system errors
 * carry an errno `code` too. Those are the target's: permanent codes fail at once, any other is
 * retried. An error without a code is not the target's (the caller's body threw, say) and
 * passes through unchanged, so a failing source is neither retried nor disguised.
 */
export function classifyS3Error(error: unknown): ErrorVerdict {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return (error as { name?: unknown } | null)?.name === "S3Error" ? "retry" : "pass";
  if (PERMANENT_CODES.has(code)) return "fail";
  // Bun's own argument and configuration errors (ERR_S3_MISSING_CREDENTIALS, ERR_S3_INVALID_PATH…).
  if (code.startsWith("ERR_S3_")) return "fail";
  return "retry";
}

function isNoSuchKey(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "NoSuchKey";
}

function checkInteger(value: number, what: string, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${what} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
}

/** First set, non-empty value. */
function pick(...values: (string | undefined)[]): string | undefined {
  return values.find((value) => value !== undefined && value !== "");
}

/** A backup target under `s3://bucket/prefix`. */
export class S3Target implements BackupTarget {
  /** Always `"s3"`. */
  readonly kind = "s3" as const;
  /** The URL, as given. */
  readonly location: string;
  /** Bucket name. */
  readonly bucket: string;
  /** Key prefix (`""` or ending with `/`). */
  readonly prefix: string;
  /** The endpoint in use, or undefined for AWS. */
  readonly endpoint: string | undefined;
  readonly #client: S3Client;
  readonly #retry: RetryPolicy;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #maxGetBytes: number;
  readonly #maxListEntries: number;
  readonly #listPageSize: number;

  /**
   * @param url - `s3://bucket/prefix`
   * @param options - credentials, endpoint, limits (see {@link S3TargetOptions})
   * @throws InvalidArgumentError for a bad URL, bad limits or missing credentials
   */
  constructor(url: string, options: S3TargetOptions = {}) {
    const { bucket, prefix } = parseS3Url(url);
    this.location = url;
    this.bucket = bucket;
    this.prefix = prefix;
    const env = options.env ?? process.env;
    const accessKeyId = pick(options.accessKeyId, env.S3_ACCESS_KEY_ID, env.AWS_ACCESS_KEY_ID);
    const secretAccessKey = pick(options.secretAccessKey, env.S3_SECRET_ACCESS_KEY, env.AWS_SECRET_ACCESS_KEY);
    const sessionToken = pick(options.sessionToken, env.S3_SESSION_TOKEN, env.AWS_SESSION_TOKEN);
    const endpoint = pick(options.endpoint, env.S3_ENDPOINT, env.AWS_ENDPOINT);
    const region = pick(options.region, env.S3_REGION, env.AWS_REGION);
    if (accessKeyId === undefined || secretAccessKey === undefined) {
      throw new InvalidArgumentError(
        `no S3 credentials for ${url}: pass accessKeyId and secretAccessKey, or set S3_ACCESS_KEY_ID / AWS_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY / AWS_SECRET_ACCESS_KEY`,
      );
    }
    this.endpoint = endpoint;
    this.#retry = resolveRetryPolicy(options.retry);
    this.#partSize = options.partSize ?? DEFAULT_PART_SIZE;
    this.#queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
    this.#maxGetBytes = options.maxGetBytes ?? DEFAULT_MAX_GET_BYTES;
    this.#maxListEntries = options.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;
    this.#listPageSize = options.listPageSize ?? 1000;
    checkInteger(this.#partSize, "partSize", MIN_PART_SIZE, MAX_PART_SIZE);
    checkInteger(this.#queueSize, "queueSize", 1, MAX_QUEUE_SIZE);
    checkInteger(this.#maxGetBytes, "maxGetBytes", 0, 2 ** 32);
    checkInteger(this.#maxListEntries, "maxListEntries", 0, 100_000_000);
    checkInteger(this.#listPageSize, "listPageSize", 1, 1000);
    this.#client = new S3Client({
      bucket,
      accessKeyId,
      secretAccessKey,
      ...(sessionToken !== undefined ? { sessionToken } : {}),
      ...(endpoint !== undefined ? { endpoint } : {}),
      ...(region !== undefined ? { region } : {}),
    });
  }

  /** The S3 key of an object name. */
  #key(name: string): string {
    validateObjectName(name);
    return this.prefix + name;
  }

  #file(key: string): S3File {
    return this.#client.file(key);
  }

  #what(verb: string, key: string): string {
    return `${verb} s3://${this.bucket}/${key}`;
  }

  /** Run one request with the target's retry policy. */
  #request<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    return retrying(what, this.#retry, classifyS3Error, attempt);
  }

  /** {@inheritDoc BackupTarget.put} */
  async put(name: string, body: PutBody): Promise<ObjectInfo> {
    const key = this.#key(name);
    const existing = await this.#statKey(key);
    if (existing !== undefined) return this.#putExisting(name, key, body);
    if (body instanceof Uint8Array && body.length <= this.#partSize) {
      // One PUT: small enough that multipart would only add requests.
      const info = describeBytes(name, body);
      await this.#request(this.#what("put", key), () => this.#file(key).write(body));
      return info;
    }
    if (isReplayable(body)) {
      return retrying(this.#what("upload", key), this.#retry, classifyS3Error, () => this.#upload(name, key, body), false);
    }
    // A one-shot stream cannot be replayed: one attempt (Bun still retries each part).
    try {
      return await this.#upload(name, key, body);
    } catch (error) {
      if (error instanceof LssError) throw error;
      if (!(error instanceof AttemptTimeoutError) && classifyS3Error(error) === "pass") throw error;
      throw new BackupTargetError(`${this.#what("upload", key)} failed: ${describeError(error)}`, { attempts: 1, cause: error });
    }
  }

  /** A multipart upload through Bun's writer, each step under the attempt deadline. */
  async #upload(name: string, key: string, body: PutBody): Promise<ObjectInfo> {
    const writer = this.#file(key).writer({
      partSize: this.#partSize,
      queueSize: this.#queueSize,
      retry: Math.min(MAX_BUN_PART_RETRY, this.#retry.attempts - 1),
    });
    const hasher = new ObjectHasher();
    const deadline = this.#retry.attemptTimeoutMs;
    const what = this.#what("upload", key);
    try {
      for await (const raw of bodyChunks(body)) {
        const chunk = checkChunk(raw, name);
        hasher.update(chunk);
        const written = writer.write(chunk);
        if (written instanceof Promise) await withDeadline(written, deadline, what);
      }
      const ended = writer.end();
      if (ended instanceof Promise) await withDeadline(ended, deadline, what);
    } catch (error) {
      // Abort the multipart upload so no parts linger (best effort: the target may be down).
      try {
        const aborted = writer.end(error instanceof Error ? error : new Error(String(error)));
        if (aborted instanceof Promise) await withDeadline(aborted, deadline, what).catch(() => {});
      } catch {
        // already ended
      }
      // Bun's writer can complete the upload with the parts sent so far instead of aborting it
      // (seen against s3rver: the truncated object appeared after the put had failed). The key
      // did not exist before this upload (put checks), so remove whatever landed: a truncated
      // object must never stand under a final name, where a retry would meet it as "different bytes".
      await this.#request(this.#what("delete", key), () => this.#file(key).delete()).catch(() => {});
      throw error;
    }
    const info = hasher.finish(name);
    // The writer reports bytes handed to it; check what the server really holds.
    const stored = await this.#statKey(key);
    if (stored?.size !== info.size) {
      throw new BackupTargetError(`${what}: the server holds ${stored?.size ?? "no"} bytes, ${info.size} were written`, { attempts: 1 });
    }
    return info;
  }

  /** Put on a name that exists: succeed only if the body equals the stored bytes. */
  async #putExisting(name: string, key: string, body: PutBody): Promise<ObjectInfo> {
    const hasher = new ObjectHasher();
    for await (const raw of bodyChunks(body)) hasher.update(checkChunk(raw, name));
    const wanted = hasher.finish(name);
    const stored = await this.#describeKey(name, key);
    if (!sameObject(stored, wanted)) {
      throw new BackupObjectExistsError(
        name,
        `backup object ${name} already exists in ${this.location} with different bytes (${stored.size} bytes, sha256 ${stored.sha256}); objects are immutable`,
      );
    }
    return wanted;
  }

  /** Hash a stored object by reading it in ranged chunks. */
  async #describeKey(name: string, key: string): Promise<ObjectInfo> {
    const hasher = new ObjectHasher();
    for await (const chunk of this.#readChunks(name, key, 0, undefined, DEFAULT_STREAM_CHUNK_BYTES)) hasher.update(chunk);
    return hasher.finish(name);
  }

  async #statKey(key: string): Promise<ObjectStat | undefined> {
    return this.#request(this.#what("stat", key), async () => {
      try {
        const stat = await this.#client.stat(key);
        return { size: stat.size };
      } catch (error) {
        if (isNoSuchKey(error) || (error as { code?: unknown } | null)?.code === "NotFound") return undefined;
        // A HEAD error has no body, so Bun reports a 403 (bad credentials, access denied) as
        // "UnknownError", which looks retryable. Ask again with a listing, whose error has a body
        // and hence a real code; a listing that works answers the question just as well.
        if ((error as { code?: unknown } | null)?.code !== "UnknownError") throw error;
        // A full page, not maxKeys 1: not every S3-compatible server returns keys in order.
        const page = await this.#client.list({ prefix: key, maxKeys: 1000 });
        const entry = page.contents?.find((e) => e.key === key);
        return entry === undefined ? undefined : { size: entry.size ?? 0 };
      }
    });
  }

  async #requireSize(name: string, key: string): Promise<number> {
    const stat = await this.#statKey(key);
    if (stat === undefined) throw new BackupObjectMissingError(name, `backup object ${name} is missing from ${this.location}`);
    return stat.size;
  }

  /** {@inheritDoc BackupTarget.get} */
  async get(name: string): Promise<Uint8Array> {
    const key = this.#key(name);
    const size = await this.#requireSize(name, key);
    if (size > this.#maxGetBytes) {
      throw new InvalidArgumentError(`backup object ${name} is ${size} bytes, over maxGetBytes ${this.#maxGetBytes}: read it with getStream`);
    }
    return this.#readRange(name, key, 0, size);
  }

  /** {@inheritDoc BackupTarget.getRange} */
  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    const key = this.#key(name);
    checkInteger(offset, "offset", 0, Number.MAX_SAFE_INTEGER);
    checkInteger(length, "length", 0, this.#maxGetBytes);
    const size = await this.#requireSize(name, key);
    if (offset + length > size) {
      throw new InvalidArgumentError(`range [${offset}, ${offset + length}) is past the end of backup object ${name} (${size} bytes)`);
    }
    return this.#readRange(name, key, offset, length);
  }

  /** One ranged GET, retried; its length is checked (a short body is an error, not data). */
  async #readRange(name: string, key: string, offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    const bytes = await this.#request(this.#what("get", key), async () => {
      try {
        return await this.#file(key).slice(offset, offset + length).bytes();
      } catch (error) {
        if (isNoSuchKey(error)) throw new BackupObjectMissingError(name, `backup object ${name} is missing from ${this.location}`);
        throw error;
      }
    });
    if (bytes.length !== length) {
      throw new BackupTargetError(`${this.#what("get", key)} [${offset}, ${offset + length}) returned ${bytes.length} bytes`, { attempts: 1 });
    }
    return bytes;
  }

  /** {@inheritDoc BackupTarget.getStream} */
  getStream(name: string, options: GetStreamOptions = {}): AsyncIterable<Uint8Array> {
    const key = this.#key(name);
    const chunkBytes = options.chunkBytes ?? DEFAULT_STREAM_CHUNK_BYTES;
    checkInteger(chunkBytes, "chunkBytes", 1, MAX_STREAM_CHUNK_BYTES);
    const offset = options.offset ?? 0;
    checkInteger(offset, "offset", 0, Number.MAX_SAFE_INTEGER);
    if (options.length !== undefined) checkInteger(options.length, "length", 0, Number.MAX_SAFE_INTEGER);
    return this.#readChunks(name, key, offset, options.length, chunkBytes);
  }

  async *#readChunks(name: string, key: string, offset: number, length: number | undefined, chunkBytes: number): AsyncGenerator<Uint8Array> {
    const size = await this.#requireSize(name, key);
    const end = length === undefined ? size : offset + length;
    if (end > size || offset > size) {
      throw new InvalidArgumentError(`range [${offset}, ${end}) is past the end of backup object ${name} (${size} bytes)`);
    }
    for (let position = offset; position < end; ) {
      const n = Math.min(chunkBytes, end - position);
      yield await this.#readRange(name, key, position, n);
      position += n;
    }
  }

  /** {@inheritDoc BackupTarget.stat} */
  stat(name: string): Promise<ObjectStat | undefined> {
    return this.#statKey(this.#key(name));
  }

  /** {@inheritDoc BackupTarget.exists} */
  async exists(name: string): Promise<boolean> {
    return (await this.stat(name)) !== undefined;
  }

  /** {@inheritDoc BackupTarget.list} */
  async list(prefix: string): Promise<string[]> {
    validateObjectPrefix(prefix);
    const keyPrefix = this.prefix + prefix;
    const names: string[] = [];
    let continuationToken: string | undefined;
    // Each page is one request; the loop ends on the last page or at maxListEntries.
    for (;;) {
      const token = continuationToken;
      const page = await this.#request(this.#what("list", keyPrefix), () =>
        this.#client.list({ prefix: keyPrefix, maxKeys: this.#listPageSize, ...(token !== undefined ? { continuationToken: token } : {}) }),
      );
      for (const entry of page.contents ?? []) {
        if (!entry.key.startsWith(this.prefix)) continue;
        names.push(entry.key.slice(this.prefix.length));
        if (names.length > this.#maxListEntries) {
          throw new BackupTargetError(`more than maxListEntries (${this.#maxListEntries}) objects under ${JSON.stringify(prefix)} in ${this.location}`, { attempts: 1 });
        }
      }
      if (!page.isTruncated) break;
      if (page.nextContinuationToken === undefined || page.nextContinuationToken === token) {
        throw new BackupTargetError(`list ${this.location}: the server said the listing is truncated but gave no new continuation token`, { attempts: 1 });
      }
      continuationToken = page.nextContinuationToken;
    }
    return names.sort();
  }

  /** {@inheritDoc BackupTarget.delete} */
  async delete(name: string): Promise<void> {
    const key = this.#key(name);
    await this.#request(this.#what("delete", key), async () => {
      try {
        await this.#client.delete(key);
      } catch (error) {
        if (!isNoSuchKey(error)) throw error;
      }
    });
  }

  /** {@inheritDoc BackupTarget.commitManifest} */
  async commitManifest(name: string, bytes: Uint8Array): Promise<ObjectInfo> {
    const info = await this.put(name, bytes);
    const key = this.#key(name);
    const back = await this.#describeKey(name, key);
    if (!sameObject(back, info)) {
      throw new BackupTargetError(`manifest ${name} in ${this.location} reads back different from what was written`, { attempts: 1 });
    }
    return info;
  }

  /** {@inheritDoc BackupTarget.close} */
  async close(): Promise<void> {
    // Bun's S3Client holds no connection that needs closing.
  }
}
