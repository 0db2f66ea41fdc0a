/**
 * The file's segments: which physical segment holds each sequence number (the {@link SegmentTable}),
 * the two segments the writer holds (the one it writes and the one after it), growing the file
 * as the log needs it, the full-disk reserve, giving segments back, and cutting the file's end.
 *
 * Why the writer's two segments live here and not in the rotation: each unit header names the
 * segment that follows its own, so the successor is taken when the writer *enters* a segment,
 * not when it leaves it. Taking, growing and shrinking must agree on which indices are held, so
 * they are one object's state.
 *
 * **Growing as needed.** A regular file is allocated (fallocate) from its start up to its size,
 * with no holes, and grows only as far as the log needs: the piece of the current segment the
 * next unit goes into, plus the full-disk reserve beyond it. So a new store is its root blocks
 * and a few hundred KiB, not several segments, and the last segment of the file is usually only
 * partly there. A segment the file does not hold yet may still be *named*: the successor of the
 * segment being written is often the next slot at the end of the file, allocated only once the
 * writer gets there. Allocation is known from the file's size alone, so it survives a reopen.
 *
 * **Room** is what the log can still append without new disk blocks, along the way the writer
 * will go: the allocated rest of the current segment, then the successor and the free segments
 * (a segment counts once a unit fits in its allocated part). When the current segment cannot
 * grow (a full disk) but the successor is there, the writer skips the rest of the current
 * segment, as it does at a segment's end; recovery follows such a skip (walk.ts). When the
 * successor is not there but a free segment is, the writer names the free one as successor
 * instead; a unit header names it from then on, and the writer enters the segment the *last
 * unit written* named (never one no unit names, which recovery could not find).
 *
 * **The full-disk reserve**: the layer above (the store: its cleaner sizes it) says how many
 * bytes of room to keep allocated ahead of the writer ({@link SegmentSpace.keepReserve}), so
 * that using them needs no new disk blocks. The file grows to keep it whenever it can. Each
 * append says what it is for ({@link SpaceUse}) and is checked before it is made: user writes
 * may not use the reserve at all, deletes may use its delete share, and the store's upkeep
 * (relocations, checkpoints) all of it. The reserve grows with the store, so user writes must
 * leave room for the reserve *as it will be* once they are committed: the sizer is asked with
 * the writes appended since the last transaction settled ({@link SegmentSpace.writesSettled}).
 * An append that cannot have its room is a {@link NoSpaceError} for the transaction that made
 * it, and changes nothing: the log stays writable, and the next attempt grows the file again
 * (the disk may have room by then).
 *
 * A block device is never grown or cut: all of its segments are there, each zeroed the first
 * time the log takes it (prewrite.ts), and the reserve is kept in segments it has not used.
 *
 * @module
 */
import type { FileHandle, IoBackend } from "../io/backend.ts";
import { NoSpaceError, ReadOnlyError } from "../errors.ts";
import { ALIGNMENT_BYTES } from "../io/backend.ts";
import { alignDown, alignUp, MIN_UNIT_ROOM_BYTES, UNKNOWN_SEGMENT, type LogGeometry } from "./address.ts";
import { UNIT_HEADER_BYTES, type LogPosition } from "./format.ts";
import type { SegmentPrewriter } from "./prewrite.ts";
import { SegmentTable, type SegmentTableState } from "./segments.ts";

/**
 * What an append is for, which decides how much of the full-disk reserve it may use: `write`
 * (user data: none of it), `delete` (a transaction that only deletes: the delete share), `upkeep`
 * (checkpoints: all of it), `relocate` (the cleaner moving a victim's live records: all of it,
 * and what it takes is *lent*: the victim, once emptied, gives a segment back, so until the
 * cleaner says so ({@link SegmentSpace.lentReturned}) the others leave the reserve less what was
 * lent, rather than grow the file for a dip that is about to end).
 */
export type SpaceUse = "write" | "delete" | "upkeep" | "relocate";

/** The full-disk reserve, in bytes of room (see the module comment). */
export interface SpaceReserve {
  /** Kept for upkeep: a checkpoint and a cleaning victim's live records. */
  readonly upkeepBytes: number;
  /** Kept for transactions that only delete, on top of `upkeepBytes`. */
  readonly deleteBytes: number;
}

/** What user writes appended since the last transaction settled (not yet in the store's state). */
export interface PendingWrites {
  readonly records: number;
  readonly bytes: number;
  readonly largestRecordBytes: number;
}

