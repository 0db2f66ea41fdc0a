/** The backup suite (suite.ts) against a directory target. */
import path from "node:path";
import { afterAll } from "bun:test";
import { scratchDir } from "../helpers.ts";
import { defineBackupSuite } from "./suite.ts";

const root = scratchDir("backup-targets");
afterAll(() => root.cleanup());
let n = 0;

defineBackupSuite("directory", {
  fresh: (name) => path.join(root.dir, `${name}-${n++}`),
  options: () => ({}),
});

// The same, every full backup's base copied in a Worker of its own (src/backup/base-thread.ts).
defineBackupSuite("directory, base copied in a Worker", {
  fresh: (name) => path.join(root.dir, `${name}-${n++}`),
  options: () => ({}),
  copyIn: "worker",
});
