/**
 * bloom-lss: a Bun-native embedded log-structured persistent heap.
 *
 * ```ts
 * import { Store } from "bloom-lss";
 * await using store = await Store.open("app.lss");
 * const seid = store.allocateSeid();
 * await store.transaction((tx) => tx.write(seid, new Uint8Array([1, 2, 3])));
 * await store.read(seid); // Uint8Array [1, 2, 3]
 * ```
 *
 * @module
 */
export { Store, type StoreStats } from "./store/store.ts";
export type { BackupInfo, BackupOptions, BackupProgress } from "./backup/backup.ts";
export type { Archive, ArchiveOptions, ArchiveStats } from "./backup/archive.ts";
export type { RestoreInfo, RestoreOptions, RestoreProgress } from "./backup/restore.ts";
export type { VerifyOptions, VerifyReport } from "./backup/verify.ts";
export { openTarget, type BackupTarget, type OpenTargetOptions, type DirectoryTargetOptions, type S3TargetOptions } from "./backup/target.ts";
export type { Transaction, ElementValue } from "./store/transaction.ts";
export type { StoreOptions, Durability } from "./store/config.ts";
export type { RecoveryReport } from "./store/replay.ts";
export type { AttachedStore, AttachOptions } from "./workers/attached.ts";
export type { StoreHandle } from "./workers/handle.ts";
export type { EntriesOptions } from "./store/read-path.ts";
export { ROOT_SEID, NULL_SEID, MAX_SEID } from "./store/state/seids.ts";
export {
  LogStructuredStore,
  type LogOptions,
  type WriteMode,
  type LogStats,
  type DurableUnit,
  type DurableUnitsOptions,
  type LogRetention,
} from "./log/log.ts";
export type { LogPosition } from "./log/format.ts";
export { RingWriter, type Reservation, type RingDescriptor } from "./log/ring.ts";
export type { IoBackend, IoChoice, IoKind, IoOp, IoCompletion, NativeBuffer, FileHandle } from "./io/backend.ts";
export { openBackend, type OpenBackendOptions } from "./io/open.ts";
export {
  type ErrorCode,
  LssError,
  StoreLockedError,
  CorruptionError,
  InvalidSeidError,
  InvalidArgumentError,
  TransactionError,
  StoreClosedError,
  ReadOnlyError,
  NoSpaceError,
  IoUnavailableError,
  IoError,
  NotAStoreError,
  DeviceBusyError,
  BackupChainError,
  BackupTargetError,
  BackupObjectExistsError,
  BackupObjectMissingError,
  BackupCorruptionError,
  BackupPointError,
  type BackupChainGap,
  LogTruncatedError,
  AuthenticationError,
  StandbyError,
  FencedError,
  ReplicationTimeoutError,
} from "./errors.ts";
