/**
 * The package as a user gets it: `npm pack` from this working tree (its prepack builds the shim
 * and dist/), `bun add` of the tarball into a fresh app outside the repository with a PATH that
 * holds only `bun` (and an empty bun cache: the tarball has no dependencies to download), then:
 * the app runs on io_uring with correct bytes; it type-checks under `tsc --strict` with
 * `exactOptionalPropertyTypes`, `types: ["node"]` or `["bun"]` and `skipLibCheck: false`; a
 * `bun build --compile` binary of it runs from a directory with no node_modules, also with
 * `$TMPDIR` unusable; the installed `bloom-lss` CLI works; Node refuses the import clearly.
 *
 * Every child process runs with a deadline (spawnSync's timeout).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { scratchDir } from "../helpers.ts";

const ROOT = path.resolve(import.meta.dir, "..", "..");
const TSC = path.join(ROOT, "node_modules", ".bin", "tsc");
const TYPE_ROOTS = path.join(ROOT, "node_modules", "@types");

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command with a deadline; a timeout fails the test with what it printed. */
function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Ran {
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    encoding: "utf8",
    timeout: options.timeoutMs ?? 60_000,
    killSignal: "SIGKILL",
    maxBuffer: 64 << 20,
  });
  if (result.error !== undefined) throw new Error(`${command} ${args.join(" ")}: ${result.error.message}\n${result.stdout}\n${result.stderr}`);
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function ok(ran: Ran, what: string): string {
  if (ran.status !== 0) throw new Error(`${what} exited ${ran.status}\nstdout: ${ran.stdout}\nstderr: ${ran.stderr}`);
  return ran.stdout;
}

/** The app a user writes: every new convenience, asserting as it goes; prints what it saw. */
const APP = `
import { Store, CorruptionError, LssError, ROOT_SEID, type ErrorCode, type Transaction } from "bloom-lss";

const file = process.argv[2];
if (file === undefined) throw new Error("usage: app <store file>");
await using store = await Store.open(file);
const space = store.createSeidSpace();
const seid = store.allocateSeid(space);
const big = new Uint8Array(3 << 20).map((_, i) => (i * 7) % 256);
await store.transaction(async (tx: Transaction) => {
  tx.write(seid, new TextEncoder().encode("hello bloom"));
  tx.write(ROOT_SEID, big);
  const own: Uint8Array | undefined = await tx.read(seid);
  if (new TextDecoder().decode(own) !== "hello bloom") throw new Error("read-your-writes failed");
});
const bytes = await store.read(seid);
const sync: Uint8Array | undefined = store.readSync(ROOT_SEID);
let entries = 0;
for await (const [key, value] of store.entries({ space })) entries += key === seid ? value.length : 0;
const code: ErrorCode = new CorruptionError("x").code;
const narrow: "LSS_CORRUPTION" = new CorruptionError("x").code;
let rejected = "";
try {
  await store.transaction((tx) => tx.write(0n, new Uint8Array(1)));
} catch (error) {
  if (error instanceof LssError) rejected = error.code;
}
// A backup whose base is copied in a Worker: from the installed package it runs in one; in a
// compiled binary (no base-worker.js embedded) it falls back to this thread, same bytes.
const backup = await store.backup(file + ".backup", { copyIn: "worker" });
console.log(JSON.stringify({
  io: store.io,
  backup: { kind: backup.kind, copiedIn: backup.copiedIn, elements: backup.elements },
  text: new TextDecoder().decode(bytes),
  bigOk: sync !== undefined && sync.length === big.length && sync.every((b, i) => b === big[i]),
  entries,
  spaces: store.spaces(),
  codes: [code, narrow, rejected],
  fallback: store.stats().ioFallbackReason ?? null,
}));
`;

/** Lines that must not compile: internals are not part of the public types. */
const MISUSE = `
import { Store, type Transaction } from "bloom-lss";
declare const store: Store;
declare const tx: Transaction;
// @ts-expect-error -- the transaction's state is not public
tx.finish();
// @ts-expect-error -- nor is the store's
store.core;
// @ts-expect-error -- codes are a closed union
const code: "LSS_NOT_A_CODE" = new (await import("bloom-lss")).StoreClosedError("x").code;
export { code };
`;

