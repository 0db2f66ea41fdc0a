/**
 * Replication on real sockets (TCP on 127.0.0.1 port 0, Unix sockets in a temp dir): seeding and
 * the live tail with exact bytes (small, overwritten, deleted, multipart and streamed values),
 * writes refused on a standby, a restarted standby resuming with no gap and no re-seed,
 * authentication (wrong and missing secret, a replayed handshake, a standby of another store),
 * sync levels and their timeout policies, and promotion with epoch fencing.
 */
import { afterEach, expect, test } from "bun:test";
import path from "node:path";
import {
  AuthenticationError,
  FencedError,
  ReadOnlyError,
  ReplicationTimeoutError,
  Store,
} from "../../src/index.ts";
import type { StandbyStore } from "../../src/replication/standby.ts";
import { encodeMessage, Msg } from "../../src/replication/protocol.ts";
import { FrameSplitter } from "../../src/workers/wire.ts";
import { scratchDir } from "../helpers.ts";
import { expectSameState, SECRET, STORE_OPTIONS, until, valueOf } from "./util.ts";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

function dir(name: string): string {
  const d = scratchDir(`repl-${name}`);
  cleanups.push(d.cleanup);
  return d.dir;
}

async function openPrimary(d: string, name = "primary.lss"): Promise<Store> {
  const store = await Store.open(path.join(d, name), STORE_OPTIONS);
  cleanups.push(() => store.close());
  return store;
}

async function openStandby(d: string, primary: string | { unix: string }, name = "standby.lss", secret = SECRET): Promise<StandbyStore> {
  const standby = await Store.openStandby(path.join(d, name), { primary, secret, store: STORE_OPTIONS, log: () => {} });
  cleanups.push(() => standby.close());
  return standby;
}

const quiet = { log: () => {} };

test("seed from a live primary, then the tail: exact bytes over TCP and a Unix socket", async () => {
  for (const transport of ["tcp", "unix"] as const) {
    const d = dir(`seed-${transport}`);
    const primary = await openPrimary(d);
    const space = primary.createSeidSpace();
    const seids = Array.from({ length: 300 }, () => primary.allocateSeid(space));
    // Before the standby exists: small values, a multipart one, a deleted one.
    await primary.transaction((tx) => {
      for (const [i, seid] of seids.entries()) tx.write(seid, valueOf(i, 0, 10 + (i % 200)));
    });
    await primary.transaction((tx) => tx.write(seids[0]!, valueOf(0, 1, 300_000)));
    await primary.transaction((tx) => tx.delete(seids[1]!));
    const server = await primary.serveReplication(transport === "tcp" ? { port: 0, secret: SECRET, ...quiet } : { unix: path.join(d, "p.sock"), secret: SECRET, ...quiet });
    const address = transport === "tcp" ? `127.0.0.1:${server.port}` : { unix: path.join(d, "p.sock") };
    // Writers go on while the standby seeds.
    let stop = false;
    let version = 2;
    const writer = (async () => {
      while (!stop) {
        const v = version++;
        await primary.transaction((tx) => {
          // Elements 0..9 are the test's own (checked below): the writer leaves them alone.
          for (let k = 0; k < 5; k++) tx.write(seids[10 + ((v * 7 + k) % (seids.length - 10))]!, valueOf(v, k, 50 + (v % 500)));
          if (v % 10 === 0) tx.delete(seids[10 + ((v * 3) % (seids.length - 10))]!);
        });
      }
    })();
    const standby = await openStandby(d, address);
    await Bun.sleep(100);
    // A large streamed element and one written whole, through the tail.
    await primary.transaction(async (tx) => {
      const w = tx.writeStream(seids[2]!).getWriter();
      for (let i = 0; i < 10; i++) await w.write(valueOf(2, i, 100_000));
      await w.close();
      tx.write(seids[3]!, valueOf(3, 99, 2_000_000));
    });
    stop = true;
    await writer;
    await standby.caughtUp({ timeoutMs: 20_000 });
    await expectSameState(primary, standby, [space]);
    expect(standby.sizeOf(seids[2]!)).toBe(1_000_000);
    const streamed = new Uint8Array(await new Response(standby.readStream(seids[3]!)).arrayBuffer());
    expect(Buffer.compare(streamed, valueOf(3, 99, 2_000_000))).toBe(0);
    const stats = standby.stats();
    expect(stats.replication.role).toBe("standby");
    expect(stats.replication.seeds).toBe(1);
    expect(stats.replication.lagTransactions).toBe(0);
    expect(stats.elements).toBe(primary.stats().elements);
    const p = primary.stats().replication;
    expect(p?.role).toBe("primary");
    if (p?.role === "primary") {
      expect(p.connectedStandbys).toBe(1);
      expect(p.seeds).toBe(1);
      expect(p.standbys[0]!.lagBytes).toBe(0);
    }
    // Writes are a typed error on a standby.
    await expect(standby.transaction((tx) => tx.write(seids[0]!, new Uint8Array(1)))).rejects.toBeInstanceOf(ReadOnlyError);
  }
}, 90_000);

