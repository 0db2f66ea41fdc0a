/**
 * Errors crossing threads: a Worker transaction's failure on the owner (src/workers), a backup's
 * base-copy Worker's failure (src/backup/base-thread.ts). Structured clone keeps only an Error's
 * name and message, so a typed error would arrive as a plain one: it crosses as its class name,
 * message and own plain fields (`code`, `attempts`, `objectName`…), which JSON carries too, and is
 * rebuilt as the same class of errors.ts with the same fields.
 *
 * @module
 */
import * as errors from "./errors.ts";

/** An error as it crosses a thread boundary (JSON-safe). */
export interface DescribedError {
  readonly name: string;
  readonly message: string;
  /** Its own enumerable fields of plain values (`code` among them for an `LssError`). */
  readonly fields: Record<string, string | number | boolean | null>;
  readonly stack: string | undefined;
}

export function describeError(error: unknown): DescribedError {
  if (!(error instanceof Error)) return { name: "Error", message: String(error), fields: {}, stack: undefined };
  const fields: Record<string, string | number | boolean | null> = {};
  for (const [key, value] of Object.entries(error)) {
    if (value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean") fields[key] = value;
  }
  return { name: error.name, message: error.message, fields, stack: error.stack };
}

/**
 * The same class (one of errors.ts, by name) with the same message and fields; an unknown class
 * with a `code` becomes an `LssError` of that code (another build's), anything else a plain Error.
 */
export function rebuildError(described: DescribedError, where: string): Error {
  const cls: unknown = Object.values(errors).find((value) => typeof value === "function" && value.name === described.name && value.prototype instanceof Error);
  const code = described.fields.code;
  const error: Error =
    typeof cls === "function"
      ? (Object.create(cls.prototype as object) as Error)
      : typeof code === "string"
        ? new errors.LssError(code as errors.ErrorCode, described.message)
        : new Error(described.message);
  Object.defineProperty(error, "message", { value: described.message, writable: true, configurable: true });
  Object.assign(error, { name: described.name }, described.fields);
  error.stack = `${described.stack ?? `${described.name}: ${described.message}`}\n    (thrown in ${where})`;
  return error;
}
