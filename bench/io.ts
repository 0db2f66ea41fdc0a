/**
 * Foundation benchmark of the I/O backends ("uring" and "portable"), beside fio in the same run.
 *
 * Patterns (each backend, each repeated {@link REPS} times, interleaved with fio; medians):
 * - 1 MiB sequential O_DIRECT writes at queue depth 1, 4 and 16 over a 256 MiB region of a
 *   preallocated, prefilled file (time-based: the region wraps);
 * - 4 KiB write + linked fdatasync in one submission, serial, and the same as `pwrite` +
 *   `fdatasync` system calls (the faster of the two is the rate a durable commit cannot beat);
 * - 4 KiB random O_DIRECT reads at queue depth 1 and 32 over the same 256 MiB file.
 * Ops go straight through `backend.submit` / `wait` / `reap`, keeping QD ops in flight.
 * mitata gives per-op latency of the QD-1 patterns.
 *
 * Run alone: `bun bench/io.ts`. Reusable: {@link measureRawSequentialMiBps},
 * {@link measureWriteDatasyncRate}.
 *
 * @module
 */
import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";
import { bench, group, run, summary } from "mitata";
import { openBackend } from "../src/io/open.ts";
import { fallocate } from "../src/io/libc.ts";
import { MAX_WAIT_BLOCK_US, type FileHandle, type IoBackend, type IoCompletion, type IoOp, type NativeBuffer } from "../src/io/backend.ts";
import {
  dataPath,
  fioVersion,
  fmt,
  heading,
  log,
  prng,
  randomBytes,
  ratioOf,
  removeData,
  Report,
  REPS,
  Reps,
  runFio,
  scaled,
} from "./common.ts";

export type BenchIo = "uring" | "portable";

const MiB = 1 << 20;
const KiB4 = 4096;
/** File region every pattern works over. */
export const REGION_BYTES = 256 * MiB;
/** Measuring time of one pattern, one rep, one contender. */
const PATTERN_MS = scaled(1500, 200);

