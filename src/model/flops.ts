/**
 * FLOP counts and measured rates of the backbone forward pass and of a fine-tuning method's
 * epoch, for benches and the profiler. Counted: matmuls only (projections, the T x T attention
 * products with the causal half included since it is computed, the LM head's (N, d) x (d, V));
 * norms, activations, softmax, embedding lookups and the optimiser are not.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone, ModelConfig } from './types.ts';
import { projectionShape } from './methods/lora.ts';
import { withDefaults, type MethodName, type MethodOptions } from './methods/method.ts';
import { sideShape, type SideShape } from './methods/side-block.ts';

/** A layer's forward matmul FLOPs, split by whether a weight takes part (backward differs). */
interface LayerFlops {
  /** Activation x weight products: backward repeats each for dX, and again for dW if trained. */
  projections: number;
  /** Activation x activation products (scores, probs @ v): backward takes two of the same size. */
  attention: number;
}

function layerParts(c: ModelConfig, batch: number, seqLen: number): LayerFlops {
  const N = batch * seqLen,
    d = c.dModel,
    q = c.nHeads * c.headDim,
    kv = c.nKvHeads * c.headDim;
  const mlpMats = c.family === 'llama' ? 3 : 2;
  return {
    projections: 2 * N * (d * q + 2 * d * kv + q * d + mlpMats * d * c.dFF),
    attention: 2 * 2 * batch * c.nHeads * seqLen * seqLen * c.headDim, // scores and probs @ v
  };
}

/** Matmul FLOPs of one backbone layer's forward over `batch` sequences of `seqLen` tokens. */
export function layerForwardFlops(c: ModelConfig, batch: number, seqLen: number): number {
  const p = layerParts(c, batch, seqLen);
  return p.projections + p.attention;
}

function sideBlockParts(s: SideShape, batch: number, seqLen: number): LayerFlops {
  const N = batch * seqLen,
    r = s.width,
    a = s.nHeads * s.headDim;
  const mlpMats = s.family === 'llama' ? 3 : 2;
  return {
    projections: 2 * N * (3 * r * a + a * r + mlpMats * r * s.dFF),
    attention: 2 * 2 * batch * s.nHeads * seqLen * seqLen * s.headDim,
  };
}

/** Matmul FLOPs of one epoch's phase, forward and backward (their sum is `total`). */
export interface PhaseFlops {
  forward: number;
  backward: number;
  total: number;
}

/**
 * Matmul FLOPs of one epoch over `samples` sequences of `seqLen` tokens (the count does not
 * depend on how they are batched), forward and backward, as each method computes them:
 * - full: every layer and the (tied or not) head trained: backward = dX and dW of every
 *   projection, two products per attention product.
 * - lora, serial: the frozen backbone and head are backpropagated for activations only (dX,
 *   no dW); the adapters get dX and dW. The first layer's input-side products are counted
 *   though autodiff may skip them (nothing trainable lies below them).
 * - parallel: the backbone forward without backward; the side network's down projections get
 *   dW only (their inputs are frozen activations), its blocks and `up` dX and dW, the frozen
 *   head dL/dh only. `cached`: the activations come from the cache, no backbone forward.
 * Work done twice by an engine is counted once: the native side network's backward re-runs its
 * forward, so its rate against this count understates the FLOPs it executes.
 */
export function epochFlops(
  c: ModelConfig,
  method: MethodName,
  options: MethodOptions,
  o: { samples: number; seqLen: number; cached?: boolean },
): PhaseFlops {
  const { samples: S, seqLen: T } = o;
  const N = S * T,
    d = c.dModel,
    L = c.nLayers;
  const layer = layerParts(c, S, T);
  const backboneForward = L * (layer.projections + layer.attention);
  const backboneActivationGrads = L * (layer.projections + 2 * layer.attention);
  const head = 2 * N * d * c.vocabSize;
  const sum = (forward: number, backward: number): PhaseFlops => ({ forward, backward, total: forward + backward });
  if (o.cached && method !== 'parallel') throw new Error(`epochFlops: only the parallel method has cached epochs, not ${method}`);
  const opts = withDefaults(options);
  switch (method) {
    case 'full':
      return sum(backboneForward + head, backboneActivationGrads + L * layer.projections + 2 * head);
    case 'lora': {
      let perLayer = 0;
      for (const t of opts.targets) {
        const [din, dout] = projectionShape(c, t);
        perLayer += 2 * N * (din * opts.rank + opts.rank * dout); // (x A) then (xA) B
      }
      const adapters = L * perLayer;
      return sum(backboneForward + adapters + head, backboneActivationGrads + 2 * adapters + head);
    }
    case 'serial': {
      const adapters = L * 2 * (2 * N * 2 * d * opts.bottleneck); // after attention and after the MLP
      return sum(backboneForward + adapters + head, backboneActivationGrads + 2 * adapters + head);
    }
    case 'parallel': {
      const s = sideShape(c, opts.reduction);
      const r = s.width;
      const downs = (L + 1) * 2 * N * d * r;
      const block = sideBlockParts(s, S, T);
      const blocks = L * (block.projections + block.attention);
      const blocksBackward = L * (2 * block.projections + 2 * block.attention);
      const up = 2 * N * r * d;
      return sum((o.cached ? 0 : backboneForward) + downs + blocks + up + head, downs + blocksBackward + 2 * up + head);
    }
  }
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
