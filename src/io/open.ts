/**
 * Choosing a backend: `auto` probes io_uring (shim loads, a ring can be set up) and falls back to
 * `portable`, keeping the reason; `uring` where it cannot work throws `IoUnavailableError` naming
 * the cause; `portable` never touches the shim.
 *
 * Set `BLOOM_LSS_DISABLE_URING=1` (or pass `disableUring: true`) to make the probe fail on
 * purpose, as tests do to exercise the fallback.
 *
 * A fallback nobody asked for is announced once per process on stderr (and kept as the backend's
 * `fallbackReason`, which `store.stats().ioFallbackReason` reports): losing io_uring silently
 * costs a large part of the store's speed, and the reason is what tells the user how to get it
 * back. A deliberate one (the option or the environment variable) is not.
 *
 * @module
 */
import type { IoBackend, IoChoice } from "./backend.ts";
import { PortableBackend } from "./portable.ts";
import { InvalidArgumentError, IoUnavailableError } from "../errors.ts";

/** Options of {@link openBackend}. */
export interface OpenBackendOptions {
  io?: IoChoice;
  queueDepth?: number;
  /** Make the io_uring probe fail, as if the kernel refused it. */
  disableUring?: boolean;
}

function uringDisabledReason(options: OpenBackendOptions): string | undefined {
  if (options.disableUring === true) return "io_uring disabled by the disableUring option";
  const env = process.env.BLOOM_LSS_DISABLE_URING;
  if (env !== undefined && env !== "" && env !== "0") return "io_uring disabled by BLOOM_LSS_DISABLE_URING";
  return undefined;
}

/** The fallback warning was printed already (once per process is enough to be seen). */
let warnedFallback = false;

function warnFallback(reason: string): void {
  if (warnedFallback) return;
  warnedFallback = true;
  console.warn(
    `bloom-lss: io_uring is unavailable, so this process uses the slower portable (node:fs) backend. ${reason}\n` +
      'bloom-lss: pass io: "portable" to choose that backend on purpose (and not see this warning).',
  );
}

async function createUring(options: OpenBackendOptions): Promise<IoBackend> {
  const disabled = uringDisabledReason(options);
  if (disabled !== undefined) throw new IoUnavailableError(disabled);
  // Loaded lazily so that `portable` works where the shim was never built.
  const { UringBackend } = await import("./uring.ts");
  return UringBackend.create({ queueDepth: options.queueDepth });
}

/** Open the backend the options ask for. */
export async function openBackend(options: OpenBackendOptions = {}): Promise<IoBackend> {
  const choice = options.io ?? "auto";
  switch (choice) {
    case "portable":
      return new PortableBackend({ queueDepth: options.queueDepth });
    case "uring":
      return createUring(options);
    case "auto":
      try {
        return await createUring(options);
      } catch (error) {
        if (!(error instanceof IoUnavailableError)) throw error;
        if (uringDisabledReason(options) === undefined) warnFallback(error.message);
        return new PortableBackend({ queueDepth: options.queueDepth, fallbackReason: error.message });
      }
    default:
      throw new InvalidArgumentError(`io must be "auto", "uring" or "portable", got ${JSON.stringify(choice)}`);
  }
}
