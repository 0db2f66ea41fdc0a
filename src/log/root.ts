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
import { CorruptionError } from "../errors.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { checkAlignedSize, DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, UNKNOWN_SEGMENT } from "./address.ts";
import { decodeRootBlock, encodeRootBlock, FORMAT_VERSION, ROOT_BLOCK_BYTES, ROOT_REGION_BYTES, type RootBlock } from "./format.ts";

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
   * Read the newer valid copy, or write a fresh root into an empty file (both copies). A new file
   * gets `segmentSize` (default: 8 MiB, or the buffer size when larger).
   */
  static async loadOrCreate(
    queue: IoQueue,
    file: FileHandle,
    options: { readOnly?: boolean; segmentSize?: number },
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
  options: { readOnly?: boolean; segmentSize?: number },
  bufferSize: number,
): Promise<RootBlock> {
  const sizeBytes = backend.fileSizeBytes(file);
  if (sizeBytes === 0) {
    if (options.readOnly) throw new CorruptionError(`${file.path} is empty: not a bloom-lss file`);
    const segmentSize = options.segmentSize ?? Math.max(DEFAULT_SEGMENT_BYTES, bufferSize);
    checkAlignedSize("segmentSize", segmentSize, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
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
  if (sizeBytes < ROOT_REGION_BYTES) throw new CorruptionError(`${file.path} is ${sizeBytes} bytes: too short for a root block`);
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
    throw new CorruptionError(`${file.path} has no valid root block: not a bloom-lss file, or both copies are damaged`);
  }
  if (newest.segmentSize < MIN_SEGMENT_BYTES || newest.segmentSize % ALIGNMENT_BYTES !== 0) {
    throw new CorruptionError(`${file.path}: root block names an invalid segment size ${newest.segmentSize}`);
  }
  return newest;
}
