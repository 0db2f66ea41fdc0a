/**
 * Block devices under the backends: what `openFile` learns about one (its size, from the device)
 * and the guard that keeps `allocateSpace` and `truncate` off it. Shared by both backends, so a
 * raw partition behaves the same on io_uring and on the portable backend.
 *
 * @module
 */
import fs from "node:fs";
import type { FileHandle } from "./backend.ts";
import { errorFromErrno, InvalidArgumentError } from "../errors.ts";
import { blockDeviceBytes } from "./libc.ts";

/**
 * The {@link FileHandle.deviceBytes} of a file just opened as `fd`: its size when it is a block
 * device, else undefined. Both backends call it from `openFile`.
 * @throws IoError when the device's size cannot be read.
 */
export function deviceBytesOf(fd: number, path: string): number | undefined {
  let isBlockDevice: boolean;
  try {
    isBlockDevice = fs.fstatSync(fd).isBlockDevice();
  } catch (error) {
    throw errorFromErrno(-errnoOfNodeError(error), `fstat ${path}`);
  }
  if (!isBlockDevice) return undefined;
  const size = blockDeviceBytes(fd);
  if (size < 0) throw errorFromErrno(size, `ioctl BLKGETSIZE64 ${path}`);
  return size;
}

/**
 * Refuse to change the size of a block device: the backends' `allocateSpace` and `truncate` call
 * it first. The log never asks (its segments stay inside the device); this is the last guard.
 */
export function refuseOnDevice(file: FileHandle, what: string): void {
  if (file.deviceBytes !== undefined) {
    throw new InvalidArgumentError(`${what} of ${file.path}: a block device is never truncated or fallocated`);
  }
}

function errnoOfNodeError(error: unknown): number {
  const errno = (error as { errno?: unknown } | null)?.errno;
  return typeof errno === "number" && errno !== 0 ? Math.abs(errno) : 5;
}
