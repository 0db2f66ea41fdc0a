/**
 * Reads of the log: from a flush buffer while the bytes are still in memory, else from the file
 * through pooled 4 KiB-aligned native buffers (O_DIRECT needs aligned memory, and bun:ffi cannot
 * align JS memory), plus the cleaner's whole-segment reads and the scratch buffer of recovery's walk.
 *
 * Owns every read buffer, so their sizes are bounded in one place: small reads (≤ 64 KiB) and
 * reads up to a whole unit (streams read parts of half a buffer) each reuse a pool of
 * {@link READ_POOL_MAX} buffers, more during a burst of reads (up to {@link READ_POOL_BURST_BYTES},
 * trimmed back once it is over); anything larger allocates its own and frees it after. Buffers are
 * freed explicitly (never by a GC finalizer, which could run with I/O still in flight).
 *
 * @module
 */
import type { FileHandle, IoBackend, NativeBuffer } from "../io/backend.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import type { IoQueue } from "../io/queue.ts";
import { readNoWait } from "../io/libc.ts";
import { InvalidArgumentError } from "../errors.ts";
import { alignDown, alignUp, type LogGeometry } from "./address.ts";
import { UNIT_HEADER_BYTES } from "./format.ts";
import type { LogLifecycle } from "./lifecycle.ts";
import type { OwnerRing } from "./ring.ts";
import type { SegmentSpace } from "./space.ts";
import { readSegmentUnits, type StepGate, type WalkContext } from "./walk.ts";
import { BLOCK_BYTES, type BlockCache } from "./block-cache.ts";

/** Reads larger than this go around the caching layer (see read()). */
export const CACHE_FILL_MAX_BYTES = 64 << 10;
/** Reads up to this size reuse pooled native buffers of this size. */
export const READ_SCRATCH_BYTES = 64 << 10;
/** Misses per decision of the read-around policy (see LogReader.readAroundPays). */
const AROUND_WINDOW_MISSES = 512;
/** Block-cache hits per miss below which misses through the page cache stop reading around. */
const AROUND_MIN_HITS_PER_MISS = 0.5;
/** While misses do not read around, every this many still does. */
const AROUND_PROBE_EVERY = 8;
/** Pooled read buffers kept when reads are idle, per pool (idle native memory ≤ 16 × (64 KiB + bufferSize)). */
export const READ_POOL_MAX = 16;
/**
 * During a burst a pool keeps up to this many bytes of buffers (at least {@link READ_POOL_MAX}
 * buffers), and gives the excess back after {@link READ_POOL_TRIM_MS} without a burst. Why: 16
 * reads of 1 MiB values in flight keep 32 unit buffers out; with a pool of 16 every other read
 * allocated (mmap, a page fault per 4 KiB) and freed one, and 16 in flight read at 138-180 MiB/s
 * against 227-328 serially; with room for the burst both ran at ~500 MiB/s (a throwaway script
 * reading 1 MiB values 16 at a time and one at a time).
 */
export const READ_POOL_BURST_BYTES = 64 << 20;
export const READ_POOL_TRIM_MS = 2_000;

/** A unit's payload as the cleaner reads it (a copy). */
export interface SegmentUnit {
  address: number;
  payload: Uint8Array;
}

/** Bytes read by {@link LogReader.readHeld}: a view valid until `release()` (or the log's close). */
export interface HeldBytes {
  readonly bytes: Uint8Array;
  /** True when `bytes` is the caller's own copy (it came from memory) and outlives release. */
  readonly copied: boolean;
  /** False once released, also by the log's close: `bytes` must not be touched then. */
  readonly live: boolean;
  release(): void;
}

/** Bytes that are the caller's own already (a copy from memory) as {@link HeldBytes}: nothing to give back. */
export function ownedBytes(bytes: Uint8Array): HeldBytes {
  return { bytes, copied: true, live: true, release: () => {} };
}