/**
 * The full-disk reserve as the layer above sizes it: for its state now, plus `pending` user
 * writes as if they were committed (what they would make the reserve grow to).
 * `pending` is valid only during the call (the space reuses it): read it, do not keep it.
 */
export type ReserveSizer = (pending: PendingWrites) => SpaceReserve;

const NO_WRITES: PendingWrites = { records: 0, bytes: 0, largestRecordBytes: 0 };

/** How often the writer took its rarer ways (statistics; the torture checks they happen). */
export interface SpaceCounters {
  /** A free segment named as successor instead of one the file did not hold (swapSuccessorIfBlocked). */
  successorsRenamed: number;
  /** The rest of a segment the file could not grow into skipped, the log going on in the successor. */
  segmentsSkipped: number;
  /** A renamed successor no unit named before the writer left the segment: the old one entered. */
  renamesUndone: number;
}

/** Smallest piece the file grows by. */
export const MIN_GROWTH_BYTES = 128 << 10;

/** {@link SegmentSpace.grant}'s answer when the writer should skip to the successor's start. */
export const SKIP_SEGMENT = -1;

/** The segments of one log file. */
export class SegmentSpace {
  private readonly backend: IoBackend;
  private readonly file: FileHandle;
  private readonly geometry: LogGeometry;
  private readonly prewriter: SegmentPrewriter;
  private readonly maxFileBytes: number;
  private readonly table = new SegmentTable();
  /**
   * Bytes of the file (all allocated: it grows only by fallocate, and is cut only at its end),
   * rounded down to 4 KiB: a file cut short by hand or by damage may end inside a block.
   */
  private fileBytes: number;
  /** Bytes below this were in the file when it was opened (maybe stale log): never zero-filled. */
  private freshFrom: number;
  /** Sequence number and physical index of the segment the writer is in, and the index of the next. */
  private currentSeq = 0;
  private currentIndex = 0;
  private nextIndex = 0;
  /**
   * The successor the last unit written in the current segment names (undefined: none written
   * there yet). The writer enters this one, whatever {@link nextIndex} is by then.
   */
  private lastNamed: number | undefined;
  /** Where the next append goes (rotation.ts: the end of what was reserved so far). */
  private writerEnd: () => number = () => 0;
  private sizeReserve: ReserveSizer = () => ({ upkeepBytes: 0, deleteBytes: 0 });
  /**
   * User writes appended since the last transaction settled (see {@link writesSettled}), and the
   * query handed to the sizer. Both mutated in place: they are touched on every user append, and
   * an object per append (two, with the query) was most of what this check cost a bulk load.
   */
  private readonly pending = { records: 0, bytes: 0, largestRecordBytes: 0 };
  private readonly query = { records: 0, bytes: 0, largestRecordBytes: 0 };
  /** Bytes relocations took from the reserve that their victim gives back (see {@link SpaceUse}). */
  private lentBytes = 0;
  /** Why the file could not grow the last time it tried (cleared when it grows). */
  private growthFailure: NoSpaceError | undefined;
  /** How often the rarer ways of the writer were taken (see {@link SpaceCounters}). */
  readonly counters: SpaceCounters = { successorsRenamed: 0, segmentsSkipped: 0, renamesUndone: 0 };

  constructor(backend: IoBackend, file: FileHandle, geometry: LogGeometry, prewriter: SegmentPrewriter, maxFileBytes: number) {
    this.backend = backend;
    this.file = file;
    this.geometry = geometry;
    this.prewriter = prewriter;
    // A block device bounds the log by its own size: segments past its end do not exist.
    this.maxFileBytes = file.deviceBytes === undefined ? maxFileBytes : Math.min(maxFileBytes, file.deviceBytes);
    const sizeBytes = backend.fileSizeBytes(file);
    this.fileBytes = alignDown(sizeBytes);
    this.freshFrom = alignUp(sizeBytes);
  }

  /** Largest the file may grow to: `maxFileBytes`, or a block device's size when smaller. */
  get fileBytesLimit(): number {
    return this.maxFileBytes;
  }

  /** A block device: its segments exist already, and it is never grown or truncated. */
  private get onDevice(): boolean {
    return this.file.deviceBytes !== undefined;
  }

  /** Segments a block device holds. */
  private get deviceSegments(): number {
    return this.geometry.segmentsIn(this.maxFileBytes, "whole");
  }

  // ───────────────────────── the writer's segments ─────────────────────────

  /** Sequence number of the segment the log is writing. */
  get tailSeq(): number {
    return this.currentSeq;
  }

