/**
 * FLOP counts and measured rates of the backbone forward pass, for benches and the profiler.
 * Counted: the matmuls of the held layers (projections and the T x T attention products, the
 * causal half included since it is computed); norms, activations and softmax are not.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone, ModelConfig } from './types.ts';

/** Matmul FLOPs of one backbone layer's forward over `batch` sequences of `seqLen` tokens. */
export function layerForwardFlops(c: ModelConfig, batch: number, seqLen: number): number {
  const N = batch * seqLen,
    d = c.dModel,
    q = c.nHeads * c.headDim,
    kv = c.nKvHeads * c.headDim;
  const mlpMats = c.family === 'llama' ? 3 : 2;
  const projections = 2 * N * (d * q + 2 * d * kv + q * d + mlpMats * d * c.dFF);
  const attention = 2 * 2 * batch * c.nHeads * seqLen * seqLen * c.headDim; // scores and probs @ v
  return projections + attention;
}

/**
 * Measures the forward pass of every held layer (frozen, no gradient) over random activations:
 * GFLOP/s by layerForwardFlops, best of `reps` after a warm-up pass.
 */
export function measureForwardGflops(
  bb: Backbone,
  batch: number,
  seqLen: number,
  reps = 3,
): { gflops: number; seconds: number; flops: number } {
  const layers = Math.max(0, bb.range.to - bb.range.from + 1);
  if (layers === 0) throw new Error('measureForwardGflops: the backbone holds no layer');
  const flops = layers * layerForwardFlops(bb.config, batch, seqLen);
  const h0 = tf.randomNormal([batch * seqLen, bb.config.dModel], 0, 1, 'float32', 7) as tf.Tensor2D;
  const pass = () => {
    tf.tidy(() => {
      let h = h0;
      for (let i = bb.range.from; i <= bb.range.to; i++) h = bb.layer(i, h, seqLen);
      h.dataSync();
    });
  };
  try {
    pass();
    let best = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      pass();
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return { gflops: flops / best / 1e9, seconds: best, flops };
  } finally {
    h0.dispose();
  }
}