/** A view of a pooled native read buffer, given back once on release. */
class HeldRead implements HeldBytes {
  readonly copied = false;
  live = true;
  constructor(
    readonly bytes: Uint8Array,
    private readonly giveBack: () => void,
  ) {}

  release(): void {
    if (!this.live) return;
    this.live = false;
    this.giveBack();
  }
}

/** Every read of one log, and the buffers they use. */
export class LogReader {
  private readonly backend: IoBackend;
  private readonly queue: IoQueue;
  private readonly file: FileHandle;
  /**
   * A second, buffered descriptor of the file for small reads (see {@link read}): opened at the
   * first one, `null` when these reads stay O_DIRECT (turned off, the file is not O_DIRECT, or
   * the open failed).
   */
  private buffered: FileHandle | null | undefined;
  /** Reads from the file that went through the buffered descriptor (a statistic). */
  bufferedReads = 0;
  /** Of {@link bufferedReads}, those the page cache served in the caller's turn (readNoWait). */
  noWaitReads = 0;
  /** The read-around policy's state (see {@link readAroundPays}). */
  private aroundPays = true;
  /** Whether misses through the page cache read whole blocks now (see {@link readAroundPays}). */
  get readsAround(): boolean {
    return this.aroundPays;
  }
  private windowStartHits = 0;
  private windowMisses = 0;
  private readonly geometry: LogGeometry;
  private readonly space: SegmentSpace;
  private readonly ring: OwnerRing;
  private readonly life: LogLifecycle;
  /** Size of the pooled buffers for reads up to a whole unit (and the durable tail's window). */
  readonly unitReadBytes: number;
  private readonly smallPool: NativeBuffer[] = [];
  private readonly unitPool: NativeBuffer[] = [];
  /** At most one segment-sized read buffer, kept for the cleaner's next victim. */
  private readonly segmentPool: NativeBuffer[] = [];
  /** Last time a pool held more than {@link READ_POOL_MAX} buffers, and the timer that trims them. */
  private burstAt = 0;
  private trimTimer: ReturnType<typeof setTimeout> | undefined;
  /** Recovery's walk buffer (one unit), kept until close. */
  private walkScratch: NativeBuffer | undefined;
  /** Reads handed out by {@link readHeld} and not yet released (freed at close). */
  private readonly held = new Set<HeldBytes>();
  /** The caching layer (block-cache.ts): written units and blocks read around misses. */
  private readonly cache: BlockCache;
  /** Every log byte below it is written and synced: bytes that can no longer change on disk. */
  private readonly stableAddress: () => number;

  constructor(
    backend: IoBackend,
    queue: IoQueue,
    file: FileHandle,
    geometry: LogGeometry,
    space: SegmentSpace,
    ring: OwnerRing,
    life: LogLifecycle,
    cache: BlockCache,
    stableAddress: () => number,
    private readonly pageCacheReads: boolean = true,
  ) {
    this.cache = cache;
    this.stableAddress = stableAddress;
    this.backend = backend;
    this.queue = queue;
    this.file = file;
    this.geometry = geometry;
    this.space = space;
    this.ring = ring;
    this.life = life;
    this.unitReadBytes = ring.bufferSize + 2 * ALIGNMENT_BYTES;
  }

  /**
   * Read `lengthBytes` at log `address`: from a flush buffer if the bytes are still in memory,
   * else from the file. The log does not interpret the bytes; callers verify their own checksums.
   *
   * A small read from the file (a record and the block around it, up to
   * {@link CACHE_FILL_MAX_BYTES}) goes through the kernel's page cache, on a buffered descriptor
   * of its own, unless `direct`: the page cache becomes a second level behind the caching layer,
   * as it is for lmdb and sqlite. A record read again after the caching layer dropped it is then
   * a copy from memory, and the kernel reads ahead. Measured (bench/store.ts section i, Zipf reads
   * of 1 KiB values, data 4× `cacheBytes`): 28.6 k → 102 k reads/s. Coherent with the log's
   * O_DIRECT writes: a direct write drops the cached pages of its range, and such a read stops at
   * the durable end, short of units being written. Bytes cached while a direct write of the same
   * range was in flight could outlive it; the caller verifies every record and, on a mismatch,
   * reads again with `direct` (store/read-path.ts).
   */
  async read(address: number, lengthBytes: number, direct = false): Promise<Uint8Array> {
    this.life.assertOpen();
    const fromMemory = this.readFromBuffers(address, lengthBytes) ?? this.cache.get(address, lengthBytes);
    if (fromMemory !== undefined) return fromMemory;
    const { scratch, start } = await this.readFile(address, lengthBytes, !direct);
    try {
      return scratch.bytes.slice(start, start + lengthBytes);
    } finally {
      this.giveBack(scratch);
    }
  }

