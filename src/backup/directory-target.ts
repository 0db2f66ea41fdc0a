/**
 * A backup target in a local directory (or a mounted network filesystem): one file per object.
 *
 * A put never leaves a half object under its final name, even across a power cut:
 *   1. write the bytes to a temporary file in the same directory (`.tmp-…`, a name no object can
 *      have, so listing never shows it), hashing them on the way;
 *   2. fsync the temporary file;
 *   3. `link()` it to the final name: unlike `rename()`, link fails with EEXIST instead of
 *      replacing, so an existing object is never overwritten, atomically, even by a concurrent
 *      writer; on EEXIST the existing object is hashed and compared (same bytes: success);
 *   4. unlink the temporary name and fsync the directory, so the new entry is durable before the
 *      put resolves (and hence before any manifest can name it).
 * Directories created on the way are fsynced into their parents too. A filesystem without hard
 * links (EPERM / ENOTSUP from link) falls back to check-then-rename, which is atomic for readers
 * but can race with a concurrent writer of the same name; one writer per target is the rule.
 *
 * A crash can leave `.tmp-…` files; they are invisible to `list` and harmless, and
 * {@link DirectoryTarget.removeTemporaries} deletes them when no put is running.
 *
 * **Writes that bypass the page cache.** A body's pieces that start on a 4 KiB boundary in memory
 * and in the file (a base's 1 MiB chunk pieces always do) are written with O_DIRECT through a
 * second descriptor of the temporary file; the rest (a tail shorter than 4 KiB, an unaligned
 * body, a filesystem that refuses O_DIRECT) through the buffered one, whose fsync
 * makes the whole file durable. Why: on this VM a buffered write costs the thread pool a fresh
 * page-cache page per 4 KiB (`copy_folio_from_iter_atomic` was 22% of all CPU samples during
 * back-to-back backups, `perf record -a`), and writing a 16 MiB chunk took ~60 ms (~270 MiB/s);
 * the device takes 1 MiB O_DIRECT writes at ~500 MiB/s one at a time (a throwaway probe,
 * 10 × 16 MiB files: buffered 290–916 MiB/s from run to run, direct 485–541).
 *
 * @module
 */
import { ptr } from "bun:ffi";
import { constants as fsConstants } from "node:fs";
import fs from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { BackupObjectExistsError, BackupObjectMissingError, BackupTargetError, InvalidArgumentError, LssError, NoSpaceError } from "../errors.ts";
import {
  bodyChunks,
  checkChunk,
  ObjectHasher,
  sameObject,
  validateObjectName,
  validateObjectPrefix,
  type ObjectInfo,
  type PutBody,
} from "./objects.ts";
import type { BackupTarget, GetStreamOptions, ObjectStat, PutOptions } from "./target.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { SYNC_FILE_RANGE_WRITE, syncFileRange } from "../io/libc.ts";

/** Options of a {@link DirectoryTarget}. */
export interface DirectoryTargetOptions {
  /** Create the directory (and its parents) when missing. Default true. */
  create?: boolean;
  /** Largest object {@link DirectoryTarget.get} reads into memory, bytes. Default 256 MiB. */
  maxGetBytes?: number;
  /** Most names {@link DirectoryTarget.list} returns before failing. Default 1 000 000. */
  maxListEntries?: number;
  /**
   * Write 4 KiB-aligned pieces of a put with O_DIRECT where the filesystem takes it (see the
   * module doc). Default true; false writes everything through the page cache.
   */
  directWrites?: boolean;
}

const DEFAULT_MAX_GET_BYTES = 256 * 1024 * 1024;
const DEFAULT_MAX_LIST_ENTRIES = 1_000_000;
const DEFAULT_STREAM_CHUNK_BYTES = 8 * 1024 * 1024;
/** Largest chunk of a ranged or streamed read: keeps one read's buffer bounded. */
const MAX_STREAM_CHUNK_BYTES = 256 * 1024 * 1024;
/** Prefix of temporary files; object names cannot start with "." (see objects.ts). */
const TEMP_PREFIX = ".tmp-";

