/**
 * Typed errors of bloom-lss. Every class carries a stable `code` that callers may switch on;
 * messages are for people and may change.
 *
 * @module
 */
import { errnoName, isNoSpaceErrno } from "./io/errno.ts";

export { errnoName };

/**
 * Every `code` an {@link LssError} can carry. Stable: new codes may be added in a minor release,
 * existing ones never change meaning. `LSS_INTERNAL` means a bug in bloom-lss (please report it).
 */
export type ErrorCode =
  | "LSS_STORE_LOCKED"
  | "LSS_CORRUPTION"
  | "LSS_INVALID_SEID"
  | "LSS_INVALID_ARGUMENT"
  | "LSS_TRANSACTION"
  | "LSS_CLOSED"
  | "LSS_READ_ONLY"
  | "LSS_NO_SPACE"
  | "LSS_IO_UNAVAILABLE"
  | "LSS_IO"
  | "LSS_NOT_A_STORE"
  | "LSS_DEVICE_BUSY"
  | "LSS_LOG_TRUNCATED"
  | "LSS_BACKUP_CHAIN"
  | "LSS_BACKUP_TARGET"
  | "LSS_BACKUP_POINT"
  | "LSS_BACKUP_OBJECT_EXISTS"
  | "LSS_BACKUP_OBJECT_MISSING"
  | "LSS_AUTH"
  | "LSS_STANDBY"
  | "LSS_STANDBY_DISCONNECTED"
  | "LSS_STANDBY_RESEED"
  | "LSS_STANDBY_TIMEOUT"
  | "LSS_FENCED"
  | "LSS_REPLICATION_TIMEOUT"
  | "LSS_INTERNAL";

