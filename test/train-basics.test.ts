import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '../src/model/backend.ts';
import { AdamW, learningRate } from '../src/train/optim.ts';
import { crossEntropy, nextTokenTargets } from '../src/train/loss.ts';
import { DataError, epochOrder, loadJsonl, makeBatch, markovDataset, miniBatches, writeJsonl } from '../src/train/data.ts';
import { Ledger } from '../src/train/ledger.ts';
import { tempDir } from './fixtures/temp.ts';

await initBackend();
const dir = tempDir('charon-train-');

test('optim: AdamW matches a hand-computed step with decoupled decay and bias correction', () => {
  const w = tf.variable(tf.tensor2d([[1, -2]]));
  const b = tf.variable(tf.tensor1d([0.5]));
  const opt = new AdamW({ lr: 0.1, weightDecay: 0.5 });
  opt.apply(
    new Map<string, tf.Variable>([
      ['w', w],
      ['b', b],
    ]),
    new Map<string, tf.Tensor>([
      ['w', tf.tensor2d([[0.3, -4]])],
      ['b', tf.tensor1d([2])],
    ]),
  );
  // first step: m_hat = g, v_hat = g^2 -> update = sign(g) (up to eps); decay only on the matrix
  const wv = w.dataSync(),
    bv = b.dataSync();
  assert.ok(Math.abs(wv[0]! - (1 * (1 - 0.05) - 0.1)) < 1e-5, `w0 ${wv[0]}`);
  assert.ok(Math.abs(wv[1]! - (-2 * (1 - 0.05) + 0.1)) < 1e-5, `w1 ${wv[1]}`);
  assert.ok(Math.abs(bv[0]! - 0.4) < 1e-5, `b ${bv[0]}`);
  const st = opt.state();
  assert.is(st.step, 1);
  assert.ok(Math.abs(st.m.get('w')![1]! - -0.4) < 1e-6);
});

test('optim: global-norm clipping and warm-up/cosine schedule', () => {
  const w = tf.variable(tf.tensor1d([0, 0]));
  const opt = new AdamW({ lr: 1, maxGradNorm: 1 });
  const r = opt.apply(new Map([['w', w]]), new Map<string, tf.Tensor>([['w', tf.tensor1d([3, 4])]]));
  assert.ok(Math.abs(r.gradNorm - 5) < 1e-5);
  assert.ok(Math.abs(opt.state().m.get('w')![1]! - 0.1 * 0.8) < 1e-5, 'clipped to norm 1 before the moments');
  const o = { lr: 1, warmupSteps: 4, schedule: 'cosine' as const, totalSteps: 12 };
  assert.equal(
    [1, 2, 4, 8, 12].map((s) => learningRate(o, s)),
    [0.25, 0.5, 1, 0.5, 0],
  );
  assert.is(learningRate({ lr: 2, warmupSteps: 2 }, 10), 2);
});

test('loss: cross-entropy equals -log softmax and its gradient is softmax - onehot', () => {
  const logits = tf.tensor2d([
    [1, 2, 3],
    [0, 0, 0],
    [5, -5, 0],
  ]);
  const targets = tf.tensor1d([2, 1, 0], 'int32'),
    weights = tf.tensor1d([1, 1, 0]);
  const loss = crossEntropy(logits, targets, weights).dataSync()[0]!;
  const ref = tf.tidy(() => tf.neg(tf.logSoftmax(logits)).dataSync());
  assert.ok(Math.abs(loss - (ref[2]! + ref[4]!) / 2) < 1e-5);
  const g = tf
    .grad((x: tf.Tensor) => crossEntropy(x as tf.Tensor2D, targets, weights))(logits)
    .arraySync() as number[][];
  const p = tf.softmax(logits).arraySync() as number[][];
  assert.ok(Math.abs(g[0]![2]! - (p[0]![2]! - 1) / 2) < 1e-6);
  assert.ok(Math.abs(g[1]![0]! - p[1]![0]! / 2) < 1e-6);
  assert.equal(g[2], [0, 0, 0]);
  const t = nextTokenTargets(Int32Array.from([5, 6, 7, 9, 8, 0]), Float32Array.from([1, 1, 1, 1, 1, 0]), 2, 3);
  assert.equal(Array.from(t.targets), [6, 7, 0, 8, 0, 0]);
  assert.equal(Array.from(t.weights), [1, 1, 0, 1, 0, 0]);
  assert.is(t.count, 3);
});

