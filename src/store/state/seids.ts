/**
 * Seids and seid spaces. A seid is a 64-bit key: its high 32 bits name a *space*, its low 32 bits
 * count inside it. Space 0 holds the fixed seids (ROOT_SEID); `allocateSeid()` uses space 1;
 * `createSeidSpace()` hands out 2, 3, … Allocation high-water marks are logged (Alloc records)
 * before the next commit and saved in every checkpoint, so a seid handed out and then used by a
 * durable transaction is never handed out again. A seid that holds an element is never handed
 * out either, however it came to hold one (a seid chosen by hand, written by a Worker, a standby's
 * primary, a restored backup): the counter steps over it.
 *
 * @module
 */
import { InvalidArgumentError, InvalidSeidError } from "../../errors.ts";

/** The seid of the application's root element, by convention. */
export const ROOT_SEID = 1n;
/** Never a valid seid: the "no element" value. */
export const NULL_SEID = 0n;
/** Largest valid seid. */
export const MAX_SEID = 0xffff_ffff_ffff_ffffn;
/** The space `allocateSeid()` uses when none is given. */
export const DEFAULT_SPACE = 1;
/** Spaces are u32 high halves. */
export const MAX_SPACE = 0xffff_ffff;
/** Seids per space: the low half, never 0. */
export const MAX_SEIDS_PER_SPACE = 0xffff_ffff;

/** Throw `InvalidSeidError` unless `seid` is a bigint in [1, 2^64 − 1]. */
export function checkSeid(seid: unknown): bigint {
  if (typeof seid !== "bigint") {
    throw new InvalidSeidError(`a seid must be a bigint in [1, 2^64 - 1], got ${typeof seid} ${describe(seid)}`);
  }
  if (seid < 1n || seid > MAX_SEID) throw new InvalidSeidError(`seid ${seid} is outside [1, 2^64 - 1]`);
  return seid;
}

function describe(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Next free counter per space, and the next space number. */
export class SeidSpaces {
  /** space → next low half to hand out (starts at 1). */
  private readonly next = new Map<number, number>([[DEFAULT_SPACE, 1]]);
  private nextSpace = DEFAULT_SPACE + 1;
  /** Told the space count each time it grows (src/workers publishes it for `spaces()` in Workers). */
  onSpaceCount: ((count: number) => void) | undefined;
  /** Spaces whose counter moved since the last Alloc record / checkpoint. */
  private readonly dirty = new Set<number>();
  /**
   * Whether the seid `space`:`low` (high half, low half) holds an element now (the mapping
   * table): such a seid is never handed out.
   */
  private readonly isLive: (space: number, low: number) => boolean;

  /** `isLive`: whether a seid holds a committed element (default: none does). */
  constructor(isLive: (space: number, low: number) => boolean = () => false) {
    this.isLive = isLive;
  }

  createSpace(): number {
    if (this.nextSpace > MAX_SPACE) throw new InvalidArgumentError(`all ${MAX_SPACE} seid spaces are in use`);
    const space = this.nextSpace++;
    this.next.set(space, 1);
    this.dirty.add(space);
    this.onSpaceCount?.(this.nextSpace);
    return space;
  }

  allocate(space: number): bigint {
    if (!Number.isInteger(space) || space < 1 || space > MAX_SPACE) {
      throw new InvalidArgumentError(`space must be an integer in [1, ${MAX_SPACE}], got ${space}`);
    }
    let counter = this.next.get(space);
    if (counter === undefined) throw new InvalidArgumentError(`seid space ${space} was never created`);
    // Step over seids that hold an element (written by hand, say): handing one out would let the
    // caller's next write replace it. One lookup per seid handed out, plus one per live seid
    // stepped over, each stepped over once (the counter only moves forward): no scan.
    while (counter <= MAX_SEIDS_PER_SPACE && this.isLive(space, counter)) counter += 1;
    if (counter > MAX_SEIDS_PER_SPACE) {
      // Seids stepped over are used: the counter keeps the progress.
      this.next.set(space, counter);
      this.dirty.add(space);
      throw new InvalidArgumentError(`seid space ${space} is exhausted`);
    }
    this.next.set(space, counter + 1);
    this.dirty.add(space);
    return (BigInt(space) << 32n) | BigInt(counter);
  }

  /**
   * Hand out `count` consecutive seids of `space` at once (a Worker's lease, src/workers): returns
   * the low half of the first (never a live seid). Logged like single allocations (the next Alloc
   * record). Seids of the block may hold elements: the Worker steps over those as it hands them
   * out (it sees the mapping table), since they can be written any time before it does.
   */
  allocateBlock(space: number, count: number): number {
    const first = this.allocate(space);
    const firstLow = Number(first & 0xffff_ffffn);
    const end = Math.min(firstLow + count, MAX_SEIDS_PER_SPACE + 1);
    this.next.set(space, end);
    return firstLow;
  }

  /** Counters changed since the last call: for an Alloc record. Includes the next space number. */
  takeDirty(): Array<[number, number]> | undefined {
    if (this.dirty.size === 0) return undefined;
    const out: Array<[number, number]> = [[0, this.nextSpace]];
    for (const space of this.dirty) out.push([space, this.next.get(space) as number]);
    this.dirty.clear();
    return out;
  }

  /**
   * Apply an Alloc record (replay) or a checkpoint's list: counters only move forward. `log`:
   * the counters came from elsewhere (a standby applying its primary's Alloc records) and must
   * reach this store's own log with its next commit, as if allocated here.
   */
  apply(entries: ReadonlyArray<readonly [number, number]>, log = false): void {
    for (const [space, value] of entries) {
      if (space === 0) {
        this.nextSpace = Math.max(this.nextSpace, value);
        this.onSpaceCount?.(this.nextSpace);
        // Any dirty space makes the next Alloc record carry the space counter too.
        if (log) this.dirty.add(DEFAULT_SPACE);
        continue;
      }
      this.next.set(space, Math.max(this.next.get(space) ?? 1, value));
      if (log) this.dirty.add(space);
    }
  }

  /**
   * Spaces are numbered in the order they are created, so the spaces are 0 … `spaceCount − 1`
   * (Alloc records and checkpoints carry the count with every created space's counter).
   */
  get spaceCount(): number {
    return this.nextSpace;
  }

  /** Every space that exists, ascending: 0 (fixed seids), 1 and each one created. */
  spaces(): number[] {
    return [0, ...this.next.keys()].sort((a, b) => a - b);
  }

  /** Everything, for a checkpoint. */
  snapshot(): Array<[number, number]> {
    return [[0, this.nextSpace], ...this.next.entries()];
  }
}
