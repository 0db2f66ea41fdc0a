/**
 * A local S3 server for tests: `s3rver` (npm) in this process, on 127.0.0.1, with a fresh temp
 * directory per start. Not shipped (the package's `files` list does not name `testing/`).
 *
 * Why in-process and not a child process: the server is a plain Koa app on node:http, which Bun
 * runs; in-process it starts in milliseconds, needs no binary path or node on PATH, and the test
 * can watch every request it serves (the multipart test asserts the part count from that log).
 *
 * Why port 0 and not "find a free port, then bind it": binding 0 has no window in which another
 * process takes the port. `halt()` / `resume()` then reuse the port that was bound, so a client
 * that was pointed at the endpoint sees the same server come back (the retry tests need that).
 *
 * Every start and stop has a deadline ({@link S3rverLimits}); a server that does not answer in
 * time is an error, never a hung test.
 *
 * @module
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { IncomingMessage, Server } from "node:http";
import S3rver from "s3rver";

/** The credentials s3rver 3.x accepts (its hard-coded dummy account). */
const S3RVER_KEY = "S3RVER";

/** Deadlines of the harness, in ms. */
export interface S3rverLimits {
  /** Listening, bucket created. Default 10 000. */
  startMs: number;
  /** Connections closed, server closed. Default 5 000. */
  stopMs: number;
}

const DEFAULT_LIMITS: S3rverLimits = { startMs: 10_000, stopMs: 5_000 };

/** Options of {@link startS3rver}. */
export interface StartS3rverOptions {
  /** Bucket created before the server listens. Default `"test-bucket"`. */
  bucket?: string;
  /** Parent of the temp directory. Default `os.tmpdir()`. */
  parentDir?: string;
  /** Deadlines; each field defaults as documented in {@link S3rverLimits}. */
  limits?: Partial<S3rverLimits>;
  /** Most requests kept in `requests` (oldest dropped first). Default 100 000. */
  maxLoggedRequests?: number;
}

/** One request the server received, as logged by {@link RunningS3rver.requests}. */
export interface LoggedRequest {
  /** HTTP method. */
  method: string;
  /** Path and query string, as sent. */
  url: string;
}

/** A started server. */
export interface RunningS3rver {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** Access key id the server accepts. */
  readonly accessKeyId: string;
  /** Secret key the server accepts. */
  readonly secretAccessKey: string;
  /** The bucket created at start. */
  readonly bucket: string;
  /** The port bound (stable across `halt()` / `resume()`). */
  readonly port: number;
  /** Where s3rver keeps its objects (each object under `<bucket>/<key>/…`). */
  readonly directory: string;
  /** Requests served since start (bounded by `maxLoggedRequests`). */
  readonly requests: readonly LoggedRequest[];
  /** Close the listener and every open connection; keep the directory (the data survives). */
  halt(): Promise<void>;
  /** Listen again on the same port and directory after `halt()`. */
  resume(): Promise<void>;
  /** Close the server (if running) and remove the directory. Idempotent. */
  stop(): Promise<void>;
}

/** Reject with a clear message if `promise` has not settled within `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`s3rver: ${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Start s3rver on 127.0.0.1 (a free port) with a fresh temp directory and one bucket.
 *
 * @param options - bucket name, temp parent, deadlines
 * @returns the running server; call `stop()` when done (also after a failed test)
 */
export async function startS3rver(options: StartS3rverOptions = {}): Promise<RunningS3rver> {
  const limits: S3rverLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const bucket = options.bucket ?? "test-bucket";
  const maxLogged = options.maxLoggedRequests ?? 100_000;
  const directory = fs.mkdtempSync(path.join(options.parentDir ?? os.tmpdir(), "s3rver-"));
  const requests: LoggedRequest[] = [];

  let server: S3rver | undefined;
  let http: Server | undefined;
  let port = 0;

  const listen = async (): Promise<void> => {
    // A new instance per start: a closed s3rver has closed its logger and cannot run again.
    const instance = new S3rver({
      address: "127.0.0.1",
      port,
      silent: true,
      directory,
      resetOnClose: false,
      configureBuckets: [{ name: bucket }],
    });
    const address = await within(limits.startMs, "start", instance.run());
    server = instance;
    http = instance.httpServer;
    port = address.port;
    // A second 'request' listener only observes; s3rver's own listener answers.
    http?.on("request", (req: IncomingMessage) => {
      if (requests.length >= maxLogged) requests.shift();
      requests.push({ method: req.method ?? "", url: req.url ?? "" });
    });
  };

  const close = async (): Promise<void> => {
    const instance = server;
    const h = http;
    server = undefined;
    http = undefined;
    if (!instance || !h) return;
    // Clients keep connections alive; close() alone would wait for them to time out.
    h.closeAllConnections();
    await within(limits.stopMs, "stop", instance.close());
  };

  try {
    await listen();
  } catch (error) {
    fs.rmSync(directory, { recursive: true, force: true });
    throw error;
  }

  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId: S3RVER_KEY,
    secretAccessKey: S3RVER_KEY,
    bucket,
    port,
    directory,
    requests,
    halt: close,
    async resume() {
      if (stopped) throw new Error("s3rver: resume() after stop()");
      if (server) return;
      await listen();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await close();
      } finally {
        fs.rmSync(directory, { recursive: true, force: true });
      }
    },
  };
}
