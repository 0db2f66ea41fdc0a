// What Node (or any runtime but Bun) loads for `import "bloom-lss"` / `require("bloom-lss")`
// (package.json maps the "bun" export condition to dist/index.js and everything else here).
// bloom-lss does its I/O through bun:ffi (io_uring) and Bun's APIs, so it cannot run elsewhere:
// say so at once instead of failing later on an unknown "bun:" import.
"use strict";
throw new Error(
  "bloom-lss runs on Bun only (https://bun.sh): it needs bun:ffi for its io_uring I/O. " +
    `This is ${typeof process !== "undefined" && process.versions && process.versions.node ? `Node ${process.versions.node}` : "not Bun"}; ` +
    "run your program with `bun` (for example `bun app.ts`), or build a binary with `bun build --compile`.",
);
