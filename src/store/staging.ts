/**
 * Staging of large written values: where `tx.write` copies a value it must hold until the value
 * reaches the log.
 *
 * Why: `tx.write` copies its value at once (the caller may reuse its buffer as soon as the call
 * returns), and until now that copy was a fresh `Uint8Array` per write. For large values that
 * means fresh pages every time: the engine returns the memory of dead buffers to the system and
 * the next copy faults it in again. On the VM we measure on a page fault costs ~12 µs, so a
 * fresh 1 MiB copy cost 3–4 ms (a C loop of mmap + memcpy + munmap: 2.9–3.9 ms per MiB; a
 * memcpy into memory already touched: 23 µs), and in `bench/streams.ts`'s 1 MiB values with 16
 * in flight the copy (`slice`) was 46 % of the CPU profile. The copy goes instead into a buffer
 * taken from this pool and handed back once its bytes are in the log, so its pages stay touched.
 *
 * Limits: values of {@link STAGE_MIN_BYTES} to {@link STAGE_MAX_BYTES} are staged (smaller ones
 * are cheap to copy fresh, and may go to the value cache, which must own its bytes; larger ones
 * are rare — a stream is the way to write them); at most {@link STAGE_RETAIN_BYTES} of free
 * buffers are kept. A staged value is never handed to the value cache, and never outlives its
 * append: the transaction gives it back right after (or when it is abandoned). A buffer never
 * given back (a transaction whose appends failed) is simply left to the garbage collector.
 *
 * @module
 */

/** Smallest value staged in the pool (smaller ones are copied into fresh memory). */
export const STAGE_MIN_BYTES = 128 << 10;

/** Largest value staged in the pool. */
export const STAGE_MAX_BYTES = 16 << 20;

/** Most bytes of free buffers the pool keeps. */
export const STAGE_RETAIN_BYTES = 64 << 20;

/** Reused buffers for large values on their way to the log (see the module comment). */
export class StagingPool {
  /** Free buffers by size (a power of two from {@link STAGE_MIN_BYTES}). */
  private readonly free = new Map<number, Uint8Array[]>();
  private freeBytes = 0;
  /**
   * Buffers handed out and not given back, by their backing ArrayBuffer. Weak: one never given
   * back (its transaction's append failed) is not kept alive by the pool.
   */
  private readonly out = new WeakSet<ArrayBufferLike>();

  /** Whether a value of `lengthBytes` is staged here. */
  static stages(lengthBytes: number): boolean {
    return lengthBytes >= STAGE_MIN_BYTES && lengthBytes <= STAGE_MAX_BYTES;
  }

  /** A copy of `bytes` (whose length {@link stages} accepts) in a pooled buffer. */
  copy(bytes: Uint8Array): Uint8Array {
    if (!StagingPool.stages(bytes.length)) throw new RangeError(`a value of ${bytes.length} bytes is not staged`);
    const size = classOf(bytes.length);
    let buffer = this.free.get(size)?.pop();
    if (buffer === undefined) buffer = new Uint8Array(size);
    else this.freeBytes -= size;
    if (buffer.length !== size || this.out.has(buffer.buffer)) throw new Error(`staging pool: a ${buffer.length}-byte buffer in the ${size}-byte class, or handed out twice`);
    this.out.add(buffer.buffer);
    const view = buffer.subarray(0, bytes.length);
    view.set(bytes);
    return view;
  }

  /**
   * Whether `view` is a copy this pool handed out and has not had back. Not for a per-write path:
   * a transaction marks its staged writes instead (`.buffer` of a small typed array makes the
   * engine create its ArrayBuffer: ~6 µs per write of a 200 k × 100 B bulk load, hence the
   * length first).
   */
  holds(view: Uint8Array): boolean {
    return StagingPool.stages(view.length) && this.out.has(view.buffer);
  }

  /** Give back a copy from {@link copy}; its bytes must not be used afterwards. */
  giveBack(view: Uint8Array): void {
    if (!this.out.delete(view.buffer)) throw new Error("staging pool: a buffer given back twice, or not from this pool");
    const size = view.buffer.byteLength;
    if (this.freeBytes + size > STAGE_RETAIN_BYTES) return;
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    list.push(new Uint8Array(view.buffer));
    this.freeBytes += size;
  }

  /** Bytes of free buffers kept. */
  get freeBytesKept(): number {
    return this.freeBytes;
  }
}

/** The buffer size for a value of `lengthBytes`: the next power of two, at least {@link STAGE_MIN_BYTES}. */
function classOf(lengthBytes: number): number {
  let size = STAGE_MIN_BYTES;
  while (size < lengthBytes) size *= 2;
  return size;
}
