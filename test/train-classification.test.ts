import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone } from '../src/model/load.ts';
import { createMethod } from '../src/model/methods/index.ts';
import { markovDataset } from '../src/train/data.ts';
import { Trainer, type TrainConfig } from '../src/train/trainer.ts';

await initBackend();
const data = markovDataset({ vocab: 256, sequences: 16, length: 32, seed: 1 });
const config = (epochs: number, lr: number): TrainConfig => ({
  epochs,
  batch: 4,
  seed: 5,
  seqLen: 32,
  task: 'lm',
  optimizer: { lr, maxGradNorm: 1 },
});
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test('train: classification trains a head and reports accuracy', async () => {
  const labelled = { samples: data.samples.map((x) => ({ ...x, label: x.ids[0]! % 2 })), labelNames: ['even', 'odd'] };
  const backbone = await loadBackbone({ preset: 'tiny' });
  const m = createMethod('lora', backbone, {}, 3);
  const t = new Trainer({ backbone, method: m, data: labelled, config: { ...config(4, 1e-2), task: 'classification' } });
  assert.ok([...t.parameters().keys()].includes('head.classifier.weight'));
  t.run();
  const l = t.losses();
  assert.ok(mean(l.slice(-4)) < mean(l.slice(0, 4)), l.join(' '));
  const r = t.evaluate(labelled);
  assert.is(r.tokens, 16);
  assert.ok(r.accuracy !== undefined && r.accuracy >= 0 && r.accuracy <= 1);
});

test.run();
