/**
 * A local S3 server for tests: `s3rver` (npm) on 127.0.0.1, in a child process, with a fresh
 * temp directory per start. Not shipped (the package's `files` list does not name `testing/`).
 *
 * Why a child process under node, and not s3rver in the test's own process: s3rver encrypts
 * ListObjectsV2 continuation tokens with DES, which neither Bun's BoringSSL nor OpenSSL 3 offer
 * by default, so every paged listing answered InternalError in-process. `node
 * --openssl-legacy-provider` has DES. A separate process is also what a real server is: stopping
 * it (`halt()`) drops every connection at once, the way a restarting S3 endpoint does. The child
 * exits by itself when its stdin closes, so a test process that dies leaves no server behind.
 *
 * Why port 0 and not "find a free port, then bind it": binding 0 has no window in which another
 * process takes the port. `halt()` / `resume()` then reuse the port that was bound, so a client
 * pointed at the endpoint sees the same server (and the same objects) come back.
 *
 * Every start and stop has a deadline ({@link S3rverLimits}); a server that does not answer in
 * time is an error, never a hung test.
 *
 * Requirements: `node` on PATH (or `S3RVER_NODE` naming it) and the `s3rver` devDependency.
 *
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";

/** The credentials s3rver 3.x accepts (its hard-coded dummy account). */
const S3RVER_KEY = "S3RVER";
const SERVER_SCRIPT = path.join(import.meta.dir, "s3rver-server.mjs");

/** Deadlines of the harness, in ms. */
export interface S3rverLimits {
  /** Process started, listening, bucket created. Default 20 000. */
  startMs: number;
  /** Process gone after SIGTERM (then SIGKILL, and the same again). Default 5 000. */
  stopMs: number;
  /** Request log caught up ({@link RunningS3rver.requestLog}). Default 5 000. */
  syncMs: number;
}

const DEFAULT_LIMITS: S3rverLimits = { startMs: 20_000, stopMs: 5_000, syncMs: 5_000 };

/** Options of {@link startS3rver}. */
export interface StartS3rverOptions {
  /** Bucket created before the server listens. Default `"test-bucket"`. */
  bucket?: string;
  /** Parent of the temp directory. Default `os.tmpdir()`. */
  parentDir?: string;
  /** Deadlines; each field defaults as documented in {@link S3rverLimits}. */
  limits?: Partial<S3rverLimits>;
  /** Most requests kept in the log (oldest dropped first). Default 100 000. */
  maxLoggedRequests?: number;
}

/** One request the server received. */
export interface LoggedRequest {
  /** HTTP method. */
  readonly method: string;
  /** Path and query string, as sent. */
  readonly url: string;
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
  /** Where s3rver keeps its objects (an object's bytes at `<bucket>/<key>._S3rver_object`). */
  readonly directory: string;
  /** Every request received so far, once the log has caught up with the server. */
  requestLog(): Promise<LoggedRequest[]>;
  /** Stop the server process (every connection drops); keep the directory and port. */
  halt(): Promise<void>;
  /** Start it again on the same port and directory after `halt()`. */
  resume(): Promise<void>;
  /** Stop the server (if running) and remove the directory. Idempotent. */
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

/** One running s3rver process and what it has said. */
interface Child {
  readonly process: ChildProcess;
  readonly exited: Promise<void>;
  readonly port: Promise<number>;
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
  const syncWaiters = new Map<number, () => void>();
  let syncCounter = 0;
  let child: Child | undefined;
  let port = 0;

  const launch = (): Child => {
    const proc = spawn(
      process.env.S3RVER_NODE ?? "node",
      ["--openssl-legacy-provider", SERVER_SCRIPT, JSON.stringify({ port, directory, bucket })],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    let stderr = "";
    proc.stderr?.on("data", (data: Buffer) => {
      if (stderr.length < 10_000) stderr += data.toString();
    });
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    const ready = new Promise<number>((resolve, reject) => {
      proc.once("error", reject);
      void exited.then(() => reject(new Error(`s3rver exited before it was ready: ${stderr.trim()}`)));
      const lines = readline.createInterface({ input: proc.stdout! });
      lines.on("line", (line) => {
        if (line.startsWith("REQ ")) {
          const space = line.indexOf(" ", 4);
          if (requests.length >= maxLogged) requests.shift();
          requests.push({ method: line.slice(4, space), url: line.slice(space + 1) });
        } else if (line.startsWith("READY ")) {
          resolve(Number(line.slice(6)));
        } else if (line.startsWith("SYNCED ")) {
          const id = Number(line.slice(7));
          syncWaiters.get(id)?.();
          syncWaiters.delete(id);
        }
      });
    });
    ready.catch(() => {}); // observed by the caller; avoid an unhandled rejection after a stop
    return { process: proc, exited, port: ready };
  };

  const kill = async (c: Child): Promise<void> => {
    if (c.process.exitCode !== null || c.process.signalCode !== null) return;
    c.process.kill("SIGTERM");
    try {
      await within(limits.stopMs, "stop (SIGTERM)", c.exited);
    } catch {
      c.process.kill("SIGKILL");
      await within(limits.stopMs, "stop (SIGKILL)", c.exited);
    }
  };

  const listen = async (): Promise<void> => {
    const c = launch();
    child = c;
    try {
      port = await within(limits.startMs, "start", c.port);
    } catch (error) {
      child = undefined;
      await kill(c).catch(() => {});
      throw error;
    }
  };

  const halt = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c) await kill(c);
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
    async requestLog() {
      const c = child;
      if (c) {
        const id = ++syncCounter;
        const synced = new Promise<void>((resolve) => syncWaiters.set(id, resolve));
        c.process.stdin?.write(`SYNC ${id}\n`);
        await within(limits.syncMs, "request log sync", synced).finally(() => syncWaiters.delete(id));
      }
      return [...requests];
    },
    halt,
    async resume() {
      if (stopped) throw new Error("s3rver: resume() after stop()");
      if (child) return;
      await listen();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await halt();
      } finally {
        fs.rmSync(directory, { recursive: true, force: true });
      }
    },
  };
}