  /** Physical index of the segment the log is writing, and of the one that follows it. */
  get tailIndex(): number {
    return this.currentIndex;
  }

  get successorIndex(): number {
    return this.nextIndex;
  }

  /**
   * The successor a position in the current segment names (a checkpoint's start, the replay
   * start): the one the last unit written here named, which the writer will enter if no unit
   * follows the position; the current successor if no unit was written here yet.
   */
  get namedSuccessor(): number {
    return this.lastNamed ?? this.nextIndex;
  }

  /**
   * Recovery ended at `end`: hold its segment and (when writable) its successor — the one the
   * last unit named, or a newly taken one. Nothing is allocated here: the first unit's grant
   * grows the file, and a store reopened on a full disk opens all the same.
   */
  startAt(end: LogPosition, writable: boolean): void {
    this.currentSeq = this.geometry.seqOf(end.address);
    this.currentIndex = end.segmentIndex;
    this.table.assign(this.currentSeq, this.currentIndex);
    if (!writable) return;
    if (end.nextSegmentIndex === UNKNOWN_SEGMENT || end.nextSegmentIndex === end.segmentIndex) {
      this.nextIndex = this.take();
      this.lastNamed = undefined;
    } else {
      this.nextIndex = end.nextSegmentIndex;
      this.table.claim(this.nextIndex);
      // Mid-segment, the position is right after a unit, which named this successor.
      this.lastNamed = this.geometry.isSegmentStart(end.address) ? undefined : end.nextSegmentIndex;
    }
    // Segments taken for the writer after the checkpoint that the durable log never reached
    // are nobody's now (a unit written there was lost with the crash): free again.
    this.table.reconcile([this.currentIndex, this.nextIndex]);
  }

  /**
   * The writer moves into segment `seq` (the next one): it enters the successor the last unit
   * of the current segment named, and a new successor is taken now. Throws (NoSpaceError, on a
   * block device with no segment left) with nothing changed when none can be had.
   */
  enter(seq: number): void {
    let index = this.nextIndex;
    const named = this.lastNamed;
    if (named !== undefined && named !== index) {
      // Renamed after the segment's last unit was written (see swapSuccessorIfBlocked): that unit
      // names the old successor, so the writer goes there; the other goes back unused.
      this.counters.renamesUndone += 1;
      this.table.claim(named);
      this.table.giveBack(index);
      this.nextIndex = index = named;
    }
    const following = this.take();
    this.currentSeq = seq;
    this.currentIndex = index;
    this.nextIndex = following;
    this.lastNamed = undefined;
    this.table.assign(seq, index);
  }

  /** A unit of the current segment was finalized naming `successor` (the current {@link successorIndex}). */
  noteNamed(successor: number): void {
    this.lastNamed = successor;
  }

  /** Where the next append goes, from now on: `end()` (the rotation's end of what was reserved). */
  attachWriter(end: () => number): void {
    this.writerEnd = end;
  }

  /**
   * A successor: the lowest free segment, else a new slot at the end of the file (allocated
   * only when the writer gets there), else (a block device) the next segment of the device,
   * zeroed first: a device's segments hold whatever was there before (prewrite.ts).
   */
  private take(): number {
    if (this.table.freeCount > 0) return this.table.takeFree();
    if (!this.onDevice) return this.table.takeNew();
    const index = this.table.nextNewIndex;
    if (index >= this.deviceSegments) throw new NoSpaceError(`the ${this.maxFileBytes}-byte device is full: no segment left to follow the log's tail`);
    this.table.addNew(index);
    this.prewriter.zeroSegment(index, this.geometry.segmentFileOffset(index), this.geometry.segmentSize);
    return this.table.takeFree();
  }

