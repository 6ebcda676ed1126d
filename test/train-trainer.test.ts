import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone } from '../src/model/load.ts';
import { createMethod, type ParallelMethod, type MethodName } from '../src/model/methods/index.ts';
import { ActivationCache } from '../src/cache/activation-cache.ts';
import { markovDataset } from '../src/train/data.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.ts';
import { tempDir } from './fixtures/temp.ts';

await initBackend();
const dir = tempDir('charon-trainer-');
const data = markovDataset({ vocab: 256, sequences: 16, length: 32, seed: 1 });
const config = (epochs: number, lr = 3e-3): TrainConfig => ({
  epochs,
  batch: 4,
  seed: 5,
  seqLen: 32,
  task: 'lm',
  optimizer: { lr, weightDecay: 0.01, maxGradNorm: 1, warmupSteps: 2 },
});

async function trainer(method: MethodName, epochs: number, cache?: ActivationCache, lr?: number) {
  const backbone = await loadBackbone({ preset: 'tiny' });
  const m = createMethod(method, backbone, { sideInit: 'random' }, 11);
  return { backbone, method: m, t: new Trainer({ backbone, method: m, data, config: config(epochs, lr), cache }) };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

for (const name of ['full', 'lora', 'serial', 'parallel'] as const) {
  test(`trainer: ${name} loss falls on tiny over a few steps`, async () => {
    const { t, backbone } = await trainer(name, 3, undefined, name === 'full' ? 1e-3 : 1e-2);
    t.run();
    const l = t.losses();
    assert.is(l.length, 12);
    assert.ok(mean(l.slice(-3)) < mean(l.slice(0, 3)) - 0.05, `${name}: ${l.map((x) => x.toFixed(3)).join(' ')}`);
    assert.ok(t.ledger.isFinished(2));
    t.dispose();
    backbone.dispose();
  });
}

test('trainer: a cached epoch computes the same losses as an uncached one, and never runs the backbone', async () => {
  const plain = await trainer('parallel', 3);
  plain.t.run();
  const cache = new ActivationCache({ memoryBytes: 64 * 1024, dir: join(dir, 'cache'), dtype: 'f32' });
  const cached = await trainer('parallel', 3, cache);
  const pm = cached.method as ParallelMethod;
  cached.t.trainEpoch();
  const callsAfterEpoch1 = pm.backboneLayerCalls;
  assert.ok(callsAfterEpoch1 > 0);
  cached.t.run();
  assert.is(pm.backboneLayerCalls, callsAfterEpoch1, 'epochs >= 2 ran the backbone');
  const e = cached.t.epochMetrics();
  assert.equal(
    e.map((x) => x.backboneSamples),
    [16, 0, 0],
  );
  const a = plain.t.losses(),
    b = cached.t.losses();
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5, `step ${i}: ${a[i]} vs ${b[i]}`);
  const st = cache.stats();
  assert.ok(st.spills > 0 && st.diskHits > 0, JSON.stringify(st));
  assert.ok(e[1]!.peakCacheBytes <= 64 * 1024);
  assert.not.ok(cached.backbone.layersHeld, 'cached epochs release the backbone layers');
  assert.ok(e[1]!.peakTensorBytes < e[0]!.peakTensorBytes, `cached peak ${e[1]!.peakTensorBytes} vs epoch 1 ${e[0]!.peakTensorBytes}`);
  cache.destroy();
});

test('trainer: a lost cache entry is recomputed through the backbone', async () => {
  const cache = new ActivationCache({ memoryBytes: 0, dir: join(dir, 'cache2'), dtype: 'f32' });
  const { t, method, backbone } = await trainer('parallel', 2, cache);
  t.trainEpoch();
  rmSync(cache.diskPath({ fingerprint: `${backbone.fingerprint}-t32`, sample: 3, layer: 1 })!);
  const before = (method as ParallelMethod).backboneLayerCalls;
  t.trainEpoch();
  assert.is((method as ParallelMethod).backboneLayerCalls - before, 2, 'one sample, 2 layers');
  assert.is(t.epochMetrics()[1]!.backboneSamples, 1);
  assert.ok(backbone.layersHeld, 'the lost entry reloaded the released layers');
  cache.destroy();
});

test('trainer: resume from a checkpoint continues the exact same trajectory', async () => {
  const straight = await trainer('lora', 2);
  straight.t.run();
  const first = await trainer('lora', 2);
  first.t.trainEpoch();
  const ckpt = join(dir, 'ckpt');
  saveCheckpoint(ckpt, {
    method: 'lora',
    options: {},
    modelFingerprint: first.backbone.fingerprint,
    config: config(2),
    samples: 16,
    state: first.t.state(),
  });
  first.t.dispose();
  const resumed = await trainer('lora', 2);
  resumed.t.load(loadCheckpoint(ckpt).state);
  resumed.t.run();
  assert.equal(resumed.t.losses(), straight.t.losses());
  for (const [name, v] of straight.t.parameters()) {
    assert.equal(Array.from(resumed.t.parameters().get(name)!.dataSync()), Array.from(v.dataSync()), name);
  }
  assert.ok(resumed.t.ledger.isFinished(0) && resumed.t.ledger.isFinished(1));
});

test('trainer: evaluation reports mean next-token loss over predicted tokens', async () => {
  const { t } = await trainer('parallel', 1);
  const r = t.evaluate(data);
  assert.is(r.tokens, 16 * 31);
  assert.ok(Math.abs(r.loss - Math.log(256)) < 0.5, `untrained loss ${r.loss}`);
});

test.run();
