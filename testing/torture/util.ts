/**
 * Small pieces every torture run (and the crash tests) share: a timeout that names what hung,
 * error descriptions and a line reader for child processes. (A store is reopened after a SIGKILL
 * with a plain `Store.open`: the store lock frees when its owner dies, see `src/io/lock.ts`.)
 *
 * @module
 */
/** Thrown by {@link withTimeout}: something did not settle in time (a hang is a violation). */
export class HangError extends Error {}

/** `promise`, or a {@link HangError} naming `what` after `ms` milliseconds. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HangError(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** "ClassName: message" for an error, or its string form. */
export function describe(error: unknown): string {
  if (error instanceof Error) return `${error.constructor.name}: ${error.message}`;
  return String(error);
}

/** Call `onLine` for every line a child process writes to `stream`, until it closes. */
export async function forEachLine(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk);
    const lines = pending.split("\n");
    pending = lines.pop() as string;
    for (const line of lines) onLine(line);
  }
  if (pending !== "") onLine(pending);
}
