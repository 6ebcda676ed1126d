/**
 * The per-phase figures `bench methods` and `bench scale` report: which engine did a phase's
 * heavy work, its counted matmul FLOPs (src/model/flops.ts) and the rate achieved against the
 * engine's own plain matmul rate.
 */

/**
 * `epoch`: every epoch of a method without a cache (all alike); `epoch1`: the epoch that runs
 * the backbone and fills the cache; `cached`: an epoch trained from the cache.
 */
export type PhaseName = 'epoch' | 'epoch1' | 'cached';

export interface PhaseFigures {
  phase: PhaseName;
  /** Engine per part, e.g. "backbone native, side native (up tfjs), head native". */
  engine: string;
  /** Seconds of one epoch of the phase (the mean when several ran). */
  seconds: number;
  /** Matmul FLOPs of one epoch of the phase, forward and backward. */
  flops: number;
  gflops: number;
  /** gflops over the engine's plain matmul GFLOP/s measured in the same run. */
  overEngineMatmul: number;
}

export function phaseFigures(phase: PhaseName, engine: string, seconds: number, flops: number, matmulGflops: number): PhaseFigures {
  const gflops = flops / seconds / 1e9;
  return { phase, engine, seconds, flops, gflops, overEngineMatmul: gflops / matmulGflops };
}

/** One line for human output. */
export function phaseLine(p: PhaseFigures): string {
  return `${p.phase}: ${p.seconds.toFixed(2)} s, ${(p.flops / 1e9).toFixed(2)} GFLOP, ${p.gflops.toFixed(2)} GFLOP/s = ${p.overEngineMatmul.toFixed(2)} of the engine's matmul (${p.engine})`;
}

export const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