  /**
   * `[address, +lengthBytes)` as a copy from the caching layer when it holds every page of it,
   * else undefined (not counted as a miss: the caller reads the file itself). For the durable
   * tail: a unit just made durable was copied into the cache when its write completed.
   */
  cached(address: number, lengthBytes: number): Uint8Array | undefined {
    return this.cache.get(address, lengthBytes);
  }

  /**
   * Like {@link read}, but a read from the file hands back a view of the native read buffer, held
   * until `release()`: for a caller that copies the bytes straight to where they go (a stream into
   * a caller's buffer, a multipart element into its result), with no JS allocation per read, so
   * streaming gigabytes leaves no garbage for the GC to catch up with. Bytes from memory (a flush
   * buffer, the cache) come as a copy. Held buffers still out at close are freed then, and `live`
   * turns false: check it before use.
   */
  async readHeld(address: number, lengthBytes: number): Promise<HeldBytes> {
    this.life.assertOpen();
    const fromMemory = this.readFromBuffers(address, lengthBytes) ?? this.cache.get(address, lengthBytes);
    if (fromMemory !== undefined) return ownedBytes(fromMemory);
    const { scratch, start } = await this.readFile(address, lengthBytes);
    if (!this.life.isOpen) {
      // Closed while the read was in flight: the held buffers were freed already, this one with them.
      this.giveBack(scratch);
      this.life.assertOpen();
    }
    const held = new HeldRead(scratch.bytes.subarray(start, start + lengthBytes), () => {
      this.held.delete(held);
      this.giveBack(scratch);
    });
    this.held.add(held);
    return held;
  }

