/**
 * Continuous archiving: `store.archive(target, { intervalMs })` ships the durable log to a backup
 * target at least every `intervalMs` (default 1 s), so losing the machine loses at most that much
 * committed work. Each ship is an ordinary backup (backup.ts): the first one into an empty
 * target is full, the others are increments.
 *
 * Unlike one-off backups, the archiver **holds the log** from what the target already has (a
 * retention), so an unreachable target does not turn the next ship into a full backup: while
 * the target is down, ships fail (each after the target's bounded retries), the backlog grows,
 * and the next ship that gets through sends all of it. The hold is **bounded**: once the
 * backlog passes `maxBacklogBytes` the archiver lets go (the store must never be held back
 * without bound — Litestream's defect), and the next successful ship is a new full backup. The
 * state is in `store.stats().archive`: backlog, position shipped, failures, last error.
 *
 * @module
 */
import { BackupObjectExistsError, InvalidArgumentError, LssError } from "../errors.ts";
import type { LogRetention } from "../log/log.ts";
import type { StoreCore } from "../store/commit.ts";
import { runBackup, serialized, targetSpecOf, type BackupHost, type BackupInfo, type BackupOptions, type BackupRunOptions } from "./backup.ts";
import type { BackupManifest } from "./manifest.ts";
import { openTarget, type BackupTarget } from "./target.ts";

/** Options of `store.archive()`. */
export interface ArchiveOptions extends BackupOptions {
  /** Ship at least this often, ms, 10..3 600 000. Default 1 000. */
  intervalMs?: number;
  /**
   * Most bytes of log held for a target that does not answer before the hold is dropped (the
   * next ship is then a full backup). 1 MiB..1 TiB. Default 1 GiB.
   */
  maxBacklogBytes?: number;
  /** Called after each ship that copied something. */
  onShip?: (info: BackupInfo) => void;
  /** Called with each failed ship's error (the archiver goes on). */
  onError?: (error: unknown) => void;
}

/** The archiver's state, as `store.stats().archive` reports it. */
export interface ArchiveStats {
  /** The target, as given. */
  readonly target: string;
  /** `"running"`, or `"stopped"` after `stop()` / the store's close. */
  readonly state: "running" | "stopped";
  /** The last ship attempt succeeded. */
  readonly healthy: boolean;
  /** Log position the target holds up to (`null` before the first ship). */
  readonly shippedLsn: number | null;
  /** Last transaction the target holds (`null` before the first ship). */
  readonly shippedTransaction: number | null;
  /** When the last successful ship ended, ms since the epoch. */
  readonly lastShipAt: number | null;
  /** Bytes of log appended and not yet on the target: the loss window if the machine died now. */
  readonly backlogBytes: number;
  /** The log is held from this position for the target (`null`: not held, e.g. dropped past `maxBacklogBytes`). */
  readonly heldFrom: number | null;
  /** Ships that copied something. */
  readonly ships: number;
  /** Of those, full backups. */
  readonly fullBackups: number;
  /** Failed ship attempts, in all and in a row. */
  readonly failures: number;
  readonly consecutiveFailures: number;
  /** Times the hold was dropped because the backlog passed `maxBacklogBytes`. */
  readonly holdsDropped: number;
  /** The last failure's message. */
  readonly lastError: string | undefined;
}

const archives = new WeakMap<StoreCore, Archive>();

/** The running (or last) archiver's stats of a store, for `store.stats()`. */
export function archiveStatsOf(core: StoreCore): ArchiveStats | undefined {
  return archives.get(core)?.stats();
}

/** Stop a store's archiver, if one runs (the store's close calls this first). */
export async function stopArchiveOf(core: StoreCore): Promise<void> {
  await archives.get(core)?.stop();
}

/** A running archiver. Stop it with {@link Archive.stop} (the store's close does too). */
export class Archive {
  private readonly host: BackupHost;
  private readonly target: BackupTarget;
  private readonly ownsTarget: boolean;
  private readonly options: ArchiveOptions & Pick<BackupRunOptions, "targetSpec">;
  private readonly intervalMs: number;
  private readonly maxBacklogBytes: number;
  private manifest: BackupManifest | undefined;
  private retention: LogRetention | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> = Promise.resolve();
  private counters = {
    healthy: true,
    shippedLsn: null as number | null,
    shippedTransaction: null as number | null,
    lastShipAt: null as number | null,
    ships: 0,
    fullBackups: 0,
    failures: 0,
    consecutiveFailures: 0,
    holdsDropped: 0,
    lastError: undefined as string | undefined,
  };

  private constructor(host: BackupHost, target: BackupTarget, ownsTarget: boolean, options: ArchiveOptions & Pick<BackupRunOptions, "targetSpec">) {
    this.host = host;
    this.target = target;
    this.ownsTarget = ownsTarget;
    this.options = options;
    this.intervalMs = options.intervalMs ?? 1_000;
    this.maxBacklogBytes = options.maxBacklogBytes ?? 1 << 30;
    if (!Number.isInteger(this.intervalMs) || this.intervalMs < 10 || this.intervalMs > 3_600_000) {
      throw new InvalidArgumentError(`intervalMs must be an integer in [10, 3600000], got ${String(options.intervalMs)}`);
    }
    if (!Number.isSafeInteger(this.maxBacklogBytes) || this.maxBacklogBytes < 1 << 20 || this.maxBacklogBytes > 2 ** 40) {
      throw new InvalidArgumentError(`maxBacklogBytes must be an integer in [1 MiB, 1 TiB], got ${String(options.maxBacklogBytes)}`);
    }
  }

