/**
 * What a path holds, and whether the log may write to it — the rule "never write a byte to
 * something that is not ours". A store lives in a regular file (new, empty, or holding a store)
 * or on a block device (a raw partition); everything else is refused before one byte is written.
 *
 * The checks, in the order the log runs them:
 * 1. {@link checkPathBeforeOpen}: `stat` the path *before* opening it. Opening is not harmless for
 *    everything: a FIFO opened read-only blocks until a writer comes, and some character devices
 *    act on open or close (a tape rewinds). A directory, character device (`/dev/null`), FIFO or
 *    socket is refused here, unopened.
 * 2. {@link checkOpened}: `fstat` the descriptor (the path may have changed in between), and
 *    refuse a regular file of a kernel pseudo-filesystem (`/proc`, `/sys`, …): such files report
 *    size 0 and would pass for empty, and some of them act on what is written to them.
 * 3. {@link claimDevice} (a block device opened for writing): an exclusive open (O_EXCL), which the
 *    kernel refuses with EBUSY while the device is mounted, part of a RAID or LVM volume, or
 *    claimed by another program — and which, held while the store is open, keeps anyone from
 *    mounting it under the store.
 * The last check, of the bytes themselves (a root block, or an empty file), is root.ts's.
 *
 * @module
 */
import fs from "node:fs";
import type { FileHandle } from "../io/backend.ts";
import { fileSystemMagic } from "../io/libc.ts";
import { markOwnerDescriptor } from "../io/lock.ts";
import { DeviceBusyError, errorFromErrno, NotAStoreError } from "../errors.ts";

/** Kernel pseudo-filesystems (statfs f_type) whose files are never a store, with their names. */
const PSEUDO_FILESYSTEMS = new Map<number, string>([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x64626720, "debugfs"],
  [0x74726163, "tracefs"],
  [0x73636673, "securityfs"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x62656570, "configfs"],
  [0xcafe4a11, "bpf"],
  [0xde5e81e4, "efivarfs"],
  [0x6165676c, "pstore"],
  [0xf97cff8c, "selinuxfs"],
  [0x43415d53, "smackfs"],
  [0x42494e4d, "binfmt_misc"],
  [0x65735543, "fusectl"],
  [0x1cd1, "devpts"],
  [0x6e736673, "nsfs"],
]);

function errnoOf(error: unknown): number {
  const errno = (error as { errno?: unknown } | null)?.errno;
  return typeof errno === "number" && errno !== 0 ? Math.abs(errno) : 5;
}

function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return "a directory";
  if (stat.isCharacterDevice()) return "a character device";
  if (stat.isFIFO()) return "a FIFO";
  if (stat.isSocket()) return "a socket";
  return "neither a regular file nor a block device";
}

function refused(path: string, what: string): NotAStoreError {
  return new NotAStoreError(`${path} is ${what}: not a bloom-lss store, and bloom-lss writes only to a regular file or a block device`);
}

/**
 * Refuse, before it is opened, a path that exists and is neither a regular file nor a block device
 * (symbolic links are followed, as open follows them). A missing path passes: creating it is the
 * open's business.
 * @throws NotAStoreError for a directory, character device, FIFO or socket.
 */
export function checkPathBeforeOpen(path: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    return; // missing (or unreadable): the open reports it
  }
  if (!stat.isFile() && !stat.isBlockDevice()) throw refused(path, kindOf(stat));
}

/**
 * Check the file just opened: a block device, or a regular file that is not on a kernel
 * pseudo-filesystem.
 * @throws NotAStoreError otherwise (the caller closes the file).
 */
export function checkOpened(file: FileHandle): void {
  let stat: fs.Stats;
  try {
    stat = fs.fstatSync(file.fd);
  } catch (error) {
    throw errorFromErrno(-errnoOf(error), `fstat ${file.path}`);
  }
  if (stat.isBlockDevice()) return;
  if (!stat.isFile()) throw refused(file.path, kindOf(stat));
  const magic = fileSystemMagic(file.fd);
  if (magic < 0) throw errorFromErrno(magic, `fstatfs ${file.path}`);
  const pseudo = PSEUDO_FILESYSTEMS.get(magic);
  if (pseudo !== undefined) throw refused(file.path, `a file of ${pseudo}, a kernel pseudo-filesystem`);
}

/** A block device held exclusively while the store is open. */
export interface DeviceClaim {
  /** Give the device back (at close). */
  release(): void;
}

/**
 * Open the block device `file` exclusively (O_EXCL) on a descriptor of its own, kept until
 * {@link DeviceClaim.release}: the kernel refuses it while the device is mounted or claimed by
 * anyone else, and refuses them while it is held.
 * @throws DeviceBusyError when the device is in use; NotAStoreError when `path` no longer names
 *   the device `file` is.
 */
export function claimDevice(file: FileHandle): DeviceClaim {
  let fd: number;
  try {
    fd = fs.openSync(file.path, fs.constants.O_RDONLY | fs.constants.O_EXCL);
  } catch (error) {
    if ((error as { code?: unknown }).code === "EBUSY") {
      throw new DeviceBusyError(
        `${file.path} is in use (mounted, part of a RAID or LVM volume, or open exclusively by another program): ` +
          "bloom-lss writes only to a device nobody else uses",
      );
    }
    throw errorFromErrno(-errnoOf(error), `exclusive open of ${file.path}`);
  }
  try {
    const claimed = fs.fstatSync(fd);
    const opened = fs.fstatSync(file.fd);
    if (!claimed.isBlockDevice() || claimed.rdev !== opened.rdev) {
      throw new NotAStoreError(`${file.path} changed while it was being opened: it no longer names the device first opened`);
    }
  } catch (error) {
    fs.closeSync(fd);
    throw error instanceof NotAStoreError ? error : errorFromErrno(-errnoOf(error), `fstat ${file.path}`);
  }
  // Released with its owner's other descriptors when that owner is a Worker that died (lock.ts).
  markOwnerDescriptor(fd);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      fs.closeSync(fd);
    },
  };
}