  /**
   * The room a unit opening at log address `base` of the current segment may take, header
   * included: allocated bytes, up to `fullBytes` (what the buffer and the segment allow), at
   * least `leastBytes` (more than a slot there got before, when a reservation did not fit it) and
   * {@link MIN_UNIT_ROOM_BYTES}. Grows the file first, by pieces, as far as the slot needs: while
   * the file is small a unit gets less than a whole buffer, so that an empty store stays small.
   * Which appends may use the room, and so the reserve beyond them, is checked per append
   * ({@link assertRoomFor}, which grows the file for the reserve), not here: growing here for the
   * reserve beyond a whole buffer's room would hold a buffer more of room than appends need.
   * {@link SKIP_SEGMENT} when the current segment has no more room and cannot grow but the
   * successor has (`unitWritten`: a unit of this segment exists, which names the successor, so
   * recovery follows the skip). Throws NoSpaceError (for `use`) otherwise.
   */
  grant(use: SpaceUse, base: number, fullBytes: number, leastBytes: number, unitWritten: boolean): number {
    this.swapSuccessorIfBlocked();
    const least = Math.min(fullBytes, Math.max(MIN_UNIT_ROOM_BYTES, leastBytes));
    const want = leastBytes > 0 ? fullBytes : Math.min(fullBytes, this.stepBytes());
    if (!this.onDevice) this.growFor(base, want, 0);
    const available = this.allocatedFrom(base);
    // No more than `want`, even where more is allocated: a buffer that took it all would leave
    // the reserve no room of its own, and the file would grow at every unit.
    const granted = alignDown(Math.min(want, available));
    if (granted >= least) return granted;
    if (unitWritten && this.roomAfterCurrent() >= MIN_UNIT_ROOM_BYTES) {
      this.counters.segmentsSkipped += 1;
      return SKIP_SEGMENT;
    }
    throw this.noSpace(use);
  }

  /** Bytes to grow the file by at a time: an eighth of its size, at least {@link MIN_GROWTH_BYTES}, at most a segment. */
  stepBytes(): number {
    return Math.min(this.geometry.segmentSize, Math.max(MIN_GROWTH_BYTES, alignUp(Math.floor(this.fileBytes / 8))));
  }

  /**
   * Grow the file so that the current segment holds `[base, base + wantBytes)` (as far as the
   * segment goes) and `reserveBytes` of room lie beyond it. Stops at the first growth that fails
   * for lack of space (remembered until one succeeds).
   */
  private growFor(base: number, wantBytes: number, reserveBytes: number, stepBytes = this.stepBytes()): void {
    const end = Math.min(base + wantBytes, this.geometry.nextSegmentStart(base));
    // A few rounds: growing through a segment that is not on the writer's way (a live one the
    // file's end cuts through) adds no room, and the next round grows past it.
    for (let round = 0; round < 4; round++) {
      // A free slot the last round grew into may become the successor (see gapToRoom).
      if (round > 0) this.swapSuccessorIfBlocked();
      const missing = Math.max(0, end - base - this.allocatedFrom(base));
      const short = Math.max(0, reserveBytes - this.roomBeyond(end));
      if (missing + short === 0) return;
      // The file grows only at its end: what lies between that end and where growing adds what
      // is lacking is grown through at once (see gapToRoom).
      const gap = this.gapToRoom(missing);
      if (!this.growFile(missing + short + gap, stepBytes)) return;
    }
  }

  /**
   * Bytes from the file's end to where growing it adds what {@link growFor} lacks (`missing`
   * bytes of the current segment, else room):
   * - the current segment's start, when it lacks bytes or the file's end lies in or before it;
   * - when a unit does not fit in what the file holds of the successor: nothing past the
   *   current segment is room until one does ({@link roomAfterCurrent}), so free slots before
   *   it that the file does not hold (a cut left them so: {@link shrinkFile} keeps the slots up
   *   to the successor) add none. Stopping in them, four rounds of growth could end short of
   *   the successor: a torture run found writes refused with "the file cannot grow". So the
   *   lowest free slot's start, when the successor may be renamed to it once it holds a unit
   *   ({@link swapSuccessorIfBlocked}: a unit of the current segment names the successor), else
   *   the successor's;
   * - else the first segment from the one the end is in that is the writer's, its successor,
   *   free, or not in the table yet: segments that hold log add no room (their rest was never
   *   written: the end of a segment skipped, one a power cut left short).
   */
  private gapToRoom(missing: number): number {
    const geometry = this.geometry;
    const current = geometry.segmentFileOffset(this.currentIndex);
    if (missing > 0 || this.fileBytes < current + geometry.segmentSize) return Math.max(0, current - this.fileBytes);
    if (this.allocatedIn(this.nextIndex) < MIN_UNIT_ROOM_BYTES) {
      const lowest = this.table.freeIndices[0];
      const target = this.lastNamed !== undefined && lowest !== undefined && lowest < this.nextIndex ? lowest : this.nextIndex;
      return Math.max(0, geometry.segmentFileOffset(target) - this.fileBytes);
    }
    const free = new Set(this.table.freeIndices);
    let index = geometry.segmentsIn(this.fileBytes, "whole");
    while (index < this.table.fileSegments && index !== this.currentIndex && index !== this.nextIndex && !free.has(index)) index++;
    return Math.max(0, geometry.segmentFileOffset(index) - this.fileBytes);
  }

