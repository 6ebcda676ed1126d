import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { assignFromHost, fromHost2d, hostValues, keepHostCopy } from '../src/model/host.ts';

test('host: a tensor made from a host array reads back as that array, and so does a clone', () => {
  const v = new Float32Array([1, 2, 3, 4, 5, 6]);
  const t = fromHost2d(v, [2, 3]);
  assert.ok(hostValues(t) === v);
  const c = t.clone();
  assert.ok(hostValues(c) === v, 'a clone shares the data');
  const sum = tf.add(t, 1);
  const got = hostValues(sum);
  assert.equal(Array.from(got), [2, 3, 4, 5, 6, 7], 'any other tensor is read back');
  assert.ok(got !== v);
  tf.dispose([t, c, sum]);
});

test('host: a marked variable keeps its assigned array until it is assigned elsewhere', () => {
  const kept = tf.variable(tf.zeros([2, 2]), true, 'host-kept');
  const plain = tf.variable(tf.zeros([2, 2]), true, 'host-plain');
  keepHostCopy(kept);
  const a = new Float32Array([1, 2, 3, 4]);
  assignFromHost(kept, a);
  assignFromHost(plain, a);
  assert.ok(hostValues(kept) === a);
  assert.equal(Array.from(kept.dataSync()), [1, 2, 3, 4]);
  assert.equal(Array.from(hostValues(plain)), [1, 2, 3, 4]);
  // Assigned by anyone else, the variable holds new data: its old host array must not answer.
  kept.assign(tf.tensor2d([9, 8, 7, 6], [2, 2]));
  assert.equal(Array.from(hostValues(kept)), [9, 8, 7, 6]);
  assert.equal(Array.from(a), [1, 2, 3, 4], 'the host array was never written');
  tf.dispose([kept, plain]);
});

test.run();
