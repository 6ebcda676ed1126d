/**
 * What stages must agree on after their groups have reduced a step's gradients: the global
 * gradient norm (clipping scales every parameter by the norm over all of them, wherever they
 * live) and, when a tied embedding and LM head sit on different stages, the sum of both copies'
 * gradients. Both travel in one all-reduce over every rank of the plan: rank 0 of each stage
 * contributes its stage's squared norm (without the tied weight) and its tied gradient, every
 * other rank zeros. Adding zeros is exact, so every rank ends with the same values, and the
 * tied copies get bit-identical gradients (a + b = b + a in floating point).
 */
import { ringAllReduce, type RingTransport } from './allreduce.ts';
import type { RankCompute } from './trainable.ts';
import { squaredNorm } from '../train/optim.ts';

/** Where the tied weight sits in the flat gradient (`names()` order), or null. */
function tiedRange(compute: RankCompute): [number, number] | null {
  const name = compute.tied?.name;
  if (!name) return null;
  const params = compute.parameters();
  let at = 0;
  for (const n of compute.names()) {
    const size = params.get(n)!.size;
    if (n === name) return [at, at + size];
    at += size;
  }
  throw new Error(`cross-stage: tied weight ${name} is not a parameter of this stage`);
}

/** (rows, cols) row-major <-> its transpose. */
function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = x[i * cols + j]!;
  return out;
}

/**
 * Exchanges the global norm and the tied gradient. `reduced` (this group's reduced gradient) gets
 * the tied total in place. Returns the global gradient norm and the bytes this rank sent.
 */
export async function crossStageReduce(
  compute: RankCompute,
  reduced: Float32Array,
  lead: boolean,
  rank: number,
  size: number,
  ring: RingTransport,
): Promise<{ gradNorm: number; bytesSent: number }> {
  const tied = compute.tied;
  const n = tied ? tied.rows * tied.cols : 0;
  const range = tiedRange(compute);
  const vec = new Float32Array(n + 1);
  if (lead) {
    if (range && tied) {
      const own = reduced.subarray(range[0], range[1]);
      vec.set(tied.transposed ? transpose(own, tied.cols, tied.rows) : own);
      vec[n] = squaredNorm([reduced.subarray(0, range[0]), reduced.subarray(range[1])]);
    } else vec[n] = squaredNorm([reduced]);
  }
  const total = await ringAllReduce(vec, rank, size, ring);
  const tiedTotal = total.subarray(0, n);
  if (range && tied) reduced.set(tied.transposed ? transpose(tiedTotal, tied.rows, tied.cols) : tiedTotal, range[0]);
  const gradNorm = Math.sqrt(total[n]! + squaredNorm([tiedTotal]));
  return { gradNorm, bytesSent: size > 1 ? (2 * (size - 1) * vec.byteLength) / size : 0 };
}
