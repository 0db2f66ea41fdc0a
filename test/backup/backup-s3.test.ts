/**
 * The backup suite (suite.ts) against S3: s3rver on 127.0.0.1, started here and stopped after;
 * the archiving test stops the server mid-archive (`halt()`) and starts it again (`resume()`).
 */
import { afterAll, beforeAll } from "bun:test";
import { startS3rver, type RunningS3rver } from "../../testing/s3rver.ts";
import { scratchDir } from "../helpers.ts";
import type { OpenTargetOptions } from "../../src/backup/target.ts";
import { defineBackupSuite } from "./suite.ts";

const scratch = scratchDir("backup-s3rver");
let s3: RunningS3rver;
let n = 0;

beforeAll(async () => {
  s3 = await startS3rver({ parentDir: scratch.dir });
});

afterAll(async () => {
  await s3?.stop();
  scratch.cleanup();
});

function s3Options(): OpenTargetOptions {
  return {
    s3: {
      endpoint: s3.endpoint,
      accessKeyId: s3.accessKeyId,
      secretAccessKey: s3.secretAccessKey,
      region: "us-east-1",
      env: {},
      // Short retries: an outage shows up as failed ships within a second or two.
      retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 200, attemptTimeoutMs: 3_000 },
    },
  };
}

defineBackupSuite("s3", {
  fresh: (name) => `s3://${s3.bucket}/${name}-${n++}`,
  options: s3Options,
  outage: {
    halt: () => s3.halt(),
    resume: () => s3.resume(),
  },
});

// The same, every full backup's base copied in a Worker (it opens its own S3 client).
defineBackupSuite("s3, base copied in a Worker", {
  fresh: (name) => `s3://${s3.bucket}/${name}-${n++}`,
  options: s3Options,
  copyIn: "worker",
});