test("a restarted standby resumes from its own position: no re-seed, no gap, no duplicate", async () => {
  const d = dir("restart");
  const primary = await openPrimary(d);
  const server = await primary.serveReplication({ port: 0, secret: SECRET, ...quiet });
  const addr = `127.0.0.1:${server.port}`;
  const seids = Array.from({ length: 50 }, () => primary.allocateSeid());
  let n = 0;
  const commit = () => {
    const v = ++n;
    return primary.transaction((tx) => {
      for (let k = 0; k < 3; k++) tx.write(seids[(v + k * 17) % seids.length]!, valueOf(v, k, 100 + v));
    });
  };
  for (let i = 0; i < 50; i++) await commit();
  let standby = await openStandby(d, addr);
  await standby.caughtUp({ timeoutMs: 20_000 });
  for (let i = 0; i < 50; i++) await commit();
  await standby.caughtUp({ timeoutMs: 20_000 });
  await standby.close();
  // Meanwhile the primary goes on: the standby must get exactly these on return.
  for (let i = 0; i < 100; i++) await commit();
  standby = await openStandby(d, addr);
  await standby.caughtUp({ timeoutMs: 20_000 });
  expect(standby.stats().replication.seeds).toBe(0);
  await expectSameState(primary, standby, [1]);
  // Exactly the 100 transactions committed while it was away: none twice, none missing.
  expect(standby.stats().replication.transactionsApplied).toBe(100);
}, 60_000);

test("authentication: wrong and missing secret refused on both sides with the typed error", async () => {
  const d = dir("auth");
  const primary = await openPrimary(d);
  const failures: AuthenticationError[] = [];
  const lines: string[] = [];
  const server = await primary.serveReplication({ port: 0, secret: SECRET, log: (l) => lines.push(l) });
  server.on("auth-failed", (error) => failures.push(error));
  const addr = `127.0.0.1:${server.port}`;
  await expect(Store.openStandby(path.join(d, "s1.lss"), { primary: addr, secret: "a-completely-wrong-secret!!", log: () => {} })).rejects.toBeInstanceOf(AuthenticationError);
  await until(() => failures.length === 1, 5_000, "the primary's auth-failed event");
  expect(failures[0]).toBeInstanceOf(AuthenticationError);
  expect(failures[0]!.code).toBe("LSS_AUTH");
  expect(lines.some((l) => l.includes("refused"))).toBe(true);
  const stats = primary.stats().replication;
  expect(stats?.role === "primary" && stats.authFailures).toBe(1);
  // Missing secrets, either side.
  await expect(Store.openStandby(path.join(d, "s2.lss"), { primary: addr, secret: "" })).rejects.toBeInstanceOf(AuthenticationError);
  const other = await openPrimary(d, "other.lss");
  await expect(other.serveReplication({ port: 0, secret: undefined as unknown as string })).rejects.toBeInstanceOf(AuthenticationError);
  // A primary with the wrong secret: the standby refuses it (and the primary refuses the standby).
  const impostor = await other.serveReplication({ port: 0, secret: "an-impostor-secret-9876543210", ...quiet });
  await expect(Store.openStandby(path.join(d, "s3.lss"), { primary: `127.0.0.1:${impostor.port}`, secret: SECRET, log: () => {} })).rejects.toBeInstanceOf(AuthenticationError);
});