/** errno code of a node:fs error, or undefined. */
function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Map a node:fs error to this library's errors. An error without an errno code is not the
 * filesystem's (the caller's body threw, say) and is returned unchanged.
 */
function fsError(error: unknown, what: string): unknown {
  if (error instanceof LssError) return error;
  const code = errnoCode(error);
  if (code === undefined) return error;
  if (code === "ENOSPC" || code === "EDQUOT") return new NoSpaceError(`${what} failed: disk full (${code})`);
  const message = error instanceof Error ? error.message : String(error);
  return new BackupTargetError(`${what} failed: ${message}`, { attempts: 1, cause: error });
}

/**
 * Bytes written to an object's file between two starts of writeback. Measured on this machine's
 * virtio disk with `bun bench/backup.ts`: letting the page cache hold a whole 16 MiB chunk until
 * its fsync put that burst in front of every commit's datasync issued meanwhile (the writers' p99
 * stall during a backup halved with the target on tmpfs). Starting writeback every piece keeps the
 * device queue short, as PostgreSQL's checkpoint_flush_after (256 kB) does.
 */
const WRITEBACK_EVERY_BYTES = 1 << 20;

/** Starts writeback of a file's freshly written bytes in steps (advisory: a failure turns it off). */
class Writeback {
  #fd: number;
  #started = 0;
  #end = 0;
  #enabled = true;

  constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * `bytes` were written through the page cache at `position`: start writeback once a step is
   * pending (a write that does not follow the last one starts a new step there).
   */
  written(position: number, bytes: number): void {
    if (position !== this.#end) this.#started = position;
    this.#end = position + bytes;
    if (!this.#enabled || this.#end - this.#started < WRITEBACK_EVERY_BYTES) return;
    let rc: number;
    try {
      rc = syncFileRange(this.#fd, this.#started, this.#end - this.#started, SYNC_FILE_RANGE_WRITE);
    } catch {
      rc = -1; // libc not loadable: the fsync alone still makes the object durable
    }
    if (rc !== 0) this.#enabled = false;
    this.#started = this.#end;
  }
}

/**
 * How many of `chunk`'s first bytes can be written with O_DIRECT at file offset `position`: whole
 * 4 KiB blocks, when the chunk's memory and the offset both start on a block boundary. A base's
 * pieces are 1 MiB arrays, which Bun places on page boundaries (observed, not promised: anything
 * else is written through the page cache instead, the same bytes).
 */
function directPrefixBytes(chunk: Uint8Array, position: number): number {
  if (chunk.length < ALIGNMENT_BYTES || position % ALIGNMENT_BYTES !== 0) return 0;
  if (ptr(chunk) % ALIGNMENT_BYTES !== 0) return 0;
  return chunk.length - (chunk.length % ALIGNMENT_BYTES);
}

/**
 * Write all of `bytes` at `position` (a write may be short); with `beforeWrite`, each write waits
 * for it and carries at most the bytes it allows (PutOptions.beforeWrite).
 */
async function writeAll(file: FileHandle, bytes: Uint8Array, position: number, beforeWrite?: () => Promise<number>): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const most = beforeWrite === undefined ? bytes.length : Math.max(ALIGNMENT_BYTES, await beforeWrite());
    const { bytesWritten } = await file.write(bytes, done, Math.min(most, bytes.length - done), position + done);
    done += bytesWritten;
  }
}

/** fsync a directory so the entries created or removed in it are durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Check a non-negative safe integer argument. */
function checkCount(value: number, what: string, max: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new InvalidArgumentError(`${what} must be an integer in [0, ${max}], got ${String(value)}`);
  }
}

/** A backup target in a local directory. Create it with {@link DirectoryTarget.open}. */
export class DirectoryTarget implements BackupTarget {
  /** Always `"directory"`. */
  readonly kind = "directory" as const;
  /** The directory, as given. */
  readonly location: string;
  /** The directory, absolute. */
  readonly root: string;
  readonly #maxGetBytes: number;
  readonly #maxListEntries: number;
  /** Whether puts still try O_DIRECT (see the module doc); false once the filesystem refused it. */
  #directWrites: boolean;
  /** Bytes puts wrote with O_DIRECT and through the page cache (see {@link writtenBytes}). */
  #written = { direct: 0, buffered: 0 };

