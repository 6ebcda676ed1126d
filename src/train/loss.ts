/**
 * Losses. Logits are 2-D (rows, classes) as the frozen head produces them ((N, d) x (d, V)
 * without a transposed matmul). Cross-entropy uses a hand-written gradient (softmax - one-hot),
 * which avoids `gather` (no gradient kernel on wasm) and a second pass through log-softmax.
 */
import * as tf from '@tensorflow/tfjs';
import type { FrozenHead, NativeHeadEngine } from '../model/types.ts';

/**
 * Weighted mean cross-entropy. logits (N, C), targets int32 (N), weights f32 (N) in {0, 1}
 * (0 = row not predicted: padding, or the last position of a sequence). Divides by the number
 * of weighted rows (at least 1). Returns a scalar with gradient for `logits`.
 */
export function crossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
  const [, classes] = logits.shape;
  const count = Math.max(1, tf.tidy(() => tf.sum(weights)).dataSync()[0]!);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const z = args[0] as tf.Tensor2D,
      save = args[1] as tf.GradSaveFunc;
    const lse = tf.logSumExp(z, 1, true); // (N, 1)
    // int32 then cast: the wasm OneHot kernel writes integer bits into a float32 output.
    const oneHot = tf.cast(tf.oneHot(targets, classes), 'float32'); // (N, C)
    const picked = tf.sum(tf.mul(z, oneHot), 1, true); // (N, 1)
    const perRow = tf.reshape(tf.sub(lse, picked), [-1]); // (N)
    const value = tf.div(tf.sum(tf.mul(perRow, weights)), count) as tf.Scalar;
    save([z, lse, oneHot, weights]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [zs, l, oh, w] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
        const scale = tf.reshape(tf.mul(w, tf.div(dy, count)), [-1, 1]); // (N, 1)
        return tf.mul(tf.sub(tf.exp(tf.sub(zs, l)), oh), scale); // (N, C)
      },
    };
  });
  return f(logits) as tf.Scalar;
}

/**
 * Weighted mean cross-entropy of a FROZEN linear head, fused with its gradient: the same value as
 * crossEntropy(hidden @ w, targets, weights), with a gradient for `hidden` only. The logits are
 * made `chunkRows` rows at a time and never all at once, and the gradient
 * dL/dh = (w_i / count) (softmax(z_i) @ wT - wT[t_i]) is computed in the forward pass from the
 * chunk's probabilities while they exist, so backward only scales it. Costs: two plain matmuls and
 * one softmax kernel per chunk (wasm's fused softmax is much cheaper than max, subtract and exp as
 * separate passes over (rows, V)), no (N, V) one-hot, no transposes, peak a few (chunkRows, V)
 * tensors. hidden (N, d), w (d, V), wT (V, d); targets int32 (N); weights f32 (N) in {0, 1}.
 *
 * A row's loss is -log p(t_i), read from the probabilities; a probability that underflows f32's
 * normal range (the target logit ~87 below the row's largest) has lost its precision, and that
 * row's loss is computed exactly as logsumexp(z_i) - z_i[t_i] instead.
 */
export function frozenHeadCrossEntropy(
  hidden: tf.Tensor2D,
  head: FrozenHead | { w: tf.Tensor2D; wT: tf.Tensor2D },
  targets: Int32Array,
  weights: Float32Array,
  chunkRows = 512,
): tf.Scalar {
  if ('native' in head && head.native) return nativeHeadCrossEntropy(hidden, head.native, targets, weights, chunkRows);
  const [n, d] = hidden.shape;
  const vocab = head.w.shape[1];
  let count = 0;
  for (let i = 0; i < n; i++) count += weights[i]!;
  count = Math.max(1, count);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const h = args[0] as tf.Tensor2D,
      save = args[1] as tf.GradSaveFunc;
    let lossSum = 0;
    const dh = tf.tidy(() => {
      const grads: tf.Tensor[] = [];
      for (let r = 0; r < n; r += chunkRows) {
        const rows = Math.min(chunkRows, n - r);
        // One tidy per chunk: only its gradient rows outlive it.
        grads.push(
          tf.tidy(() => {
            const tIds = targets.subarray(r, r + rows),
              w = weights.subarray(r, r + rows);
            const flat = Int32Array.from(tIds, (id, i) => i * vocab + id); // row-major index of each target logit
            const z = tf.matMul(tf.slice(h, [r, 0], [rows, d]), head.w) as tf.Tensor2D; // (rows, V)
            const p = tf.softmax(z); // (rows, V)
            const picked = tf.gather(tf.reshape(p, [-1]), tf.tensor1d(flat, 'int32')).dataSync(); // (rows)
            for (let i = 0; i < rows; i++) {
              if (!w[i]) continue;
              const pt = picked[i]!;
              lossSum += w[i]! * (pt >= 1.1754944e-38 ? -Math.log(pt) : exactRowLoss(z, i, tIds[i]!));
            }
            const scale = tf.tensor2d(
              w.map((x) => x / count),
              [rows, 1],
            ); // (rows, 1)
            return tf.mul(tf.sub(tf.matMul(p, head.wT), tf.gather(head.wT, tf.tensor1d(tIds, 'int32'))), scale); // (rows, d)
          }),
        );
      }
      return (grads.length === 1 ? grads[0]! : tf.concat(grads, 0)) as tf.Tensor2D;
    });
    save([dh]);
    return { value: tf.scalar(lossSum / count), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(saved[0]!, dy) };
  });
  return f(hidden) as tf.Scalar;
}