test("a replayed handshake is refused, and nothing of the store was sent to it", async () => {
  const d = dir("replay");
  const primary = await openPrimary(d);
  await primary.transaction((tx) => tx.write(primary.allocateSeid(), new TextEncoder().encode("secret data")));
  const failures: AuthenticationError[] = [];
  const server = await primary.serveReplication({ port: 0, secret: SECRET, ...quiet });
  server.on("auth-failed", (e) => failures.push(e));
  // Record what a real standby sends (its Hello and Auth) through a recording proxy.
  const sent: Uint8Array[] = [];
  const recorder = Bun.listen<{ up?: Bun.Socket<undefined>; held: Uint8Array[] }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(client) {
        client.data = { held: [] };
        void Bun.connect({
          hostname: "127.0.0.1",
          port: server.port!,
          socket: { data: (_s, chunk) => void client.write(chunk), close: () => void client.end() },
        }).then((up) => {
          client.data.up = up;
          for (const chunk of client.data.held.splice(0)) up.write(chunk);
        });
      },
      data(client, chunk) {
        sent.push(new Uint8Array(chunk));
        if (client.data.up === undefined) client.data.held.push(new Uint8Array(chunk));
        else client.data.up.write(chunk);
      },
      close(client) {
        client.data.up?.end();
      },
    },
  });
  cleanups.push(() => recorder.stop(true));
  const standby = await openStandby(d, `127.0.0.1:${recorder.port}`);
  await standby.caughtUp({ timeoutMs: 10_000 });
  await standby.close();
  const splitter = new FrameSplitter();
  const frames = sent.flatMap((chunk) => splitter.push(chunk));
  const hello = frames.find((f) => f[0] === Msg.Hello)!;
  const auth = frames.find((f) => f[0] === Msg.Auth)!;
  expect(hello).toBeDefined();
  expect(auth).toBeDefined();
  const frame = (body: Uint8Array) => {
    const out = new Uint8Array(4 + body.length);
    new DataView(out.buffer).setUint32(0, body.length, true);
    out.set(body, 4);
    return out;
  };
  // Replay both to the primary on a fresh connection: its new challenge makes the old proof worthless.
  const received: Uint8Array[] = [];
  let closed = false;
  const replay = await Bun.connect({
    hostname: "127.0.0.1",
    port: server.port!,
    socket: { data: (_s, chunk) => void received.push(new Uint8Array(chunk)), close: () => void (closed = true) },
  });
  replay.write(frame(hello));
  await until(() => received.length > 0, 5_000, "the challenge");
  replay.write(frame(auth));
  await until(() => closed, 5_000, "the primary to close the replayed connection");
  await until(() => failures.length === 1, 5_000, "auth-failed");
  expect(failures[0]!.message).toMatch(/replayed|wrong secret/);
  const types = new FrameSplitter().push(Buffer.concat(received)).map((f) => f[0]);
  expect(types).toEqual([Msg.Challenge, Msg.Refused]);
  expect(Buffer.concat(received).includes(Buffer.from("secret data"))).toBe(false);
  // Junk before authenticating is refused too.
  const junk = await Bun.connect({ hostname: "127.0.0.1", port: server.port!, socket: { data() {} } });
  junk.write(encodeMessage(Msg.Start, { from: 0 }));
  await until(() => failures.length === 2, 5_000, "auth-failed for junk");
  junk.end();
}, 30_000);