  /**
   * Add at least `bytes` (rounded up to `step`) at the end of a regular file, allocated, without
   * going over `maxFileBytes`. New segment slots the file now reaches join the free list; the
   * fresh bytes are offered to the pre-writer. False when the file cannot grow (the failure is
   * kept for {@link outOfSpace}); an I/O error of another kind is thrown.
   */
  private growFile(bytes: number, step: number): boolean {
    const geometry = this.geometry;
    const from = this.fileBytes;
    const limit = alignDown(this.maxFileBytes);
    const to = Math.min(limit, from + Math.ceil(bytes / step) * step);
    if (to <= from) {
      this.growthFailure = new NoSpaceError(`the log needs ${from + bytes} bytes of file, over maxFileBytes ${this.maxFileBytes}`);
      return false;
    }
    try {
      this.allocate(from, to - from);
    } catch (error) {
      if (!(error instanceof NoSpaceError)) throw error;
      // A whole step may not fit where a small one does: a nearly full disk still gives what it has.
      if (step > MIN_GROWTH_BYTES) return this.growFile(bytes, MIN_GROWTH_BYTES);
      this.growthFailure = error;
      return false;
    }
    this.growthFailure = undefined;
    this.refusedAtRoom = undefined;
    this.fileBytes = to;
    while (geometry.segmentFileOffset(this.table.fileSegments) < to) this.table.addNew(this.table.nextNewIndex);
    // Offer each segment's fresh piece to the pre-writer (it zero-fills them while units are small).
    const fresh = Math.max(from, this.freshFrom);
    for (let index = geometry.segmentsIn(fresh, "whole"); geometry.segmentFileOffset(index) < to; index++) {
      const start = Math.max(fresh, geometry.segmentFileOffset(index));
      const stop = Math.min(to, geometry.segmentFileOffset(index + 1));
      if (stop > start) this.prewriter.onFreshRange(index, start, stop - start);
    }
    return true;
  }

  /**
   * fallocate `[offset, +length)`. On a full disk fallocate may allocate part of the range and
   * grow the file over it before it fails with ENOSPC: that part is cut off again, so the failed
   * attempt changes nothing (its blocks go back to the filesystem, and the file keeps no holes).
   */
  private allocate(offsetBytes: number, lengthBytes: number): void {
    try {
      this.backend.allocateSpace(this.file, offsetBytes, lengthBytes);
    } catch (error) {
      if (error instanceof NoSpaceError) {
        try {
          if (this.backend.fileSizeBytes(this.file) > offsetBytes) this.backend.truncate(this.file, offsetBytes);
        } catch {
          // Best effort: what is left past the end is allocated again by the next growth, which
          // starts at the size this object knows.
        }
      }
      throw error;
    }
  }

  // ───────────────────────── room ─────────────────────────

  /** Allocated bytes of physical segment `index` (from its start: the file has no holes). */
  allocatedIn(index: number): number {
    if (this.onDevice) return index < this.deviceSegments ? this.geometry.segmentSize : 0;
    return Math.min(this.geometry.segmentSize, Math.max(0, this.fileBytes - this.geometry.segmentFileOffset(index)));
  }

  /** Allocated bytes of the current segment from log address `address` on. */
  private allocatedFrom(address: number): number {
    const start = this.geometry.segmentStart(this.currentSeq);
    return Math.max(0, start + this.allocatedIn(this.currentIndex) - address);
  }

  /**
   * Room after the current segment: the successor and every free segment, once a unit fits in
   * the successor's allocated part (else the writer cannot get past it, and they do not count).
   * On a block device, the segments it has not used yet count too, but for one: a segment is
   * entered only with a successor to name, and a device cannot add a slot for it as a file can.
   */
  private roomAfterCurrent(): number {
    const successor = this.allocatedIn(this.nextIndex);
    if (successor < MIN_UNIT_ROOM_BYTES) return 0;
    const segment = this.geometry.segmentSize;
    const free = this.table.freeIndices;
    if (this.onDevice) {
      // Entering a segment takes the one after it: with `spare` segments left to take, the
      // writer gets into the successor and `spare − 1` more (the last taken is only named).
      const spare = free.length + Math.max(0, this.deviceSegments - this.table.fileSegments);
      return spare === 0 ? 0 : successor + (spare - 1) * segment;
    }
    let bytes = successor + free.length * segment;
    // Only the last segments of the file can be partly (or not) there.
    const whole = this.geometry.segmentsIn(this.fileBytes, "whole");
    for (let i = free.length - 1; i >= 0 && (free[i] as number) >= whole; i--) {
      const allocated = this.allocatedIn(free[i] as number);
      bytes -= segment - (allocated >= MIN_UNIT_ROOM_BYTES ? allocated : 0);
    }
    return bytes;
  }

