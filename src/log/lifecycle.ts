/**
 * The log's lifecycle state: open or closed, recovered or not, failed or not. Every part of the
 * log reads it before it starts I/O; only the facade (log.ts) changes it, except that any part may
 * report a failure.
 *
 * Why one object: "may I still write?" used to be three fields of the 1,100-line owner, read in a
 * dozen places. A failed write or datasync makes the whole log read-only at once (nothing more is
 * acknowledged, see {@link LogLifecycle.fail}), so the failure must reach every part that waits:
 * reservers, durability waiters and tail followers subscribe with {@link LogLifecycle.onFailure}.
 *
 * @module
 */
import { InvalidArgumentError, LssError, ReadOnlyError, StoreClosedError } from "../errors.ts";

/** Open / recovered / failed, and who must hear of a failure. */
export class LogLifecycle {
  readonly path: string;
  readonly readOnly: boolean;
  private open = true;
  private recoveredFlag = false;
  private failure: LssError | undefined;
  private readonly failureListeners: Array<(error: LssError) => void> = [];

  constructor(path: string, readOnly: boolean) {
    this.path = path;
    this.readOnly = readOnly;
  }

  get isOpen(): boolean {
    return this.open;
  }

  get recovered(): boolean {
    return this.recoveredFlag;
  }

  /** The first I/O failure, if any. */
  get failed(): LssError | undefined {
    return this.failure;
  }

  /** Open and not failed: the owner may start I/O. */
  get running(): boolean {
    return this.open && this.failure === undefined;
  }

  markRecovered(): void {
    if (this.recoveredFlag) throw new InvalidArgumentError("recover() runs once, at open");
    this.recoveredFlag = true;
  }

  markClosed(): void {
    this.open = false;
  }

  /** Call `listener` with every failure reported from now on. */
  onFailure(listener: (error: LssError) => void): void {
    this.failureListeners.push(listener);
  }

  /**
   * A write or datasync failed: nothing more is acknowledged; the log is read-only until reopened.
   * The first failure is kept; every report reaches the listeners (each rejects what waits).
   */
  fail(error: LssError): void {
    if (this.failure === undefined) this.failure = error;
    for (const listener of this.failureListeners) listener(error);
  }

  assertOpen(): void {
    if (!this.open) throw new StoreClosedError(`the log ${this.path} is closed`);
  }

  /** Throws unless appends may be made now. */
  assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new ReadOnlyError(`the log ${this.path} is open read-only`);
    if (this.failure !== undefined) throw new ReadOnlyError(`the log is read-only after an I/O failure: ${this.failure.message}`);
    if (!this.recoveredFlag) throw new InvalidArgumentError("the log has not been recovered yet");
  }
}

/** An unknown rejection as a typed error (I/O promises reject with LssErrors; anything else is a bug's message). */
export function asLssError(error: unknown, fallback: (message: string) => LssError): LssError {
  return error instanceof LssError ? error : fallback(String(error));
}
