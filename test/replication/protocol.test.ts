/**
 * The replication connection's write path (src/replication/protocol.ts), over a socket that
 * records its writes: the frames sent in one turn leave in one socket write, in order; an orderly
 * close sends what was sent before it, an abort drops it; large frames are not copied together.
 */
import { expect, test } from "bun:test";
import { Connection, decodeMessage, Msg, type WireSocket } from "../../src/replication/protocol.ts";
import { FrameSplitter } from "../../src/workers/wire.ts";

/** A socket that takes everything and remembers each write and the end. */
class RecordingSocket implements WireSocket {
  readonly events: Array<Uint8Array | "end" | "terminate"> = [];
  write(data: Uint8Array): number {
    this.events.push(data.slice());
    return data.length;
  }
  end(): void {
    this.events.push("end");
  }
  terminate(): void {
    this.events.push("terminate");
  }
  get writes(): Uint8Array[] {
    return this.events.filter((e): e is Uint8Array => e instanceof Uint8Array);
  }
}

function framesOf(writes: Uint8Array[]): Array<{ type: Msg; n: unknown }> {
  const splitter = new FrameSplitter();
  return writes.flatMap((w) => splitter.push(w)).map((f) => {
    const m = decodeMessage(f);
    return { type: m.type, n: m.header.n };
  });
}

test("frames sent in one turn leave in one socket write, in order; the next turn's in another", async () => {
  const socket = new RecordingSocket();
  const conn = new Connection(socket);
  conn.send(Msg.Unit, { n: 1 }, new Uint8Array(100));
  conn.send(Msg.Unit, { n: 2 }, new Uint8Array(200));
  conn.send(Msg.Heartbeat, { n: 3 });
  expect(socket.writes.length).toBe(0); // not yet: at the end of the turn
  expect(conn.backlog).toBeGreaterThan(300);
  await Promise.resolve();
  expect(socket.writes.length).toBe(1);
  expect(framesOf(socket.writes)).toEqual([
    { type: Msg.Unit, n: 1 },
    { type: Msg.Unit, n: 2 },
    { type: Msg.Heartbeat, n: 3 },
  ]);
  expect(conn.backlog).toBe(0);
  conn.send(Msg.Ack, { n: 4 });
  await Bun.sleep(0);
  expect(socket.writes.length).toBe(2);
  expect(framesOf(socket.writes).map((f) => f.n)).toEqual([1, 2, 3, 4]);
  expect(conn.bytesOut).toBe(socket.writes.reduce((n, w) => n + w.length, 0));
});

test("an orderly close sends what was sent before it, then ends; an abort drops it", async () => {
  const closing = new RecordingSocket();
  const a = new Connection(closing);
  a.send(Msg.Refused, { n: 1 });
  a.close();
  expect(closing.events.length).toBe(2);
  expect(closing.events[1]).toBe("end");
  expect(framesOf(closing.writes)).toEqual([{ type: Msg.Refused, n: 1 }]);
  await Promise.resolve();
  expect(closing.writes.length).toBe(1); // nothing twice

  const aborting = new RecordingSocket();
  const b = new Connection(aborting);
  b.send(Msg.Unit, { n: 1 }, new Uint8Array(10));
  b.abort(new Error("stalled peer"));
  await Promise.resolve();
  expect(aborting.events).toEqual(["terminate"]);
});

test("large frames of one turn are written one by one, not copied into one", async () => {
  const socket = new RecordingSocket();
  const conn = new Connection(socket);
  conn.send(Msg.SeedData, { n: 1 }, new Uint8Array(200_000));
  conn.send(Msg.SeedData, { n: 2 }, new Uint8Array(200_000));
  await Promise.resolve();
  expect(socket.writes.length).toBe(2);
  expect(framesOf(socket.writes).map((f) => f.n)).toEqual([1, 2]);
});

test("whenDrained writes what waits at once", async () => {
  const socket = new RecordingSocket();
  const conn = new Connection(socket);
  conn.send(Msg.Unit, { n: 1 }, new Uint8Array(10));
  await conn.whenDrained(0);
  expect(socket.writes.length).toBe(1);
});