  /**
   * Read `[address, +lengthBytes)` from the file into a borrowed buffer (the caller gives it back);
   * the bytes start at `start` in it. With the cache on, a miss reads the whole blocks around the
   * range (inside its segment) and keeps them: neighbours are likely next (a scan, a multipart
   * element, records written together). Large reads (parts of big elements, streams) neither fill
   * nor count against the cache: they would evict the small records it is for, and a stream reads
   * each part once.
   */
  private async readFile(address: number, lengthBytes: number, mayUsePageCache = false): Promise<{ scratch: NativeBuffer; start: number }> {
    const geometry = this.geometry;
    const seq = geometry.seqOf(address);
    const index = this.space.indexOf(seq);
    const segmentEnd = geometry.segmentStart(seq + 1);
    if (index === undefined || address + lengthBytes > segmentEnd) {
      throw new InvalidArgumentError(`log range [${address}, +${lengthBytes}) is not in a live segment`);
    }
    const caching = this.cache.enabled && lengthBytes <= CACHE_FILL_MAX_BYTES;
    const viaPageCache = mayUsePageCache && lengthBytes <= CACHE_FILL_MAX_BYTES ? this.bufferedFile() : undefined;
    const around = caching && (viaPageCache === undefined || this.readAroundPays());
    // Through the page cache and not around: exactly the record's bytes (a buffered descriptor
    // needs no alignment), and nothing for the block cache, which holds aligned blocks. Why: for a
    // 1 KiB record the 4 KiB pages around it were a 4–8 KiB copy out of the page cache and another
    // into the block cache, for neighbours this mode has found are not read (readAroundPays).
    // Measured, bench/store.ts (i) (Zipf reads of 1 KiB values, data 4× the caches), two
    // alternating runs each: 510 k and 428 k → 588 k and 548 k reads/s.
    const exact = viaPageCache !== undefined && !around;
    const from = exact ? address : around ? Math.max(geometry.segmentStart(seq), Math.floor(address / BLOCK_BYTES) * BLOCK_BYTES) : alignDown(address);
    // A block read stops where the file ends too: it grows a piece at a time, so the block around
    // a record may reach past what the file holds (space.ts knows; no fstat per read).
    const heldEnd = geometry.segmentStart(seq) + this.space.allocatedIn(index);
    // Through the page cache, a block read stops at the durable end: past it units are being
    // written (O_DIRECT), and pages read in beside such a write could keep what it replaces.
    const blockEnd = viaPageCache === undefined ? Infinity : Math.max(alignUp(address + lengthBytes), alignDown(this.stableAddress()));
    const to = exact
      ? address + lengthBytes
      : around
      ? Math.max(alignUp(address + lengthBytes), Math.min(segmentEnd, heldEnd, blockEnd, Math.ceil((address + lengthBytes) / BLOCK_BYTES) * BLOCK_BYTES))
      : alignUp(address + lengthBytes);
    // Only bytes that can no longer change on disk are kept: a block may reach past the log's
    // written end into bytes a unit being written will replace (that unit goes in when written).
    const keepEnd = exact ? from : Math.min(to, alignDown(this.stableAddress()));
    const physical = geometry.physicalOffset(index, from);
    const scratch = this.borrow(to - from);
    try {
      if (caching) this.cache.noteMiss();
      if (viaPageCache !== undefined) this.bufferedReads += 1;
      // What the page cache holds is copied now, in this turn; only a read that must wait for
      // the device goes through the queue (see readNoWait).
      if (viaPageCache !== undefined && readNoWait(viaPageCache.fd, scratch, 0, to - from, physical)) this.noWaitReads += 1;
      else await this.queue.read(viaPageCache ?? this.file, scratch, 0, to - from, physical);
      if (caching && keepEnd > from) this.cache.put(from, scratch.bytes.subarray(0, keepEnd - from));
    } catch (error) {
      this.giveBack(scratch);
      throw error;
    }
    return { scratch, start: address - from };
  }

  /**
   * Whether a miss read through the page cache should read its whole block (and keep it in the
   * block cache) rather than only its own pages. From the device a miss always does (nothing
   * else keeps the neighbours); through the page cache it pays only while the block cache serves
   * reads: decided per window of {@link AROUND_WINDOW_MISSES} misses from the block cache's hits
   * per miss, with every {@link AROUND_PROBE_EVERY}th miss still reading around, so that
   * locality coming back shows. Measured (bench/store.ts, alternating with the old code): Zipf
   * reads of 1 KiB values over 4× the cache, 0.2 block hits per miss, read only their pages at
   * 210–230 k reads/s against 128–136 k reading whole blocks (the 32 KiB copy into the cache per
   * miss, for neighbours hardly ever read); point reads of 100 B values, 7 block hits per miss,
   * lost a quarter of their speed reading only their pages.
   */
  private readAroundPays(): boolean {
    this.windowMisses += 1;
    if (this.windowMisses >= AROUND_WINDOW_MISSES) {
      // One threshold either way: while only probes read around, a workload with the locality
      // that makes reading around pay (point reads of small values: ~7 hits per miss) still
      // clears it, with the hits on the pages read alone and the probes' neighbours; one without
      // (Zipf over 1 KiB values: ~0.1 either way) stays below it.
      this.aroundPays = this.cache.hits - this.windowStartHits >= AROUND_MIN_HITS_PER_MISS * this.windowMisses;
      this.windowStartHits = this.cache.hits;
      this.windowMisses = 0;
    }
    return this.aroundPays || this.windowMisses % AROUND_PROBE_EVERY === 0;
  }

