/**
 * The floor under a Worker's transaction hand-off (bench/workers.ts, part `floor`): how long the
 * two hops it is built of take on their own, with nothing else running. A Worker waiting on a
 * SharedArrayBuffer word with `Atomics.waitAsync` (how a Worker waits for its turn, turn.ts) is
 * notified by the main thread; and a Worker writes a 64-byte frame on a Unix socket to the main
 * thread (how a Worker ships its transaction to the owner, host.ts). Each is timed from the
 * sender's clock to the receiver's callback (performance.timeOrigin + now() is one clock across
 * the threads of a process). The Worker side of both lives here; the main side in workers.ts.
 *
 * @module
 */

/** A floor job, posted to this script's Worker. */
export type FloorJob =
  | { kind: "wake"; shared: SharedArrayBuffer; rounds: number }
  | { kind: "socket"; unix: string; shared: SharedArrayBuffer; rounds: number };

declare const self: Worker;

async function wake(job: Extract<FloorJob, { kind: "wake" }>): Promise<number[]> {
  const words = new Int32Array(job.shared, 0, 2);
  const sentAt = new Float64Array(job.shared, 8, 1);
  const latencies: number[] = [];
  for (let round = 0; round < job.rounds; round++) {
    const seen = Atomics.load(words, 0);
    Atomics.store(words, 1, 1); // waiting
    const waited = Atomics.waitAsync(words, 0, seen, 1000);
    if (waited.async) await waited.value;
    latencies.push(performance.timeOrigin + performance.now() - (sentAt[0] as number));
  }
  return latencies;
}

async function socket(job: Extract<FloorJob, { kind: "socket" }>): Promise<number[]> {
  const sentAt = new Float64Array(job.shared, 8, 1);
  let echoed: (() => void) | undefined;
  const conn = await Bun.connect({
    unix: job.unix,
    socket: {
      data() {
        const resolve = echoed;
        echoed = undefined;
        resolve?.();
      },
    },
  });
  for (let round = 0; round < job.rounds; round++) {
    // Let the main thread go to sleep in its event loop first, as an owner between commits does.
    await new Promise((resolve) => setTimeout(resolve, 0.3));
    const back = new Promise<void>((resolve) => (echoed = resolve));
    sentAt[0] = performance.timeOrigin + performance.now();
    conn.write(new Uint8Array(64));
    await back;
  }
  conn.end();
  return [];
}

if (typeof Bun !== "undefined" && !Bun.isMainThread) {
  self.onmessage = async (event: MessageEvent<FloorJob>) => {
    try {
      const latencies = event.data.kind === "wake" ? await wake(event.data) : await socket(event.data);
      self.postMessage({ latencies });
    } catch (error) {
      self.postMessage({ error: String(error) });
    }
  };
}