test("a standby of another store is refused on both sides", async () => {
  const d = dir("other-store");
  const a = await openPrimary(d, "a.lss");
  const b = await openPrimary(d, "b.lss");
  await a.transaction((tx) => tx.write(a.allocateSeid(), new Uint8Array([1])));
  const sa = await a.serveReplication({ port: 0, secret: SECRET, ...quiet });
  const sb = await b.serveReplication({ port: 0, secret: SECRET, ...quiet });
  const failures: AuthenticationError[] = [];
  sb.on("auth-failed", (e) => failures.push(e));
  const standby = await openStandby(d, `127.0.0.1:${sa.port}`);
  await standby.caughtUp({ timeoutMs: 10_000 });
  await standby.close();
  await expect(
    Store.openStandby(path.join(d, "standby.lss"), { primary: `127.0.0.1:${sb.port}`, secret: SECRET, store: STORE_OPTIONS, log: () => {} }),
  ).rejects.toBeInstanceOf(AuthenticationError);
  await until(() => failures.length === 1, 5_000, "auth-failed on the other primary");
  expect(failures[0]!.message).toMatch(/another store/);
});

test("sync levels: durable waits for the standby; no standby → degrade (event) or fail (typed error), never a forever-wait", async () => {
  const d = dir("levels");
  const primary = await openPrimary(d);
  const events: string[] = [];
  const server = await primary.serveReplication({ port: 0, secret: SECRET, replication: "durable", replicationTimeoutMs: 300, ...quiet });
  server.on("degraded", () => events.push("degraded")).on("restored", () => events.push("restored"));
  const seid = primary.allocateSeid();
  // No standby: the commit waits its timeout, then goes on as async.
  let t = performance.now();
  await primary.transaction((tx) => tx.write(seid, new Uint8Array([1])));
  expect(performance.now() - t).toBeGreaterThanOrEqual(250);
  expect(events).toEqual(["degraded"]);
  t = performance.now();
  await primary.transaction((tx) => tx.write(seid, new Uint8Array([2])));
  expect(performance.now() - t).toBeLessThan(250); // degraded: no wait
  // A standby arrives and catches up: restored; durable commits are then on its disk when they resolve.
  const standby = await openStandby(d, `127.0.0.1:${server.port}`);
  await standby.caughtUp({ timeoutMs: 10_000 });
  await primary.transaction((tx) => tx.write(seid, new Uint8Array([3])));
  await until(() => events.includes("restored"), 5_000, "restored");
  for (let i = 4; i < 20; i++) {
    await primary.transaction((tx) => tx.write(seid, new Uint8Array([i])), { replication: i % 2 === 0 ? "durable" : "applied" });
    // Resolved means applied and durable on the standby: read it there now.
    expect(await standby.read(seid)).toEqual(new Uint8Array([i]));
  }
  await primary.transaction((tx) => tx.write(seid, new Uint8Array([77])), { replication: "received" });
  const s = primary.stats().replication;
  expect(s?.role === "primary" && s.confirmedCommits).toBeGreaterThanOrEqual(17);
  // fail policy, standby gone.
  await standby.close();
  await server.close();
  const strict = await primary.serveReplication({ port: 0, secret: SECRET, replication: "durable", replicationTimeoutMs: 200, onReplicationTimeout: "fail", ...quiet });
  await expect(primary.transaction((tx) => tx.write(seid, new Uint8Array([99])))).rejects.toBeInstanceOf(ReplicationTimeoutError);
  // Committed locally all the same (the error says so).
  expect(await primary.read(seid)).toEqual(new Uint8Array([99]));
  await expect(primary.transaction((tx) => tx.write(seid, new Uint8Array([100])), { replication: "async" })).resolves.toBeUndefined();
  await strict.close();
}, 60_000);