/**
 * frozenHeadCrossEntropy on the native engine: the same value and gradient, with each chunk's
 * logits, softmax, loss and dL/dh made by one native call (the loss read as -log_softmax, exact
 * even where the probability underflows).
 */
function nativeHeadCrossEntropy(
  hidden: tf.Tensor2D,
  head: NativeHeadEngine,
  targets: Int32Array,
  weights: Float32Array,
  chunkRows: number,
): tf.Scalar {
  const [n, d] = hidden.shape;
  let count = 0;
  for (let i = 0; i < n; i++) count += weights[i]!;
  count = Math.max(1, count);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const h = (args[0] as tf.Tensor2D).dataSync() as Float32Array,
      save = args[1] as tf.GradSaveFunc;
    const grad = new Float32Array(n * d);
    let lossSum = 0;
    for (let r = 0; r < n; r += chunkRows) {
      const rows = Math.min(chunkRows, n - r);
      const w = weights.subarray(r, r + rows);
      const { nll, dh } = head.lossGrad(
        h.subarray(r * d, (r + rows) * d),
        rows,
        targets.subarray(r, r + rows),
        w.map((x) => x / count),
      );
      for (let i = 0; i < rows; i++) if (w[i]) lossSum += w[i]! * nll[i]!;
      grad.set(dh, r * d);
    }
    const dh = tf.tensor2d(grad, [n, d]);
    save([dh]);
    return { value: tf.scalar(lossSum / count), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(saved[0]!, dy) };
  });
  return f(hidden) as tf.Scalar;
}

/** logsumexp(z[row]) - z[row, target] for one row of logits (rows, V). */
function exactRowLoss(z: tf.Tensor2D, row: number, target: number): number {
  return tf.tidy(() => {
    const zr = tf.slice(z, [row, 0], [1, -1]); // (1, V)
    return tf.sub(tf.logSumExp(zr), tf.slice(zr, [0, target], [1, 1]).reshape([])).dataSync()[0]!;
  });
}

/**
 * Next-token targets for language modelling. ids and mask are (B, T) row-major; position t
 * predicts ids[t+1], so the last position of each row and every position whose successor is
 * padding gets weight 0. Returns plain arrays of length B*T, aligned with the (B*T, V) logits.
 */
export function nextTokenTargets(
  ids: Int32Array,
  mask: Float32Array,
  batch: number,
  seqLen: number,
): { targets: Int32Array; weights: Float32Array; count: number } {
  const n = batch * seqLen;
  const targets = new Int32Array(n),
    weights = new Float32Array(n);
  let count = 0;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqLen - 1; t++) {
      const i = b * seqLen + t;
      if (mask[i] && mask[i + 1]) {
        targets[i] = ids[i + 1]!;
        weights[i] = 1;
        count++;
      }
    }
  }
  return { targets, weights, count };
}

/** LM loss over a batch: logits (B*T, V) and the (B, T) ids/mask the logits were computed from. */
export function lmLoss(logits: tf.Tensor2D, ids: Int32Array, mask: Float32Array, batch: number, seqLen: number): tf.Scalar {
  const { targets, weights } = nextTokenTargets(ids, mask, batch, seqLen);
  return tf.tidy(() => crossEntropy(logits, tf.tensor1d(targets, 'int32'), tf.tensor1d(weights)));
}

/** Classification loss: logits (B, C), labels (B). Mean over the batch. */
export function classificationLoss(logits: tf.Tensor2D, labels: Int32Array): tf.Scalar {
  return tf.tidy(() => crossEntropy(logits, tf.tensor1d(labels, 'int32'), tf.ones([labels.length]) as tf.Tensor1D));
}

/** Number of rows whose arg-max equals the label. logits (B, C). */
export function correctCount(logits: tf.Tensor2D, labels: Int32Array): number {
  const pred = tf.tidy(() => tf.argMax(logits, 1)).dataSync();
  let n = 0;
  for (let i = 0; i < labels.length; i++) if (pred[i] === labels[i]) n++;
  return n;
}
