/**
 * Entry of the process's backup Worker (started by base-thread.ts; never imported). Per job it
 * opens the store's file read-only through a descriptor of its own and the backup target
 * (`ready`), then, given the map at the point, makes the plan (base-plan.ts, `planned`) and runs
 * the one base copy (base-copy.ts), reporting `progress` and `release` (segments it is done with,
 * so the store unpins them), then `done` or `error`. The pieces chunks are assembled in are kept
 * across jobs (one {@link PiecePool}).
 *
 * @module
 */
import { SegmentFile } from "../log/segment-file.ts";
import { MappingTable } from "../store/state/mapping.ts";
import { StoreClosedError } from "../errors.ts";
import { describeError } from "../error-wire.ts";
import { PiecePool } from "./base.ts";
import { CommitGate } from "../io/commit-gate.ts";
import { setThreadIdle } from "../io/libc.ts";
import { copyBase } from "./base-copy.ts";
import { makeBasePlan, SegmentUses } from "./base-plan.ts";
import type { FromBaseWorker, OpenJob, PlanJob, ToBaseWorker } from "./base-thread.ts";
import { openTarget, type BackupTarget } from "./target.ts";

declare const self: Worker;

/** Progress is posted at most this often (a message per record would cost more than the copy). */
const PROGRESS_EVERY_BYTES = 1 << 20;
/** Pieces kept across jobs: two default chunks for each of two overlapping jobs. */
const POOL_BYTES = 64 << 20;

const pool = new PiecePool(POOL_BYTES);

/** A job between `open` and its end. */
interface Job {
  readonly controller: AbortController;
  file?: SegmentFile;
  target?: BackupTarget;
}

const jobs = new Map<number, Job>();

function post(message: FromBaseWorker): void {
  self.postMessage(message);
}

async function endJob(id: number): Promise<void> {
  const job = jobs.get(id);
  if (job === undefined) return;
  jobs.delete(id);
  await job.target?.close().catch(() => {});
  job.file?.close();
}

/** Whether this thread was made `SCHED_IDLE` (base-thread.ts: a Worker serves one priority). */
let idle = false;

async function open(id: number, spec: OpenJob): Promise<void> {
  const job: Job = { controller: new AbortController() };
  jobs.set(id, job);
  if (spec.background && !idle) {
    idle = true;
    // Refused (a seccomp filter, say): the copy runs at normal priority; it still waits on the gate.
    try {
      setThreadIdle();
    } catch {
      // libc not loadable: the file cannot be opened either, and open() reports that below
    }
  }
  try {
    job.file = await SegmentFile.open(spec.path, spec.io, spec.segmentSize, spec.indexes);
    job.target = await openTarget(spec.target, spec.targetOptions);
    job.controller.signal.throwIfAborted();
    post({ id, type: "ready" });
  } catch (error) {
    post({ id, type: "error", ready: false, error: describeError(error) });
    await endJob(id);
  }
}

async function copy(id: number, spec: PlanJob): Promise<void> {
  const job = jobs.get(id);
  if (job?.file === undefined || job.target === undefined) return; // cancelled meanwhile
  try {
    const plan = await makeBasePlan(spec.header, MappingTable.attach(spec.map), spec.parts);
    post({ id, type: "planned", totalBytes: plan.totalBytes });
    const uses = new SegmentUses(plan, spec.pinned);
    const unused = uses.unused();
    if (unused.length > 0) post({ id, type: "release", seqs: unused });
    let unreported = 0;
    const result = await copyBase(
      plan,
      job.file,
      job.target,
      {
        progress: (bytes) => {
          unreported += bytes;
          if (unreported < PROGRESS_EVERY_BYTES) return;
          post({ id, type: "progress", bytes: unreported });
          unreported = 0;
        },
        release: (seqs) => {
          const done = uses.release(seqs);
          if (done.length > 0) post({ id, type: "release", seqs: done });
        },
      },
      { pool, signal: job.controller.signal, maxBytesPerSecond: spec.maxBytesPerSecond, commitGate: spec.commitGate === undefined ? undefined : new CommitGate(spec.commitGate) },
    );
    if (unreported > 0) post({ id, type: "progress", bytes: unreported });
    post({ id, type: "done", result });
  } catch (error) {
    post({ id, type: "error", ready: true, error: describeError(error) });
  } finally {
    await endJob(id);
  }
}

self.onmessage = (event: MessageEvent<ToBaseWorker>): void => {
  const message = event.data;
  switch (message.type) {
    case "open":
      void open(message.id, message);
      return;
    case "copy":
      void copy(message.id, message);
      return;
    case "cancel":
      jobs.get(message.id)?.controller.abort(new StoreClosedError("the store was closed during the backup"));
      return;
  }
};