test("receipt is acknowledged only while commits wait for it; received and durable commits resolve either way", async () => {
  const d = dir("acks");
  const primary = await openPrimary(d);
  const server = await primary.serveReplication({ port: 0, secret: SECRET, replication: "durable", replicationTimeoutMs: 10_000, ...quiet });
  const standby = await openStandby(d, `127.0.0.1:${server.port}`);
  await standby.caughtUp({ timeoutMs: 10_000 });
  const seid = primary.allocateSeid();
  const acks = (): number => standby.stats().replication.acksSent;
  const COMMITS = 40;
  let before = acks();
  for (let i = 0; i < COMMITS; i++) {
    await primary.transaction((tx) => tx.write(seid, new Uint8Array([i])));
    expect(await standby.read(seid)).toEqual(new Uint8Array([i]));
  }
  // Durable only: one acknowledgement per commit (its durability), not two.
  const durableOnly = acks() - before;
  expect(durableOnly).toBeGreaterThanOrEqual(COMMITS);
  expect(durableOnly).toBeLessThan(COMMITS * 1.5);
  expect(server.sync.wantsReceivedAcks()).toBe(false);
  // A commit waits for `received`: from then on units are acknowledged as they arrive as well.
  await primary.transaction((tx) => tx.write(seid, new Uint8Array([100])), { replication: "received" });
  expect(server.sync.wantsReceivedAcks()).toBe(true);
  before = acks();
  for (let i = 0; i < COMMITS; i++) await primary.transaction((tx) => tx.write(seid, new Uint8Array([i])), { replication: "received" });
  expect(acks() - before).toBeGreaterThanOrEqual(COMMITS);
  const sent = (): number => {
    const r = primary.stats().replication;
    return r?.role === "primary" ? (r.standbys[0]?.sentAddress ?? 0) : 0;
  };
  await until(() => standby.stats().replication.durableAddress >= sent(), 10_000, "the standby durable");
  expect(acks() - before).toBeGreaterThanOrEqual(COMMITS * 1.5);
}, 60_000);

test("promotion within 1 s; the new epoch fences the old primary", async () => {
  const d = dir("promote");
  const a = await openPrimary(d, "a.lss");
  const seids = Array.from({ length: 20 }, () => a.allocateSeid());
  await a.transaction((tx) => seids.forEach((s, i) => tx.write(s, valueOf(i, 0, 64))));
  const fencedEvents: FencedError[] = [];
  const sa = await a.serveReplication({ port: 0, secret: SECRET, replication: "durable", replicationTimeoutMs: 2_000, onReplicationTimeout: "fail", ...quiet });
  sa.on("fenced", (e) => fencedEvents.push(e));
  const b = await openStandby(d, `127.0.0.1:${sa.port}`, "b.lss");
  for (let i = 0; i < 20; i++) await a.transaction((tx) => tx.write(seids[i]!, valueOf(i, 1, 64)));
  const t = performance.now();
  const promoted = await b.promote();
  const promoteMs = performance.now() - t;
  expect(promoteMs).toBeLessThan(1_000);
  expect(b.stats().replication.epoch).toBe(2);
  await expectSameState(a, b, [1]);
  await b.transaction((tx) => tx.write(seids[0]!, new Uint8Array([42])));
  expect(await promoted.read(seids[0]!)).toEqual(new Uint8Array([42]));
  // C follows the new primary (seeded; it has seen epoch 2)...
  const sb = await b.serveReplication({ port: 0, secret: SECRET, ...quiet });
  const c = await openStandby(d, `127.0.0.1:${sb.port}`, "c.lss");
  await c.caughtUp({ timeoutMs: 10_000 });
  expect(await c.read(seids[0]!)).toEqual(new Uint8Array([42]));
  expect(c.stats().replication.epoch).toBe(2);
  await c.close();
  // ...and refuses the old one; the old one learns it is fenced, its synchronous commits fail.
  await expect(
    Store.openStandby(path.join(d, "c.lss"), { primary: `127.0.0.1:${sa.port}`, secret: SECRET, store: STORE_OPTIONS, log: () => {} }),
  ).rejects.toBeInstanceOf(FencedError);
  await until(() => fencedEvents.length === 1, 5_000, "the old primary's fenced event");
  const s = a.stats().replication;
  expect(s?.role === "primary" && s.fenced).toBe(true);
  await expect(a.transaction((tx) => tx.write(seids[1]!, new Uint8Array([1])))).rejects.toBeInstanceOf(FencedError);
  // The promoted store's file keeps the epoch across a reopen.
  await b.close();
  const reopened = await Store.open(path.join(d, "b.lss"), STORE_OPTIONS);
  const server = await reopened.serveReplication({ port: 0, secret: SECRET, ...quiet });
  expect(server.epoch).toBe(2);
  await reopened.close();
}, 60_000);
