/**
 * A read-only view of a log's segments through a descriptor of its own: what a backup Worker
 * reads the store's file with, while the owning thread goes on committing.
 *
 * It knows nothing of the log's state: the caller names each segment's physical index (the owner
 * looked it up and pinned the segment, so it is not reused while this reads it). Every unit still
 * goes through the one unit checker (walk.ts {@link readSegmentUnits}: address, segment index, chain,
 * CRC), so a segment that was reused after all reads as a hole, never as data.
 *
 * Its descriptor is opened read-only and never locked: the owner's locks (src/io/lock.ts) are
 * OFD and flock locks, which closing another descriptor of the file does not drop.
 *
 * @module
 */
import { type FileHandle, type IoBackend, type NativeBuffer } from "../io/backend.ts";
import { openBackend } from "../io/open.ts";
import { IoQueue } from "../io/queue.ts";
import type { IoChoice } from "../io/backend.ts";
import { InvalidArgumentError } from "../errors.ts";
import { alignDown, alignUp, LogGeometry } from "./address.ts";
import type { HeldBytes } from "./reader.ts";
import { readSegmentUnits, type StepGate } from "./walk.ts";

/** Read buffers kept per size for reuse (a read of a size not pooled allocates and frees). */
const POOL_PER_SIZE = 8;

/** See the module doc. */
export class SegmentFile {
  private readonly backend: IoBackend;
  private readonly queue: IoQueue;
  private readonly file: FileHandle;
  private readonly geometry: LogGeometry;
  private readonly indexes: ReadonlyMap<number, number>;
  /** Free aligned buffers by size (segment buffers, and reads rounded up to a power of two). */
  private readonly pool = new Map<number, NativeBuffer[]>();
  private readonly out = new Set<NativeBuffer>();
  private closed = false;

  private constructor(backend: IoBackend, file: FileHandle, segmentSize: number, indexes: ReadonlyMap<number, number>) {
    this.backend = backend;
    this.queue = new IoQueue(backend);
    this.file = file;
    this.geometry = new LogGeometry(segmentSize);
    this.indexes = indexes;
  }

  /**
   * Open `path` read-only (O_DIRECT) with a backend of its own.
   * @param indexes - segment seq → physical index, for every segment that will be read
   */
  static async open(path: string, io: IoChoice, segmentSize: number, indexes: ReadonlyMap<number, number>): Promise<SegmentFile> {
    const backend = await openBackend({ io, queueDepth: 64 });
    try {
      const file = backend.openFile(path, { readOnly: true, direct: true });
      return new SegmentFile(backend, file, segmentSize, indexes);
    } catch (error) {
      backend.close();
      throw error;
    }
  }

  /** Sequence number of the segment holding log `address`. */
  segmentSeqOf(address: number): number {
    return this.geometry.seqOf(address);
  }

  private indexOf(seq: number): number {
    const index = this.indexes.get(seq);
    if (index === undefined) throw new InvalidArgumentError(`segment seq ${seq} was not named to this reader`);
    return index;
  }

  private borrow(sizeBytes: number): NativeBuffer {
    const buffer = this.pool.get(sizeBytes)?.pop() ?? this.backend.alloc(sizeBytes);
    this.out.add(buffer);
    return buffer;
  }

  private giveBack(buffer: NativeBuffer): void {
    // Not out any more: close() freed it (every read had settled by then; see close).
    if (!this.out.delete(buffer)) return;
    let free = this.pool.get(buffer.sizeBytes);
    if (free === undefined) this.pool.set(buffer.sizeBytes, (free = []));
    if (free.length < POOL_PER_SIZE) free.push(buffer);
    else this.backend.free(buffer);
  }

  /** Every intact unit of segment `seq`, read in steps of `stepBytes` (see {@link readSegmentUnits}). */
  async visitSegmentUnits(seq: number, visit: (address: number, payload: Uint8Array) => void, stepBytes: number, beforeStep?: StepGate): Promise<void> {
    this.assertOpen();
    const index = this.indexOf(seq);
    const geometry = this.geometry;
    const scratch = this.borrow(geometry.segmentSize);
    try {
      await readSegmentUnits({ backend: this.backend, queue: this.queue, file: this.file }, { geometry, seq, index, stepBytes, beforeStep }, scratch, visit);
    } finally {
      this.giveBack(scratch);
    }
  }

  /**
   * `lengthBytes` at log `address` (inside one segment), as a view of an aligned read buffer held
   * until `release()`. The caller checks the bytes (records carry their own CRC).
   */
  async readHeld(address: number, lengthBytes: number): Promise<HeldBytes> {
    this.assertOpen();
    const geometry = this.geometry;
    const seq = geometry.seqOf(address);
    const index = this.indexOf(seq);
    if (lengthBytes <= 0 || address + lengthBytes > geometry.segmentStart(seq + 1)) {
      throw new InvalidArgumentError(`log range [${address}, +${lengthBytes}) is not inside segment ${seq}`);
    }
    const from = alignDown(address);
    const span = alignUp(address + lengthBytes) - from;
    // Power-of-two sizes from 64 KiB, so reads of similar sizes share pooled buffers.
    const size = Math.max(64 << 10, 2 ** Math.ceil(Math.log2(span)));
    const buffer = this.borrow(size);
    try {
      await this.queue.read(this.file, buffer, 0, span, geometry.physicalOffset(index, from));
    } catch (error) {
      this.giveBack(buffer);
      throw error;
    }
    const start = address - from;
    let live = true;
    const giveBack = (): void => this.giveBack(buffer);
    return {
      bytes: buffer.bytes.subarray(start, start + lengthBytes),
      copied: false,
      get live() {
        return live;
      },
      release() {
        if (!live) return;
        live = false;
        giveBack();
      },
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new InvalidArgumentError("the segment file is closed");
  }

  /**
   * Close the descriptor and free every buffer, held ones too: call it once no read is in flight
   * and no held view will be touched again.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const free of this.pool.values()) for (const buffer of free) this.backend.free(buffer);
    this.pool.clear();
    for (const buffer of this.out) this.backend.free(buffer);
    this.out.clear();
    this.backend.closeFile(this.file);
    this.backend.close();
  }
}
