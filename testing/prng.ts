/**
 * Seeded pseudo-random generators for the test harness. Two generators, kept on purpose: the
 * torture driver prints mulberry32 seeds that replay a failure exactly, and the tests' recorded
 * seeds (regressions named by seed) were found with xorshift128+; changing either would change
 * what every recorded seed replays.
 *
 * @module
 */

/** mulberry32 → [0, 1): small, fast, deterministic from a seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** xorshift128+: small, fast, deterministic from a seed. */
export function rng(seed: number): () => number {
  let s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
  let s1 = (seed * 0x85ebca6b) >>> 0 || 2;
  return () => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    s1 = x >>> 0;
    return ((s0 + s1) >>> 0) / 0x100000000;
  };
}
