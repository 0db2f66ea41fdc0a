/**
 * Replication over TLS (the optional layer under the HMAC handshake): a standby that trusts the
 * primary's certificate seeds and follows it with exact bytes; a standby that speaks plain TCP to a
 * TLS primary, or that trusts another CA, gets no connection and no byte of the store.
 *
 * The certificate and key in fixtures/ are a self-signed pair made for these tests only
 * (CN=localhost, SAN 127.0.0.1, EC P-256); other-ca-cert.pem is an unrelated self-signed cert.
 */
import { afterEach, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { StandbyError, Store } from "../../src/index.ts";
import type { StandbyStore } from "../../src/replication/standby.ts";
import { scratchDir } from "../helpers.ts";
import { expectSameState, SECRET, STORE_OPTIONS, valueOf } from "./util.ts";

const FIXTURES = path.join(import.meta.dir, "fixtures");
const CERT = fs.readFileSync(path.join(FIXTURES, "test-tls-cert.pem"), "utf8");
const KEY = fs.readFileSync(path.join(FIXTURES, "test-tls-key.pem"), "utf8");
const OTHER_CA = fs.readFileSync(path.join(FIXTURES, "other-ca-cert.pem"), "utf8");

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function tlsPrimary(): Promise<{ dir: string; primary: Store; port: number; seids: bigint[] }> {
  const { dir, cleanup } = scratchDir("repl-tls");
  cleanups.push(cleanup);
  const primary = await Store.open(path.join(dir, "p.lss"), STORE_OPTIONS);
  cleanups.push(() => primary.close());
  const seids = Array.from({ length: 50 }, () => primary.allocateSeid());
  await primary.transaction((tx) => seids.forEach((s, i) => tx.write(s, valueOf(i, 0, 20 + i * 37))));
  const server = await primary.serveReplication({ port: 0, secret: SECRET, tls: { key: KEY, cert: CERT }, log: () => {} });
  return { dir, primary, port: server.port as number, seids };
}

async function standby(dir: string, name: string, port: number, tls: boolean | { ca: string }): Promise<StandbyStore> {
  const s = await Store.openStandby(path.join(dir, name), {
    primary: `127.0.0.1:${port}`,
    secret: SECRET,
    tls,
    store: STORE_OPTIONS,
    connectTimeoutMs: 1_000,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    log: () => {},
  });
  cleanups.push(() => s.close());
  return s;
}

test("over TLS a standby that trusts the primary's certificate seeds and follows it exactly", async () => {
  const { dir, primary, port, seids } = await tlsPrimary();
  const follower = await standby(dir, "s.lss", port, { ca: CERT });
  await follower.caughtUp({ timeoutMs: 30_000 });
  // The tail, after the seed: overwrites, a delete and a multipart value.
  await primary.transaction((tx) => {
    tx.write(seids[0]!, valueOf(0, 1, 300_000));
    tx.delete(seids[1]!);
    tx.write(seids[2]!, valueOf(2, 1, 5));
  });
  await follower.caughtUp({ timeoutMs: 30_000 });
  await expectSameState(primary, follower, [0]);
  expect(follower.has(seids[1]!)).toBe(false);
  expect(Buffer.compare((await follower.read(seids[0]!)) as Uint8Array, valueOf(0, 1, 300_000))).toBe(0);
  expect(follower.stats().replication?.connects).toBeGreaterThanOrEqual(1);
}, 60_000);

test("a plain-TCP standby, or one that trusts another CA, gets no connection and no byte of the store", async () => {
  const { dir, port, seids } = await tlsPrimary();
  for (const [name, tls] of [["plain.lss", false], ["other-ca.lss", { ca: OTHER_CA }]] as const) {
    const follower = await standby(dir, name, port, tls);
    const error = await follower.caughtUp({ timeoutMs: 1_500 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StandbyError);
    expect((error as StandbyError).code).toBe("LSS_STANDBY_TIMEOUT");
    const r = follower.stats().replication;
    expect(r?.connects).toBe(0);
    expect(r?.bytesReceived).toBe(0);
    for (const seid of seids) expect(follower.has(seid)).toBe(false);
  }
}, 60_000);
