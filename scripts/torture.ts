/**
 * Torture driver: `bun run torture -- --seconds N --seed S` (see src/torture/torture.ts).
 * Simulated power cuts and injected I/O faults under random workloads, checked against a model;
 * `--kills N` adds SIGKILLs of a real writer process, `--corrupt N` corrupted-file trials.
 */
import { main } from "../testing/torture/torture.ts";

process.exit(await main(process.argv.slice(2)));