/** Write `bytes` of pseudo-random data to `path` (buffered, then fsync): extents written, not just allocated. */
export function prefillFile(path: string, bytes: number): void {
  const fd = openSync(path, "w");
  try {
    const chunk = randomBytes(MiB, 7);
    for (let offset = 0; offset < bytes; offset += MiB) writeSync(fd, chunk, 0, Math.min(MiB, bytes - offset), offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Open the backend `io`, run `fn`, close it (whatever happens). */
export async function withBackend<T>(io: BenchIo, fn: (backend: IoBackend) => Promise<T>): Promise<T> {
  const backend = await openBackend({ io, queueDepth: 64 });
  try {
    return await fn(backend);
  } finally {
    backend.close();
  }
}

/** Open `path` on `backend` with O_DIRECT; throws when the filesystem refuses O_DIRECT. */
function openDirect(backend: IoBackend, path: string): FileHandle {
  const file = backend.openFile(path, { direct: true });
  if (!file.direct) {
    backend.closeFile(file);
    throw new Error(`${path}: O_DIRECT refused by the filesystem; the raw I/O figures would be meaningless`);
  }
  return file;
}

interface DriveResult {
  ops: number;
  elapsedMs: number;
}

/**
 * Keep `qd` ops in flight until `durationMs` has passed (then drain). `make(seq, slot)` builds op
 * number `seq` using buffer slot `slot` (0 … qd-1, free again once its op completed). Every op
 * must transfer `expectBytes` or the run fails.
 */
async function drive(
  backend: IoBackend,
  qd: number,
  durationMs: number,
  expectBytes: number,
  make: (seq: number, slot: number) => IoOp,
): Promise<DriveResult> {
  const completions: IoCompletion[] = [];
  let issued = 0;
  let done = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  const first: IoOp[] = [];
  for (let slot = 0; slot < qd; slot++) first.push(make(issued++, slot));
  backend.submit(first);
  let stopping = false;
  while (done < issued) {
    await backend.wait(1, 1000);
    completions.length = 0;
    const n = backend.reap(completions);
    if (!stopping && performance.now() >= deadline) stopping = true;
    const next: IoOp[] = [];
    for (let i = 0; i < n; i++) {
      const c = completions[i] as IoCompletion;
      if (c.result !== expectBytes) throw new Error(`op ${c.userData} returned ${c.result}, expected ${expectBytes}`);
      done += 1;
      if (!stopping) next.push(make(issued++, c.userData));
    }
    if (next.length > 0) backend.submit(next);
  }
  return { ops: done, elapsedMs: performance.now() - start };
}

export interface Throughput {
  mibps: number;
  iops: number;
}

/** 1 MiB sequential writes at queue depth `qd` over the first {@link REGION_BYTES} of `path`. */
export function measureSeqWrite(backend: IoBackend, path: string, qd: number, durationMs = PATTERN_MS): Promise<Throughput> {
  return measureSeq(backend, path, qd, "write", durationMs);
}

/** 1 MiB sequential reads at queue depth `qd` over the first {@link REGION_BYTES} of `path`. */
export function measureSeqRead(backend: IoBackend, path: string, qd: number, durationMs = PATTERN_MS): Promise<Throughput> {
  return measureSeq(backend, path, qd, "read", durationMs);
}

/** 1 MiB sequential `op`s at queue depth `qd` over the first {@link REGION_BYTES} of `path` (writes share one buffer of random bytes). */
async function measureSeq(backend: IoBackend, path: string, qd: number, op: "read" | "write", durationMs: number): Promise<Throughput> {
  const file = openDirect(backend, path);
  const buffers: NativeBuffer[] = [];
  for (let i = 0; i < (op === "read" ? qd : 1); i++) buffers.push(backend.alloc(MiB));
  if (op === "write") (buffers[0] as NativeBuffer).bytes.set(randomBytes(MiB, 3));
  const blocks = REGION_BYTES / MiB;
  try {
    const r = await drive(backend, qd, durationMs, MiB, (seq, slot) => ({
      op,
      fd: file.fd,
      buffer: buffers[op === "read" ? slot : 0] as NativeBuffer,
      bufferOffset: 0,
      lengthBytes: MiB,
      fileOffset: (seq % blocks) * MiB,
      userData: slot,
    }));
    const seconds = r.elapsedMs / 1000;
    return { mibps: r.ops / seconds, iops: r.ops / seconds };
  } finally {
    for (const b of buffers) backend.free(b);
    backend.closeFile(file);
  }
}

/**
 * 1 MiB sequential writes at queue depth `qd` into fresh space: a file grown with fallocate
 * ahead of the writes, as a store's file grows. Each write turns an unwritten extent into a
 * written one, a metadata change a write over written blocks does not pay (on this VM's ext4:
 * ~2.0 GB/s against ~3.9 GB/s, /tmp probes 2026-12-01).
 */
export async function measureFreshWrite(backend: IoBackend, path: string, qd: number, durationMs = PATTERN_MS): Promise<Throughput> {
  const file = openDirect(backend, path);
  const buffer = backend.alloc(MiB);
  buffer.bytes.set(randomBytes(MiB, 3));
  // Grown a region at a time, as the store grows its file; never rewritten (fresh space only).
  const growBytes = 64 * MiB;
  let grown = 0;
  try {
    const r = await drive(backend, qd, durationMs, MiB, (seq, slot) => {
      const fileOffset = seq * MiB;
      while (fileOffset + MiB > grown) {
        if (fallocate(file.fd, 0, grown, growBytes) !== 0) throw new Error(`fallocate of ${path} failed`);
        grown += growBytes;
      }
      return { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: MiB, fileOffset, userData: slot };
    });
    const seconds = r.elapsedMs / 1000;
    return { mibps: r.ops / seconds, iops: r.ops / seconds };
  } finally {
    backend.free(buffer);
    backend.closeFile(file);
  }
}

/** 4 KiB random reads at queue depth `qd` over the first {@link REGION_BYTES} of `path`. */
export async function measureRandRead(backend: IoBackend, path: string, qd: number, durationMs = PATTERN_MS): Promise<Throughput> {
  const file = openDirect(backend, path);
  const buffers: NativeBuffer[] = [];
  for (let i = 0; i < qd; i++) buffers.push(backend.alloc(KiB4));
  const blocks = REGION_BYTES / KiB4;
  const next = prng(11);
  try {
    const r = await drive(backend, qd, durationMs, KiB4, (_seq, slot) => ({
      op: "read",
      fd: file.fd,
      buffer: buffers[slot] as NativeBuffer,
      bufferOffset: 0,
      lengthBytes: KiB4,
      fileOffset: Math.floor(next() * blocks) * KiB4,
      userData: slot,
    }));
    const seconds = r.elapsedMs / 1000;
    return { mibps: (r.ops * KiB4) / MiB / seconds, iops: r.ops / seconds };
  } finally {
    for (const b of buffers) backend.free(b);
    backend.closeFile(file);
  }
}

/** One op, waited for; throws unless it transferred `expect` bytes (0 for datasync). */
async function oneOp(backend: IoBackend, op: IoOp, expect: number, out: IoCompletion[]): Promise<void> {
  backend.submit([op]);
  out.length = 0;
  while (out.length === 0) {
    await backend.wait(1, 1000);
    backend.reap(out);
  }
  const result = (out[0] as IoCompletion).result;
  if (result !== expect) throw new Error(`${op.op} returned ${result}, expected ${expect}`);
}

/**
 * One 4 KiB write of `buffer` at `fileOffset` and a datasync linked after it, in one submission,
 * waited for blocking in the kernel; both results checked. `out` is scratch for the completions.
 */
export async function writeDatasyncPair(backend: IoBackend, file: FileHandle, buffer: NativeBuffer, fileOffset: number, out: IoCompletion[]): Promise<void> {
  backend.submit([
    { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: KiB4, fileOffset, userData: 1, link: true },
    { op: "datasync", fd: file.fd, userData: 2 },
  ]);
  out.length = 0;
  while (out.length < 2) {
    await backend.wait(2 - out.length, 1000, MAX_WAIT_BLOCK_US);
    backend.reap(out);
  }
  for (const c of out) {
    const expect = c.userData === 1 ? KiB4 : 0;
    if (c.result !== expect) throw new Error(`${c.userData === 1 ? "write" : "datasync"} returned ${c.result}, expected ${expect}`);
  }
}

/**
 * Serial 4 KiB write + fdatasync pairs at sequential offsets of `path`; returns pairs per second.
 * Each pair is the least a durable commit can cost: the write and a datasync linked after it in
 * one submission, waited for blocking in the kernel (what a lone commit does by default, see
 * `commitWaitBlockUs`). Until 2026-11-30 this issued the two ops one after the other with an
 * event-loop wake-up between them, which the store's linked commits outran.
 */
export async function measureWriteDatasync(backend: IoBackend, path: string, durationMs = PATTERN_MS, syscalls = false): Promise<number> {
  const file = openDirect(backend, path);
  const buffer = backend.alloc(KiB4);
  buffer.bytes.set(randomBytes(KiB4, 5));
  const blocks = REGION_BYTES / KiB4;
  const out: IoCompletion[] = [];
  try {
    let n = 0;
    const start = performance.now();
    const deadline = start + durationMs;
    const now = backend.writeThenSyncNow?.bind(backend);
    if (syscalls && now === undefined) throw new Error(`the ${backend.kind} backend has no writeThenSyncNow`);
    while (performance.now() < deadline) {
      if (syscalls) {
        // pwrite + fdatasync, plain system calls on this thread (what a lone commit does, IoQueue).
        const { written, synced } = (now as NonNullable<typeof now>)(file, buffer, 0, KiB4, (n % blocks) * KiB4);
        if (written !== KiB4 || synced !== 0) throw new Error(`write returned ${written}, datasync ${synced}`);
      } else {
        await writeDatasyncPair(backend, file, buffer, (n % blocks) * KiB4, out);
      }
      n += 1;
    }
    return n / ((performance.now() - start) / 1000);
  } finally {
    backend.free(buffer);
    backend.closeFile(file);
  }
}

// ─────────────────────────────── reusable figures ───────────────────────────────

/**
 * MiB/s of 1 MiB sequential O_DIRECT writes at queue depth `qd` (default 16) through backend
 * `io`, on a scratch file under bench/.data (created, prefilled, removed). The "raw sequential"
 * figure other benchmarks compare against.
 */
export async function measureRawSequentialMiBps(io: BenchIo = "uring", qd = 16, durationMs = PATTERN_MS): Promise<number> {
  return onScratchFile(`raw-seq-${io}-${process.pid}.dat`, io, (path) => prefillFile(path, REGION_BYTES), (backend, path) => measureSeqWrite(backend, path, qd, durationMs));
}

/** Raw 1 MiB sequential O_DIRECT reads at queue depth `qd` (io_uring), MiB/s (scratch file, removed). */
export async function measureRawSequentialReadMiBps(io: BenchIo = "uring", qd = 16, durationMs = PATTERN_MS): Promise<number> {
  return onScratchFile(`raw-seqr-${io}-${process.pid}.dat`, io, (path) => prefillFile(path, REGION_BYTES), (backend, path) => measureSeqRead(backend, path, qd, durationMs));
}

/** Raw 1 MiB sequential O_DIRECT writes into fresh (fallocated) space at queue depth `qd`, MiB/s (scratch file, removed). */
export async function measureRawFreshWriteMiBps(io: BenchIo = "uring", qd = 16, durationMs = PATTERN_MS): Promise<number> {
  return onScratchFile(`raw-fresh-${io}-${process.pid}.dat`, io, (path) => closeSync(openSync(path, "w")), (backend, path) => measureFreshWrite(backend, path, qd, durationMs));
}

/** MiB/s of `measure` on scratch file `name` under bench/.data, made by `prepare` and removed after. */
async function onScratchFile(name: string, io: BenchIo, prepare: (path: string) => void, measure: (backend: IoBackend, path: string) => Promise<Throughput>): Promise<number> {
  const path = dataPath(name);
  try {
    prepare(path);
    return await withBackend(io, async (backend) => (await measure(backend, path)).mibps);
  } finally {
    removeData(name);
  }
}

/**
 * Serial 4 KiB write + fdatasync pairs per second through backend `io` (scratch file, removed):
 * linked in one io_uring submission, or (`syscalls`) as `pwrite` + `fdatasync` system calls.
 */
export async function measureWriteDatasyncRate(io: BenchIo = "uring", durationMs = PATTERN_MS, syscalls = false): Promise<number> {
  const path = dataPath(`raw-sync-${io}-${process.pid}.dat`);
  try {
    prefillFile(path, REGION_BYTES);
    return await withBackend(io, (backend) => measureWriteDatasync(backend, path, durationMs, syscalls));
  } finally {
    removeData(`raw-sync-${io}-${process.pid}.dat`);
  }
}

// ─────────────────────────────── the benchmark ───────────────────────────────

const SECTION = "io";

function fioArgs(path: string, rw: string, bs: string, iodepth: number, extra: string[] = []): string[] {
  return [
    `--name=${rw}-${bs}-qd${iodepth}`,
    `--filename=${path}`,
    "--direct=1",
    "--ioengine=io_uring",
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--iodepth=${iodepth}`,
    `--size=${REGION_BYTES / MiB}M`,
    "--time_based",
    `--runtime=${PATTERN_MS}ms`,
    ...extra,
  ];
}

interface Pattern {
  key: string;
  label: string;
  unit: "MiB/s" | "IOPS" | "pairs/s";
  ours: (backend: IoBackend, path: string) => Promise<number>;
  fio: (path: string) => number;
}

const PATTERNS: Pattern[] = [
  ...[1, 4, 16].map(
    (qd): Pattern => ({
      key: `seqwrite-qd${qd}`,
      label: `1 MiB seq write QD${qd}`,
      unit: "MiB/s",
      ours: async (backend, path) => (await measureSeqWrite(backend, path, qd)).mibps,
      fio: (path) => runFio(fioArgs(path, "write", "1M", qd), "write").bwBytes / MiB,
    }),
  ),
  {
    key: "write-datasync",
    label: "4 KiB write + fdatasync (serial)",
    unit: "pairs/s",
    ours: (backend, path) => measureWriteDatasync(backend, path),
    fio: (path) => runFio(fioArgs(path, "write", "4k", 1, ["--fdatasync=1"]), "write").iops,
  },
  {
    key: "write-datasync-calls",
    label: "4 KiB pwrite + fdatasync system calls (serial)",
    unit: "pairs/s",
    ours: (backend, path) => measureWriteDatasync(backend, path, PATTERN_MS, true),
    fio: (path) => runFio(fioArgs(path, "write", "4k", 1, ["--fdatasync=1", "--ioengine=psync"]), "write").iops,
  },
  ...[1, 32].map(
    (qd): Pattern => ({
      key: `randread-qd${qd}`,
      label: `4 KiB random read QD${qd}`,
      unit: "IOPS",
      ours: async (backend, path) => (await measureRandRead(backend, path, qd)).iops,
      fio: (path) => runFio(fioArgs(path, "randread", "4k", qd), "read").iops,
    }),
  ),
];

/** mitata: per-op latency of the QD-1 patterns on both backends. */
async function mitataLatencies(report: Report, backends: Map<BenchIo, IoBackend>, path: string): Promise<void> {
  const state: Array<{ backend: IoBackend; file: FileHandle; buffer: NativeBuffer }> = [];
  const out: IoCompletion[] = [];
  for (const [io, backend] of backends) {
    const file = openDirect(backend, path);
    const buffer = backend.alloc(MiB);
    state.push({ backend, file, buffer });
    const next = prng(21);
    let seq = 0;
    group(`${io}`, () => {
      summary(() => {
        bench(`${io}: 4 KiB random read QD1`, async () => {
          await oneOp(backend, { op: "read", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: KiB4, fileOffset: Math.floor(next() * (REGION_BYTES / KiB4)) * KiB4, userData: 1 }, KiB4, out);
        });
        bench(`${io}: 4 KiB write + fdatasync`, async () => {
          const offset = (seq++ % (REGION_BYTES / KiB4)) * KiB4;
          await oneOp(backend, { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: KiB4, fileOffset: offset, userData: 1 }, KiB4, out);
          await oneOp(backend, { op: "datasync", fd: file.fd, userData: 2 }, 0, out);
        });
        bench(`${io}: 1 MiB write QD1`, async () => {
          const offset = (seq++ % (REGION_BYTES / MiB)) * MiB;
          await oneOp(backend, { op: "write", fd: file.fd, buffer, bufferOffset: 0, lengthBytes: MiB, fileOffset: offset, userData: 1 }, MiB, out);
        });
      });
    });
  }
  let text = "";
  try {
    const result = await run({ colors: false, print: (s: string) => ((text += `${s}\n`), log(s)) });
    for (const trial of result.benchmarks) {
      for (const r of trial.runs) {
        if (r.stats !== undefined) report.figure(`${SECTION} latency (mitata p50)`, r.name, r.stats.p50 / 1000, "µs");
        else report.error(`mitata ${r.name}`, r.error);
      }
    }
    report.block("mitata: per-op latency, QD1", text);
  } finally {
    for (const s of state) {
      s.backend.free(s.buffer);
      s.backend.closeFile(s.file);
    }
  }
}

/** Run the whole I/O benchmark into `report`. */
export async function runIoBench(report: Report): Promise<void> {
  heading("I/O backends beside fio");
  const fileName = `io-bench-${process.pid}.dat`;
  const path = dataPath(fileName);
  const hasFio = fioVersion() !== undefined;
  if (!hasFio) report.note("fio is not installed: no fio column, no ratios to fio");
  const backends = new Map<BenchIo, IoBackend>();
  try {
    prefillFile(path, REGION_BYTES);
    for (const io of ["uring", "portable"] as const) {
      try {
        backends.set(io, await openBackend({ io, queueDepth: 64 }));
      } catch (error) {
        report.error(`${SECTION}: open backend ${io}`, error);
      }
    }

    const reps = new Reps();
    for (let rep = 0; rep < REPS; rep++) {
      log(`  rep ${rep + 1}/${REPS}`);
      for (const p of PATTERNS) {
        for (const [io, backend] of backends) {
          try {
            reps.push(`${p.key}/${io}`, await p.ours(backend, path));
          } catch (error) {
            report.error(`${SECTION}: ${p.label} on ${io}`, error);
          }
        }
        if (hasFio) {
          try {
            reps.push(`${p.key}/fio`, p.fio(path));
          } catch (error) {
            report.error(`${SECTION}: fio ${p.label}`, error);
          }
        }
      }
    }
    for (const p of PATTERNS) {
      const fio = hasFio ? report.figure(SECTION, `${p.label}: fio io_uring`, reps.get(`${p.key}/fio`), p.unit).value : undefined;
      for (const io of backends.keys()) {
        const ours = report.figure(SECTION, `${p.label}: ${io}`, reps.get(`${p.key}/${io}`), p.unit).value;
        if (hasFio) {
          const target =
            io === "uring" && p.key === "seqwrite-qd16" ? 0.8 : io === "uring" && p.key === "randread-qd32" ? 0.7 : undefined;
          report.ratio(SECTION, `${p.label}: ${io} ÷ fio`, ratioOf(ours, fio), target);
        }
      }
    }

    await mitataLatencies(report, backends, path);
  } finally {
    for (const backend of backends.values()) {
      try {
        backend.close();
      } catch (error) {
        report.error(`${SECTION}: close backend`, error);
      }
    }
    removeData(fileName);
  }
}

if (import.meta.main) {
  const report = new Report();
  await runIoBench(report);
  heading("summary");
  for (const f of report.figures) log(`${f.section} | ${f.label}: ${fmt(f.value)} ${f.unit}`);
  removeData();
}