  /**
   * Copy `[address, +lengthBytes)` into `into[0, lengthBytes)` if it is in memory (a flush buffer
   * or the caching layer); false, and nothing copied, if not. Synchronous and allocation-free: the
   * read path's hot case, a record just written or read around, verified in a scratch buffer and
   * only its body copied out (a copy per read plus a DataView over a small array cost about
   * a third of a read from the cache; bench/store.ts (g)).
   */
  copyFromMemory(address: number, lengthBytes: number, into: Uint8Array): boolean {
    const view = this.bufferHolding(address, lengthBytes);
    if (view !== undefined) {
      into.set(view.bytes.subarray(view.start, view.start + lengthBytes));
      return true;
    }
    return this.cache.copyInto(address, lengthBytes, into);
  }

  /** Copy from a flush buffer still holding `[address, +length)`, if one does. */
  readFromBuffers(address: number, lengthBytes: number): Uint8Array | undefined {
    const view = this.bufferHolding(address, lengthBytes);
    return view === undefined ? undefined : view.bytes.slice(view.start, view.start + lengthBytes);
  }

  /** The flush buffer still holding `[address, +length)` and where the range starts in it, if one does. */
  private bufferHolding(address: number, lengthBytes: number): { bytes: Uint8Array; start: number } | undefined {
    for (const buffer of this.ring.slots) {
      if (buffer.isFree) continue;
      const start = address - buffer.baseAddress;
      // The fill, not the offset: a reservation that did not fit pushed the offset past the fill,
      // and those addresses belong to the next unit (possibly open in another slot).
      if (start < UNIT_HEADER_BYTES || start + lengthBytes > UNIT_HEADER_BYTES + buffer.finalFillBytes) continue;
      if (start + lengthBytes > this.ring.bufferSize) continue;
      return { bytes: this.ring.view(buffer.slot), start };
    }
    return undefined;
  }

  /**
   * Read every intact unit of segment `seq` (for the cleaner), in address order: units are read
   * from the segment's start while they pass the unit checker (walk.ts) at the expected address.
   */
  async readSegmentUnits(seq: number): Promise<SegmentUnit[]> {
    const units: SegmentUnit[] = [];
    await this.visitSegmentUnits(seq, (address, payload) => {
      units.push({ address, payload: payload.slice() }); // the buffer is reused
    });
    return units;
  }

  /**
   * Like {@link readSegmentUnits}, without copying: `visit` sees each intact unit's payload as a
   * view of the pooled segment buffer, synchronously, and must copy what it keeps (backup's
   * compacting copy takes a few records out of each unit; copying whole units first cost it
   * more than the read).
   */
  async visitSegmentUnits(seq: number, visit: (address: number, payload: Uint8Array) => void, stepBytes = Number.POSITIVE_INFINITY, beforeStep?: StepGate): Promise<void> {
    this.life.assertOpen();
    const index = this.space.indexOf(seq);
    if (index === undefined) throw new InvalidArgumentError(`segment seq ${seq} is not live`);
    const geometry = this.geometry;
    // One segment-sized buffer kept for the next victim: a fresh one per segment cleaned meant an
    // mmap, a page fault per 4 KiB and a munmap each time. A second reader at once allocates.
    const scratch = this.segmentPool.pop() ?? this.backend.alloc(geometry.segmentSize);
    try {
      // Read in steps when asked: one 8 MiB read queues every commit's write and datasync behind
      // it on the device (backup reads in steps so writers' commits get in between).
      await readSegmentUnits({ backend: this.backend, queue: this.queue, file: this.file }, { geometry, seq, index, stepBytes, beforeStep }, scratch, visit);
    } finally {
      if (this.life.isOpen && this.segmentPool.length === 0) this.segmentPool.push(scratch);
      else this.backend.free(scratch);
    }
  }

