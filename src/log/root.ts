/**
 * The root block: the durable anchor of the file, at offset 0, in two alternating checksummed
 * copies (format.ts encodes them). This object owns the root as last loaded or written and the
 * native buffer it is written from.
 *
 * Why two copies: a root write torn by a crash leaves the other copy intact, so recovery always
 * finds one (the newer valid generation wins). A write that moves the anchor (a new checkpoint
 * or replay position) goes into both copies one after the other, so no copy can still lead
 * recovery to an older checkpoint — which is what lets segments given back before the new
 * checkpoint be reused (see segments.ts).
 *
 * @module
 */
import type { FileHandle, IoBackend, NativeBuffer } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import { CorruptionError, InvalidArgumentError, NotAStoreError } from "../errors.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { checkAlignedSize, DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, UNKNOWN_SEGMENT } from "./address.ts";
import { decodeRootBlock, encodeRootBlock, FORMAT_VERSION, hasRootMagic, ROOT_BLOCK_BYTES, ROOT_REGION_BYTES, type RootBlock } from "./format.ts";

/** What a root write may change (the format version, generation and segment size are fixed). */
export type RootPatch = Partial<Omit<RootBlock, "formatVersion" | "generation" | "segmentSize">>;

/** The root block of one open file. */
export class RootBlocks {
  private readonly queue: IoQueue;
  private readonly file: FileHandle;
  private readonly buffer: NativeBuffer;
  private root: RootBlock;

  private constructor(queue: IoQueue, file: FileHandle, buffer: NativeBuffer, root: RootBlock) {
    this.queue = queue;
    this.file = file;
    this.buffer = buffer;
    this.root = root;
  }

  /**
   * Read the newer valid copy, or write a fresh root into an empty file (both copies), or onto a
   * block device holding no store when `format` is set (see formatDevice). A new store gets
   * `segmentSize` (default: 8 MiB, or the buffer size when larger).
   * @throws NotAStoreError for a device holding something else without `format`, or a file
   *   that says it is empty and is not; CorruptionError for a non-empty file without a valid root.
   */
  static async loadOrCreate(
    queue: IoQueue,
    file: FileHandle,
    options: { readOnly?: boolean; segmentSize?: number; format?: boolean },
    bufferSize: number,
  ): Promise<RootBlocks> {
    const backend = queue.backend;
    const buffer = backend.alloc(ROOT_REGION_BYTES);
    try {
      const root = await loadOrCreate(backend, queue, file, buffer, options, bufferSize);
      return new RootBlocks(queue, file, buffer, root);
    } catch (error) {
      backend.free(buffer);
      throw error;
    }
  }

  /** The root as loaded or last written. */
  get current(): Readonly<RootBlock> {
    return this.root;
  }

  /**
   * Write `patch` into the other copy, then datasync; a patch that moves the anchor (checkpoint or
   * replayFrom) is written into both copies. Returns whether the anchor moved.
   */
  async write(patch: RootPatch): Promise<boolean> {
    const movesAnchor = patch.checkpoint !== undefined || patch.replayFrom !== undefined;
    // Every write is of the current format: an older file is upgraded by the first root write of
    // a writable open, since the log it writes from then on is of this format (format.ts).
    await this.writeCopy({ ...this.root, ...patch, formatVersion: FORMAT_VERSION, generation: this.root.generation + 1 });
    if (movesAnchor) await this.writeCopy({ ...this.root, generation: this.root.generation + 1 });
    return movesAnchor;
  }

  private async writeCopy(next: RootBlock): Promise<void> {
    const copy = next.generation % 2;
    encodeRootBlock(this.buffer.bytes.subarray(0, ROOT_BLOCK_BYTES), next);
    await this.queue.write(this.file, this.buffer, 0, ROOT_BLOCK_BYTES, copy * ROOT_BLOCK_BYTES);
    await this.queue.datasync(this.file);
    this.root = next;
  }

  /** Free the native buffer (once no root write is in flight). */
  free(): void {
    this.queue.backend.free(this.buffer);
  }
}

