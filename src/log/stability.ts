/**
 * What is durable. Units are registered in log order; each becomes durable when its write has
 * completed *and* a datasync issued after that completion has completed. Writes may finish in any
 * order (tailLocalized mode), so durable units can form islands ahead of a gap; `stableAddress`
 * advances only over the gap-free prefix, and never goes backwards.
 *
 * Addresses are logical log bytes everywhere, the one unit (bloom_lfs compared a byte address
 * against a slot index). Nothing counts as durable before it was written: `stableAddress` starts
 * at the log's start and only a completed write plus datasync moves it.
 *
 * @module
 */

interface TrackedUnit {
  readonly end: number;
  written: boolean;
  durable: boolean;
}

/** Tracks units from registration to durability. */
export class StabilityTracker {
  private readonly units: TrackedUnit[] = [];
  private head = 0;
  private nextId = 0;
  private stable: number;
  /** Units written but not yet covered by a completed datasync, by id. */
  private readonly writtenUnsynced: number[] = [];

  constructor(startAddress: number) {
    this.stable = startAddress;
  }

  /** Every byte below this address is on stable storage. */
  get stableAddress(): number {
    return this.stable;
  }

  /** Units registered and not yet durable. */
  get pendingUnits(): number {
    return this.nextId - this.head;
  }

  /** Units written whose datasync has not been issued yet. */
  get unsyncedUnits(): number {
    return this.writtenUnsynced.length;
  }

  /** Register the next unit of the log, ending at `end`; returns its id. */
  register(end: number): number {
    const last = this.units[this.units.length - 1];
    if (end <= (last?.end ?? this.stable)) throw new Error(`unit end ${end} does not advance the log`);
    this.units.push({ end, written: false, durable: false });
    return this.nextId++;
  }

  /** The unit's write completed (not yet durable: a datasync must follow). */
  markWritten(id: number): void {
    const unit = this.unit(id);
    if (unit.written) throw new Error(`unit ${id} written twice`);
    unit.written = true;
    this.writtenUnsynced.push(id);
  }

  /** A datasync is being issued: it covers every unit written so far. Returns their ids. */
  beginSync(): number[] {
    return this.writtenUnsynced.splice(0, this.writtenUnsynced.length);
  }

  /** That datasync completed: its units are durable; advance over the gap-free prefix. */
  completeSync(ids: readonly number[]): void {
    for (const id of ids) this.unit(id).durable = true;
    let advanced = 0;
    while (this.head < this.nextId && (this.units[advanced] as TrackedUnit).durable) {
      this.stable = (this.units[advanced] as TrackedUnit).end;
      this.head += 1;
      advanced += 1;
    }
    if (advanced > 0) this.units.splice(0, advanced);
  }

  /** A datasync failed: its units go back to waiting for the next one. */
  failSync(ids: readonly number[]): void {
    this.writtenUnsynced.unshift(...ids);
  }

  /** True when the byte at `address` is durable. */
  isDurable(address: number): boolean {
    return address < this.stable;
  }

  private unit(id: number): TrackedUnit {
    const unit = this.units[id - this.head];
    if (unit === undefined) throw new Error(`unknown unit ${id}`);
    return unit;
  }
}
