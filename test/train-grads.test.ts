import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { liveTensorBytes, peakTensorBytes, resetPeakTensorBytes } from '../src/model/memory.ts';
import { loadBackbone } from '../src/model/load.ts';
import { createMethod } from '../src/model/methods/index.ts';
import { leanVariableGrads } from '../src/train/grads.ts';
import { crossEntropy, frozenHeadCrossEntropy, lmLoss, nextTokenTargets } from '../src/train/loss.ts';
import { markovDataset, makeBatch } from '../src/train/data.ts';

await initBackend('wasm'); // whatever else is installed: only wasm counts tensor bytes exactly
const backbone = await loadBackbone({ preset: 'tiny' });
const method = createMethod('full', backbone, {}, 0);
const fresh = await loadBackbone({ preset: 'tiny' });
const vars = [...method.parameters().values()];
const batch = makeBatch(markovDataset({ vocab: 256, sequences: 4, length: 32, seed: 3 }).samples, 32);
const loss = () =>
  lmLoss(backbone.head(method.hidden(tf.tensor2d(batch.ids, [batch.batch, 32], 'int32'))), batch.ids, batch.mask, batch.batch, 32);

function run(grads: typeof tf.variableGrads) {
  const before = liveTensorBytes();
  resetPeakTensorBytes();
  const { value, grads: g } = grads(loss, vars);
  const peak = peakTensorBytes() - before;
  const out = { loss: value.dataSync()[0]!, grads: new Map(Object.entries(g).map(([k, t]) => [k, t!.dataSync() as Float32Array])), peak };
  value.dispose();
  for (const t of Object.values(g)) t!.dispose();
  assert.is(liveTensorBytes(), before, 'nothing leaks');
  return out;
}

test('train-grads: lean gradients equal tf.variableGrads exactly, at a lower peak', () => {
  // Process-wide tables (the causal mask, the ones rows of column sums) are made once, before counting.
  tf.tidy(() => {
    tf.variableGrads(loss, vars);
  });
  const plain = run(tf.variableGrads);
  const lean = run(leanVariableGrads as typeof tf.variableGrads);
  assert.is(lean.loss, plain.loss);
  assert.is(lean.grads.size, plain.grads.size);
  for (const [k, g] of plain.grads) assert.equal(lean.grads.get(k), g, k);
  assert.ok(lean.peak < plain.peak * 0.8, `lean peak ${lean.peak} vs plain ${plain.peak}`);
});

test('train-grads: a clone shares its buffer on wasm (saved tensors cost no copy)', () => {
  const x = tf.ones([256, 256]);
  const before = liveTensorBytes();
  const y = tf.clone(x);
  assert.is(liveTensorBytes(), before);
  x.dispose();
  assert.is(liveTensorBytes(), before, 'the clone keeps the buffer alive');
  assert.equal(Array.from(y.dataSync().slice(0, 3)), [1, 1, 1]);
  y.dispose();
  assert.is(liveTensorBytes(), before - 256 * 256 * 4);
});

test('train-grads: the fused frozen-head loss equals head + cross-entropy, value and gradient', () => {
  assert.is(backbone.frozenHead(), undefined, 'full fine-tuning made the head trainable');
  const head = fresh.frozenHead()!;
  const { targets, weights } = nextTokenTargets(batch.ids, batch.mask, batch.batch, 32);
  weights[5] = 0; // a masked row
  const h = tf.randomNormal([batch.batch * 32, 64], 0, 1, 'float32', 7) as tf.Tensor2D;
  const ref = tf.valueAndGrad((x: tf.Tensor) =>
    crossEntropy(fresh.head(x as tf.Tensor2D), tf.tensor1d(targets, 'int32'), tf.tensor1d(weights)),
  )(h);
  for (const chunk of [256, 48]) {
    const got = tf.valueAndGrad((x: tf.Tensor) => frozenHeadCrossEntropy(x as tf.Tensor2D, head, targets, weights, chunk))(h);
    assert.ok(Math.abs(got.value.dataSync()[0]! - ref.value.dataSync()[0]!) < 1e-5, `chunk ${chunk} value`);
    const a = got.grad.dataSync(),
      b = ref.grad.dataSync();
    let err = 0;
    for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i]! - b[i]!));
    assert.ok(err < 1e-6, `chunk ${chunk} gradient max error ${err}`);
  }
});

test('train-grads: the fused frozen-head loss stays exact when a target probability underflows f32', () => {
  const head = fresh.frozenHead()!;
  const { targets, weights } = nextTokenTargets(batch.ids, batch.mask, batch.batch, 32);
  // Huge hidden states: most target logits lie hundreds below their row's largest, so p(t) is 0 in f32.
  const h = tf.mul(tf.randomNormal([batch.batch * 32, 64], 0, 1, 'float32', 11), 400) as tf.Tensor2D;
  const ref = crossEntropy(fresh.head(h), tf.tensor1d(targets, 'int32'), tf.tensor1d(weights)).dataSync()[0]!;
  const got = frozenHeadCrossEntropy(h, head, targets, weights).dataSync()[0]!;
  assert.ok(Number.isFinite(got) && ref > 100, `loss ${got}, reference ${ref}`);
  assert.ok(Math.abs(got - ref) < 1e-5 * ref, `loss ${got} vs reference ${ref}`);
});

test.run();