test('data: Markov set has exactly 4 successors per token and is seeded', () => {
  const a = markovDataset({ vocab: 64, sequences: 20, length: 32, seed: 3 });
  const b = markovDataset({ vocab: 64, sequences: 20, length: 32, seed: 3 });
  const c = markovDataset({ vocab: 64, sequences: 20, length: 32, seed: 4 });
  assert.equal(Array.from(a.samples[7]!.ids), Array.from(b.samples[7]!.ids));
  assert.not.equal(Array.from(a.samples[7]!.ids), Array.from(c.samples[7]!.ids));
  for (let t = 0; t < 64; t++) assert.is(new Set(a.successors.subarray(t * 4, t * 4 + 4)).size, 4);
  for (const s of a.samples)
    for (let i = 1; i < s.ids.length; i++)
      assert.ok(Array.from(a.successors.subarray(s.ids[i - 1]! * 4, s.ids[i - 1]! * 4 + 4)).includes(s.ids[i]!));
  const file = join(dir, 'm.jsonl');
  writeJsonl(file, a);
  const back = loadJsonl(file, { vocabSize: 64 });
  assert.equal(Array.from(back.samples[19]!.ids), Array.from(a.samples[19]!.ids));
});

test('data: JSONL errors name file:line; labels and batches', () => {
  const f = (name: string, body: string) => {
    const p = join(dir, name);
    writeFileSync(p, body);
    return p;
  };
  const cases: [string, RegExp][] = [
    ['{"ids": [1, 2]}\n{"ids": [1, 2\n', /bad1\.jsonl:2: malformed JSON/],
    ['{"ids": [1, 99]}\n', /bad2\.jsonl:1: token id 99 at position 1 is outside the vocabulary \[0, 10\)/],
    ['\n{"foo": 1}\n', /bad3\.jsonl:2: expected a "text" string or an "ids" array/],
    ['{"text": "hi"}\n', /bad4\.jsonl:1: "text" needs a tokenizer/],
    ['{"ids": [1], "label": "a"}\n{"ids": [2]}\n', /bad5\.jsonl:2: "label" must be on every line/],
  ];
  cases.forEach(([body, re], i) => {
    const p = f(`bad${i + 1}.jsonl`, body);
    assert.throws(
      () => loadJsonl(p, { vocabSize: 10 }),
      (e: Error) => e instanceof DataError && re.test(e.message),
    );
  });
  const ds = loadJsonl(f('ok.jsonl', '{"text": "ab", "label": "pos"}\n{"ids": [3, 4, 5, 6], "label": "neg"}\n'), {
    vocabSize: 10,
    encode: (s) => [...s].map((c) => c.charCodeAt(0) - 96),
  });
  assert.equal(ds.labelNames, ['neg', 'pos']);
  const batch = makeBatch(ds.samples, 3);
  assert.equal(Array.from(batch.ids), [1, 2, 0, 3, 4, 5]);
  assert.equal(Array.from(batch.mask), [1, 1, 0, 1, 1, 1]);
  assert.equal(Array.from(batch.labels!), [1, 0]);
});

test('data: epoch order is a seeded permutation per (seed, epoch)', () => {
  const o1 = epochOrder(50, 7, 0),
    o2 = epochOrder(50, 7, 1);
  assert.equal(o1, epochOrder(50, 7, 0));
  assert.not.equal(o1, o2);
  assert.equal(
    [...o1].sort((a, b) => a - b),
    Array.from({ length: 50 }, (_, i) => i),
  );
  assert.equal(
    miniBatches(o1, 16).map((b) => b.length),
    [16, 16, 16, 2],
  );
});

test('ledger: exactly-once per finished epoch, aborted steps do not count', () => {
  const l = new Ledger(4);
  l.begin(0, 0, [0, 1]);
  l.commit(0, 0);
  l.begin(0, 1, [2, 3]);
  l.abort(0, 1);
  assert.throws(() => l.finish(0), /sample 2 is in no committed step/);
  l.begin(0, 1, [2, 3]);
  l.commit(0, 1);
  l.finish(0);
  assert.ok(l.isFinished(0));
  l.begin(1, 0, [0, 1, 2]);
  l.commit(1, 0);
  l.begin(1, 1, [2, 3]);
  l.commit(1, 1);
  assert.equal(l.check(1), ['sample 2 is in 2 committed steps']);
  const back = Ledger.fromJSON(JSON.parse(JSON.stringify(l)));
  assert.equal(back.toJSON(), l.toJSON());
  assert.is(back.committedSteps(0).length, 2);
});

test.run();