  /** Room from log address `address` of the current segment on (see the module comment). */
  private roomBeyond(address: number): number {
    return this.allocatedFrom(address) + this.roomAfterCurrent();
  }

  /**
   * When the successor is not there (a slot at the end the file does not hold yet) but a free
   * segment is, make the free one the successor: otherwise a full disk would strand the writer
   * in front of the successor, with free segments it cannot reach. Only once a unit of the
   * current segment names a successor: units written from now on name the new one, and if none
   * is, {@link enter} goes to the one the last unit named.
   */
  private swapSuccessorIfBlocked(): void {
    if (this.onDevice || this.lastNamed === undefined || this.table.freeCount === 0) return;
    if (this.allocatedIn(this.nextIndex) >= MIN_UNIT_ROOM_BYTES) return;
    const lowest = this.table.freeIndices[0] as number;
    if (this.allocatedIn(lowest) < MIN_UNIT_ROOM_BYTES) return;
    this.table.takeFree();
    this.table.giveBack(this.nextIndex);
    this.nextIndex = lowest;
    this.counters.successorsRenamed += 1;
  }

  // ───────────────────────── the full-disk reserve ─────────────────────────

  /**
   * Keep the reserve `sizer` says (for the state of the layer above, asked afresh each time)
   * allocated ahead of the writer for deletes and upkeep (see the module comment). Grows the
   * file now if it can; if it cannot, the reserve is completed by the next growth that
   * succeeds. Throws only for an I/O error other than no space.
   */
  keepReserve(sizer: ReserveSizer): void {
    this.sizeReserve = sizer;
    this.growForReserve();
  }

  /**
   * The transaction whose user writes were counted since the last call committed or aborted
   * (the layer above calls this holding its transaction turn): its records are in the state the
   * reserve is sized for now, or are garbage. Grows the file for the reserve as it is now.
   */
  writesSettled(): void {
    this.pending.records = 0;
    this.pending.bytes = 0;
    this.pending.largestRecordBytes = 0;
    this.growForReserve();
  }

  private growForReserve(): void {
    if (this.onDevice) return;
    this.swapSuccessorIfBlocked();
    // A top-up of the reserve (upkeep spent some, or it grew with the store) is small: grown by
    // as little, not by a whole step, which a cleaner keeping the file small would cut again.
    this.growFor(this.writerEnd(), 0, Math.max(0, this.reserveTotal - this.lentBytes), MIN_GROWTH_BYTES);
  }

  /** Relocations appended `lengthBytes`, lent from the reserve (see {@link SpaceUse}). */
  noteRelocated(lengthBytes: number): void {
    this.lentBytes += lengthBytes;
  }

  /**
   * The cleaner is done with its victim (emptied and given back, or given up): what relocations
   * took is no longer lent, and the reserve is kept whole again, growing the file if it must.
   */
  lentReturned(): void {
    if (this.lentBytes === 0) return;
    this.lentBytes = 0;
    this.growForReserve();
  }

  /** The reserve for the state now, with `pending` user writes counted as committed. */
  private reserveWith(pending: PendingWrites): SpaceReserve {
    const reserve = this.sizeReserve(pending);
    const { upkeepBytes, deleteBytes } = reserve;
    if (!Number.isSafeInteger(upkeepBytes) || !Number.isSafeInteger(deleteBytes) || upkeepBytes < 0 || deleteBytes < 0) {
      throw new Error(`bad space reserve ${JSON.stringify(reserve)}`);
    }
    return reserve;
  }

  /** Bytes of the reserve being kept (for the committed state). */
  get reserveTotal(): number {
    const reserve = this.reserveWith(NO_WRITES);
    return reserve.upkeepBytes + reserve.deleteBytes;
  }

  /** The reserve being kept, in whole segments (rounded up). */
  get reserveSegments(): number {
    return Math.ceil(this.reserveTotal / this.geometry.segmentSize);
  }

  /** Room ahead of the writer now: what the log can still append without new disk blocks. */
  get roomBytes(): number {
    return this.roomBeyond(this.writerEnd());
  }