/** Base class of every error bloom-lss throws on purpose. Switch on `code`, not on messages. */
export class LssError extends Error {
  /** Stable machine-readable code, e.g. `"LSS_CORRUPTION"`. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The store file is locked by another opener (another process, or this one). */
export class StoreLockedError extends LssError {
  declare readonly code: "LSS_STORE_LOCKED";
  constructor(message: string) {
    super("LSS_STORE_LOCKED", message);
  }
}

/** Bytes read from the file failed their checksum, or the file's structure is invalid. */
export class CorruptionError extends LssError {
  declare readonly code: "LSS_CORRUPTION";
  constructor(message: string) {
    super("LSS_CORRUPTION", message);
  }
}

/** A seid outside `[1, 2^64 - 1]`, or not a bigint. */
export class InvalidSeidError extends LssError {
  declare readonly code: "LSS_INVALID_SEID";
  constructor(message: string) {
    super("LSS_INVALID_SEID", message);
  }
}

/** An argument of the wrong type, size or range. */
export class InvalidArgumentError extends LssError {
  declare readonly code: "LSS_INVALID_ARGUMENT";
  constructor(message: string) {
    super("LSS_INVALID_ARGUMENT", message);
  }
}

/** A transaction used after it ended, or a commit that cannot proceed. */
export class TransactionError extends LssError {
  declare readonly code: "LSS_TRANSACTION";
  constructor(message: string) {
    super("LSS_TRANSACTION", message);
  }
}

/** An operation on a store or backend that has been closed. */
export class StoreClosedError extends LssError {
  declare readonly code: "LSS_CLOSED";
  constructor(message: string) {
    super("LSS_CLOSED", message);
  }
}

/** A write on a store opened with `readOnly: true` (or made read-only by a fatal I/O error). */
export class ReadOnlyError extends LssError {
  declare readonly code: "LSS_READ_ONLY";
  constructor(message: string) {
    super("LSS_READ_ONLY", message);
  }
}

/** The disk (or the configured `maxFileBytes`) is full. */
export class NoSpaceError extends LssError {
  declare readonly code: "LSS_NO_SPACE";
  constructor(message: string) {
    super("LSS_NO_SPACE", message);
  }
}

/** The requested I/O backend cannot work here (io_uring disabled, shim missing, no O_DIRECT…). */
export class IoUnavailableError extends LssError {
  declare readonly code: "LSS_IO_UNAVAILABLE";
  constructor(message: string) {
    super("LSS_IO_UNAVAILABLE", message);
  }
}

/**
 * The path holds something bloom-lss will not open as a store, and it was left exactly as it was
 * (nothing written, not even a root block): a directory, a character device such as `/dev/null`,
 * a FIFO or socket, a file of a kernel pseudo-filesystem (`/proc`, `/sys`…), a file that says it
 * is empty but reads back data, or a block device that holds no bloom-lss store (a filesystem,
 * a partition table, zeros…) when `format: true` was not given. A non-empty regular file without
 * a valid root block stays a {@link CorruptionError} (it may be a damaged store).
 */
export class NotAStoreError extends LssError {
  declare readonly code: "LSS_NOT_A_STORE";
  constructor(message: string) {
    super("LSS_NOT_A_STORE", message);
  }
}

/**
 * A block device is in use by someone else — mounted, part of a RAID or LVM volume, or opened
 * exclusively by another program — so bloom-lss does not write to it (its exclusive open,
 * O_EXCL, failed with EBUSY). Nothing was written.
 */
export class DeviceBusyError extends LssError {
  declare readonly code: "LSS_DEVICE_BUSY";
  constructor(message: string) {
    super("LSS_DEVICE_BUSY", message);
  }
}

/**
 * A reader of the durable log asked for log that is gone: the segment holding it was given back
 * and may have been reused, so its bytes can no longer be trusted to be that log. Start again from
 * a newer position (for a standby or a backup: re-seed from a full copy).
 */
export class LogTruncatedError extends LssError {
  declare readonly code: "LSS_LOG_TRUNCATED";
  /** The address asked for. */
  readonly address: number;
  constructor(address: number, message: string) {
    super("LSS_LOG_TRUNCATED", message);
    this.address = address;
  }
}

/** An I/O call failed with an errno (other than ENOSPC, which is {@link NoSpaceError}). */
export class IoError extends LssError {
  declare readonly code: "LSS_IO";
  /** Positive errno value, e.g. 5 for EIO. */
  readonly errno: number;
  /** Symbolic errno name, e.g. `"EIO"`. */
  readonly errnoName: string;
  constructor(errno: number, what: string) {
    const name = errnoName(errno);
    super("LSS_IO", `${what} failed: ${name} (errno ${errno})`);
    this.errno = errno;
    this.errnoName = name;
  }
}

/** Where a backup chain breaks: the last link that is fine and the one that does not follow it. */
export interface BackupChainGap {
  /** The last link that is in order, e.g. `"base base-…"` or `"increment 3 (inc-…)"`. */
  readonly after: string;
  /** The link that does not follow it, or what is missing, e.g. `"increment 5 (inc-…)"`. */
  readonly next: string;
}

/**
 * A backup chain (base, then increments) with a gap, out of order, or overlapping: restoring
 * it would silently skip or repeat transactions, so it is refused. {@link gap} names where.
 */
export class BackupChainError extends LssError {
  declare readonly code: "LSS_BACKUP_CHAIN";
  /** Where the chain breaks. */
  readonly gap: BackupChainGap;
  constructor(message: string, gap: BackupChainGap) {
    super("LSS_BACKUP_CHAIN", message);
    this.gap = gap;
  }
}

/**
 * A backup target (a directory or S3) failed in a way retrying did not fix: unreachable after
 * the bounded retries, access denied, a bad bucket, an I/O error. `cause` holds the last error.
 */
export class BackupTargetError extends LssError {
  declare readonly code: "LSS_BACKUP_TARGET";
  /** How many attempts were made before giving up (1 when the error was not retryable). */
  readonly attempts: number;
  constructor(message: string, options: { attempts: number; cause?: unknown }) {
    super("LSS_BACKUP_TARGET", message, { cause: options.cause });
    this.attempts = options.attempts;
  }
}

/**
 * A put would replace an existing backup object with different bytes. Backup objects are
 * immutable (a manifest's checksums name their exact bytes), so the target refuses.
 */
export class BackupObjectExistsError extends LssError {
  declare readonly code: "LSS_BACKUP_OBJECT_EXISTS";
  /** The object's name on the target. */
  readonly objectName: string;
  constructor(objectName: string, message: string) {
    super("LSS_BACKUP_OBJECT_EXISTS", message);
    this.objectName = objectName;
  }
}

/** A backup object that should be on the target is not there. */
export class BackupObjectMissingError extends LssError {
  declare readonly code: "LSS_BACKUP_OBJECT_MISSING";
  /** The object's name on the target. */
  readonly objectName: string;
  constructor(objectName: string, message: string) {
    super("LSS_BACKUP_OBJECT_MISSING", message);
    this.objectName = objectName;
  }
}

/**
 * A backup object failed its checks (size, checksum, a record's CRC, a unit's checksum or chain,
 * the base's structure). It is a {@link CorruptionError} (same code) that names the object.
 */
export class BackupCorruptionError extends CorruptionError {
  /** The object's name on the target. */
  readonly objectName: string;
  constructor(objectName: string, message: string) {
    super(message);
    this.objectName = objectName;
  }
}

/**
 * A restore was asked for a point the backup does not hold: a transaction or time before its
 * base's consistent point, or a transaction after the last one it holds.
 */
export class BackupPointError extends LssError {
  constructor(message: string) {
    super("LSS_BACKUP_POINT", message);
  }
}

/**
 * A replication peer failed authentication: a wrong or missing secret, a handshake that does not
 * answer this connection's fresh challenge (a replay), or a standby of another store. Raised on
 * the side that detected it; the other side sees it too (the connection is refused).
 */
export class AuthenticationError extends LssError {
  constructor(message: string) {
    super("LSS_AUTH", message);
  }
}

/**
 * Replication cannot go on as asked: the primary refused this standby (it must re-seed and
 * could not), the protocol was broken, or the standby was asked to do what only a primary does.
 */
export class StandbyError extends LssError {
  constructor(message: string, code: Extract<ErrorCode, `LSS_STANDBY${string}` | "LSS_FENCED"> = "LSS_STANDBY") {
    super(code, message);
  }
}

/**
 * Epoch fencing: a standby that has seen a newer epoch (a promotion) refuses a primary of an
 * older one, and such a primary learns it has been fenced off.
 */
export class FencedError extends StandbyError {
  /** The epoch of the side that refused. */
  readonly epoch: number;
  constructor(message: string, epoch: number) {
    super(message, "LSS_FENCED");
    this.epoch = epoch;
  }
}

/**
 * A commit asked for a replication level (`received`, `durable`, `applied`) that no standby
 * confirmed within `replicationTimeoutMs`, with `onReplicationTimeout: "fail"`. The transaction
 * is committed (and durable) on the primary; only the standby's confirmation is missing.
 */
export class ReplicationTimeoutError extends LssError {
  constructor(message: string) {
    super("LSS_REPLICATION_TIMEOUT", message);
  }
}

/** Map a negative-errno result (as the shim and backends return them) to a typed error. */
export function errorFromErrno(negErrno: number, what: string): LssError {
  const errno = -negErrno;
  if (isNoSpaceErrno(errno)) return new NoSpaceError(`${what} failed: disk full (${errnoName(errno)})`);
  return new IoError(errno, what);
}
