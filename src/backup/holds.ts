/**
 * The log kept for the next increment. An increment is the durable log since the previous backup
 * into the same target; once the cleaner has reused that log, the next backup must be full again.
 * Measured (bench/backup.ts, default settings): 3,000 small transactions between two backups
 * wrote 33 MiB of log, the cleaner had reused part of it, and the "increment" was a 157 MiB full
 * backup, 4.7× the log written. So after each backup the store holds the log from where that
 * target's chain ends, per target, up to `retainLogBytes` (default 64 MiB) of log written since:
 * the file grows by at most that much beyond what the cleaner would give back, and past it the
 * hold is let go (checked every 250 ms and at every backup), so a target that is never backed up
 * again cannot make the file grow without bound (Litestream's read lock did).
 *
 * Holds live in this process only: after a reopen the first backup of a target is an increment
 * if its log is still there, else full (and says why).
 *
 * @module
 */
import type { LogRetention } from "../log/tail.ts";
import type { StoreCore } from "../store/commit.ts";

/** Default of `BackupOptions.retainLogBytes`. */
export const DEFAULT_RETAIN_LOG_BYTES = 64 << 20;
/** How often holds are checked against their cap, ms. */
const CHECK_MS = 250;

interface Hold {
  retention: LogRetention;
  capBytes: number;
}

interface StoreHolds {
  readonly byTarget: Map<string, Hold>;
  timer: ReturnType<typeof setInterval> | undefined;
}

const holds = new WeakMap<StoreCore, StoreHolds>();

/** After a backup into `location` whose chain ends at `lsn`: hold the log from there (replacing the target's previous hold). */
export function holdForNextIncrement(core: StoreCore, location: string, lsn: number, capBytes: number): void {
  const log = core.log;
  let store = holds.get(core);
  const previous = store?.byTarget.get(location);
  if (capBytes <= 0 || log.closed || log.appendedEnd - lsn > capBytes) {
    previous?.retention.release();
    store?.byTarget.delete(location);
    return;
  }
  if (previous !== undefined && !previous.retention.released && previous.retention.address <= lsn) {
    previous.retention.advance(lsn);
    previous.capBytes = capBytes;
  } else {
    previous?.retention.release();
    if (store === undefined) {
      store = { byTarget: new Map(), timer: undefined };
      holds.set(core, store);
    }
    store.byTarget.set(location, { retention: log.retain(lsn), capBytes });
  }
  enforce(core);
}

/** Let go of holds past their cap; keep a timer only while holds remain. */
function enforce(core: StoreCore): void {
  const store = holds.get(core);
  if (store === undefined) return;
  const log = core.log;
  for (const [location, hold] of store.byTarget) {
    if (log.closed || hold.retention.released || log.appendedEnd - hold.retention.address > hold.capBytes) {
      hold.retention.release();
      store.byTarget.delete(location);
    }
  }
  if (store.byTarget.size === 0) {
    if (store.timer !== undefined) clearInterval(store.timer);
    store.timer = undefined;
    holds.delete(core);
  } else if (store.timer === undefined) {
    store.timer = setInterval(() => enforce(core), CHECK_MS);
    store.timer.unref?.();
  }
}
