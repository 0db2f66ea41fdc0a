/**
 * The base of a backup chain: the store's live elements at one consistent point, as a stream of
 * records cut into chunk objects (`base-…/chunk-NNNNNN.bin`, see manifest.ts).
 *
 * Why the store's own record format (format/records.ts): a single-part element's Data record is
 * copied **verbatim** from the log, CRC and all, so the base carries the very checksum the store
 * wrote and verified when it read the record; nothing is re-encoded and nothing can be corrupted
 * in between without the next reader (verify, restore) noticing. The stream is:
 *
 * ```
 * Alloc record              the seid spaces' high-water marks at the point (txId 0)
 * per element, any order:
 *   Data record             a whole single-part element, as in the log
 *   or Data records (PART)  the parts of a multipart element in order, as in the log (aux = index)
 *      Extents record       terminates it: aux = part count, body = (0, bytes) per part
 * Commit record             the trailer: txId = the base's transaction, aux = elements, body = its
 *                           commit time (empty when unknown); a base without it is cut short
 * ```
 * Records are padded to 8 bytes as in a unit, and may straddle chunk objects: chunks are a byte
 * stream cut at fixed sizes (so each chunk is a bounded upload, and a retry repeats one chunk).
 *
 * @module
 */
import { BackupCorruptionError, InvalidArgumentError } from "../errors.ts";
import { decodeAlloc, encodeAlloc } from "../store/format/alloc.ts";
import { decodeExtents, encodeExtents, FLAG_PART } from "../store/format/extents.ts";
import {
  decodeCommitTime,
  encodeCommitBody,
  paddedRecordBytes,
  RECORD_HEADER_BYTES,
  RecordType,
  sealRecord,
  verifyRecord,
  type RecordHeader,
} from "../store/format/records.ts";

/** Largest record a base may hold (a part or a single-part element is far smaller). */
export const MAX_BASE_RECORD_BYTES = 256 << 20;
/**
 * Default bytes per chunk object: small enough that uploading one overlaps copying the next
 * (a base smaller than one chunk cannot overlap at all), large enough to keep object counts low.
 */
export const DEFAULT_CHUNK_BYTES = 16 << 20;
/** Smallest chunk size accepted (S3's multipart minimum part is 5 MiB; smaller chunks are single PUTs). */
export const MIN_CHUNK_BYTES = 64 << 10;

/** Bytes of each buffer a chunk is assembled in (a chunk is a list of them, never one huge array). */
const PIECE_BYTES = 1 << 20;

/**
 * Makes a base's byte stream and hands it out in chunks of exactly `chunkBytes` (the last
 * shorter). A chunk is a list of buffers of at most 1 MiB: allocating (and zeroing, and faulting
 * in) one 64 MiB array per chunk cost more than the whole copy.
 */
export class BaseWriter {
  private readonly chunkBytes: number;
  private readonly onChunk: (index: number, pieces: readonly Uint8Array[], bytes: number) => Promise<void>;
  private pieces: Uint8Array[] = [];
  private piece: Uint8Array | undefined;
  private pieceFill = 0;
  private chunkFill = 0;
  private index = 0;
  private draining: Promise<void> = Promise.resolve();
  /** Full chunks waiting for {@link drain}. */
  private readonly ready: Array<{ index: number; pieces: Uint8Array[]; bytes: number }> = [];
  /** Where pieces come from and go back to (see {@link PiecePool}). */
  private readonly pool: PiecePool;
  /** Bytes of the stream so far. */
  bytes = 0;
  /** Elements written so far. */
  elements = 0;

