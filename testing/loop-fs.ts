/**
 * A small real filesystem for tests: an ext4 image file on a loop device, mounted in a directory
 * of its own, so a test can fill a disk for real. Needs root, `losetup`, `mkfs.ext4` and `mount`
 * (util-linux and e2fsprogs, present on a Debian root machine; e2fsprogs is installed with
 * apt-get when missing and possible). When something is missing or refused (no loop devices in a
 * container, say), {@link makeLoopFs} returns the reason instead, for the test to skip with it.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/** A mounted loop filesystem; {@link LoopFs.cleanup} unmounts and detaches it (idempotent). */
export interface LoopFs {
  /** Where it is mounted. */
  readonly dir: string;
  /** The loop device, e.g. `/dev/loop3`. */
  readonly device: string;
  /** Unmount, detach the loop device, remove the image. Safe to call twice, and after a failure. */
  cleanup(): void;
}

function run(command: string, args: readonly string[]): { ok: boolean; out: string } {
  const result = spawnSync(command, args, { encoding: "utf8", timeout: 120_000 });
  const out = `${result.stdout ?? ""}${result.stderr ?? ""}${result.error ? String(result.error) : ""}`.trim();
  return { ok: result.status === 0, out };
}

function has(tool: string): boolean {
  return run("sh", ["-c", `command -v ${tool}`]).ok;
}

/** mkfs.ext4, installing e2fsprogs first when it is missing and apt-get can (root). */
function ensureMkfs(): string | undefined {
  if (has("mkfs.ext4")) return undefined;
  if (!has("apt-get")) return "mkfs.ext4 is missing (e2fsprogs) and there is no apt-get to install it";
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  let result = spawnSync("apt-get", ["install", "-y", "-q", "e2fsprogs"], { encoding: "utf8", env, timeout: 300_000 });
  if (result.status !== 0) {
    spawnSync("apt-get", ["update", "-q"], { encoding: "utf8", env, timeout: 300_000 });
    result = spawnSync("apt-get", ["install", "-y", "-q", "e2fsprogs"], { encoding: "utf8", env, timeout: 300_000 });
  }
  return has("mkfs.ext4") ? undefined : `mkfs.ext4 is missing and installing e2fsprogs failed: ${(result.stderr ?? "").trim().slice(-300)}`;
}

/**
 * Make an ext4 filesystem of `sizeBytes` in an image under `parent`, attach it to a free loop
 * device and mount it. Returns the filesystem, or why it cannot be had here.
 */
export function makeLoopFs(parent: string, sizeBytes: number): LoopFs | { skip: string } {
  if (process.platform !== "linux") return { skip: "loop devices are Linux only" };
  if (process.getuid?.() !== 0) return { skip: "attaching a loop device and mounting need root" };
  for (const tool of ["losetup", "mount", "umount"]) {
    if (!has(tool)) return { skip: `${tool} is missing (util-linux)` };
  }
  const missing = ensureMkfs();
  if (missing !== undefined) return { skip: missing };
  fs.mkdirSync(parent, { recursive: true });
  const image = path.join(parent, "fs.img");
  const dir = path.join(parent, "mnt");
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(image, "");
  fs.truncateSync(image, sizeBytes);
  const attach = run("losetup", ["-f", "--show", image]);
  if (!attach.ok || !attach.out.startsWith("/dev/")) {
    fs.rmSync(parent, { recursive: true, force: true });
    return { skip: `no loop device: losetup -f --show failed: ${attach.out}` };
  }
  const device = attach.out.split("\n")[0] as string;
  let mounted = false;
  let detached = false;
  const cleanup = (): void => {
    if (mounted) {
      // A store's file may still be open after a failed test: a lazy unmount still detaches it.
      if (!run("umount", [dir]).ok) run("umount", ["-l", dir]);
      mounted = false;
    }
    if (!detached) {
      run("losetup", ["-d", device]);
      detached = true;
    }
    fs.rmSync(parent, { recursive: true, force: true });
  };
  const mkfs = run("mkfs.ext4", ["-q", "-F", device]);
  if (!mkfs.ok) {
    cleanup();
    return { skip: `mkfs.ext4 ${device} failed: ${mkfs.out}` };
  }
  const mount = run("mount", [device, dir]);
  if (!mount.ok) {
    cleanup();
    return { skip: `mount ${device} failed: ${mount.out}` };
  }
  mounted = true;
  return { dir, device, cleanup };
}

/**
 * Make what was deleted on the filesystem of `dir` reusable now: ext4 reuses freed blocks only
 * once the journal transaction that freed them has committed (up to its 5 s commit interval).
 */
export function commitFilesystem(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  run("sync", ["-f", dir]);
}