  /**
   * Bytes of room an append for `use` must leave: none (upkeep), the upkeep share (deletes), or
   * the whole reserve and what it grows by for the writes not yet counted in it (user writes,
   * `lengthBytes` being appended now).
   */
  private floorFor(use: SpaceUse, lengthBytes = 0): number {
    if (use === "upkeep" || use === "relocate") return 0;
    // What relocations in progress took of the reserve is theirs to spend (see SpaceUse).
    if (use === "delete") return Math.max(0, this.reserveWith(NO_WRITES).upkeepBytes - this.lentBytes);
    const pending = this.pending;
    const query = this.query;
    query.records = pending.records + (lengthBytes === 0 ? 0 : 1);
    query.bytes = pending.bytes + lengthBytes;
    query.largestRecordBytes = Math.max(pending.largestRecordBytes, lengthBytes);
    const reserve = this.reserveWith(query);
    return Math.max(0, reserve.upkeepBytes + reserve.deleteBytes - this.lentBytes);
  }

  /**
   * Throws NoSpaceError unless an append of `lengthBytes` for `use` may go on: the room beyond
   * where it goes, less what it takes (its bytes and a unit's rounding), must be at least what
   * `use` must leave — for user writes, the reserve as it will be once they are committed (they
   * make it grow: more live data, a larger checkpoint). Growing the file is tried first. Cheap
   * when there is room. A reservation waiting for a buffer asks again with `lengthBytes` 0.
   */
  assertRoomFor(use: SpaceUse, lengthBytes: number): void {
    const floor = this.floorFor(use, lengthBytes) + (lengthBytes > 0 ? lengthBytes + ALIGNMENT_BYTES + UNIT_HEADER_BYTES : 0);
    if (floor === 0) return;
    const end = this.writerEnd();
    if (this.roomBeyond(end) >= floor) return;
    if (!this.onDevice) {
      this.swapSuccessorIfBlocked();
      // Writes grow the file by whole steps (an eighth of it, up to a segment): grown by 128 KiB
      // at a time, a 512 MiB load of 1 MiB values made 1 083 fallocate calls instead of 87 and
      // ran ~20% slower (16 in flight, strace -c, alternating runs). Only the reserve's top-ups
      // are small (growForReserve); a step too many is cut again by the cleaner's space goal.
      this.growFor(end, 0, floor);
    }
    if (this.roomBeyond(end) >= floor) return;
    throw this.noSpace(use);
  }

  /** A user write appended a record of `lengthBytes` (counted until {@link writesSettled}). */
  noteWritten(lengthBytes: number): void {
    const pending = this.pending;
    pending.records += 1;
    pending.bytes += lengthBytes;
    if (lengthBytes > pending.largestRecordBytes) pending.largestRecordBytes = lengthBytes;
  }

  /**
   * True when user writes cannot have another unit: the room beyond the open buffer is short of
   * the reserve plus one unit, and the file could not grow the last time it tried (a block
   * device cannot).
   */
  get outOfSpace(): boolean {
    if (!this.onDevice && this.growthFailure === undefined) return false;
    const room = this.roomBeyond(this.writerEnd());
    if (room < this.floorFor("write") + MIN_UNIT_ROOM_BYTES) return true;
    // A write was refused (it needed more than is left) and no room has come back since.
    return this.refusedAtRoom !== undefined && room <= this.refusedAtRoom;
  }

  /** Room when a write was last refused for lack of space (see {@link outOfSpace}). */
  private refusedAtRoom: number | undefined;

  private noSpace(use: SpaceUse): NoSpaceError {
    const room = this.roomBeyond(this.writerEnd());
    if (use === "write") this.refusedAtRoom = room;
    const why = this.onDevice ? `the ${this.maxFileBytes}-byte device is full` : (this.growthFailure?.message ?? "the file cannot grow");
    const what = use === "write" ? "new data" : use === "delete" ? "deletes" : use === "relocate" ? "the cleaner's relocations" : "the store's upkeep";
    const keptFor = use === "write" ? "deletes, compaction and checkpoints" : "compaction and checkpoints";
    return new NoSpaceError(
      `no room for ${what}: ${room} bytes of room left, ${this.floorFor(use)} kept for ${keptFor}; ${why}`,
    );
  }

  // ───────────────────────── the table ─────────────────────────

  /** Physical index of live segment `seq`, or undefined. */
  indexOf(seq: number): number | undefined {
    return this.table.indexOf(seq);
  }

  /** Physical index of `seq` while its bytes are still there (live or pending), or undefined. */
  heldIndexOf(seq: number): number | undefined {
    return this.table.heldIndexOf(seq);
  }