  /**
   * @param onChunk - called with each full chunk, in order, from {@link drain}
   * @param pool - pieces to reuse; by default a pool of this writer's own, two chunks deep
   */
  constructor(chunkBytes: number, onChunk: (index: number, pieces: readonly Uint8Array[], bytes: number) => Promise<void>, pool?: PiecePool) {
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > 1 << 30) {
      throw new InvalidArgumentError(`chunkBytes must be an integer in [${MIN_CHUNK_BYTES}, ${1 << 30}], got ${String(chunkBytes)}`);
    }
    this.chunkBytes = chunkBytes;
    this.onChunk = onChunk;
    this.pool = pool ?? new PiecePool(2 * chunkBytes);
  }

  /** The seid spaces at the point. */
  spaces(entries: ReadonlyArray<readonly [number, number]>): void {
    this.add(makeRecord(RecordType.Alloc, 0, 0n, entries.length, encodeAlloc(entries)));
  }

  /**
   * A verified record copied from the log (a whole element, or one part of one). Synchronous (it
   * copies the record, so `raw` may be a view of a buffer about to be reused); full chunks wait
   * for {@link drain}.
   */
  logRecord(raw: Uint8Array, isWholeElement: boolean): void {
    this.add(raw);
    if (isWholeElement) this.elements += 1;
  }

  /** The end of a multipart element whose parts were just written. */
  endMultipart(seid: bigint, partBytes: readonly number[]): void {
    const body = encodeExtents(partBytes.map((bytes) => ({ address: 0, bytes })));
    this.add(makeRecord(RecordType.Extents, 0, seid, partBytes.length, body));
    this.elements += 1;
  }

  /** Hand the full chunks to `onChunk`, in order, one call at a time (also when drains overlap). */
  drain(): Promise<void> {
    this.draining = this.draining.then(async () => {
      for (let next = this.ready.shift(); next !== undefined; next = this.ready.shift()) await this.onChunk(next.index, next.pieces, next.bytes);
    });
    return this.draining;
  }

  /** Chunks waiting for {@link drain}. */
  get pending(): number {
    return this.ready.length;
  }

  /** The trailer, then the last chunk. Returns the number of chunks. */
  async finish(transaction: number, commitTime: number | null): Promise<number> {
    const body = commitTime === null ? new Uint8Array(0) : encodeCommitBody(commitTime);
    this.add(makeRecord(RecordType.Commit, transaction, 0n, this.elements, body));
    if (this.chunkFill > 0) this.cut();
    await this.drain();
    return this.index;
  }

  private add(raw: Uint8Array): void {
    const padded = paddedRecordBytes(raw.length);
    let done = 0;
    while (done < padded) {
      // A piece never crosses a chunk boundary, so a chunk is exactly its pieces.
      const piece = (this.piece ??= this.newPiece(Math.min(PIECE_BYTES, this.chunkBytes - this.chunkFill)));
      const take = Math.min(piece.length - this.pieceFill, padded - done);
      // Bytes past the record's end are its zero padding (written: a recycled piece holds old bytes).
      const end = Math.min(raw.length, done + take);
      if (end > done) piece.set(raw.subarray(done, end), this.pieceFill);
      if (done + take > end) piece.fill(0, this.pieceFill + Math.max(0, end - done), this.pieceFill + take);
      this.pieceFill += take;
      this.chunkFill += take;
      done += take;
      if (this.pieceFill === piece.length) {
        this.pieces.push(piece);
        this.piece = undefined;
        this.pieceFill = 0;
      }
      if (this.chunkFill === this.chunkBytes) this.cut();
    }
    this.bytes += padded;
  }

  /**
   * Give back the pieces of a chunk that is stored (its put settled, so nothing reads them any
   * more): later chunks reuse them.
   */
  recycle(pieces: readonly Uint8Array[]): void {
    for (const piece of pieces) this.pool.give(piece);
  }

  private newPiece(length: number): Uint8Array {
    return length === PIECE_BYTES ? this.pool.take() : new Uint8Array(length);
  }

  private cut(): void {
    if (this.piece !== undefined) this.pieces.push(this.piece.subarray(0, this.pieceFill));
    this.ready.push({ index: this.index++, pieces: this.pieces, bytes: this.chunkFill });
    this.pieces = [];
    this.piece = undefined;
    this.pieceFill = 0;
    this.chunkFill = 0;
  }
}

/**
 * Spare 1 MiB pieces for the chunks of a base, reused instead of allocated: a fresh array is
 * faulted in page by page, and on this VM (paravirtualised page faults) copying into fresh
 * pieces ran at 1.6 GB/s against 10–46 GB/s into reused ones (a throwaway micro-benchmark,
 * records of 2 KiB and 64 KiB copied from a native buffer). Two chunks' worth is the least that keeps a copy in steady state: one chunk
 * fills while the one before it is stored, and a chunk's pieces come back only once its put
 * settles (at one chunk's worth, a third of the pieces were still fresh). A backup Worker keeps
 * one pool for all its copies, so only its first copy pays for the faults.
 */