function tsconfig(types: string): string {
  return JSON.stringify({
    compilerOptions: {
      target: "ESNext",
      module: "Preserve",
      moduleResolution: "bundler",
      lib: ["ESNext"],
      types: [types],
      typeRoots: [TYPE_ROOTS],
      strict: true,
      exactOptionalPropertyTypes: true,
      noUncheckedIndexedAccess: true,
      skipLibCheck: false,
      noEmit: true,
    },
    files: ["app.ts", "misuse.ts"],
  });
}

describe("the installed package", () => {
  // The app lives outside the repository, so nothing resolves from the repository's node_modules;
  // the store files live on the repository's filesystem (O_DIRECT works there).
  const appRoot = fs.mkdtempSync(path.join(os.tmpdir(), "bloom-lss-app-"));
  const data = scratchDir("package");
  const app = path.join(appRoot, "app");
  const bin = path.join(appRoot, "bin");
  let tarball = "";
  let packedFiles: string[] = [];
  /** Only bun on PATH, a HOME and bun cache of the test's own. */
  const userEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    PATH: bin,
    HOME: appRoot,
    TMPDIR: appRoot,
    BUN_INSTALL_CACHE_DIR: path.join(appRoot, "bun-cache"),
    XDG_CACHE_HOME: path.join(appRoot, "xdg-cache"),
    ...extra,
  });

  beforeAll(() => {
    fs.mkdirSync(bin);
    fs.symlinkSync(fs.realpathSync(process.execPath), path.join(bin, "bun"));
    // npm pack runs prepack (scripts/build.ts): the shim and dist/ are built from this tree.
    const packed = ok(run("npm", ["pack", "--json", "--pack-destination", appRoot], { cwd: ROOT, timeoutMs: 180_000 }), "npm pack");
    const info = JSON.parse(packed.slice(packed.indexOf("["))) as Array<{ filename: string; size: number; files: Array<{ path: string }> }>;
    const first = info[0];
    if (first === undefined) throw new Error("npm pack printed no tarball");
    tarball = path.join(appRoot, first.filename);
    packedFiles = first.files.map((f) => f.path);
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", type: "module", private: true }));
    ok(run("bun", ["add", tarball], { cwd: app, env: userEnv() }), "bun add");
    fs.writeFileSync(path.join(app, "app.ts"), APP);
    fs.writeFileSync(path.join(app, "misuse.ts"), MISUSE);
  }, 240_000);

  afterAll(() => {
    fs.rmSync(appRoot, { recursive: true, force: true });
    data.cleanup();
  }, 60_000);

  test("the tarball ships the shim, dist/ with types, the CLI, LICENSE and README, and nothing of the build or tests", () => {
    for (const needed of ["prebuilt/linux-x64/libbloom_lss_shim.so", "dist/index.js", "dist/index.d.ts", "dist/cli.js", "dist/not-bun.cjs", "dist/io/shim-embed.js", "LICENSE", "README.md", "package.json"]) {
      expect(packedFiles).toContain(needed);
    }
    const unwanted = packedFiles.filter((f) => /^(src|test|testing|scripts|bench|examples|shim|node_modules)\/|^build\.zig|\.test\.|tsconfig/.test(f));
    expect(unwanted).toEqual([]);
    const manifest = JSON.parse(fs.readFileSync(path.join(app, "node_modules", "bloom-lss", "package.json"), "utf8"));
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(manifest.engines).toEqual({ bun: expect.any(String) });
  }, 60_000);

  test("an app using the store runs on io_uring with correct bytes", () => {
    const out = ok(run("bun", ["app.ts", path.join(data.dir, "app.lss")], { cwd: app, env: userEnv() }), "bun app.ts");
    const seen = JSON.parse(out);
    expect(seen).toEqual({
      backup: { kind: "full", copiedIn: "worker", elements: 2 },
      io: "io_uring",
      text: "hello bloom",
      bigOk: true,
      entries: 11,
      spaces: [0, 1, 2],
      codes: ["LSS_CORRUPTION", "LSS_CORRUPTION", "LSS_INVALID_SEID"],
      fallback: null,
    });
  }, 60_000);

  test("the app type-checks against the shipped .d.ts under tsc --strict (types node, then bun; skipLibCheck false)", () => {
    for (const types of ["node", "bun"]) {
      fs.writeFileSync(path.join(app, "tsconfig.json"), tsconfig(types));
      const checked = run(TSC, ["-p", "."], { cwd: app });
      expect(`${types}: ${checked.stdout}${checked.stderr}`).toBe(`${types}: `);
      expect(checked.status).toBe(0);
    }
  }, 60_000);

  test("a bun build --compile binary runs from a directory without node_modules, also with TMPDIR unusable", () => {
    const built = path.join(appRoot, "app-binary");
    ok(run("bun", ["build", "--compile", "app.ts", "--outfile", built], { cwd: app, env: userEnv(), timeoutMs: 120_000 }), "bun build --compile");
    const elsewhere = path.join(appRoot, "elsewhere");
    fs.mkdirSync(elsewhere);
    const binary = path.join(elsewhere, "app");
    fs.renameSync(built, binary);
    for (const [name, env] of [
      ["TMPDIR usable", userEnv()],
      ["TMPDIR missing", userEnv({ TMPDIR: path.join(appRoot, "no-such-dir") })],
    ] as const) {
      const ran = run(binary, [path.join(data.dir, `compiled-${name.replace(/\W+/g, "-")}.lss`)], { cwd: elsewhere, env });
      const seen = JSON.parse(ok(ran, `compiled app (${name})`));
      expect({ name, io: seen.io, text: seen.text, bigOk: seen.bigOk }).toEqual({ name, io: "io_uring", text: "hello bloom", bigOk: true });
      expect(seen.backup).toEqual({ kind: "full", copiedIn: "caller", elements: 2 });
      expect(ran.stderr).not.toContain("io_uring is unavailable");
    }
    // With TMPDIR unusable the embedded library was copied to the cache directory and loaded from there.
    expect(fs.readdirSync(path.join(appRoot, "xdg-cache", "bloom-lss")).some((f) => f.endsWith(".so"))).toBe(true);
  }, 180_000);

  test("the installed bloom-lss CLI runs (bundled libraries, no dependencies)", () => {
    const cli = path.join(app, "node_modules", ".bin", "bloom-lss");
    const version = ok(run(cli, ["--version"], { cwd: app, env: userEnv() }), "bloom-lss --version").trim();
    expect(version).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")).version);
    const store = path.join(data.dir, "cli.lss");
    const seen = JSON.parse(ok(run("bun", ["app.ts", store], { cwd: app, env: userEnv() }), "app"));
    // The installed package's base-copy Worker (dist/backup/base-worker.js) starts and copies.
    expect(seen.backup).toEqual({ kind: "full", copiedIn: "worker", elements: 2 });
    const stat = JSON.parse(ok(run(cli, ["stat", "--json", store], { cwd: app, env: userEnv() }), "bloom-lss stat"));
    expect(stat.elements).toBe(2);
    expect(stat.io).toBe("io_uring");
    const verify = run(cli, ["verify", "--progress", store], { cwd: app, env: userEnv() });
    expect(verify.stdout).toContain("every checksum matches");
    expect(verify.stderr).toContain("verifying");
    expect(verify.status).toBe(0);
  }, 60_000);

  test("importing it from Node fails at once with a clear message", () => {
    fs.writeFileSync(path.join(app, "from-node.mjs"), 'import "bloom-lss";\n');
    fs.writeFileSync(path.join(app, "from-node.cjs"), 'require("bloom-lss");\n');
    for (const script of ["from-node.mjs", "from-node.cjs"]) {
      const ran = run("node", [script], { cwd: app });
      expect(ran.status).not.toBe(0);
      expect(ran.stderr).toContain("bloom-lss runs on Bun only");
    }
  }, 60_000);
});
