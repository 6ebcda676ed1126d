/**
 * Every method trains the same over 1, 2 and 4 in-process devices (runLocal: pipeline stages,
 * data-parallel groups, both) as in the standalone trainer, with clipping that actually clips,
 * warm-up, weight decay and a cosine schedule on: parameters within 1e-5 (relative L2), losses
 * within 1e-5 per step.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dropTiedCopy, relDiff } from './fixtures/compare.ts';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone, loadConfig } from '../src/model/load.ts';
import { createMethod, type MethodName, type MethodOptions } from '../src/model/methods/index.ts';
import type { PresetName } from '../src/model/presets.ts';
import { markovDataset } from '../src/train/data.ts';
import type { AdamWOptions } from '../src/train/optim.ts';
import { Trainer } from '../src/train/trainer.ts';
import { runLocal, type StageLayout } from '../src/engine/index.ts';

await initBackend('wasm');
const data = markovDataset({ vocab: 256, sequences: 10, length: 16, seed: 3 });
const run = { seed: 11, seqLen: 20, epochs: 2, batch: 4 };
const optimizer: AdamWOptions = { lr: 1e-2, weightDecay: 0.01, warmupSteps: 2, schedule: 'cosine', maxGradNorm: 0.05 };
const options: MethodOptions = { rank: 4, alpha: 8, bottleneck: 8, reduction: 8, sideInit: 'random' };

async function standalone(preset: PresetName, method: MethodName) {
  const backbone = await loadBackbone({ preset, seed: 5 });
  const m = createMethod(method, backbone, options, run.seed);
  const norms: number[] = [];
  const t = new Trainer({
    backbone,
    method: m,
    data,
    config: { ...run, task: 'lm', optimizer },
    onStep: (s) => norms.push(s.gradNorm),
  });
  t.run();
  const out = {
    losses: t.losses(),
    norms,
    params: new Map([...t.parameters()].map(([n, v]) => [n, v.dataSync().slice() as Float32Array])),
  };
  t.dispose();
  m.dispose();
  backbone.dispose();
  return out;
}

/** Layouts of 1, 2 and 4 devices over a 2-layer model. */
const layouts: Record<string, StageLayout[]> = {
  '1 device': [{ from: 1, to: 2, devices: ['a'], shares: [1] }],
  '2 stages': [
    { from: 1, to: 1, devices: ['a'], shares: [1] },
    { from: 2, to: 2, devices: ['b'], shares: [1] },
  ],
  '2 data-parallel': [{ from: 1, to: 2, devices: ['a', 'b'], shares: [1, 1] }],
  '4 = 2 stages x 2': [
    { from: 1, to: 1, devices: ['a', 'b'], shares: [2, 1] },
    { from: 2, to: 2, devices: ['c', 'd'], shares: [1, 1] },
  ],
};

const cases: [PresetName, MethodName][] = [
  ['tiny', 'parallel'],
  ['tiny', 'lora'],
  ['tiny', 'serial'],
  ['tiny', 'full'],
  ['tiny-llama', 'full'],
];
const worst = new Map<string, number>();

for (const [preset, method] of cases) {
  test(`${method} on ${preset}: 1, 2 and 4 devices = standalone trainer (clipping, warm-up, decay, cosine)`, async () => {
    const ref = await standalone(preset, method);
    assert.ok(
      ref.norms.filter((n) => n > optimizer.maxGradNorm!).length >= ref.norms.length / 2,
      `clipping must bind: norms ${ref.norms.map((n) => n.toFixed(3))}`,
    );
    const config = loadConfig({ preset, seed: 5 });
    for (const [name, stages] of Object.entries(layouts)) {
      const local = await runLocal({
        model: { preset, seed: 5 },
        data,
        seqLen: run.seqLen,
        stages,
        epochs: run.epochs,
        batch: run.batch,
        microBatches: 2,
        seed: run.seed,
        optimizer,
        reduction: 8,
        sideInit: 'random',
        method,
        methodOptions: options,
        cache: method === 'parallel' ? true : undefined,
      });
      if (method !== 'parallel')
        assert.ok(
          local.layerCalls.every((c) => c > 0),
          'every epoch runs the backbone',
        );
      dropTiedCopy(local.params, config.vocabSize, config.dModel, config.tiedHead);
      const d = relDiff(ref.params, local.params);
      const l = Math.max(...ref.losses.map((x, i) => Math.abs(local.stepLoss[i]! - x) / x));
      worst.set(`${method}/${preset}`, Math.max(worst.get(`${method}/${preset}`) ?? 0, d, l));
      assert.ok(d <= 1e-5, `${name}: parameters differ by ${d}`);
      assert.ok(l <= 1e-5, `${name}: losses differ by ${l}`);
    }
  });
}

test.after(() => {
  for (const [k, v] of worst) process.stderr.write(`max relative difference ${k}: ${v.toExponential(2)}\n`);
});

test.run();
