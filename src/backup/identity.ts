/**
 * A store's identity, so that a backup chain never mixes stores: an increment of store B
 * appended to a chain of store A would restore garbage. The id is a random UUID kept in the root
 * block's bytes for the layer above (`RootBlock.user`, as UTF-8 JSON `{"storeId":"…"}`), written
 * the first time the store is backed up. A restored store is a new store: it gets its own id at
 * its own first backup.
 *
 * @module
 */
import { ReadOnlyError } from "../errors.ts";
import type { LogStructuredStore } from "../log/log.ts";

interface RootUserFields {
  storeId?: string;
  [key: string]: unknown;
}

/** The root block's user fields (backup identity, replication state), `{}` when none. */
export function readFields(log: LogStructuredStore): RootUserFields {
  const bytes = log.rootBlock.user;
  if (bytes.length === 0) return {};
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as RootUserFields) : {};
  } catch {
    return {};
  }
}

/** The store's id, or `undefined` when it was never backed up. */
export function storeIdOf(log: LogStructuredStore): string | undefined {
  const id = readFields(log).storeId;
  return typeof id === "string" && id.length > 0 && id.length <= 128 ? id : undefined;
}

/**
 * The store's id, made and written to the root block if it has none. The caller holds the
 * transaction turn (checkpoints write the root block under it too).
 *
 * @throws ReadOnlyError when the store has no id and cannot be written
 */
export async function ensureStoreId(log: LogStructuredStore): Promise<string> {
  const existing = storeIdOf(log);
  if (existing !== undefined) return existing;
  if (log.readOnly) throw new ReadOnlyError("this store was never backed up and is open read-only: its backup identity cannot be recorded");
  const storeId = crypto.randomUUID();
  await writeFields(log, { storeId });
  return storeId;
}

/**
 * Merge `patch` into the root block's user fields and write the root block (other layers keep
 * their state there too: src/replication's epoch). The caller holds the transaction turn.
 */
export async function writeFields(log: LogStructuredStore, patch: Record<string, unknown>): Promise<void> {
  const fields = { ...readFields(log), ...patch };
  await log.writeRoot({ user: new TextEncoder().encode(JSON.stringify(fields)) });
}
