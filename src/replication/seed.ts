/**
 * Seeding a standby from the live primary: a full backup (src/backup/backup.ts — the consistent
 * point under the turn, the verified compacting copy of live records) written to a target that is
 * the replication socket, then restored on the standby (src/backup/restore.ts). No second copy of
 * either algorithm lives here.
 *
 * Primary side, {@link SocketTarget}: a `BackupTarget` whose puts go over the connection as
 * SeedData pieces, each object acknowledged by the standby before the next one after it starts
 * (the backup uploads one chunk while the next fills, so at most two are in flight: bounded
 * memory on both sides). Only the base is sent (`baseOnly`): the log from the base's point on
 * follows as the ordinary tail, from the exact record where the base ends.
 *
 * Standby side, {@link SeedReceiver}: objects are spooled into a directory target next to the
 * store (`<path>.seed/`), then restored into `<path>.seeding`; the standby swaps that file in only
 * once it holds the base and its applied position (so a crash mid-seed leaves the old file).
 *
 * @module
 */
import fs from "node:fs/promises";
import { StandbyError } from "../errors.ts";
import { DirectoryTarget } from "../backup/directory-target.ts";
import { bodyChunks, checkChunk, ObjectHasher, type ObjectInfo, type PutBody } from "../backup/objects.ts";
import type { BackupTarget, GetStreamOptions, ObjectStat } from "../backup/target.ts";
import { decodeManifest, manifestName, type BackupManifest } from "../backup/manifest.ts";
import type { StoreOptions } from "../store/config.ts";
import { Msg, SEED_PIECE_BYTES, type Connection } from "./protocol.ts";

/** Pending base objects the primary may have sent and the standby not yet stored. */
const SEED_WINDOW_OBJECTS = 2;

/** The primary's end of a seed: a backup target that is the socket. */
export class SocketTarget implements BackupTarget {
  readonly kind = "directory" as const;
  readonly location: string;
  private readonly conn: Connection;
  private readonly acks = new Map<string, () => void>();
  private failure: Error | undefined;
  bytes = 0;
  manifest: BackupManifest | undefined;

  constructor(conn: Connection) {
    this.conn = conn;
    this.location = `standby ${conn.peer}`;
    conn.onClose((reason) => {
      this.failure = reason ?? new StandbyError("the standby disconnected during its seed", "LSS_STANDBY_DISCONNECTED");
      for (const resolve of this.acks.values()) resolve();
      this.acks.clear();
    });
  }

  /** The standby stored `name`. */
  acknowledged(name: string): void {
    const resolve = this.acks.get(name);
    this.acks.delete(name);
    resolve?.();
  }

  async put(name: string, body: PutBody): Promise<ObjectInfo> {
    if (this.acks.size >= SEED_WINDOW_OBJECTS) throw new Error("seed target: more puts in flight than the window");
    const hasher = new ObjectHasher();
    const stored = new Promise<void>((resolve) => this.acks.set(name, resolve));
    for await (const raw of bodyChunks(body)) {
      const chunk = checkChunk(raw, name);
      for (let at = 0; at < chunk.length || (at === 0 && chunk.length === 0); at += SEED_PIECE_BYTES) {
        this.assertOpen();
        const piece = chunk.subarray(at, at + SEED_PIECE_BYTES);
        hasher.update(piece);
        this.conn.send(Msg.SeedData, { name, last: false }, piece);
        await this.conn.whenDrained(4 * SEED_PIECE_BYTES);
        if (chunk.length === 0) break;
      }
    }
    const info = hasher.finish(name);
    this.conn.send(Msg.SeedData, { name, last: true, size: info.size, sha256: info.sha256 });
    this.bytes += info.size;
    await stored;
    this.assertOpen();
    return info;
  }

  async commitManifest(name: string, bytes: Uint8Array): Promise<ObjectInfo> {
    this.assertOpen();
    this.manifest = decodeManifest(bytes, name);
    const hasher = new ObjectHasher();
    hasher.update(bytes);
    return hasher.finish(name);
  }

