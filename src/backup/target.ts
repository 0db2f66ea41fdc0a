/**
 * Backup targets: where backups, increments and manifests are stored.
 *
 * A target is a flat namespace of **immutable objects** (names as in `./objects.ts`). The
 * interface is the few operations backup, increments, restore, verify and pruning need, and
 * nothing that only one kind of storage could do: no rename, no append, no in-place rewrite,
 * because S3 has none of them atomically. What makes a backup valid is the manifest
 * (`./manifest.ts`), written last by {@link BackupTarget.commitManifest}; every object it names
 * was completely stored before it, so a crash at any point leaves either the previous manifest
 * (and some unreferenced objects to prune) or the new one, never a manifest naming a half object.
 *
 * Two implementations: {@link DirectoryTarget} (files, crash-safe via temp file + fsync + link)
 * and {@link S3Target} (Bun's built-in S3Client: multipart uploads, bounded retries).
 * {@link openTarget} picks one from a string, as `store.backup(target)` takes it.
 *
 * @module
 */
import { InvalidArgumentError } from "../errors.ts";
import { DirectoryTarget, type DirectoryTargetOptions } from "./directory-target.ts";
import type { ObjectInfo, PutBody } from "./objects.ts";
import { S3Target, type S3TargetOptions } from "./s3-target.ts";

export type { ObjectInfo, PutBody } from "./objects.ts";
export { validateObjectName, validateObjectPrefix, MAX_OBJECT_NAME_LENGTH } from "./objects.ts";
export { DirectoryTarget, type DirectoryTargetOptions } from "./directory-target.ts";
export { S3Target, parseS3Url, type S3TargetOptions, type S3Location } from "./s3-target.ts";
export { type RetryPolicy, DEFAULT_RETRY_POLICY } from "./retry.ts";

/** Size of a stored object. */
export interface ObjectStat {
  /** Bytes. */
  readonly size: number;
}

/** Options of {@link BackupTarget.getStream}. */
export interface GetStreamOptions {
  /** Bytes per chunk yielded (each one a ranged read, retried on its own). Default 8 MiB. */
  chunkBytes?: number;
  /** First byte to read. Default 0. */
  offset?: number;
  /** Bytes to read from `offset`. Default: to the end of the object. */
  length?: number;
}

/** Options of one {@link BackupTarget.put}. */
export interface PutOptions {
  /**
   * Awaited before each write to a local device (a network target ignores it); resolves to the
   * most bytes that write may carry. How a base copy lets the writers' commits go first
   * (commit-gate.ts) and keeps its writes short while they come.
   */
  readonly beforeWrite?: () => Promise<number>;
}

/** Where backups live: a directory or an S3 bucket prefix. */
export interface BackupTarget {
  /** `"directory"` or `"s3"`. */
  readonly kind: "directory" | "s3";
  /** The target as a user wrote it (a path or `s3://bucket/prefix`), for messages. */
  readonly location: string;

  /**
   * Store an immutable object. Resolves once the object is durable and complete under `name`;
   * until then nothing (or the previous state) is visible under that name. Putting the same bytes
   * again succeeds (a retried backup); different bytes are refused.
   *
   * @returns size and checksums of what was stored, computed while writing
   * @throws BackupObjectExistsError when `name` holds different bytes
   * @throws BackupTargetError when the target failed (after the bounded retries)
   * @throws InvalidArgumentError for a bad name or a body chunk that is not a Uint8Array
   */
  put(name: string, body: PutBody, options?: PutOptions): Promise<ObjectInfo>;

  /**
   * Read a whole object into memory (at most the target's `maxGetBytes`; use
   * {@link getStream} for larger ones).
   *
   * @throws BackupObjectMissingError when there is no such object
   * @throws InvalidArgumentError when it is larger than `maxGetBytes`
   */
  get(name: string): Promise<Uint8Array>;

  /**
   * Read `length` bytes at `offset`.
   *
   * @throws BackupObjectMissingError when there is no such object
   * @throws InvalidArgumentError when the range goes past the object's end or over `maxGetBytes`
   */
  getRange(name: string, offset: number, length: number): Promise<Uint8Array>;

  /**
   * Read an object (or a range of it) as a sequence of chunks of bounded size; memory stays at
   * one chunk whatever the object's size.
   *
   * @throws BackupObjectMissingError when there is no such object (on the first iteration)
   */
  getStream(name: string, options?: GetStreamOptions): AsyncIterable<Uint8Array>;

  /** Size of an object, or `undefined` when there is none. */
  stat(name: string): Promise<ObjectStat | undefined>;

  /** Whether an object exists. */
  exists(name: string): Promise<boolean>;

  /**
   * Names of the objects whose name starts with `prefix` (a plain string prefix, not a
   * directory), sorted by UTF-16 code unit order (the same as byte order for valid names).
   *
   * @throws BackupTargetError when there are more than the target's `maxListEntries`
   */
  list(prefix: string): Promise<string[]>;

  /** Remove an object (pruning). Removing a missing object is not an error. */
  delete(name: string): Promise<void>;

  /**
   * The commit point of a backup: store a manifest object after everything it names. Same
   * immutability as {@link put}; in addition the manifest is read back and compared, so a
   * resolved commit means a reader of the target sees exactly these bytes.
   */
  commitManifest(name: string, bytes: Uint8Array): Promise<ObjectInfo>;

  /** Release what the target holds (nothing to flush: every put is durable when it resolves). */
  close(): Promise<void>;
}

/** Options of {@link openTarget}: each kind's options, used when the target is of that kind. */
export interface OpenTargetOptions {
  /** For a directory target. */
  directory?: DirectoryTargetOptions;
  /** For an `s3://` target. */
  s3?: S3TargetOptions;
}

/** A URL scheme (`http://`, `file://`...) that is not `s3://`: refused, not taken as a path. */
const OTHER_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/**
 * Open the target a user named: `"s3://bucket/prefix"` is an {@link S3Target}; any other URL
 * scheme is refused (a typo such as `"s3:/bucket"` or `"http://…"` must not silently become a
 * local directory); everything else is a directory path, created if missing.
 *
 * @throws InvalidArgumentError for an unsupported scheme, a bad bucket or prefix, or missing S3 credentials
 */
export async function openTarget(target: string, options: OpenTargetOptions = {}): Promise<BackupTarget> {
  if (typeof target !== "string" || target.length === 0) {
    throw new InvalidArgumentError("backup target must be a non-empty string (a directory or s3://bucket/prefix)");
  }
  if (target.startsWith("s3://")) return new S3Target(target, options.s3);
  if (OTHER_SCHEME.test(target) || /^s3:/i.test(target)) {
    throw new InvalidArgumentError(`unsupported backup target ${JSON.stringify(target)}: use a directory path or s3://bucket/prefix`);
  }
  return DirectoryTarget.open(target, options.directory);
}
