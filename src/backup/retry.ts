/**
 * Bounded retries with backoff, and a deadline on every attempt, for calls to a remote target.
 *
 * Object storage fails transiently (a refused or reset connection while a proxy restarts, 500,
 * 503 SlowDown, a request timeout); the archiving loop must ride over a short outage, but a
 * target that is really gone must turn into a clear error quickly, never a hang. So: a fixed
 * number of attempts, exponential backoff with full jitter (so many clients do not retry in
 * step) capped at `maxDelayMs`, and each attempt raced against `attemptTimeoutMs` because an
 * HTTP request to a half-dead peer may otherwise wait on TCP timeouts for minutes.
 *
 * A timed-out attempt cannot be cancelled through Bun's S3Client (it takes no AbortSignal); it
 * is abandoned. That is safe here because every object is immutable: a late duplicate write
 * carries the same bytes as the retry that replaced it.
 *
 * @module
 */
import { BackupTargetError, InvalidArgumentError, LssError } from "../errors.ts";

/** How a remote call is retried. Every field is a hard limit. */
export interface RetryPolicy {
  /** Most attempts in all (first try included), 1..100. Default 5. */
  attempts: number;
  /** Backoff before the second attempt, in ms; doubles each time. Default 100. */
  baseDelayMs: number;
  /** Longest backoff between two attempts, in ms. Default 2 000. */
  maxDelayMs: number;
  /** Deadline of one attempt, in ms (a streamed upload: of each chunk handed over). Default 30 000. */
  attemptTimeoutMs: number;
}

/** The defaults documented on {@link RetryPolicy}. */
export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  attempts: 5,
  baseDelayMs: 100,
  maxDelayMs: 2_000,
  attemptTimeoutMs: 30_000,
});

/** Fill in and check a partial policy. */
export function resolveRetryPolicy(partial: Partial<RetryPolicy> | undefined): RetryPolicy {
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...partial };
  const check = (field: keyof RetryPolicy, min: number, max: number): void => {
    const value = policy[field];
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`retry.${field} must be an integer in [${min}, ${max}], got ${String(value)}`);
    }
  };
  check("attempts", 1, 100);
  check("baseDelayMs", 0, 600_000);
  check("maxDelayMs", 0, 600_000);
  check("attemptTimeoutMs", 1, 24 * 3_600_000);
  return policy;
}

/** Raised inside an attempt that passed its deadline; always retryable. */
export class AttemptTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`${what}: no answer within ${ms} ms`);
    this.name = "AttemptTimeoutError";
  }
}

/** Reject with {@link AttemptTimeoutError} if `promise` has not settled within `ms`. */
export async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AttemptTimeoutError(what, ms)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Backoff before attempt `attempt + 1` (attempt counts from 1): full jitter under the cap. */
export function backoffMs(policy: RetryPolicy, attempt: number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(Math.random() * ceiling);
}

/**
 * What to do with an error of one attempt: `"retry"` (a transient target error), `"fail"` (a
 * target error retrying cannot fix: it becomes a {@link BackupTargetError}) or `"pass"` (not the
 * target's error at all, e.g. the caller's body failed: rethrown unchanged, never retried).
 */
export type ErrorVerdict = "retry" | "fail" | "pass";

/**
 * Run `attempt` until it succeeds, `classify` says an error is not worth retrying, or the
 * policy's attempts are used up. Errors of this library ({@link LssError}) and errors classified
 * `"pass"` are rethrown as they are; target errors end as a {@link BackupTargetError} with the
 * last error as `cause`.
 *
 * @param what - for messages, e.g. `"put s3://bucket/key"`
 * @param attempt - one try; receives the attempt number (from 1)
 * @param bounded - race each whole attempt against `attemptTimeoutMs` (default true); a streamed
 *   upload passes false and bounds each of its steps itself, as its length has no fixed bound
 */
export async function retrying<T>(
  what: string,
  policy: RetryPolicy,
  classify: (error: unknown) => ErrorVerdict,
  attempt: (n: number) => Promise<T>,
  bounded = true,
): Promise<T> {
  let last: unknown;
  for (let n = 1; n <= policy.attempts; n++) {
    try {
      const pending = attempt(n);
      return await (bounded ? withDeadline(pending, policy.attemptTimeoutMs, what) : pending);
    } catch (error) {
      last = error;
      if (error instanceof LssError) throw error;
      const verdict = error instanceof AttemptTimeoutError ? "retry" : classify(error);
      if (verdict === "pass") throw error;
      if (verdict === "fail") {
        throw new BackupTargetError(`${what} failed: ${describeError(error)}`, { attempts: n, cause: error });
      }
      if (n < policy.attempts) await Bun.sleep(backoffMs(policy, n));
    }
  }
  throw new BackupTargetError(`${what} failed after ${policy.attempts} attempts: ${describeError(last)}`, {
    attempts: policy.attempts,
    cause: last,
  });
}

/** `code: message` of an error, for messages. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && code !== "" ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}
