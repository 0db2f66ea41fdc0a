#!/usr/bin/env bun
/**
 * Build the package as users install it (`bun run build`; `npm pack` / `npm publish` run it as
 * `prepack`):
 *
 * 1. the io_uring shim → prebuilt/linux-x64/libbloom_lss_shim.so (scripts/build-shim.mjs; quick
 *    when it is up to date). Users never build it: Bun does not run a dependency's lifecycle
 *    scripts, so the package ships it;
 * 2. the library → dist/ as one JS module per source file plus .d.ts declarations
 *    (tsconfig.build.json: relative imports rewritten from .ts to .js, `@internal` members
 *    stripped). One file per module, not a bundle, because dist/io/shim-embed.js must keep its
 *    `import … with { type: "file" }` of ../../prebuilt/…so: that import is what makes a user's
 *    `bun build --compile` embed the shim in their binary;
 * 3. the CLI → dist/cli.js, bundled with its argument and progress libraries (so the package has
 *    no runtime dependencies) but importing the library from ./index.js, not a second copy;
 * 4. dist/not-bun.cjs, what any runtime other than Bun gets (a clear error).
 *
 * Then checks what it built: no .ts specifier left in the JS, the shim import in place.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dir, "..");
const DIST = path.join(ROOT, "dist");

function run(what: string, command: string, args: string[]): void {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: "inherit" });
  if (result.status !== 0) {
    console.error(`build: ${what} failed (${command} ${args.join(" ")} exited ${result.status ?? result.signal})`);
    process.exit(1);
  }
}

function fail(message: string): never {
  console.error(`build: ${message}`);
  process.exit(1);
}

const started = performance.now();
run("the io_uring shim", process.execPath, [path.join(ROOT, "scripts", "build-shim.mjs")]);

fs.rmSync(DIST, { recursive: true, force: true });
run("tsc (library JS and declarations)", path.join(ROOT, "node_modules", ".bin", "tsc"), ["-p", path.join(ROOT, "tsconfig.build.json")]);

const cli = await Bun.build({
  entrypoints: [path.join(ROOT, "src", "cli", "main.ts")],
  outdir: DIST,
  naming: "cli.js",
  target: "bun",
  format: "esm",
  plugins: [
    {
      name: "library-from-dist",
      setup(build) {
        // The CLI's imports of the library resolve to the compiled library beside it.
        build.onResolve({ filter: /^\.\.\/index\.ts$/ }, () => ({ path: "./index.js", external: true }));
      },
    },
  ],
});
if (!cli.success) fail(`bundling the CLI failed:\n${cli.logs.join("\n")}`);
fs.chmodSync(path.join(DIST, "cli.js"), 0o755);
fs.copyFileSync(path.join(ROOT, "src", "not-bun.cjs"), path.join(DIST, "not-bun.cjs"));

// Checks.
const jsFiles = fs.readdirSync(DIST, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".js"));
for (const file of jsFiles) {
  const text = fs.readFileSync(path.join(DIST, file), "utf8");
  const stale = /(?:from|import\(|require\()\s*["'](\.{1,2}\/[^"']+\.ts)["']/.exec(text);
  if (stale !== null) fail(`dist/${file} still imports ${stale[1]}`);
}
// A backup's base-copy Worker is loaded by URL, never imported: it must be built on its own.
if (!fs.existsSync(path.join(DIST, "backup", "base-worker.js"))) fail("dist/backup/base-worker.js is missing (the backup's base-copy Worker)");
const embed = fs.readFileSync(path.join(DIST, "io", "shim-embed.js"), "utf8");
if (!embed.includes('"../../prebuilt/linux-x64/libbloom_lss_shim.so" with { type: "file" }')) {
  fail("dist/io/shim-embed.js lost its file import of the prebuilt shim (compiled binaries would not embed it)");
}
const cliText = fs.readFileSync(path.join(DIST, "cli.js"), "utf8");
if (!cliText.includes('from "./index.js"')) fail("dist/cli.js does not import the library from ./index.js");
if (!fs.existsSync(path.join(ROOT, "prebuilt", "linux-x64", "libbloom_lss_shim.so"))) fail("the prebuilt shim is missing");
console.log(`build: dist/ (${jsFiles.length} modules, CLI bundled) and the shim in ${((performance.now() - started) / 1000).toFixed(1)} s`);
