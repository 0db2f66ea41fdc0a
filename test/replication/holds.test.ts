/**
 * What the primary keeps for a standby that comes and goes, checked with a scripted standby (the
 * real protocol over a real socket, every frame chosen by the test): the log a standby may resume
 * from stays held across reconnects, whatever its acknowledgements say, until it is past
 * `maxRetainedBytes`.
 *
 * A real standby acknowledges its *applied* position (where a restarted standby resumes, see
 * state.ts), which lags what it *received* (where the same process resumes) by whatever its
 * apply has not committed yet, or by a stretch of the cleaner's log (which moves no position):
 * the scripted standby acknowledges a position that does not move, the extreme of both.
 */
import { afterEach, expect, test } from "bun:test";
import path from "node:path";
import { Store } from "../../src/index.ts";
import { storeInternals } from "../../src/store/store.ts";
import { newNonce, standbyMac } from "../../src/replication/auth.ts";
import { decodeMessage, encodeMessage, Msg, PROTOCOL_VERSION, type Message } from "../../src/replication/protocol.ts";
import { FrameSplitter } from "../../src/workers/wire.ts";
import { scratchDir } from "../helpers.ts";
import { SECRET, STORE_OPTIONS, until, valueOf } from "./util.ts";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** One connection of a scripted standby: authenticates, asks for the log from `from`, acknowledges as told. */
class ScriptedStandby {
  readonly frames: Message[] = [];
  /** End of the last unit received on this connection. */
  receivedEnd = 0;
  closed = false;
  private readonly socket: Bun.Socket<undefined>;
  private readonly splitter = new FrameSplitter();
  /** The applied position each acknowledgement reports. */
  private readonly position: number;

  private constructor(socket: Bun.Socket<undefined>, position: number) {
    this.socket = socket;
    this.position = position;
  }

  static async connect(port: number, standbyId: string, from: number, position: number): Promise<ScriptedStandby> {
    let self: ScriptedStandby | undefined;
    const early: Uint8Array[] = [];
    const socket = await Bun.connect<undefined>({
      hostname: "127.0.0.1",
      port,
      socket: {
        data: (_s, chunk) => {
          if (self === undefined) early.push(new Uint8Array(chunk));
          else self.data(new Uint8Array(chunk));
        },
        close: () => {
          if (self !== undefined) self.closed = true;
        },
      },
    });
    self = new ScriptedStandby(socket, position);
    for (const chunk of early) self.data(chunk);
    const nonce = newNonce();
    self.send(Msg.Hello, { version: PROTOCOL_VERSION, nonce, storeId: "", epoch: 0, standbyId });
    const challenge = await self.next(Msg.Challenge);
    const mac = standbyMac(new TextEncoder().encode(SECRET), { standbyNonce: nonce, primaryNonce: challenge.header.nonce as string, storeId: "", epoch: 0, standbyId });
    self.send(Msg.Auth, { mac });
    await self.next(Msg.Welcome);
    self.send(Msg.Start, { from });
    self.receivedEnd = from;
    return self;
  }

  private send(type: Msg, header: Record<string, unknown>): void {
    this.socket.write(encodeMessage(type, header));
  }

  private data(chunk: Uint8Array): void {
    for (const frame of this.splitter.push(chunk)) {
      const message = decodeMessage(frame);
      this.frames.push(message);
      if (message.type === Msg.Unit) {
        this.receivedEnd = Math.max(this.receivedEnd, message.header.end as number);
        // Received and durable move; the applied position stays where it was.
        this.send(Msg.Ack, { received: this.receivedEnd, durable: this.receivedEnd, position: this.position, transaction: 1, commitTime: null });
      }
    }
  }

  async next(type: Msg): Promise<Message> {
    await until(() => this.frames.some((f) => f.type === type || f.type === Msg.Refused), 10_000, `frame ${type} from the primary`);
    const frame = this.frames.find((f) => f.type === type || f.type === Msg.Refused) as Message;
    if (frame.type === Msg.Refused) throw new Error(`refused: ${JSON.stringify(frame.header)}`);
    return frame;
  }

  async close(): Promise<void> {
    this.socket.end();
    await until(() => this.closed, 10_000, "the scripted standby's socket to close");
  }
}

test("a standby whose applied position lags what it received resumes after two reconnects with no re-seed, though the cleaner reused the log in between", async () => {
  const { dir, cleanup } = scratchDir("repl-holds");
  cleanups.push(cleanup);
  const primary = await Store.open(path.join(dir, "p.lss"), STORE_OPTIONS);
  cleanups.push(() => primary.close());
  const lines: string[] = [];
  const server = await primary.serveReplication({ port: 0, secret: SECRET, log: (l) => lines.push(l) });
  const seids = Array.from({ length: 16 }, () => primary.allocateSeid());
  let version = 0;
  /** Overwrite the same 16 elements (~1 MiB live) with `mib` MiB, then clean: old segments are freed and reused. */
  const churn = async (mib: number) => {
    for (let i = 0; i < mib * 16; i++) {
      const v = ++version;
      await primary.transaction((tx) => tx.write(seids[v % seids.length]!, valueOf(v, 0, 64 << 10)));
    }
    await primary.compact();
  };
  await churn(1);
  const stableAt = () => storeInternals(primary).core.log.stableAddress;
  const position = stableAt();
  const caughtUp = (s: ScriptedStandby) => until(() => s.receivedEnd >= stableAt(), 10_000, "the scripted standby to receive the tail");

  // First connection: the standby applied up to `position` and stays there while it receives more.
  const a = await ScriptedStandby.connect(server.port!, "lagging-standby", position, position);
  await churn(3);
  await caughtUp(a);
  await a.close();

  // Second connection, resuming from what it received; its applied position is still the old one.
  const b = await ScriptedStandby.connect(server.port!, "lagging-standby", a.receivedEnd, position);
  await churn(6);
  await caughtUp(b);
  await b.close();

  // Meanwhile the log before where it resumes is reused many times over.
  await churn(8);
  const c = await ScriptedStandby.connect(server.port!, "lagging-standby", b.receivedEnd, position);
  await primary.transaction((tx) => tx.write(seids[0]!, valueOf(0, 1, 100)));
  await until(() => c.receivedEnd >= stableAt() || c.frames.some((f) => f.type === Msg.SeedBegin), 10_000, "the tail, or a seed").catch((error: unknown) => {
    throw new Error(`${String(error)}; frames ${c.frames.map((f) => f.type).join(",")}; ${JSON.stringify(server.diagnostics())}`);
  });
  const types = c.frames.map((f) => f.type);
  expect(lines.filter((l) => l.includes("re-seeding") || l.includes("seeded"))).toEqual([]);
  expect(types).not.toContain(Msg.SeedBegin);
  expect(types).toContain(Msg.Unit);
  // Every unit it got continues exactly where it stood.
  const first = c.frames.find((f) => f.type === Msg.Unit)!;
  expect(first.header.end as number).toBeGreaterThan(b.receivedEnd);
  await c.close();
}, 120_000);
