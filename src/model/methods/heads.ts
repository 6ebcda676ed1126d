/**
 * Heads on top of a method's final hidden state (B*T, d): the frozen LM head of the backbone, and
 * a small trainable classification head for labelled data.
 */
import * as tf from '@tensorflow/tfjs';
import { frozenLinear, linear } from '../ops.ts';
import type { Backbone } from '../types.ts';
import { initVariable } from './init.ts';

/** Next-token logits from the backbone's frozen LM head: (B*T, d) -> (B*T, V). */
export function lmLogits(backbone: Backbone, hidden: tf.Tensor2D): tf.Tensor2D {
  return backbone.head(hidden);
}

export type Pooling = 'mean' | 'last';

/**
 * Classification head: pool each sequence's hidden states (mean over its tokens, or its last
 * token), then a linear layer to nLabels. Parameters `head.classifier.weight` (d, nLabels),
 * Kaiming-uniform seeded by (seed, name), and `head.classifier.bias` (zeros).
 */
export class ClassificationHead {
  private readonly params = new Map<string, tf.Variable>();

  constructor(
    readonly dModel: number,
    readonly nLabels: number,
    seed: number,
    readonly pooling: Pooling = 'mean',
  ) {
    if (!Number.isInteger(nLabels) || nLabels < 2) throw new Error(`classification head: nLabels must be an integer >= 2, got ${nLabels}`);
    this.params.set(
      'head.classifier.weight',
      initVariable(seed, 'head.classifier.weight', [dModel, nLabels], { kind: 'kaiming', fanIn: dModel }),
    );
    this.params.set('head.classifier.bias', initVariable(seed, 'head.classifier.bias', [nLabels], { kind: 'zeros' }));
  }

  parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  /**
   * hidden (B*T, d) with T = seqLen -> logits (B, nLabels). lengths[b] (default T) is the number of
   * real tokens of sequence b, which are its first ones; padding after them is ignored.
   */
  logits(hidden: tf.Tensor2D, seqLen: number, lengths?: number[]): tf.Tensor2D {
    const batch = hidden.shape[0] / seqLen;
    if (!Number.isInteger(batch)) throw new Error(`classification head: ${hidden.shape[0]} rows is not a multiple of seqLen ${seqLen}`);
    if (lengths && lengths.length !== batch) throw new Error(`classification head: ${lengths.length} lengths for a batch of ${batch}`);
    // Pooling as one plain matmul with a constant (B*T, B) matrix: pooled^T = hidden^T @ P.
    const p = new Float32Array(batch * seqLen * batch);
    for (let b = 0; b < batch; b++) {
      const n = lengths?.[b] ?? seqLen;
      if (!Number.isInteger(n) || n < 1 || n > seqLen)
        throw new Error(`classification head: length ${n} of sequence ${b} outside 1..${seqLen}`);
      if (this.pooling === 'mean') for (let t = 0; t < n; t++) p[(b * seqLen + t) * batch + b] = 1 / n;
      else p[(b * seqLen + n - 1) * batch + b] = 1;
    }
    // No tf.tidy here: frozenLinear keeps `pool` for its gradient, so it must live as long as the
    // caller's tape; the caller's tidy disposes it.
    const pool = tf.tensor2d(p, [batch * seqLen, batch]);
    const pooled = tf.transpose(frozenLinear(tf.transpose(hidden), pool)); // (B, d)
    return linear(pooled, this.params.get('head.classifier.weight') as tf.Tensor2D, this.params.get('head.classifier.bias') as tf.Tensor1D); // (B, nLabels)
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
  }
}
