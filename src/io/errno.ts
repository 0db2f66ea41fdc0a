/**
 * The one home of Linux errno numbers (x86_64) and their names. The shim and the backends return
 * failures as negative errnos; the I/O layer compares them by value (EINVAL when O_DIRECT is
 * refused, EWOULDBLOCK for a held lock…) and errors.ts names them in messages. Numbers written
 * out anywhere else drift apart; import them from here.
 *
 * @module
 */

export const EPERM = 1;
export const ENOENT = 2;
export const EINTR = 4;
export const EIO = 5;
export const EBADF = 9;
export const EAGAIN = 11;
/** Same number as EAGAIN on Linux: what flock(LOCK_NB) reports for a lock held elsewhere. */
export const EWOULDBLOCK = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const EMFILE = 24;
export const EFBIG = 27;
export const ENOSPC = 28;
export const EROFS = 30;
export const ENOSYS = 38;
export const ENODATA = 61;
export const ETIME = 62;
export const EOPNOTSUPP = 95;
export const EDQUOT = 122;
/** A linked op that did not run because an op before it in its chain failed. */
export const ECANCELED = 125;

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  [EPERM]: "EPERM",
  [ENOENT]: "ENOENT",
  [EINTR]: "EINTR",
  [EIO]: "EIO",
  [EBADF]: "EBADF",
  [EAGAIN]: "EAGAIN",
  [ENOMEM]: "ENOMEM",
  [EACCES]: "EACCES",
  [EFAULT]: "EFAULT",
  [EBUSY]: "EBUSY",
  [EEXIST]: "EEXIST",
  [ENOTDIR]: "ENOTDIR",
  [EISDIR]: "EISDIR",
  [EINVAL]: "EINVAL",
  [EMFILE]: "EMFILE",
  [EFBIG]: "EFBIG",
  [ENOSPC]: "ENOSPC",
  [EROFS]: "EROFS",
  [ENOSYS]: "ENOSYS",
  [ENODATA]: "ENODATA",
  [ETIME]: "ETIME",
  [EOPNOTSUPP]: "EOPNOTSUPP",
  [EDQUOT]: "EDQUOT",
  [ECANCELED]: "ECANCELED",
};

/** Symbolic name of a positive errno (`E<n>` for one not listed). */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}

/** True for the errnos that mean "the disk (or a quota) is full". */
export function isNoSpaceErrno(errno: number): boolean {
  return errno === ENOSPC || errno === EDQUOT;
}
