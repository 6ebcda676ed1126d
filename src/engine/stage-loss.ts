/**
 * The loss a last stage (or a cached-phase replica) computes on its rows' final hidden state, for
 * every method: next-token cross-entropy through the backbone's LM head, or, for labelled data,
 * the trainable classification head's cross-entropy over the rows' labels, exactly as the
 * standalone trainer computes them.
 *
 * Scaling makes placement irrelevant: each micro-batch's mean is weighted by its share of the
 * mini-batch's targets (predicted tokens, or rows when classifying), so the sum over every rank
 * and micro-batch is the mini-batch mean however the rows were split.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../model/types.ts';
import type { ClassificationHead } from '../model/methods/heads.ts';
import { crossEntropy, correctCount, frozenHeadCrossEntropy, nextTokenTargets } from '../train/loss.ts';
import { sequenceLengths } from '../train/data.ts';
import type { LossRows } from './trainable.ts';

/** Rows a loss averages over: predicted tokens (language modelling) or sequences (classification). */
export function lossTargets(rows: LossRows, n: number, seqLen: number, classify: boolean): number {
  return classify ? n : nextTokenTargets(rows.ids, rows.mask, n, seqLen).count;
}

/**
 * This micro-batch's share of the mini-batch mean loss of `hidden` (n*T, d, after the final norm).
 * `out.correct` receives the rows the classification head got right (classification only).
 * Call inside the gradient tape.
 */
export function stageLoss(
  backbone: Backbone,
  head: ClassificationHead | null,
  hidden: tf.Tensor2D,
  rows: LossRows,
  n: number,
  seqLen: number,
  stepTargets: number,
  out: { correct?: number },
): tf.Scalar {
  if (head) {
    if (!rows.labels || rows.labels.length !== n)
      throw new Error(`stage loss: the classification head needs a label for each of the ${n} rows`);
    const logits = head.logits(hidden, seqLen, sequenceLengths(rows.mask, n, seqLen)); // (n, C)
    out.correct = correctCount(logits, rows.labels);
    const loss = crossEntropy(logits, tf.tensor1d(rows.labels, 'int32'), tf.ones([n]) as tf.Tensor1D);
    return tf.mul(loss, n / Math.max(1, stepTargets)) as tf.Scalar;
  }
  const { targets, weights, count } = nextTokenTargets(rows.ids, rows.mask, n, seqLen);
  const frozen = backbone.frozenHead();
  const loss = frozen
    ? frozenHeadCrossEntropy(hidden, frozen, targets, weights)
    : crossEntropy(backbone.head(hidden), tf.tensor1d(targets, 'int32'), tf.tensor1d(weights)); // (n*T, V)
  return tf.mul(loss, count / Math.max(1, stepTargets)) as tf.Scalar;
}
