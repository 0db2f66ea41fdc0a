/**
 * The power-cut torture in the default test run: at least 500 simulated power cuts (and a few
 * dozen injected I/O errors) under random workloads, every recovery checked against the model.
 * `bun run torture` runs the same driver for as long as asked.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { runPowerCutTorture, type PowerCutReport } from "../../testing/torture/powercut.ts";
import { scratchDir } from "../helpers.ts";

function show(report: PowerCutReport): string {
  return (
    `seed ${report.seed}: ${report.cycles} cycles, ${report.powerCuts} power cuts (${report.cutsDuringOpen} during open), ` +
    `${report.tornWrites} torn / ${report.droppedWrites} dropped / ${report.keptWrites} kept writes, ${report.injectedErrors} injected errors, ` +
    `${report.transactions} transactions (${report.committed} committed, ${report.durable} acked), ${report.checkpoints} checkpoints, ` +
    `${report.reopens} clean reopens, ${report.checks} checks, ${report.violations.length} violations, ${(report.elapsedMs / 1000).toFixed(1)}s`
  );
}

function violations(report: PowerCutReport): string[] {
  return report.violations.map((v) => `cycle ${v.cycle} (cycle seed ${v.cycleSeed}): ${v.message}${v.file ? ` [${v.file}]` : ""}`);
}

describe("power-cut torture", () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(() => {
    ({ dir, cleanup } = scratchDir("torture"));
  });
  afterAll(() => cleanup());

  test("≥ 500 power cuts and injected faults at random points: every recovery is a committed prefix with every ack", async () => {
    const report = await runPowerCutTorture({ seed: 20261121, dir, powerCuts: 520 });
    console.log(`power-cut torture: ${show(report)}`);
    expect(violations(report)).toEqual([]);
    expect(report.powerCuts).toBeGreaterThanOrEqual(500);
    expect(report.cutsDuringOpen).toBeGreaterThan(0);
    expect(report.tornWrites).toBeGreaterThan(0);
    expect(report.droppedWrites).toBeGreaterThan(0);
    expect(report.keptWrites).toBeGreaterThan(0);
    expect(report.injectedErrors).toBeGreaterThan(20);
    expect(report.durable).toBeGreaterThan(1000);
    expect(report.checkpoints).toBeGreaterThan(50);
    expect(report.reopens).toBeGreaterThan(20);
    expect(report.checks).toBeGreaterThan(20_000);
  }, 170_000);

  test("real asynchronous I/O (thread pool completions): 60 cycles", async () => {
    const report = await runPowerCutTorture({ seed: 7, dir, cycles: 60, asyncIo: true });
    console.log(`async torture: ${show(report)}`);
    expect(violations(report)).toEqual([]);
    expect(report.powerCuts).toBeGreaterThan(30);
  }, 120_000);

  test("the same seed replays the same run", async () => {
    const a = await runPowerCutTorture({ seed: 99, dir, cycles: 40 });
    const b = await runPowerCutTorture({ seed: 99, dir, cycles: 40 });
    const pick = (r: PowerCutReport) => [r.powerCuts, r.tornWrites, r.droppedWrites, r.keptWrites, r.injectedErrors, r.transactions, r.committed, r.checks];
    expect(pick(b)).toEqual(pick(a));
  }, 60_000);

  test("the harness catches a store that acknowledges before durability", async () => {
    // Relaxed durability, but every resolved commit counted as a durable ack: cuts must expose it.
    const report = await runPowerCutTorture({ seed: 3, dir, cycles: 120, faultProbability: 0, unsafeCountRelaxedAcks: true });
    expect(report.violations.some((v) => v.message.includes("acknowledged transactions lost"))).toBe(true);
  }, 60_000);
});
