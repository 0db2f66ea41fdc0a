/**
 * Helpers of the replication suite: store options (small segments so the cleaner and segment
 * reuse happen in seconds), a deadline for every wait, state comparison, and a TCP proxy that can
 * drop its connections and stall.
 */
import { expect } from "bun:test";
import type { Store } from "../../src/index.ts";

export const SECRET = "replication-test-secret-0123456789";

/** Small segments and buffers: the cleaner runs, elements go multipart, segments are reused. */
export const STORE_OPTIONS = {
  segmentSize: 1 << 20,
  bufferSize: 64 << 10,
  cleanerUtilisationPercent: 60,
  cleanerLowWaterSegments: 2,
  cleanerHighWaterSegments: 4,
} as const;

/** Wait until `condition()` holds, or fail after `ms` naming `what`. */
export async function until(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** Something that reads like a store. */
export interface Readable {
  read(seid: bigint): Promise<Uint8Array | undefined>;
  seids(space?: number): bigint[];
}

/** Every element of the given spaces, hex-encoded, for exact comparison. */
export async function snapshot(store: Readable, spaces: readonly number[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const space of spaces) {
    for (const seid of store.seids(space)) {
      const value = await store.read(seid);
      if (value !== undefined) out.set(seid.toString(16), Buffer.from(value).toString("hex"));
    }
  }
  return out;
}

export async function expectSameState(a: Readable, b: Readable, spaces: readonly number[]): Promise<void> {
  const [x, y] = await Promise.all([snapshot(a, spaces), snapshot(b, spaces)]);
  expect(y.size).toBe(x.size);
  for (const [key, value] of x) {
    if (y.get(key) !== value) throw new Error(`seid 0x${key} differs: ${value.slice(0, 32)}… vs ${y.get(key)?.slice(0, 32)}…`);
  }
}

/** A deterministic value for (seid tag, version). */
export function valueOf(tag: number, version: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = (tag * 2654435761 + version * 40503 + 1) >>> 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

interface Pair {
  client: Bun.Socket<PairData>;
  upstream: Bun.Socket<PairData> | undefined;
  /** Bytes held while stalled, per direction. */
  toUpstream: Uint8Array[];
  toClient: Uint8Array[];
}
interface PairData {
  pair?: Pair;
}

/**
 * A TCP proxy on 127.0.0.1 to `target`: `drop()` closes every connection through it, `stall()`
 * holds every byte in both directions (connections stay open, nothing passes), `resume()`
 * delivers what was held and goes on.
 */
export class StallingProxy {
  readonly port: number;
  private readonly server: Bun.TCPSocketListener<PairData>;
  private readonly pairs = new Set<Pair>();
  stalled = false;
  connections = 0;

  constructor(targetPort: number) {
    const proxy = this;
    this.server = Bun.listen<PairData>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(client) {
          const pair: Pair = { client, upstream: undefined, toUpstream: [], toClient: [] };
          client.data = { pair };
          proxy.pairs.add(pair);
          proxy.connections += 1;
          void Bun.connect<PairData>({
            hostname: "127.0.0.1",
            port: targetPort,
            socket: {
              open(up) {
                up.data = { pair };
                pair.upstream = up;
                proxy.pump(pair);
              },
              data(_up, chunk) {
                pair.toClient.push(new Uint8Array(chunk));
                proxy.pump(pair);
              },
              drain() {
                proxy.pump(pair);
              },
              close() {
                proxy.closePair(pair);
              },
              error() {
                proxy.closePair(pair);
              },
            },
          }).catch(() => proxy.closePair(pair));
        },
        data(client, chunk) {
          const pair = client.data?.pair;
          if (pair === undefined) return;
          pair.toUpstream.push(new Uint8Array(chunk));
          proxy.pump(pair);
        },
        drain(client) {
          const pair = client.data?.pair;
          if (pair !== undefined) proxy.pump(pair);
        },
        close(client) {
          const pair = client.data?.pair;
          if (pair !== undefined) proxy.closePair(pair);
        },
        error(client) {
          const pair = client.data?.pair;
          if (pair !== undefined) proxy.closePair(pair);
        },
      },
    });
    this.port = this.server.port;
  }

  private pump(pair: Pair): void {
    if (this.stalled) return;
    const flush = (queue: Uint8Array[], socket: Bun.Socket<PairData> | undefined): void => {
      if (socket === undefined) return;
      while (queue.length > 0) {
        const head = queue[0] as Uint8Array;
        const written = socket.write(head);
        if (written >= head.length) queue.shift();
        else {
          if (written > 0) queue[0] = head.subarray(written);
          return;
        }
      }
    };
    flush(pair.toUpstream, pair.upstream);
    flush(pair.toClient, pair.client);
  }

  private closePair(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.client.end();
    pair.upstream?.end();
  }

  /** Close every connection now (what is held is lost, as on a broken network). */
  drop(): void {
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      pair.client.terminate();
      pair.upstream?.terminate();
    }
  }

  stall(): void {
    this.stalled = true;
  }

  /** Where the proxy stands, for a failure message: live pairs and bytes held each way. */
  diagnostics(): Record<string, unknown> {
    const held = (queue: Uint8Array[]): number => queue.reduce((n, b) => n + b.length, 0);
    return {
      stalled: this.stalled,
      connections: this.connections,
      pairs: [...this.pairs].map((p) => ({ upstream: p.upstream !== undefined, toUpstream: held(p.toUpstream), toClient: held(p.toClient) })),
    };
  }

  resume(): void {
    this.stalled = false;
    for (const pair of this.pairs) this.pump(pair);
  }

  close(): void {
    this.drop();
    this.server.stop(true);
  }
}

export type { Store };