  /** Record segments a walk found (seq → index) as part of the log. */
  assignAll(segments: ReadonlyArray<readonly [number, number]>): void {
    for (const [seq, index] of segments) this.table.assign(seq, index);
  }

  /** Load a checkpoint's table, keeping the segments walks have found already. */
  restore(state: SegmentTableState): void {
    const assigned = this.table.liveSeqs().map((seq) => [seq, this.table.indexOf(seq) as number] as const);
    this.table.restore(state);
    this.assignAll(assigned);
  }

  snapshot(): SegmentTableState {
    return this.table.snapshot();
  }

  liveSeqs(): number[] {
    return this.table.liveSeqs();
  }

  get liveCount(): number {
    return this.table.liveCount;
  }

  get freeCount(): number {
    return this.table.freeCount;
  }

  get pendingCount(): number {
    return this.table.pendingCount;
  }

  /** Segment slots of the file: those it holds (whole or in part) and the writer's successor. */
  get fileSegments(): number {
    return this.table.fileSegments;
  }

  /** Bytes of the file as this object knows them (a block device: the part of it the log has taken). */
  get allocatedBytes(): number {
    return this.onDevice ? Math.min(this.maxFileBytes, this.geometry.fileBytesFor(this.table.fileSegments)) : this.fileBytes;
  }

  // ───────────────────────── giving back ─────────────────────────

  /** Give `seq` back; it stays pending until the log up to `durableAt` is durable (and the rule allows). */
  release(seq: number, durableAt: number): void {
    this.table.release(seq, durableAt);
  }

  /**
   * Free the pending segments the reuse rule allows now: the log is durable up to `stableAddress`,
   * the newest checkpoint starts at `checkpointStart` (none: nothing is freed) and the durable
   * tail still needs the log from `retainedFrom` on.
   */
  promotePending(stableAddress: number, checkpointStart: number | undefined, retainedFrom: number): void {
    if (this.table.pendingCount === 0 || checkpointStart === undefined) return;
    const retainedFromSeq = Number.isFinite(retainedFrom) ? this.geometry.seqOf(retainedFrom) : Number.POSITIVE_INFINITY;
    this.table.promotePending(stableAddress, this.geometry.seqOf(checkpointStart), retainedFromSeq);
  }

  /**
   * Cut the file's end: free segments there, and allocated room the reserve does not need (or
   * beyond `keepRoomBytes` of room, when more is asked for). Returns the bytes given back. Safe
   * at any time: no live or pending segment, the current one among them, is cut; nor is a
   * zero-fill in flight (its write would grow the file again past the cut).
   */
  shrinkFile(readOnly: boolean, keepRoomBytes = this.reserveTotal): number {
    if (readOnly) throw new ReadOnlyError("shrinkFile on a read-only log");
    // A block device is never truncated: its free segments stay free, for the log to reuse.
    if (this.onDevice) return 0;
    const geometry = this.geometry;
    const before = this.fileBytes;
    // Everything held keeps what it has: live and pending segments, the current one among them,
    // as far as the file holds them (the current one's allocated rest is room the writer uses).
    const highest = this.table.highestHeldIndex();
    const keep = alignUp(Math.min(before, geometry.segmentFileOffset(highest + 1)));
    // Then as much more as the reserve needs: room counts only what the file holds, so try cuts
    // from the lowest up (each step adds at least the room it lacked, where that room can be).
    let cut = keep;
    for (let round = 0; round < 8 && cut < before; round++) {
      this.fileBytes = cut;
      const short = Math.max(this.reserveTotal, keepRoomBytes) - this.roomBeyond(this.writerEnd());
      this.fileBytes = before;
      if (short <= 0) break;
      cut = Math.min(before, alignUp(cut + short));
    }
    // Past the held segments, cut at a segment's boundary: a free segment cut in part would be
    // grown back as soon as the writer took it.
    if (cut > keep) cut = Math.min(before, geometry.segmentFileOffset(geometry.segmentsIn(cut, "started")));
    if (cut >= before || this.prewriter.overlaps(cut, before)) return 0;
    this.backend.truncate(this.file, cut);
    this.fileBytes = cut;
    // Cut bytes are gone: grown again, they read as zeros.
    this.freshFrom = Math.min(this.freshFrom, cut);
    // Free slots the file no longer reaches go from the table (the writer's two are kept).
    const slots = Math.max(geometry.segmentsIn(cut, "started"), highest + 1, this.currentIndex + 1, this.nextIndex + 1);
    this.table.shrinkTo(slots);
    return before - cut;
  }
}