  private constructor(location: string, options: DirectoryTargetOptions) {
    this.location = location;
    this.root = path.resolve(location);
    this.#maxGetBytes = options.maxGetBytes ?? DEFAULT_MAX_GET_BYTES;
    this.#maxListEntries = options.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;
    if (options.directWrites !== undefined && typeof options.directWrites !== "boolean") {
      throw new InvalidArgumentError(`directWrites must be a boolean, got ${String(options.directWrites)}`);
    }
    this.#directWrites = options.directWrites ?? true;
    checkCount(this.#maxGetBytes, "maxGetBytes", 2 ** 32);
    checkCount(this.#maxListEntries, "maxListEntries", 100_000_000);
  }

  /**
   * Open (and by default create) a directory target.
   *
   * @throws InvalidArgumentError when the path exists and is not a directory, or is missing and `create` is false
   */
  static async open(directory: string, options: DirectoryTargetOptions = {}): Promise<DirectoryTarget> {
    const target = new DirectoryTarget(directory, options);
    let stat;
    try {
      stat = await fs.stat(target.root);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw fsError(error, `open backup directory ${directory}`);
    }
    if (stat && !stat.isDirectory()) throw new InvalidArgumentError(`backup target ${directory} exists and is not a directory`);
    if (!stat) {
      if (options.create === false) throw new InvalidArgumentError(`backup directory ${directory} does not exist`);
      try {
        await target.#makeDirectories(target.root, path.parse(target.root).root);
      } catch (error) {
        throw fsError(error, `create backup directory ${directory}`);
      }
    }
    return target;
  }

  /**
   * Bytes this target's puts have written, with O_DIRECT and through the page cache (see the
   * module doc: pieces on 4 KiB boundaries go direct where the filesystem allows it).
   */
  get writtenBytes(): { readonly direct: number; readonly buffered: number } {
    return { ...this.#written };
  }

  /** Absolute path of an object (the name is validated first). */
  #pathOf(name: string): string {
    validateObjectName(name);
    return path.join(this.root, ...name.split("/"));
  }

  /** mkdir each missing directory from `stop` (exclusive, exists) down to `dir`, fsyncing each parent. */
  async #makeDirectories(dir: string, stop: string): Promise<void> {
    if (dir === stop) return;
    try {
      await fs.mkdir(dir);
    } catch (error) {
      const code = errnoCode(error);
      if (code === "EEXIST") return;
      if (code !== "ENOENT") throw error;
      await this.#makeDirectories(path.dirname(dir), stop);
      try {
        await fs.mkdir(dir);
      } catch (again) {
        if (errnoCode(again) !== "EEXIST") throw again;
        return;
      }
    }
    // The new directory's entry lives in its parent: make it durable like a file's.
    await syncDirectory(path.dirname(dir));
  }

  /** {@inheritDoc BackupTarget.put} */
  async put(name: string, body: PutBody, options: PutOptions = {}): Promise<ObjectInfo> {
    const final = this.#pathOf(name);
    const dir = path.dirname(final);
    const temp = path.join(dir, `${TEMP_PREFIX}${path.basename(final)}-${process.pid}-${crypto.randomUUID()}`);
    let handle: FileHandle | undefined;
    let direct: FileHandle | undefined;
    let tempExists = false;
    try {
      await this.#makeDirectories(dir, this.root);
      handle = await fs.open(temp, "wx", 0o644);
      tempExists = true;
      direct = await this.#openDirect(temp);
      const hasher = new ObjectHasher();
      const writeback = new Writeback(handle.fd);
      let position = 0;
      for await (const raw of bodyChunks(body)) {
        const chunk = checkChunk(raw, name);
        const at = position;
        position += chunk.length;
        const directBytes = direct === undefined ? 0 : directPrefixBytes(chunk, at);
        const buffered = handle;
        const unbuffered = direct;
        // The write runs on the thread pool while this thread hashes, in slices (see updateSliced).
        const written = (async () => {
          if (unbuffered !== undefined && directBytes > 0) {
            await writeAll(unbuffered, chunk.subarray(0, directBytes), at, options.beforeWrite);
            this.#written.direct += directBytes;
          }
          if (directBytes < chunk.length) {
            await writeAll(buffered, chunk.subarray(directBytes), at + directBytes);
            writeback.written(at + directBytes, chunk.length - directBytes);
            this.#written.buffered += chunk.length - directBytes;
          }
        })();
        written.catch(() => {}); // awaited just below; a failure while hashing is not unhandled
        await hasher.updateSliced(chunk);
        await written;
      }
      // The buffered descriptor's fsync makes the whole file durable, direct writes' bytes and
      // the size they extended it to included (O_DIRECT skips the page cache, not the metadata).
      await handle.sync();
      await direct?.close();
      direct = undefined;
      await handle.close();
      handle = undefined;
      const info = hasher.finish(name);
      await this.#publish(temp, final, name, info);
      tempExists = false;
      await syncDirectory(dir);
      return info;
    } catch (error) {
      throw fsError(error, `put ${name} in ${this.location}`);
    } finally {
      if (direct) await direct.close().catch(() => {});
      if (handle) await handle.close().catch(() => {});
      if (tempExists) await fs.unlink(temp).catch(() => {});
    }
  }

  /**
   * A second, O_DIRECT descriptor of the new file `temp`, or undefined where the filesystem
   * refuses O_DIRECT (then this target stops asking).
   */
  async #openDirect(temp: string): Promise<FileHandle | undefined> {
    if (!this.#directWrites || fsConstants.O_DIRECT === undefined) return undefined;
    try {
      return await fs.open(temp, fsConstants.O_WRONLY | fsConstants.O_DIRECT);
    } catch (error) {
      if (errnoCode(error) !== "EINVAL") throw error;
      this.#directWrites = false;
      return undefined;
    }
  }

  /** Give the complete, fsynced temp file its final name without ever replacing an object. */
  async #publish(temp: string, final: string, name: string, info: ObjectInfo): Promise<void> {
    try {
      await fs.link(temp, final);
    } catch (error) {
      const code = errnoCode(error);
      if (code === "EEXIST") {
        await this.#checkSame(final, name, info);
      } else if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP" || code === "ENOSYS") {
        // No hard links here: check, then rename (atomic for readers, see the module doc).
        if (await this.#statPath(final)) {
          await this.#checkSame(final, name, info);
        } else {
          await fs.rename(temp, final);
          return;
        }
      } else {
        throw error;
      }
    }
    await fs.unlink(temp);
  }

  /** Resolve when `final` holds the bytes `info` describes; otherwise refuse. */
  async #checkSame(final: string, name: string, info: ObjectInfo): Promise<void> {
    const existing = await this.#describeFile(final, name);
    if (!sameObject(existing, info)) {
      throw new BackupObjectExistsError(
        name,
        `backup object ${name} already exists in ${this.location} with different bytes (${existing.size} bytes, sha256 ${existing.sha256}); objects are immutable`,
      );
    }
  }

  /** Hash a stored file. */
  async #describeFile(file: string, name: string): Promise<ObjectInfo> {
    const hasher = new ObjectHasher();
    for await (const chunk of this.#readChunks(file, name, 0, undefined, DEFAULT_STREAM_CHUNK_BYTES)) hasher.update(chunk);
    return hasher.finish(name);
  }

  /** Size of a file, or undefined when missing. */
  async #statPath(file: string): Promise<number | undefined> {
    try {
      const stat = await fs.stat(file);
      if (!stat.isFile()) throw new BackupTargetError(`${file} is not a regular file`, { attempts: 1 });
      return stat.size;
    } catch (error) {
      if (errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR") return undefined;
      throw error;
    }
  }

  /** {@inheritDoc BackupTarget.get} */
  async get(name: string): Promise<Uint8Array> {
    const file = this.#pathOf(name);
    const size = await this.#requireSize(file, name);
    if (size > this.#maxGetBytes) {
      throw new InvalidArgumentError(`backup object ${name} is ${size} bytes, over maxGetBytes ${this.#maxGetBytes}: read it with getStream`);
    }
    return this.getRange(name, 0, size);
  }

  /** {@inheritDoc BackupTarget.getRange} */
  async getRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    const file = this.#pathOf(name);
    checkCount(offset, "offset", Number.MAX_SAFE_INTEGER);
    checkCount(length, "length", this.#maxGetBytes);
    const size = await this.#requireSize(file, name);
    if (offset + length > size) {
      throw new InvalidArgumentError(`range [${offset}, ${offset + length}) is past the end of backup object ${name} (${size} bytes)`);
    }
    const out = new Uint8Array(length);
    let handle: FileHandle | undefined;
    try {
      handle = await fs.open(file, "r");
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done);
        if (bytesRead === 0) throw new BackupTargetError(`backup object ${name} shrank while being read`, { attempts: 1 });
        done += bytesRead;
      }
      return out;
    } catch (error) {
      if (errnoCode(error) === "ENOENT") throw new BackupObjectMissingError(name, `backup object ${name} is missing from ${this.location}`);
      throw fsError(error, `read ${name} in ${this.location}`);
    } finally {
      await handle?.close().catch(() => {});
    }
  }

  /** {@inheritDoc BackupTarget.getStream} */
  getStream(name: string, options: GetStreamOptions = {}): AsyncIterable<Uint8Array> {
    const file = this.#pathOf(name);
    const chunkBytes = options.chunkBytes ?? DEFAULT_STREAM_CHUNK_BYTES;
    checkCount(chunkBytes, "chunkBytes", MAX_STREAM_CHUNK_BYTES);
    if (chunkBytes === 0) throw new InvalidArgumentError("chunkBytes must be at least 1");
    const offset = options.offset ?? 0;
    checkCount(offset, "offset", Number.MAX_SAFE_INTEGER);
    if (options.length !== undefined) checkCount(options.length, "length", Number.MAX_SAFE_INTEGER);
    return this.#readChunks(file, name, offset, options.length, chunkBytes);
  }

  async *#readChunks(file: string, name: string, offset: number, length: number | undefined, chunkBytes: number): AsyncGenerator<Uint8Array> {
    let handle: FileHandle | undefined;
    try {
      handle = await fs.open(file, "r");
      const size = (await handle.stat()).size;
      const end = length === undefined ? size : offset + length;
      if (end > size || offset > size) {
        throw new InvalidArgumentError(`range [${offset}, ${end}) is past the end of backup object ${name} (${size} bytes)`);
      }
      let position = offset;
      while (position < end) {
        const chunk = new Uint8Array(Math.min(chunkBytes, end - position));
        let done = 0;
        while (done < chunk.length) {
          const { bytesRead } = await handle.read(chunk, done, chunk.length - done, position + done);
          if (bytesRead === 0) throw new BackupTargetError(`backup object ${name} shrank while being read`, { attempts: 1 });
          done += bytesRead;
        }
        position += chunk.length;
        yield chunk;
      }
    } catch (error) {
      if (errnoCode(error) === "ENOENT") throw new BackupObjectMissingError(name, `backup object ${name} is missing from ${this.location}`);
      throw fsError(error, `read ${name} in ${this.location}`);
    } finally {
      await handle?.close().catch(() => {});
    }
  }

  async #requireSize(file: string, name: string): Promise<number> {
    let size: number | undefined;
    try {
      size = await this.#statPath(file);
    } catch (error) {
      throw fsError(error, `stat ${name} in ${this.location}`);
    }
    if (size === undefined) throw new BackupObjectMissingError(name, `backup object ${name} is missing from ${this.location}`);
    return size;
  }

  /** {@inheritDoc BackupTarget.stat} */
  async stat(name: string): Promise<ObjectStat | undefined> {
    const file = this.#pathOf(name);
    try {
      const size = await this.#statPath(file);
      return size === undefined ? undefined : { size };
    } catch (error) {
      throw fsError(error, `stat ${name} in ${this.location}`);
    }
  }

  /** {@inheritDoc BackupTarget.exists} */
  async exists(name: string): Promise<boolean> {
    return (await this.stat(name)) !== undefined;
  }

  /** {@inheritDoc BackupTarget.list} */
  async list(prefix: string): Promise<string[]> {
    validateObjectPrefix(prefix);
    // Start at the deepest directory the prefix names in full; only it can hold matches.
    const slash = prefix.lastIndexOf("/");
    const startName = slash < 0 ? "" : prefix.slice(0, slash);
    const names: string[] = [];
    const walk = async (relative: string): Promise<void> => {
      let entries;
      try {
        entries = await fs.readdir(relative === "" ? this.root : path.join(this.root, ...relative.split("/")), { withFileTypes: true });
      } catch (error) {
        if (errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR") return;
        throw error;
      }
      for (const entry of entries) {
        if (entry.name.startsWith(".")) continue; // temporaries (and anything not ours)
        const name = relative === "" ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) {
          // Descend only where a match can be: the directory is a prefix of `prefix` or starts with it.
          if (prefix.startsWith(`${name}/`) || name.startsWith(prefix)) await walk(name);
        } else if (entry.isFile() && name.startsWith(prefix)) {
          names.push(name);
          if (names.length > this.#maxListEntries) {
            throw new BackupTargetError(`more than maxListEntries (${this.#maxListEntries}) objects under ${JSON.stringify(prefix)} in ${this.location}`, { attempts: 1 });
          }
        }
      }
    };
    try {
      await walk(startName);
    } catch (error) {
      throw fsError(error, `list ${JSON.stringify(prefix)} in ${this.location}`);
    }
    return names.sort();
  }

  /** {@inheritDoc BackupTarget.delete} */
  async delete(name: string): Promise<void> {
    const file = this.#pathOf(name);
    try {
      await fs.unlink(file);
    } catch (error) {
      if (errnoCode(error) === "ENOENT") return;
      throw fsError(error, `delete ${name} in ${this.location}`);
    }
    try {
      await syncDirectory(path.dirname(file));
      // Pruning a base leaves its directory empty: remove empty parents up to the root.
      let dir = path.dirname(file);
      while (dir !== this.root && dir.startsWith(this.root)) {
        try {
          await fs.rmdir(dir);
        } catch {
          break; // not empty (or gone): stop climbing
        }
        await syncDirectory(path.dirname(dir));
        dir = path.dirname(dir);
      }
    } catch (error) {
      throw fsError(error, `delete ${name} in ${this.location}`);
    }
  }

  /** {@inheritDoc BackupTarget.commitManifest} */
  async commitManifest(name: string, bytes: Uint8Array): Promise<ObjectInfo> {
    const info = await this.put(name, bytes);
    const back = await this.#describeFile(this.#pathOf(name), name);
    if (!sameObject(back, info)) {
      throw new BackupTargetError(`manifest ${name} in ${this.location} reads back different from what was written`, { attempts: 1 });
    }
    return info;
  }

  /**
   * Delete temporary files a crashed put left behind (names starting with `.tmp-`), anywhere
   * under the target. Call only when no put is running on this target (another process's put
   * in flight would lose its temp file and fail).
   *
   * @returns how many were removed
   */
  async removeTemporaries(): Promise<number> {
    let removed = 0;
    const walk = async (dir: string): Promise<void> => {
      const entries = await fs.readdir(dir, { withFileTypes: true });
      for (const entry of entries) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory() && !entry.name.startsWith(".")) await walk(full);
        else if (entry.isFile() && entry.name.startsWith(TEMP_PREFIX)) {
          await fs.unlink(full);
          removed++;
        }
      }
    };
    try {
      await walk(this.root);
    } catch (error) {
      throw fsError(error, `remove temporaries in ${this.location}`);
    }
    return removed;
  }

  /** {@inheritDoc BackupTarget.close} */
  async close(): Promise<void> {
    // Nothing held: every put closed its files and was durable when it resolved.
  }
}
