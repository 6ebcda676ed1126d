/**
 * Seeded pseudo-random numbers for everything the trainer must reproduce exactly: data order,
 * synthetic data, sampling. mulberry32 over a 32-bit state; streams are derived from a seed and
 * any number of integer salts so that (seed, epoch) always gives the same sequence.
 */

/** A deterministic generator: `next()` in [0, 1), `int(n)` in [0, n). */
export interface Rng {
  next(): number;
  int(n: number): number;
}

/** Mixes a seed and salts into one 32-bit state (splitmix-style avalanche per word). */
export function mixSeed(seed: number, ...salts: number[]): number {
  let h = (seed >>> 0) ^ 0x9e3779b9;
  for (const s of salts) {
    h = Math.imul(h ^ (s >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/** mulberry32 generator seeded from (seed, ...salts). */
export function createRng(seed: number, ...salts: number[]): Rng {
  let state = mixSeed(seed, ...salts);
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

/** Fisher-Yates shuffle of 0..n-1 driven by `rng`. */
export function permutation(n: number, rng: Rng): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