export class PiecePool {
  private readonly spare: Uint8Array[] = [];
  private readonly limitBytes: number;

  /** @param limitBytes - pieces kept at most (whole pieces) */
  constructor(limitBytes: number) {
    this.limitBytes = limitBytes;
  }

  /** A piece of {@link PIECE_BYTES}, reused when one is spare. Its old bytes are still in it. */
  take(): Uint8Array {
    return this.spare.pop() ?? new Uint8Array(PIECE_BYTES);
  }

  /** Keep `piece` for a later take, if it is a whole piece and there is room. */
  give(piece: Uint8Array): void {
    if ((this.spare.length + 1) * PIECE_BYTES > this.limitBytes) return;
    if (piece.buffer.byteLength === PIECE_BYTES && piece.byteOffset === 0) this.spare.push(new Uint8Array(piece.buffer as ArrayBuffer));
  }

  /** Bytes kept. */
  get bytes(): number {
    return this.spare.length * PIECE_BYTES;
  }
}

function makeRecord(type: RecordType, txId: number, seid: bigint, aux: number, body: Uint8Array): Uint8Array {
  const raw = new Uint8Array(RECORD_HEADER_BYTES + body.length);
  raw.set(body, RECORD_HEADER_BYTES);
  sealRecord(raw, type, txId, seid, aux);
  return raw;
}

/** What a base holds, as {@link readBase} hands it out, in stream order. */
export type BaseEvent =
  | { kind: "spaces"; entries: Array<[number, number]> }
  /** `value` is a view of the base's bytes, valid until the next event is pulled: copy what you keep. */
  | { kind: "element"; seid: bigint; value: Uint8Array }
  | { kind: "part"; seid: bigint; index: number; body: Uint8Array }
  | { kind: "multipart-end"; seid: bigint; parts: number; sizeBytes: number }
  | { kind: "end"; transaction: number; commitTime: number | null; elements: number };

/** A source of a base's bytes: its chunks' bytes in order, each labelled with the chunk's name. */
export type BaseBytes = AsyncIterable<{ name: string; bytes: Uint8Array }>;

/**
 * Parse a base stream, checking every record's CRC and the stream's structure (spaces first,
 * parts in order and terminated, the trailer last and nothing after it). Errors are
 * `CorruptionError`s naming the chunk object where the bad record starts.
 */