  /** What recovery's walk needs: the file and a scratch buffer of one unit, kept until close. */
  walkContext(): WalkContext {
    const bufferSize = this.ring.bufferSize;
    if (this.walkScratch === undefined || this.walkScratch.sizeBytes < bufferSize) {
      if (this.walkScratch !== undefined) this.backend.free(this.walkScratch);
      this.walkScratch = this.backend.alloc(bufferSize);
    }
    return { backend: this.backend, queue: this.queue, file: this.file, geometry: this.geometry, scratch: this.walkScratch };
  }

  /**
   * An aligned native buffer of at least `sizeBytes`: pooled up to {@link unitReadBytes}, else
   * allocated. Give it back with {@link giveBack} once no I/O uses it.
   */
  borrow(sizeBytes: number): NativeBuffer {
    if (sizeBytes <= READ_SCRATCH_BYTES) return this.smallPool.pop() ?? this.backend.alloc(READ_SCRATCH_BYTES);
    if (sizeBytes <= this.unitReadBytes) return this.unitPool.pop() ?? this.backend.alloc(this.unitReadBytes);
    return this.backend.alloc(sizeBytes);
  }

  /** Return a buffer from {@link borrow}: pooled while there is room and the log is open, else freed. */
  giveBack(buffer: NativeBuffer): void {
    const pool =
      buffer.sizeBytes === READ_SCRATCH_BYTES ? this.smallPool : buffer.sizeBytes === this.unitReadBytes ? this.unitPool : undefined;
    if (pool === undefined || !this.life.isOpen) return this.backend.free(buffer);
    const burstMax = Math.max(READ_POOL_MAX, Math.floor(READ_POOL_BURST_BYTES / buffer.sizeBytes));
    if (pool.length >= burstMax) return this.backend.free(buffer);
    pool.push(buffer);
    if (pool.length > READ_POOL_MAX) {
      this.burstAt = performance.now();
      this.trimLater();
    }
  }

  /** When a burst is over (none for {@link READ_POOL_TRIM_MS}), free the pools' excess. */
  private trimLater(): void {
    if (this.trimTimer !== undefined) return;
    this.trimTimer = setTimeout(() => {
      this.trimTimer = undefined;
      if (!this.life.isOpen) return;
      if (performance.now() - this.burstAt < READ_POOL_TRIM_MS) return this.trimLater();
      for (const pool of [this.smallPool, this.unitPool]) {
        for (const buffer of pool.splice(READ_POOL_MAX)) this.backend.free(buffer);
      }
    }, READ_POOL_TRIM_MS);
    this.trimTimer.unref?.();
  }

  /** Buffers pooled now (small, unit): for tests of the pools' bounds. */
  get pooledBuffers(): { small: number; unit: number } {
    return { small: this.smallPool.length, unit: this.unitPool.length };
  }

  /**
   * The buffered descriptor for small reads (see {@link read}; `readSync`'s misses use it too,
   * sync-read.ts), opened at the first call; undefined when there is none.
   */
  bufferedFile(): FileHandle | undefined {
    if (this.buffered === undefined) {
      this.buffered = null;
      if (this.pageCacheReads && this.file.direct) {
        try {
          const handle = this.backend.openFile(this.file.path, { readOnly: true, direct: false });
          if (handle.direct) this.backend.closeFile(handle); // the backend would not give a buffered one
          else this.buffered = handle;
        } catch {
          // Reads stay O_DIRECT: slower, never wrong.
        }
      }
    }
    return this.buffered ?? undefined;
  }

  /** Free every pooled buffer and every held one still out (at close, once no read is in flight). */
  free(): void {
    if (this.buffered) this.backend.closeFile(this.buffered);
    this.buffered = null;
    if (this.trimTimer !== undefined) clearTimeout(this.trimTimer);
    this.trimTimer = undefined;
    for (const held of [...this.held]) held.release();
    if (this.walkScratch !== undefined) this.backend.free(this.walkScratch);
    this.walkScratch = undefined;
    for (const pool of [this.smallPool, this.unitPool, this.segmentPool]) {
      for (const buffer of pool.splice(0)) this.backend.free(buffer);
    }
  }
}
