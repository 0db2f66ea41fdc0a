/**
 * Benchmark of the LLAMA log layer (LogStructuredStore), beside the raw sequential write figure
 * of the same backend in the same run.
 *
 * - Appends of 64 B, 1 KiB and 64 KiB payloads from one thread, in both write modes, with
 *   `flush()` (seal + write + datasync, awaited) every N appends: N = 1000 for the small
 *   payloads, 16 for 64 KiB (one flush per MiB). The append path is `tryReserve` +
 *   `writePayload`, synchronous, falling back to `await reserveSpace` only when the open buffer
 *   is full and the next one is not free yet.
 * - The same 64 B and 64 KiB appends with a single flush at the end: the append path's and the
 *   write pipeline's own rates, without the awaited datasyncs that bound the flush-every-N
 *   figures (one datasync per 64 KiB of 64 B payloads, per MiB of 64 KiB payloads).
 * - Raw sequential: 1 MiB O_DIRECT writes at queue depth 4 through the same backend's IoQueue,
 *   into a fresh preallocated file (what the log's segments are), no datasync.
 *
 * Figures are payloads/s and MiB/s of payload (medians over {@link REPS} runs); mitata adds the
 * per-batch time of each pattern. Targets are reported, never asserted: 64 KiB appends ≥ 0.7 ×
 * raw sequential; 64 B appends ≥ 3 M/s.
 *
 * Run alone: `bun bench/log.ts` (io_uring when available, else portable; `BENCH_LOG_IO=portable`
 * forces one). bench/run.ts calls {@link runLogBench}. Files live in bench/.data and are removed.
 *
 * @module
 */
import { bench, group, run } from "mitata";
import { openBackend } from "../src/io/open.ts";
import { IoQueue } from "../src/io/queue.ts";
import type { NativeBuffer } from "../src/io/backend.ts";
import { LogStructuredStore, type WriteMode } from "../src/log/log.ts";
import { dataPath, fmt, heading, log, randomBytes, ratioOf, removeData, Report, REPS, scaled } from "./common.ts";

type BenchIo = "uring" | "portable";

const SECTION = "log";
const MiB = 1 << 20;
const MODES: readonly WriteMode[] = ["tailLocalized", "serialized"];

interface AppendCase {
  key: string;
  label: string;
  size: number;
  /** Appends between awaited flushes; 0 = one flush at the end. */
  flushEvery: number;
  /** Appends per measured run. */
  count: number;
}

const CASES: readonly AppendCase[] = [
  { key: "64B", label: "64 B appends, flush every 1000", size: 64, flushEvery: 1000, count: scaled(1_000_000, 10_000) },
  { key: "64B-path", label: "64 B appends, one flush at the end", size: 64, flushEvery: 0, count: scaled(3_000_000, 10_000) },
  { key: "1KiB", label: "1 KiB appends, flush every 1000", size: 1024, flushEvery: 1000, count: scaled(200_000, 2_000) },
  { key: "64KiB", label: "64 KiB appends, flush every 16", size: 64 << 10, flushEvery: 16, count: scaled(4096, 64) },
  { key: "64KiB-stream", label: "64 KiB appends, one flush at the end", size: 64 << 10, flushEvery: 0, count: scaled(8192, 64) },
];

/** io_uring when it works here, else portable (or what BENCH_LOG_IO asks for). */
export async function pickIo(): Promise<BenchIo> {
  const forced = process.env.BENCH_LOG_IO;
  if (forced === "uring" || forced === "portable") return forced;
  try {
    const backend = await openBackend({ io: "uring" });
    backend.close();
    return "uring";
  } catch {
    return "portable";
  }
}

interface Rate {
  payloadsPerSec: number;
  mibps: number;
}

/** One measured run of `c` on a fresh log file. */
async function appendRun(io: BenchIo, mode: WriteMode, c: AppendCase): Promise<Rate> {
  const name = `log-${mode}-${c.key}-${process.pid}.lss`;
  const path = dataPath(name);
  const log = await LogStructuredStore.open(path, { io, writeMode: mode });
  try {
    const bytes = randomBytes(c.size, c.size);
    const every = c.flushEvery;
    const t0 = performance.now();
    for (let i = 1; i <= c.count; i++) {
      const r = log.tryReserve(c.size) ?? (await log.reserveSpace(c.size));
      log.writePayload(bytes, r);
      if (every !== 0 && i % every === 0) await log.flush();
    }
    await log.flush();
    const seconds = (performance.now() - t0) / 1000;
    return { payloadsPerSec: c.count / seconds, mibps: (c.count * c.size) / MiB / seconds };
  } finally {
    await log.close();
    removeData(name);
  }
}