  /** Start archiving a store (see `store.archive`). */
  static async start(host: BackupHost, target: string | BackupTarget, options: ArchiveOptions = {}): Promise<Archive> {
    const current = archives.get(host.core);
    if (current !== undefined && !current.stopped) {
      throw new InvalidArgumentError(`the store is already archiving to ${current.target.location}: stop() it first`);
    }
    const opened = typeof target === "string" ? await openTarget(target, options) : target;
    let archive: Archive;
    try {
      archive = new Archive(host, opened, typeof target === "string", { ...options, targetSpec: targetSpecOf(target, options) });
    } catch (error) {
      if (typeof target === "string") await opened.close();
      throw error;
    }
    archives.set(host.core, archive);
    archive.loop = archive.run();
    return archive;
  }

  /** The archiver's state (also in `store.stats().archive`). */
  stats(): ArchiveStats {
    const c = this.counters;
    const log = this.host.core.log;
    return {
      target: this.target.location,
      state: this.stopped ? "stopped" : "running",
      healthy: c.healthy,
      shippedLsn: c.shippedLsn,
      shippedTransaction: c.shippedTransaction,
      lastShipAt: c.lastShipAt,
      backlogBytes: log.closed ? 0 : Math.max(0, log.appendedEnd - (c.shippedLsn ?? 0)),
      heldFrom: this.retention?.released === false ? this.retention.address : null,
      ships: c.ships,
      fullBackups: c.fullBackups,
      failures: c.failures,
      consecutiveFailures: c.consecutiveFailures,
      holdsDropped: c.holdsDropped,
      lastError: c.lastError,
    };
  }

  /** Ship now (waits for a ship in progress first). Resolves with what it shipped; rejects with its error. */
  async shipNow(): Promise<BackupInfo> {
    if (this.stopped) throw new InvalidArgumentError("the archiver is stopped");
    return this.ship();
  }

  /**
   * Stop: one last ship of what is durable (its failure is recorded, not thrown), then release
   * the hold on the log and the target. Idempotent. Inside a transaction's callback it throws
   * `TransactionError` (the last ship waits for the transaction turn).
   */
  async stop(): Promise<void> {
    // Its last ship takes the transaction turn: inside a transaction's callback it would wait
    // for that transaction, which waits for the callback.
    this.host.commits.refuseInsideCallback("archive.stop()");
    if (this.stopped) return this.loop;
    this.stopped = true;
    this.wake?.();
    await this.loop;
    if (!this.host.core.log.closed) await this.ship().catch(() => {});
    this.retention?.release();
    this.retention = undefined;
    if (this.ownsTarget) await this.target.close();
  }

  private async run(): Promise<void> {
    while (!this.stopped && !this.host.core.log.closed) {
      const began = performance.now();
      await this.ship().catch(() => {});
      const wait = Math.max(0, this.intervalMs - (performance.now() - began));
      if (this.stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Hold the log from what the target has (`lsn`), so an outage does not force a full backup. */
  private holdFrom(lsn: number): void {
    const log = this.host.core.log;
    if (log.closed) return;
    if (this.retention !== undefined && !this.retention.released && this.retention.address <= lsn) this.retention.advance(lsn);
    else {
      this.retention?.release();
      this.retention = log.retain(lsn);
    }
  }

  private async ship(): Promise<BackupInfo> {
    const c = this.counters;
    const log = this.host.core.log;
    try {
      // The hold is taken while the backup still holds the log from its end (whileLogHeld): taken
      // after runBackup returned, a checkpoint could give that segment back in between, and the
      // next ship found its log gone and took a full backup (seen in the S3 archiving test).
      const run = await serialized(this.host.core, () =>
        runBackup(this.host, this.target, { ...this.options, known: this.manifest, whileLogHeld: (lsn) => this.holdFrom(lsn) }),
      );
      const info = run.info;
      this.manifest = run.manifest;
      c.healthy = true;
      c.consecutiveFailures = 0;
      c.lastError = undefined;
      c.shippedLsn = info.lsn;
      c.shippedTransaction = info.transaction;
      c.lastShipAt = Date.now();
      if (info.kind !== "unchanged") {
        c.ships += 1;
        if (info.kind === "full") c.fullBackups += 1;
        this.options.onShip?.(info);
      }
      return info;
    } catch (error) {
      c.healthy = false;
      c.failures += 1;
      c.consecutiveFailures += 1;
      c.lastError = error instanceof Error ? error.message : String(error);
      // The target no longer matches what this process committed: read it afresh next time.
      if (error instanceof BackupObjectExistsError || (error instanceof LssError && error.code === "LSS_BACKUP_CHAIN")) this.manifest = undefined;
      if (this.retention !== undefined && !log.closed && log.appendedEnd - this.retention.address > this.maxBacklogBytes) {
        this.retention.release();
        this.retention = undefined;
        c.holdsDropped += 1;
      }
      this.options.onError?.(error);
      throw error;
    }
  }
}