  private assertOpen(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  // A seed always starts a new chain: the target holds nothing, and nothing is read back.
  async list(): Promise<string[]> {
    return [];
  }
  async stat(): Promise<ObjectStat | undefined> {
    return undefined;
  }
  async exists(): Promise<boolean> {
    return false;
  }
  get(): Promise<Uint8Array> {
    return Promise.reject(new Error("a seed target is write-only"));
  }
  getRange(): Promise<Uint8Array> {
    return Promise.reject(new Error("a seed target is write-only"));
  }
  // eslint-disable-next-line require-yield
  async *getStream(_name: string, _options?: GetStreamOptions): AsyncIterable<Uint8Array> {
    throw new Error("a seed target is write-only");
  }
  async delete(): Promise<void> {}
  async close(): Promise<void> {}
}

/** The standby's end of a seed: objects into a spool directory, then a restore. */
export class SeedReceiver {
  private readonly spool: string;
  private target: DirectoryTarget | undefined;
  private pieces: Uint8Array[] = [];
  private pieceBytes = 0;
  bytes = 0;

  constructor(storePath: string) {
    this.spool = `${storePath}.seed`;
  }

  /** Path the seeded store is built at before it is swapped in. */
  static seedingPath(storePath: string): string {
    return `${storePath}.seeding`;
  }

  /** Start over (a new seed, or an abandoned one): empty spool, no partial file. */
  async reset(storePath: string): Promise<void> {
    await this.target?.close().catch(() => {});
    this.target = undefined;
    this.pieces = [];
    this.pieceBytes = 0;
    this.bytes = 0;
    await fs.rm(this.spool, { recursive: true, force: true });
    await fs.rm(SeedReceiver.seedingPath(storePath), { force: true });
  }

  /**
   * One SeedData frame. Returns the object's name once it is stored (the standby acknowledges it).
   * The size and sha256 the primary computed are checked against what arrived.
   */
  async piece(header: { name: string; last: boolean; size?: number; sha256?: string }, body: Uint8Array): Promise<string | undefined> {
    if (!header.last) {
      if (this.pieceBytes + body.length > 1 << 30) throw new StandbyError("a seed object exceeds 1 GiB");
      // `body` is the receiver's own copy of the frame's bytes (standby.ts): kept as it is, and
      // stored as a list (copying each piece here and joining them again made three fresh copies
      // of every object; the standby's part of a seed object took 30–70 ms beyond its put).
      this.pieces.push(body);
      this.pieceBytes += body.length;
      return undefined;
    }
    const pieces = this.pieces;
    this.pieces = [];
    this.pieceBytes = 0;
    const bytes = pieces.length === 1 ? (pieces[0] as Uint8Array) : async function* (): AsyncGenerator<Uint8Array> {
      yield* pieces;
    };
    this.target ??= await DirectoryTarget.open(this.spool);
    const info = await this.target.put(header.name, bytes);
    if (info.size !== header.size || info.sha256 !== header.sha256) {
      throw new StandbyError(`seed object ${header.name}: ${info.size} bytes (sha256 ${info.sha256}) arrived, the primary sent ${header.size} (${header.sha256})`);
    }
    this.bytes += info.size;
    return header.name;
  }

  /**
   * The manifest arrived: every base object is spooled. Restore the base into the seeding path
   * (a new store, every record checked again) and return the manifest.
   */
  async finish(manifestBytes: Uint8Array, storePath: string, storeOptions: StoreOptions): Promise<BackupManifest> {
    const manifest = decodeManifest(manifestBytes, "seed manifest");
    if (manifest.increments.length !== 0) throw new StandbyError("a seed manifest holds increments; the tail carries the log");
    this.target ??= await DirectoryTarget.open(this.spool);
    await this.target.commitManifest(manifestName(manifest.seq), manifestBytes);
    const { create: _create, readOnly: _readOnly, durability: _durability, ...rest } = storeOptions;
    // Loaded on use: restore needs the Store class, which loads this module.
    const { restoreBackup } = await import("../backup/restore.ts");
    await restoreBackup(this.target, SeedReceiver.seedingPath(storePath), { store: rest });
    await this.target.close();
    this.target = undefined;
    await fs.rm(this.spool, { recursive: true, force: true });
    return manifest;
  }
}