/** 1 MiB O_DIRECT sequential writes at queue depth `qd` through an IoQueue: MiB/s. */
export async function rawSequentialMiBps(io: BenchIo, totalBytes: number, qd = 4): Promise<number> {
  const name = `log-raw-${process.pid}.dat`;
  const path = dataPath(name);
  const backend = await openBackend({ io, queueDepth: 64 });
  const buffers: NativeBuffer[] = [];
  try {
    const file = backend.openFile(path, { create: true, direct: true });
    try {
      if (!file.direct) throw new Error(`${path}: O_DIRECT refused by the filesystem`);
      backend.allocateSpace(file, 0, totalBytes);
      const queue = new IoQueue(backend);
      const data = randomBytes(MiB, 5);
      for (let i = 0; i < qd; i++) {
        const buffer = backend.alloc(MiB);
        buffer.bytes.set(data);
        buffers.push(buffer);
      }
      const blocks = totalBytes / MiB;
      let next = 0;
      const t0 = performance.now();
      const lane = async (buffer: NativeBuffer): Promise<void> => {
        while (next < blocks) {
          const offset = next++ * MiB;
          await queue.write(file, buffer, 0, MiB, offset);
        }
      };
      await Promise.all(buffers.map((buffer) => lane(buffer)));
      return blocks / ((performance.now() - t0) / 1000);
    } finally {
      for (const buffer of buffers.splice(0)) backend.free(buffer);
      backend.closeFile(file);
    }
  } finally {
    backend.close();
    removeData(name);
  }
}

/** mitata: time of one batch (N appends + flush) of each pattern, logs kept open across iterations. */
async function mitataBatches(report: Report, io: BenchIo): Promise<void> {
  const logs: Array<{ log: LogStructuredStore; name: string }> = [];
  try {
    for (const mode of MODES) {
      for (const c of CASES) {
        if (c.flushEvery === 0) continue;
        const name = `log-mitata-${mode}-${c.key}-${process.pid}.lss`;
        const log = await LogStructuredStore.open(dataPath(name), { io, writeMode: mode });
        logs.push({ log, name });
        const bytes = randomBytes(c.size, c.size);
        group(`${mode}`, () => {
          bench(`${mode}: ${c.flushEvery} × ${fmt(c.size)} B + flush`, async () => {
            for (let i = 0; i < c.flushEvery; i++) {
              const r = log.tryReserve(c.size) ?? (await log.reserveSpace(c.size));
              log.writePayload(bytes, r);
            }
            await log.flush();
          });
        });
      }
    }
    let text = "";
    const result = await run({ colors: false, print: (s: string) => ((text += `${s}\n`), log(s)) });
    for (const trial of result.benchmarks) {
      for (const r of trial.runs) {
        if (r.stats !== undefined) report.figure(`${SECTION} batch time (mitata p50)`, r.name, r.stats.p50 / 1e6, "ms");
        else report.error(`mitata ${r.name}`, r.error);
      }
    }
    report.block("mitata: log batches (N appends + flush)", text);
  } finally {
    for (const { log, name } of logs) {
      await log.close();
      removeData(name);
    }
  }
}

/** Run the whole log benchmark into `report`. */
export async function runLogBench(report: Report): Promise<void> {
  const io = await pickIo();
  report.note(`log bench on backend "${io}", default log settings (1 MiB buffers, ring of 4, 8 MiB segments)`);
  const rawBytes = scaled(512, 16) * MiB;
  const raw: number[] = [];
  const rates = new Map<string, Rate[]>();
  for (let rep = 0; rep < REPS; rep++) {
    log(`  rep ${rep + 1}/${REPS}`);
    try {
      raw.push(await rawSequentialMiBps(io, rawBytes));
    } catch (error) {
      report.error(`${SECTION}: raw sequential`, error);
    }
    for (const mode of MODES) {
      for (const c of CASES) {
        try {
          const key = `${mode}/${c.key}`;
          const list = rates.get(key) ?? [];
          list.push(await appendRun(io, mode, c));
          rates.set(key, list);
        } catch (error) {
          report.error(`${SECTION}: ${c.label} (${mode})`, error);
        }
      }
    }
  }
  const rawMiBps = report.figure(SECTION, `raw sequential 1 MiB O_DIRECT writes, QD 4, IoQueue (${io})`, raw, "MiB/s").value;
  for (const mode of MODES) {
    for (const c of CASES) {
      const list = rates.get(`${mode}/${c.key}`) ?? [];
      const perSec = report.figure(SECTION, `${c.label} (${mode}): payloads/s`, list.map((r) => r.payloadsPerSec), "payloads/s").value;
      const mibps = report.figure(SECTION, `${c.label} (${mode}): MiB/s`, list.map((r) => r.mibps), "MiB/s").value;
      if (c.key === "64KiB" || c.key === "64KiB-stream") {
        report.ratio(SECTION, `${c.label} ÷ raw sequential (${mode})`, ratioOf(mibps, rawMiBps), 0.7);
      } else if (c.key === "64B" || c.key === "64B-path") {
        report.ratio(SECTION, `${c.label}, one thread (${mode})`, perSec, 3_000_000, { unit: "payloads/s" });
      }
    }
  }
  try {
    await mitataBatches(report, io);
  } catch (error) {
    report.error(`${SECTION}: mitata`, error);
  }
}

if (import.meta.main) {
  const report = new Report();
  heading("LLAMA log");
  try {
    await runLogBench(report);
  } finally {
    removeData();
  }
  heading("summary");
  for (const f of report.figures) log(`${f.section} | ${f.label}: ${fmt(f.value)} ${f.unit}`);
  for (const r of report.ratios) log(`${r.section} | ${r.label}: ${fmt(r.value)}${r.unit ? ` ${r.unit}` : "×"}${r.target !== undefined ? ` (target ≥ ${fmt(r.target)})` : ""}`);
  for (const e of report.errors) log(`ERROR ${e}`);
}
