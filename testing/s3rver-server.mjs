// The s3rver process that testing/s3rver.ts starts (under node, with --openssl-legacy-provider:
// s3rver encrypts its ListObjectsV2 continuation tokens with DES, which OpenSSL 3 and Bun's
// BoringSSL refuse without the legacy provider, so paged listings fail in-process under Bun).
//
// argv[2]: JSON {"port": number, "directory": string, "bucket": string}
// stdout: "READY <port>" once listening, then "REQ <method> <url>" for every request received
//         (before it is answered), and "SYNCED <n>" for each "SYNC <n>" read from stdin, so the
//         parent can wait until every earlier request line has reached it.
// Exits when stdin closes (the parent died or stopped it), on SIGTERM, or if it cannot start.
import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(import.meta.url);
const S3rver = require("s3rver");

const config = JSON.parse(process.argv[2] ?? "{}");
const server = new S3rver({
  address: "127.0.0.1",
  port: config.port,
  silent: true,
  directory: config.directory,
  resetOnClose: false,
  configureBuckets: [{ name: config.bucket }],
});

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const m = /^SYNC (\d+)$/.exec(line);
  if (m) process.stdout.write(`SYNCED ${m[1]}\n`);
});
lines.on("close", () => process.exit(0));

try {
  const address = await server.run();
  server.httpServer.on("request", (req) => process.stdout.write(`REQ ${req.method} ${req.url}\n`));
  process.stdout.write(`READY ${address.port}\n`);
} catch (error) {
  process.stderr.write(`s3rver failed to start: ${error && error.stack ? error.stack : String(error)}\n`);
  process.exit(1);
}
