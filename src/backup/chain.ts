/**
 * Reading a backup chain back: the newest manifest (checked, chain validated), each object's
 * bytes checked against the size and checksums the manifest names, the base as records and the
 * increments as units. Restore and verify share it, so both check exactly the same things.
 *
 * @module
 */
import { BackupCorruptionError, InvalidArgumentError, LssError } from "../errors.ts";
import { readBase, type BaseEvent } from "./base.ts";
import { readLogObject, type LogUnit } from "./log-object.ts";
import {
  decodeManifest,
  latestManifest,
  parseManifestName,
  validateChain,
  type BackupManifest,
  type BaseEntry,
  type IncrementEntry,
} from "./manifest.ts";
import { ObjectHasher, sameObject, type ObjectInfo } from "./objects.ts";
import type { BackupTarget } from "./target.ts";

/** The chain a target holds now. */
export interface Chain {
  /** Name of the manifest read. */
  readonly name: string;
  readonly manifest: BackupManifest;
}

/**
 * The newest manifest of `target`, its chain validated; with `covers`, the newest one that
 * `covers` accepts (or the newest when none does, so the caller reports against it).
 *
 * @throws InvalidArgumentError when the target holds no backup
 * @throws CorruptionError when the manifest is damaged; BackupChainError when the chain breaks
 */
export async function readChain(target: BackupTarget, covers?: (manifest: BackupManifest) => boolean): Promise<Chain> {
  const latest = await latestManifest(target);
  if (latest === undefined) throw new InvalidArgumentError(`${target.location} holds no backup (no manifest-*.json)`);
  validateChain(latest.manifest);
  if (covers === undefined || covers(latest.manifest)) return { name: latest.name, manifest: latest.manifest };
  // A point before the newest base: an older manifest (they are kept until pruned) may start
  // from an older base that holds it. Newest first; a damaged or broken older one is passed over.
  const older = (await target.list("manifest-"))
    .map((name) => ({ name, seq: parseManifestName(name) }))
    .filter((entry): entry is { name: string; seq: number } => entry.seq !== undefined && entry.seq < latest.manifest.seq)
    .sort((a, b) => b.seq - a.seq);
  for (const { name } of older) {
    let manifest: BackupManifest;
    try {
      manifest = decodeManifest(await target.get(name), `${target.location}/${name}`);
      validateChain(manifest);
    } catch (error) {
      if (error instanceof LssError && (error.code === "LSS_CORRUPTION" || error.code === "LSS_BACKUP_CHAIN")) continue;
      throw error;
    }
    if (covers(manifest)) return { name, manifest };
  }
  return { name: latest.name, manifest: latest.manifest };
}

function checkObject(info: ObjectInfo, actual: ObjectInfo): void {
  if (!sameObject(info, actual)) {
    throw new BackupCorruptionError(
      info.name,
      `backup object ${info.name} is damaged: ${actual.size} bytes with sha256 ${actual.sha256}, the manifest names ${info.size} bytes with sha256 ${info.sha256}`,
    );
  }
}

/** An object's bytes, read whole and checked against the manifest. */
export async function readObject(target: BackupTarget, info: ObjectInfo): Promise<Uint8Array> {
  const bytes = await target.get(info.name);
  const hasher = new ObjectHasher();
  hasher.update(bytes);
  checkObject(info, hasher.finish(info.name));
  return bytes;
}

/**
 * The base's events (base.ts `readBase`), its chunks streamed in bounded pieces, each chunk's
 * size and checksums checked when it has been read.
 */
export function readBaseOf(target: BackupTarget, base: BaseEntry, onBytes?: (n: number) => void): AsyncGenerator<BaseEvent> {
  async function* chunks(): AsyncGenerator<{ name: string; bytes: Uint8Array }> {
    for (const chunk of base.chunks) {
      const hasher = new ObjectHasher();
      for await (const bytes of target.getStream(chunk.name)) {
        hasher.update(bytes);
        onBytes?.(bytes.length);
        yield { name: chunk.name, bytes };
      }
      checkObject(chunk, hasher.finish(chunk.name));
    }
  }
  return readBase(chunks());
}

/** An increment's units, the object checked first, each unit through the log's unit checker. */
export async function readIncrement(
  target: BackupTarget,
  increment: IncrementEntry,
  minEpoch: number,
): Promise<{ units: Generator<LogUnit>; bytes: number }> {
  const bytes = await readObject(target, increment);
  return {
    units: readLogObject(bytes, { name: increment.name, fromLsn: increment.fromLsn, toLsn: increment.toLsn, minEpoch }),
    bytes: bytes.length,
  };
}