async function loadOrCreate(
  backend: IoBackend,
  queue: IoQueue,
  file: FileHandle,
  buffer: NativeBuffer,
  options: { readOnly?: boolean; segmentSize?: number; format?: boolean },
  bufferSize: number,
): Promise<RootBlock> {
  const device = file.deviceBytes !== undefined;
  const sizeBytes = backend.fileSizeBytes(file);
  const segmentSize = (): number => {
    const size = options.segmentSize ?? Math.max(DEFAULT_SEGMENT_BYTES, bufferSize);
    checkAlignedSize("segmentSize", size, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
    return size;
  };
  if (!device && sizeBytes === 0) {
    if (options.readOnly) throw new CorruptionError(`${file.path} is empty: not a bloom-lss file`);
    // Empty means nothing to read, not only a size of 0: a pseudo-file (of a filesystem target.ts
    // does not know) says 0 and reads back data, and is nobody's to write a root block into.
    const got = await queue.readSome(file, buffer, 0, ALIGNMENT_BYTES, 0);
    if (got !== 0) {
      throw new NotAStoreError(`${file.path} reports a size of 0 but reads back data (a pseudo-file): not a bloom-lss store, left unchanged`);
    }
    return writeNewRoot(queue, file, buffer, segmentSize());
  }
  if (sizeBytes < ROOT_REGION_BYTES) {
    if (device) throw new NotAStoreError(`${file.path} is a block device of ${sizeBytes} bytes: too small to hold a store`);
    throw new CorruptionError(`${file.path} is ${sizeBytes} bytes: too short for a root block`);
  }
  await queue.read(file, buffer, 0, ROOT_REGION_BYTES, 0);
  let newest: RootBlock | undefined;
  let versionError: unknown;
  for (let copy = 0; copy < 2; copy++) {
    try {
      const root = decodeRootBlock(buffer.bytes.subarray(copy * ROOT_BLOCK_BYTES, (copy + 1) * ROOT_BLOCK_BYTES));
      if (root !== undefined && (newest === undefined || root.generation > newest.generation)) newest = root;
    } catch (error) {
      versionError = error;
    }
  }
  if (newest === undefined) {
    if (versionError !== undefined) throw versionError;
    if (device) return formatDevice(queue, file, buffer, options, segmentSize);
    throw new CorruptionError(`${file.path} has no valid root block: not a bloom-lss file, or both copies are damaged`);
  }
  if (newest.segmentSize < MIN_SEGMENT_BYTES || newest.segmentSize % ALIGNMENT_BYTES !== 0) {
    throw new CorruptionError(`${file.path}: root block names an invalid segment size ${newest.segmentSize}`);
  }
  return newest;
}

/**
 * A block device without a valid root block: make a store of it only when asked (`format`), and
 * never over a damaged store (a root copy that still carries the root magic).
 *
 * Unlike a new file, a device does not read as zeros: it holds whatever was there before (a
 * filesystem, an earlier store), and a stale unit at the place recovery looks could pass for
 * log. So segment 0, where recovery starts, is zeroed and made durable *before* the root block
 * that makes the device a store; every later segment is zeroed as the log first takes it
 * (space.ts, prewrite.ts).
 */
async function formatDevice(
  queue: IoQueue,
  file: FileHandle,
  buffer: NativeBuffer,
  options: { readOnly?: boolean; format?: boolean },
  segmentSize: () => number,
): Promise<RootBlock> {
  const deviceBytes = file.deviceBytes as number;
  for (let copy = 0; copy < 2; copy++) {
    if (hasRootMagic(buffer.bytes.subarray(copy * ROOT_BLOCK_BYTES, (copy + 1) * ROOT_BLOCK_BYTES))) {
      throw new CorruptionError(
        `${file.path} holds a bloom-lss store whose root blocks are both damaged: it is never formatted over (restore it from a backup, or erase its first ${ROOT_REGION_BYTES} bytes to reuse the device)`,
      );
    }
  }
  if (options.format !== true || options.readOnly === true) {
    throw new NotAStoreError(
      `${file.path} is a block device that holds no bloom-lss store (a filesystem, a partition table, or other data): ` +
        "it was left unchanged; open it with format: true to make a store of it, erasing what it holds",
    );
  }
  const size = segmentSize();
  if (deviceBytes < ROOT_REGION_BYTES + 2 * size) {
    throw new InvalidArgumentError(
      `${file.path} holds ${deviceBytes} bytes: too small for a store of ${size}-byte segments (the root blocks and at least two segments)`,
    );
  }
  const backend = queue.backend;
  const zeros = backend.alloc(Math.min(size, ZERO_CHUNK_BYTES));
  try {
    zeros.bytes.fill(0);
    for (let at = 0; at < size; at += zeros.sizeBytes) {
      await queue.write(file, zeros, 0, Math.min(zeros.sizeBytes, size - at), ROOT_REGION_BYTES + at);
    }
    await queue.datasync(file);
  } finally {
    backend.free(zeros);
  }
  return writeNewRoot(queue, file, buffer, size);
}

/** Bytes per write while zeroing segment 0 of a device being formatted. */
const ZERO_CHUNK_BYTES = 1 << 20;

/** Write the root of a new store (both copies), then datasync. */
async function writeNewRoot(queue: IoQueue, file: FileHandle, buffer: NativeBuffer, segmentSize: number): Promise<RootBlock> {
  const root: RootBlock = {
    formatVersion: FORMAT_VERSION,
    generation: 1,
    segmentSize,
    replayFrom: { address: 0, segmentIndex: 0, nextSegmentIndex: UNKNOWN_SEGMENT, prevEnd: 0 },
    checkpoint: undefined,
    uncleanShutdowns: 0,
    cleanShutdown: true,
    epoch: 0,
    user: new Uint8Array(0),
  };
  // Both copies: generation 0 and 1, so a torn first update still leaves one valid.
  encodeRootBlock(buffer.bytes.subarray(0, ROOT_BLOCK_BYTES), { ...root, generation: 0 });
  encodeRootBlock(buffer.bytes.subarray(ROOT_BLOCK_BYTES, ROOT_REGION_BYTES), root);
  await queue.write(file, buffer, 0, ROOT_REGION_BYTES, 0);
  await queue.datasync(file);
  return root;
}
