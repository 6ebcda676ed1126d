import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { liveTensorBytes, peakTensorBytes, resetPeakTensorBytes } from '../src/model/memory.ts';
import { loadBackbone } from '../src/model/load.ts';
import { createMethod } from '../src/model/methods/index.ts';
import { leanVariableGrads } from '../src/train/grads.ts';
import { lmLoss } from '../src/train/loss.ts';
import { markovDataset, makeBatch } from '../src/train/data.ts';

await initBackend();
const backbone = await loadBackbone({ preset: 'tiny' });
const method = createMethod('full', backbone, {}, 0);
const vars = [...method.parameters().values()];
const batch = makeBatch(markovDataset({ vocab: 256, sequences: 4, length: 32, seed: 3 }).samples, 32);
const loss = () => lmLoss(backbone.head(method.hidden(tf.tensor2d(batch.ids, [batch.batch, 32], 'int32'))), batch.ids, batch.mask, batch.batch, 32);

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
  tf.tidy(() => { loss(); }); // process-wide tables (the causal mask) are made once, before counting
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

test.run();
