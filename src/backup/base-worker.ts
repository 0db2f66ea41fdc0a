/**
 * Entry of a backup's base-copy Worker (started by base-thread.ts; never imported). It opens the
 * store's file read-only through a descriptor of its own and the backup target, runs the one
 * base copy (base-copy.ts), and reports to the store's thread: `ready` once both are open,
 * `progress`, `release` (segments it is done with, so the store unpins them), then `done` or
 * `error`.
 *
 * @module
 */
import { SegmentFile } from "../log/segment-file.ts";
import { copyBase } from "./base-copy.ts";
import { describeError } from "../error-wire.ts";
import type { BaseJob, FromBaseWorker } from "./base-thread.ts";
import { openTarget, type BackupTarget } from "./target.ts";

declare const self: Worker;

/** Progress is posted at most this often (a message per record would cost more than the copy). */
const PROGRESS_EVERY_BYTES = 1 << 20;

function post(message: FromBaseWorker): void {
  self.postMessage(message);
}

self.onmessage = async (event: MessageEvent<BaseJob>): Promise<void> => {
  const job = event.data;
  let file: SegmentFile | undefined;
  let target: BackupTarget | undefined;
  let ready = false;
  try {
    file = await SegmentFile.open(job.path, job.io, job.plan.segmentSize, job.plan.indexes);
    target = await openTarget(job.target, job.targetOptions);
    ready = true;
    post({ type: "ready" });
    let unreported = 0;
    const result = await copyBase(job.plan, file, target, {
      progress: (bytes) => {
        unreported += bytes;
        if (unreported < PROGRESS_EVERY_BYTES) return;
        post({ type: "progress", bytes: unreported });
        unreported = 0;
      },
      release: (seqs) => post({ type: "release", seqs }),
    });
    if (unreported > 0) post({ type: "progress", bytes: unreported });
    post({ type: "done", result });
  } catch (error) {
    post({ type: "error", ready, error: describeError(error) });
  } finally {
    await target?.close().catch(() => {});
    file?.close();
  }
};
