/**
 * The `bloom-lss` CLI from source, every command on a real store: stat, verify (clean, and a
 * damaged copy: exit 1 naming the damaged seids), dump (jsonl, hex, by space and range), compact,
 * plus --help, usage errors and their exit codes. test/package/package.test.ts runs the built CLI
 * from the installed package. Every run has a deadline.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { scratchDir } from "../helpers.ts";

const MAIN = path.resolve(import.meta.dir, "..", "..", "src", "cli", "main.ts");

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const ran = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", timeout: 60_000, killSignal: "SIGKILL" });
  if (ran.error !== undefined) throw ran.error;
  return { status: ran.status, stdout: ran.stdout, stderr: ran.stderr };
}

describe("bloom-lss CLI", () => {
  const { dir, cleanup } = scratchDir("cli");
  const file = path.join(dir, "store.lss");
  const seids: { small: bigint[]; large: bigint[]; space: number } = { small: [], large: [], space: 0 };

  beforeAll(async () => {
    const store = await Store.open(file, { segmentSize: 256 << 10, bufferSize: 64 << 10 });
    seids.space = store.createSeidSpace();
    await store.transaction((tx) => {
      for (let i = 0; i < 20; i++) {
        const seid = store.allocateSeid();
        seids.small.push(seid);
        tx.write(seid, new TextEncoder().encode(`value ${i} `.padEnd(100, "-")));
      }
      for (let i = 0; i < 3; i++) {
        const seid = store.allocateSeid(seids.space);
        seids.large.push(seid);
        tx.write(seid, new Uint8Array(200_000).fill(0x41 + i)); // multipart
      }
    });
    // Churn so compact has something to clean.
    for (let round = 0; round < 4; round++) {
      await store.transaction((tx) => {
        // A fill of its own per seid and round, so a damaged byte names its element.
        seids.large.forEach((seid, index) => tx.write(seid, new Uint8Array(200_000).fill(0x61 + round * 3 + index)));
      });
    }
    await store.close();
  }, 60_000);
  afterAll(() => cleanup());

  test("--help lists the commands; each command has --help; unknown commands and options exit 2", () => {
    const help = cli("--help");
    expect(help.status).toBe(0);
    for (const name of ["stat", "verify", "dump", "compact"]) expect(help.stdout).toContain(name);
    const verifyHelp = cli("verify", "--help");
    expect(verifyHelp.status).toBe(0);
    expect(verifyHelp.stdout).toContain("Exit codes");
    expect(cli("frobnicate").status).toBe(2);
    expect(cli("stat", "--frobnicate", file).status).toBe(2);
    expect(cli("stat").status).toBe(2);
    expect(cli("dump", "--from", "not-a-seid", file).status).toBe(2);
  }, 60_000);

  test("a missing file exits 3 with the store's typed error", () => {
    const ran = cli("stat", path.join(dir, "missing.lss"));
    expect(ran.status).toBe(3);
    expect(ran.stderr).toContain("LSS_INVALID_ARGUMENT");
    expect(fs.existsSync(path.join(dir, "missing.lss"))).toBe(false);
  }, 60_000);

  test("stat prints the statistics and spaces, as text or JSON", () => {
    const text = cli("stat", file);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/elements\s+23/);
    const json = JSON.parse(cli("stat", "--json", file).stdout);
    expect(json.elements).toBe(23);
    expect(json.spaces).toEqual([
      { space: 0, elements: 0 },
      { space: 1, elements: 20 },
      { space: seids.space, elements: 3 },
    ]);
  }, 60_000);

  test("dump: JSON lines by space and range, hex, limit", () => {
    const lines = cli("dump", "--space", "1", "--encoding", "utf8", file).stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.length).toBe(20);
    expect(lines[0]).toEqual({ seid: String(seids.small[0]), space: 1, size: 100, value: "value 0 ".padEnd(100, "-") });
    const ranged = cli("dump", "--from", `1:3`, "--to", String(seids.small[4]), file).stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(ranged.map((l) => l.seid)).toEqual([seids.small[2], seids.small[3], seids.small[4]].map(String));
    expect(Buffer.from(ranged[0].value, "base64").toString()).toBe("value 2 ".padEnd(100, "-"));
    const large = cli("dump", "--space", String(seids.space), "--limit", "1", "--encoding", "hex", file).stdout.trim().split("\n");
    expect(large.length).toBe(1);
    expect(JSON.parse(large[0] as string).value).toBe((0x61 + 3 * 3).toString(16).repeat(200_000)); // round 3 of the first large seid
    const hex = cli("dump", "--format", "hex", "--from", String(seids.small[0]), "--to", String(seids.small[0]), file);
    expect(hex.status).toBe(0);
    expect(hex.stdout).toContain(`seid ${seids.small[0]} (space 1, 100 bytes)`);
    expect(hex.stdout).toContain("76 61 6c 75 65 20 30 20 2d 2d");
    expect(hex.stdout).toContain("|value 0 --------|");
  }, 60_000);

  test("verify: exit 0 on a sound store; on a damaged copy exit 1, naming every damaged seid", () => {
    const clean = cli("verify", "--progress", file);
    expect(clean.stdout).toContain("ok: 23 elements");
    expect(clean.stderr).toContain("verifying");
    expect(clean.status).toBe(0);

    const damaged = path.join(dir, "damaged.lss");
    const bytes = fs.readFileSync(file);
    // A small element's bytes, and somewhere inside one part of the last version of a large one.
    const small = bytes.indexOf(Buffer.from("value 7 "));
    bytes[small + 40] = (bytes[small + 40] as number) ^ 0x01;
    const large = bytes.indexOf(Buffer.alloc(4096, 0x61 + 3 * 3 + 2)); // round 3's fill of the third large seid
    expect(large).toBeGreaterThan(0);
    bytes[large + 100] = (bytes[large + 100] as number) ^ 0x80;
    fs.writeFileSync(damaged, bytes);

    const ran = cli("verify", damaged);
    expect(ran.status).toBe(1);
    expect(ran.stdout).toContain("DAMAGED: 2 of 23 elements");
    expect(ran.stdout).toContain(`seid ${seids.small[7]} (space 1)`);
    expect(ran.stdout).toContain(`seid ${seids.large[2]} (space ${seids.space})`);
    const json = JSON.parse(cli("verify", "--json", damaged).stdout);
    expect(json.damaged.map((d: { seid: string }) => d.seid).sort()).toEqual([String(seids.small[7]), String(seids.large[2])].sort());
  }, 60_000);

  test("compact cleans, keeps every element, and the store still verifies", () => {
    const copy = path.join(dir, "compact.lss");
    fs.copyFileSync(file, copy);
    const ran = cli("compact", "--json", "--utilisation", "90", "--progress", copy);
    expect(ran.status).toBe(0);
    const report = JSON.parse(ran.stdout);
    expect(report.segmentsCleaned).toBeGreaterThan(0);
    expect(ran.stderr).toContain("compacting");
    expect(cli("verify", copy).stdout).toContain("ok: 23 elements");
    expect(cli("compact", "--utilisation", "500", copy).status).toBe(3);
  }, 60_000);

  test("backup, verify-backup and restore: the restored store holds the same elements; a damaged backup exits 1 naming the object", async () => {
    const copy = path.join(dir, "backup-src.lss");
    fs.copyFileSync(file, copy);
    const target = path.join(dir, "backups");
    const first = cli("backup", "--json", "--progress", copy, target);
    expect(first.status).toBe(0);
    expect(JSON.parse(first.stdout).kind).toBe("full");
    expect(first.stderr).toContain("copying");
    const verified = cli("verify-backup", "--json", target);
    expect(verified.status).toBe(0);
    expect(JSON.parse(verified.stdout).base.elements).toBe(23);
    const restored = path.join(dir, "restored.lss");
    const ran = cli("restore", "--json", target, restored);
    expect(ran.status).toBe(0);
    const original = await Store.open(copy, { readOnly: true });
    const back = await Store.open(restored, { readOnly: true });
    try {
      for (const seid of [...seids.small, ...seids.large]) expect(await back.read(seid)).toEqual(await original.read(seid));
    } finally {
      await original.close();
      await back.close();
    }
    expect(cli("restore", target, restored).status).toBe(3); // the file exists: refused, left unchanged
    expect(cli("restore", "--transaction", "1", "--time", "0", target, path.join(dir, "x.lss")).status).toBe(2);
    // Flip a byte in a base chunk: verify-backup and restore both exit 1 and name it.
    const chunk = fs.readdirSync(target, { recursive: true }).map(String).find((name) => name.endsWith(".bin")) as string;
    const chunkPath = path.join(target, chunk);
    const bytes = fs.readFileSync(chunkPath);
    bytes[Math.floor(bytes.length / 2)] = (bytes[Math.floor(bytes.length / 2)] as number) ^ 0x10;
    fs.writeFileSync(chunkPath, bytes);
    const bad = cli("verify-backup", target);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain(path.basename(chunk));
    expect(cli("restore", target, path.join(dir, "y.lss")).status).toBe(1);
  }, 60_000);

  test("standby: seeds from a live primary, catches up, promotes; a wrong secret exits 3 with the typed error", async () => {
    const primaryFile = path.join(dir, "primary.lss");
    const primary = await Store.open(primaryFile);
    const secret = "cli-test-secret-of-32-bytes-1234";
    const server = await primary.serveReplication({ port: 0, host: "127.0.0.1", secret });
    try {
      await primary.transaction((tx) => {
        for (let i = 1n; i <= 50n; i++) tx.write(i, new Uint8Array(64).fill(Number(i)));
      });
      const standbyFile = path.join(dir, "standby.lss");
      const run = (env: string, ...args: string[]) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
          const child = Bun.spawn([process.execPath, MAIN, ...args], { env: { ...process.env, BLOOM_LSS_SECRET: env }, stdout: "pipe", stderr: "pipe" });
          const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
          Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]).then(([status, stdout, stderr]) => {
            clearTimeout(timer);
            resolve({ status, stdout, stderr });
          }, reject);
        });
      const wrong = await run("not-the-secret-but-long-enough", "standby", "--primary", `127.0.0.1:${server.port}`, "--until-caught-up", "--timeout", "5000", path.join(dir, "wrong.lss"));
      expect(wrong.status).toBe(3);
      expect(wrong.stderr).toContain("LSS_AUTH");
      const ran = await run(secret, "standby", "--primary", `127.0.0.1:${server.port}`, "--promote", "--json", standbyFile);
      expect(ran.status).toBe(0);
      const stats = JSON.parse(ran.stdout);
      expect(stats.promoted).toBe(true);
      expect(stats.lagTransactions).toBe(0);
      const promoted = await Store.open(standbyFile);
      try {
        for (let i = 1n; i <= 50n; i++) expect(await promoted.read(i)).toEqual(new Uint8Array(64).fill(Number(i)));
        await promoted.transaction((tx) => tx.write(51n, new Uint8Array([1]))); // writable: a primary now
      } finally {
        await promoted.close();
      }
    } finally {
      await server.close();
      await primary.close();
    }
  }, 90_000);
});
