/**
 * Shared fixtures of the methods tests: the tiny preset backbone on wasm, a fixed Markov batch,
 * the LM loss of a method, and a measure of the work done for backward.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone } from '../src/model/load.ts';
import type { FineTuneMethod } from '../src/model/methods/index.ts';
import type { Backbone } from '../src/model/types.ts';
import { markovDataset } from '../src/train/data.ts';
import { lmLoss } from '../src/train/loss.ts';

export async function tinyBackbone(): Promise<Backbone> {
  await initBackend('wasm');
  return loadBackbone({ preset: 'tiny' });
}

export interface FixedBatch {
  ids: Int32Array;
  mask: Float32Array;
  batch: number;
  seqLen: number;
  tensor: tf.Tensor2D;
}

/** A fixed batch of Markov sequences within the backbone's vocabulary. */
export function fixedBatch(backbone: Backbone, batch = 2, seqLen = 16, seed = 7): FixedBatch {
  const data = markovDataset({ vocab: backbone.config.vocabSize, sequences: batch, length: seqLen, seed });
  const ids = new Int32Array(batch * seqLen);
  data.samples.forEach((s, b) => ids.set(s.ids, b * seqLen));
  const mask = new Float32Array(batch * seqLen).fill(1);
  return { ids, mask, batch, seqLen, tensor: tf.keep(tf.tensor2d(ids, [batch, seqLen], 'int32')) };
}

/** Next-token loss of hidden states through the frozen LM head. */
export function lossOf(backbone: Backbone, hidden: tf.Tensor2D, b: FixedBatch): tf.Scalar {
  return lmLoss(backbone.head(hidden), b.ids, b.mask, b.batch, b.seqLen);
}

/** Next-token loss of a method on a batch. */
export function methodLoss(backbone: Backbone, method: FineTuneMethod, b: FixedBatch): tf.Scalar {
  return lossOf(backbone, method.hidden(b.tensor), b);
}

/**
 * Work done for backward, in kernels: those run by tf.variableGrads(f) (forward with the tape on,
 * tensors saved for backward, backward) minus those of the same f run without a tape.
 * Deterministic for a given graph, unlike time.
 */
export async function backwardKernels(f: () => tf.Scalar, vars: tf.Variable[]): Promise<number> {
  // tf.profile returns the engine's one profile object, reused by the next call: read it at once.
  const taped = (
    await tf.profile(() => {
      const { value, grads } = tf.variableGrads(f, vars);
      value.dispose();
      for (const g of Object.values(grads)) g.dispose();
    })
  ).kernels.length;
  const plain = (
    await tf.profile(() => {
      tf.tidy(f);
    })
  ).kernels.length;
  return taped - plain;
}

export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}