export async function* readBase(source: BaseBytes): AsyncGenerator<BaseEvent> {
  let pending: Uint8Array = new Uint8Array(0);
  let pendingFrom = "";
  let sawSpaces = false;
  let ended = false;
  let multipart: { seid: bigint; parts: number; bytes: number } | undefined;
  let elements = 0;
  const fail = (where: string, message: string): never => {
    throw new BackupCorruptionError(where, `backup base ${where}: ${message}`);
  };

  function* drain(where: string, final: boolean): Generator<BaseEvent> {
    let offset = 0;
    while (pending.length - offset >= RECORD_HEADER_BYTES) {
      const view = new DataView(pending.buffer, pending.byteOffset + offset, RECORD_HEADER_BYTES);
      const recordBytes = view.getUint32(0, true);
      if (recordBytes === 0) {
        // Only the chunk's zero tail may follow the trailer.
        if (!ended) fail(where, `a zero record header at stream offset ${offset} before the trailer`);
        if (pending.subarray(offset).some((b) => b !== 0)) fail(where, "bytes after the trailer");
        offset = pending.length;
        break;
      }
      if (ended) fail(where, "records after the trailer");
      if (recordBytes < RECORD_HEADER_BYTES || recordBytes > MAX_BASE_RECORD_BYTES) fail(where, `a record claims ${recordBytes} bytes`);
      const padded = paddedRecordBytes(recordBytes);
      if (pending.length - offset < padded) break;
      const raw = pending.subarray(offset, offset + recordBytes);
      let header: RecordHeader;
      try {
        header = verifyRecord(raw);
      } catch (error) {
        return fail(where, (error as Error).message);
      }
      const body = raw.subarray(RECORD_HEADER_BYTES);
      offset += padded;
      if (!sawSpaces) {
        if (header.type !== RecordType.Alloc) fail(where, `the first record is of type ${header.type}, not the seid spaces`);
        sawSpaces = true;
        yield { kind: "spaces", entries: decodeAlloc(body) };
        continue;
      }
      if (header.type === RecordType.Data && (header.flags & FLAG_PART) !== 0) {
        if (multipart === undefined) {
          if (header.aux !== 0) fail(where, `seid ${header.seid}: part ${header.aux} without part 0`);
          multipart = { seid: header.seid, parts: 0, bytes: 0 };
        }
        if (header.seid !== multipart.seid || header.aux !== multipart.parts) {
          fail(where, `seid ${header.seid} part ${header.aux} where part ${multipart.parts} of seid ${multipart.seid} was expected`);
        }
        multipart.parts += 1;
        multipart.bytes += body.length;
        yield { kind: "part", seid: header.seid, index: header.aux, body: body.slice() };
        continue;
      }
      if (multipart !== undefined) {
        if (header.type !== RecordType.Extents || header.seid !== multipart.seid) {
          fail(where, `seid ${multipart.seid}: its parts are not followed by their extents record`);
        }
        const sizes = decodeExtents(body);
        const total = sizes.reduce((sum, part) => sum + part.bodyBytes, 0);
        if (sizes.length !== multipart.parts || header.aux !== multipart.parts || total !== multipart.bytes) {
          fail(where, `seid ${multipart.seid}: ${multipart.parts} parts of ${multipart.bytes} bytes, its extents record says ${sizes.length} of ${total}`);
        }
        yield { kind: "multipart-end", seid: multipart.seid, parts: multipart.parts, sizeBytes: total };
        multipart = undefined;
        elements += 1;
        continue;
      }
      if (header.type === RecordType.Data) {
        elements += 1;
        yield { kind: "element", seid: header.seid, value: body };
        continue;
      }
      if (header.type === RecordType.Commit) {
        let commitTime: number | null;
        try {
          commitTime = decodeCommitTime(body);
        } catch (error) {
          return fail(where, (error as Error).message);
        }
        if (header.aux !== elements) fail(where, `the trailer counts ${header.aux} elements, the base holds ${elements}`);
        ended = true;
        yield { kind: "end", transaction: header.txId, commitTime, elements };
        continue;
      }
      fail(where, `unexpected record type ${header.type}`);
    }
    pending = pending.subarray(offset);
    if (final && pending.length > 0) fail(where, `${pending.length} bytes of a record cut short at the end of the base`);
  }

  for await (const { name, bytes } of source) {
    let chunk = bytes;
    // A record cut by the end of the last chunk: join only it (joining the leftover with the
    // whole next chunk copied every byte of the base once more; restore spent ~15% of its time
    // there, `bun --cpu-prof`).
    while (pending.length > 0 && chunk.length > 0) {
      let want = chunk.length; // a zero tail (after the trailer): drain checks it whole
      if (pending.length < RECORD_HEADER_BYTES) {
        want = RECORD_HEADER_BYTES - pending.length;
      } else {
        const recordBytes = new DataView(pending.buffer, pending.byteOffset, 4).getUint32(0, true);
        // A length drain refuses is taken whole too: drain fails on it as soon as it looks.
        if (recordBytes >= RECORD_HEADER_BYTES && recordBytes <= MAX_BASE_RECORD_BYTES) want = paddedRecordBytes(recordBytes) - pending.length;
      }
      const take = Math.min(want, chunk.length);
      const joined = new Uint8Array(pending.length + take);
      joined.set(pending);
      joined.set(chunk.subarray(0, take), pending.length);
      pending = joined;
      chunk = chunk.subarray(take);
      yield* drain(pendingFrom, false);
    }
    if (chunk.length === 0) continue;
    pending = chunk;
    pendingFrom = name;
    yield* drain(pendingFrom, false);
  }
  yield* drain(pendingFrom || "(empty)", true);
  if (multipart !== undefined) fail(pendingFrom, `seid ${multipart.seid}: the base ends inside its parts`);
  if (!ended) fail(pendingFrom || "(empty)", "the base has no trailer: it was cut short");
}
