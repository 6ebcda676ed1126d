import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { geluNew, layerNorm } from '../src/model/ops.ts';

await initBackend();

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  const x = a.dataSync(),
    y = b.dataSync();
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

const x = tf.randomNormal([37, 24], 0, 2, 'float32', 1) as tf.Tensor2D;
const w = tf.randomNormal([37, 24], 0, 1, 'float32', 2) as tf.Tensor2D; // a random upstream gradient via sum(y * w)

test('model-grads: geluNew value and hand-written gradient match autodiff of 0.5 x (1 + tanh z)', () => {
  const ref = (t: tf.Tensor) =>
    tf.mul(tf.mul(t, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(t, tf.mul(0.044715, tf.pow(t, 3)))))));
  assert.ok(maxDiff(geluNew(x), ref(x)) < 1e-5);
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(geluNew(t as tf.Tensor2D), w)))(x);
  const r = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(ref(t), w)))(x);
  assert.ok(maxDiff(g, r) < 1e-4, `gradient differs by ${maxDiff(g, r)}`);
});

test('model-grads: layerNorm gradients for x, gamma and beta match autodiff of the plain formula', () => {
  const gamma = tf.randomNormal([24], 1, 0.3, 'float32', 3) as tf.Tensor1D;
  const beta = tf.randomNormal([24], 0, 0.3, 'float32', 4) as tf.Tensor1D;
  const ref = (t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
    const xc = tf.sub(t, tf.mean(t, -1, true));
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), 1e-5))), g), b);
  };
  assert.ok(maxDiff(layerNorm(x, gamma, beta, 1e-5), ref(x, gamma, beta)) < 1e-5);
  const got = tf.grads((t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) =>
    tf.sum(tf.mul(layerNorm(t as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-5), w)),
  )([x, gamma, beta]);
  const want = tf.grads((t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(ref(t, g, b), w)))([x, gamma, beta]);
  ['x', 'gamma', 'beta'].forEach((n, i) => assert.ok(maxDiff(got[i]!, want[i]!) < 1e-4, `${n}: ${maxDiff(got[i]!, want[i]!)}`));
});

test.run();
