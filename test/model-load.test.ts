import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { TransformerBackbone, forwardLogits, fullRange } from '../src/model/backbone.ts';
import { loadBackbone } from '../src/model/load.ts';
import type { Backbone } from '../src/model/types.ts';
import { makeHfModel, type HfFixture } from './fixtures/hf-model.ts';

await initBackend();

const ids = tf.tensor2d(
  [
    [3, 1, 4, 1, 5, 9, 2, 6],
    [5, 3, 5, 8, 9, 7, 9, 3],
  ],
  [2, 8],
  'int32',
);

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

function maxAbs(a: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(a)).dataSync()[0]!);
}

/** Logits of the loaded directory vs a backbone built directly from the weights written. */
async function compareWithReference(f: HfFixture, tol: number): Promise<Backbone> {
  const loaded = await loadBackbone({ dir: f.dir });
  const ref = new TransformerBackbone(f.config, fullRange(f.config), f.weights, 'reference');
  const a = forwardLogits(loaded, ids),
    b = forwardLogits(ref, ids);
  const diff = maxAbsDiff(a, b);
  assert.ok(maxAbs(b) > 0.1, 'reference logits are not trivial');
  assert.ok(diff <= tol * maxAbs(b), `logits differ by ${diff} (scale ${maxAbs(b)})`);
  tf.dispose([a, b]);
  ref.dispose();
  return loaded;
}

test('model-load: HF GPT-2 written from a preset computes the preset logits', async () => {
  const f = makeHfModel({ preset: 'tiny', seed: 0, perturb: false });
  const loaded = await loadBackbone({ dir: f.dir });
  const preset = await loadBackbone({ preset: 'tiny', seed: 0 });
  const a = forwardLogits(loaded, ids),
    b = forwardLogits(preset, ids);
  assert.is(maxAbsDiff(a, b), 0);
  assert.is.not(loaded.fingerprint, preset.fingerprint);
  tf.dispose([a, b]);
  loaded.dispose();
  preset.dispose();
});

test('model-load: GPT-2 with transformer.-prefixed names', async () => {
  (await compareWithReference(makeHfModel({ preset: 'tiny' }), 1e-5)).dispose();
});

test('model-load: GPT-2 with bare names (GPT2Model)', async () => {
  (await compareWithReference(makeHfModel({ preset: 'tiny', bareNames: true }), 1e-5)).dispose();
});

test('model-load: GPT-2 from a sharded index', async () => {
  (await compareWithReference(makeHfModel({ preset: 'tiny', shards: 3 }), 1e-5)).dispose();
});

test('model-load: GPT-2 untied head reads lm_head', async () => {
  (await compareWithReference(makeHfModel({ preset: 'tiny', overrides: { tiedHead: false } }), 1e-5)).dispose();
});

test('model-load: F16 weights load within half precision', async () => {
  const f = makeHfModel({ preset: 'tiny', dtype: 'F16' });
  const loaded = await compareWithReference(f, 2e-2);
  const w = loaded.weights().get('layers.1.query.weight')!.dataSync();
  const orig = f.weights.get('layers.1.query.weight')!.data;
  for (let i = 0; i < w.length; i++)
    assert.ok(Math.abs(w[i]! - orig[i]!) <= Math.abs(orig[i]!) * 2 ** -11 + 6e-8, `element ${i}: ${w[i]} vs ${orig[i]}`);
  assert.ok(
    w.some((v, i) => v !== orig[i]),
    'values were rounded to f16',
  );
  loaded.dispose();
});

test('model-load: BF16 weights load within bfloat16 precision', async () => {
  const f = makeHfModel({ preset: 'tiny', dtype: 'BF16', shards: 2 });
  const loaded = await compareWithReference(f, 5e-2);
  const w = loaded.weights().get('layers.2.mlp_up.weight')!.dataSync();
  const orig = f.weights.get('layers.2.mlp_up.weight')!.data;
  for (let i = 0; i < w.length; i++)
    assert.ok(Math.abs(w[i]! - orig[i]!) <= Math.abs(orig[i]!) * 2 ** -8, `element ${i}: ${w[i]} vs ${orig[i]}`);
  loaded.dispose();
});

test('model-load: Llama with grouped-query attention and an untied head', async () => {
  const f = makeHfModel({ preset: 'tiny-llama' });
  const loaded = await compareWithReference(f, 1e-5);
  assert.is(loaded.config.nKvHeads, 2);
  assert.is(loaded.config.tiedHead, false);
  assert.equal(loaded.weights().get('layers.1.key.weight')!.shape, [64, 32]);
  loaded.dispose();
});

test('model-load: Qwen2-style q/k/v bias and tied head', async () => {
  const f = makeHfModel({ preset: 'tiny-llama', overrides: { qkvBias: true, tiedHead: true }, shards: 2, dtype: 'F16' });
  const loaded = await compareWithReference(f, 2e-2);
  assert.is(loaded.config.qkvBias, true);
  assert.ok(loaded.weights().has('layers.2.value.bias'));
  loaded.dispose();
});

test('model-load: a partial range holds only its weights and computes the same layer', async () => {
  const f = makeHfModel({ preset: 'tiny-llama' });
  const full = await loadBackbone({ dir: f.dir });
  const stage = await loadBackbone({ dir: f.dir }, { from: 2, to: 2, embed: false, head: false });
  const names = [...stage.weights().keys()];
  assert.ok(names.length > 0 && names.every((n) => n.startsWith('layers.2.')), names.join(','));
  assert.is(stage.fingerprint, full.fingerprint);
  const h = full.embed(ids);
  const a = full.layer(2, h, 8),
    b = stage.layer(2, h, 8);
  assert.is(maxAbsDiff(a, b), 0);
  assert.throws(() => stage.layer(1, h, 8), /outside the held range/);
  assert.throws(() => stage.embed(ids), /not held/);
  tf.dispose([h, a, b]);
  full.dispose();
  stage.dispose();
});

test('model-load: preset weights are deterministic and a range holds the same values as the full model', async () => {
  const a = await loadBackbone({ preset: 'tiny', seed: 5 });
  const b = await loadBackbone({ preset: 'tiny', seed: 5 }, { from: 2, to: 2, embed: false, head: true });
  const c = await loadBackbone({ preset: 'tiny', seed: 6 }, { from: 2, to: 2, embed: false, head: false });
  assert.equal([...b.weights().keys()].filter((n) => !n.startsWith('layers.2.')).sort(), [
    'final_norm.bias',
    'final_norm.weight',
    'head.weight',
  ]);
  for (const [name, t] of b.weights()) assert.is(maxAbsDiff(t, a.weights().get(name)!), 0, name);
  assert.ok(maxAbsDiff(c.weights().get('layers.2.query.weight')!, a.weights().get('layers.2.query.weight')!) > 0, 'another seed differs');
  assert.is(a.fingerprint, b.fingerprint);
  assert.is.not(a.fingerprint, c.fingerprint);
  a.dispose();
  b.dispose();
  c.dispose();
});

test.run();
