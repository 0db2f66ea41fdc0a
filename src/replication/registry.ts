/**
 * The store's seam to replication, and nothing else: which store serves standbys, and the three
 * calls the store makes (after a commit, for stats, at close). Kept apart from primary.ts so a
 * store that never replicates does not load the replication code (sockets, crypto, seeding):
 * measured, loading it eagerly cost ~12 MiB of RSS in every process.
 *
 * @module
 */
import type { StoreCore } from "../store/commit.ts";
import type { PrimaryReplicationStats } from "./primary.ts";
import type { ReplicationLevel } from "./sync-levels.ts";

/** What the store needs of a running replication server. */
export interface ServingReplication {
  afterCommit(end: number, level: ReplicationLevel | undefined): Promise<void>;
  stats(): PrimaryReplicationStats;
  close(): Promise<void>;
}

const serving = new WeakMap<StoreCore, ServingReplication>();

/** @internal primary.ts: `server` serves `core` (one per store). */
export function registerServer(core: StoreCore, server: ServingReplication | undefined): void {
  if (server === undefined) serving.delete(core);
  else serving.set(core, server);
}

/** @internal The server of `core`, if any. */
export function serverOf(core: StoreCore): ServingReplication | undefined {
  return serving.get(core);
}

/** The store's commit hook: wait for the replication level of a user commit ending at `end`. */
export function replicationAfterCommit(core: StoreCore, end: number, level: ReplicationLevel | undefined): Promise<void> | undefined {
  return serving.get(core)?.afterCommit(end, level);
}

/** `stats().replication` of a primary (undefined when not serving). */
export function primaryStatsOf(core: StoreCore): PrimaryReplicationStats | undefined {
  return serving.get(core)?.stats();
}

/** Close the store's replication server, if any (the store is closing). */
export async function stopReplicationOf(core: StoreCore): Promise<void> {
  await serving.get(core)?.close();
}
