/**
 * The standalone Trainer (method parallel) and the engine's one-device run are the same PAC
 * training: same initial side network, data order, loss normalisation and AdamW steps. Gradient
 * clipping stays off: the engine has none (a clip needs the global norm over every stage).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { relDiff } from './fixtures/compare.ts';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone, loadConfig } from '../src/model/load.ts';
import { createMethod } from '../src/model/methods/index.ts';
import type { PresetName } from '../src/model/presets.ts';
import { ActivationCache } from '../src/cache/activation-cache.ts';
import { markovDataset } from '../src/train/data.ts';
import type { AdamWOptions } from '../src/train/optim.ts';
import { Trainer } from '../src/train/trainer.ts';
import { runLocal, type LocalRunResult } from '../src/engine/index.ts';

await initBackend('wasm');
// 10 samples in batches of 4: every epoch ends on a short batch; seqLen 20 pads every row.
const data = markovDataset({ vocab: 256, sequences: 10, length: 16, seed: 3 });
const run = { seed: 11, seqLen: 20, epochs: 3, batch: 4, reduction: 8 };
const optimizer: AdamWOptions = { lr: 1e-2, weightDecay: 0.01, warmupSteps: 2, schedule: 'cosine' };

async function trainer(preset: PresetName, sideInit: 'prune' | 'random', cache?: ActivationCache) {
  const backbone = await loadBackbone({ preset, seed: 5 });
  const method = createMethod('parallel', backbone, { reduction: run.reduction, sideInit }, run.seed);
  const t = new Trainer({
    backbone,
    method,
    data,
    cache,
    config: { epochs: run.epochs, batch: run.batch, seed: run.seed, seqLen: run.seqLen, task: 'lm', optimizer },
  });
  t.run();
  const out = {
    losses: t.losses(),
    params: new Map([...t.parameters()].map(([n, v]) => [n, v.dataSync().slice() as Float32Array])),
    backboneSamples: t.epochMetrics().map((e) => e.backboneSamples),
  };
  t.dispose();
  method.dispose();
  backbone.dispose();
  return out;
}

function engine(preset: PresetName, sideInit: 'prune' | 'random', microBatches: number): Promise<LocalRunResult> {
  const model = { preset, seed: 5 };
  return runLocal({
    model,
    data,
    seqLen: run.seqLen,
    stages: [{ from: 1, to: loadConfig(model).nLayers, devices: ['one'], shares: [1] }],
    epochs: run.epochs,
    batch: run.batch,
    microBatches,
    seed: run.seed,
    optimizer,
    reduction: run.reduction,
    sideInit,
  });
}

function assertSameBits(a: Map<string, Float32Array>, b: Map<string, Float32Array>, what: string): void {
  assert.equal([...a.keys()].sort(), [...b.keys()].sort(), what);
  for (const [n, x] of a)
    assert.ok(
      Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(b.get(n)!.buffer, b.get(n)!.byteOffset, b.get(n)!.byteLength)),
      `${what}: ${n}`,
    );
}

for (const preset of ['tiny', 'tiny-llama'] as const) {
  for (const sideInit of ['prune', 'random'] as const) {
    test(`engine = trainer: ${preset}, ${sideInit} init, with and without the cache, bit for bit`, async () => {
      const plain = await trainer(preset, sideInit);
      const cached = await trainer(preset, sideInit, new ActivationCache({ memoryBytes: 1 << 24 }));
      const local = await engine(preset, sideInit, 1);
      assert.is(plain.losses.length, 9);
      assert.equal(cached.backboneSamples, [10, 0, 0], 'cached epochs ran no backbone');
      assert.equal(local.layerCalls.slice(1), [0, 0], 'cached engine epochs ran no backbone');
      assert.equal(cached.losses, plain.losses, 'trainer with cache');
      assert.equal(local.stepLoss, plain.losses, 'engine');
      assertSameBits(cached.params, plain.params, 'trainer with cache');
      assertSameBits(local.params, plain.params, 'engine');
    });
  }
}

test('engine = trainer: micro-batches only change the summation order', async () => {
  const plain = await trainer('tiny', 'prune');
  const local = await engine('tiny', 'prune', 2);
  // Each micro-batch's loss is its tokens' mean scaled by its share of the step's tokens, and the
  // gradients add up: rounding differs from one mean over the whole batch, nothing else.
  plain.losses.forEach((l, i) => assert.ok(Math.abs(local.stepLoss[i]! - l) <= 1e-6 * l, `step ${i}: ${local.stepLoss[i]} vs ${l}`));
  const d = relDiff(plain.params, local.params);
  assert.ok(d <= 1e-6, `side network differs by ${d}`);
});

test.run();
