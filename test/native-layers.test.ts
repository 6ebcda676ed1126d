/**
 * The native engine (onnxruntime-node) against tfjs on the same weights: every layer's output of
 * the tiny preset and of a W1-sized layer, and a few training steps of the parallel method (with
 * and without the activation cache), within 1e-5 relative. Skips, saying why, only where
 * onnxruntime-node cannot load.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { fullRange, TransformerBackbone } from '../src/model/backbone.ts';
import { initBackend } from '../src/model/backend.ts';
import { createMethod } from '../src/model/methods/index.ts';
import { presets, presetWeights } from '../src/model/presets.ts';
import type { ModelConfig } from '../src/model/types.ts';
import { NativeHead, NativeLayers } from '../src/native/layers.ts';
import { frozenHeadCrossEntropy, nextTokenTargets } from '../src/train/loss.ts';
import { loadNativeRuntime, nativeWeightBytes } from '../src/native/runtime.ts';
import { ActivationCache } from '../src/cache/activation-cache.ts';
import { markovDataset } from '../src/train/data.ts';
import { Trainer } from '../src/train/trainer.ts';
import { relDiff } from './fixtures/compare.ts';

const why = loadNativeRuntime();
if (why) console.log(`native tests skipped: ${why}`);
await initBackend('wasm');

/** max |a - b| / max |b|. */
function maxRel(a: Float32Array, b: Float32Array): number {
  assert.is(a.length, b.length);
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

/** Two backbones on the same seeded weights: one on tfjs, one with its layers on the native engine. */
function pair(config: ModelConfig, seed: number, threads?: number) {
  const range = fullRange(config);
  const weights = () => presetWeights(config, range, seed);
  const plain = new TransformerBackbone(config, range, weights(), `t${seed}`, weights);
  const native = new TransformerBackbone(
    config,
    range,
    weights(),
    `t${seed}`,
    weights,
    (w) => new NativeLayers(config, range, w, threads),
    (w) => new NativeHead(w),
  );
  return { plain, native };
}

function layerOutputs(config: ModelConfig, batch: number, seqLen: number, threads?: number): number {
  const { plain, native } = pair(config, 3, threads);
  assert.ok(native.engine.startsWith('native'), native.engine);
  assert.is(plain.engine, 'tfjs');
  let worst = 0;
  tf.tidy(() => {
    let h = tf.randomNormal([batch * seqLen, config.dModel], 0, 1, 'float32', 5) as tf.Tensor2D;
    for (let i = 1; i <= config.nLayers; i++) {
      const a = native.layer(i, h, seqLen).dataSync() as Float32Array;
      const b = plain.layer(i, h, seqLen);
      worst = Math.max(worst, maxRel(a, b.dataSync() as Float32Array));
      h = b;
    }
  });
  plain.dispose();
  native.dispose();
  return worst;
}

if (!why) {
  test('native: every tiny layer matches tfjs within 1e-5 relative', () => {
    const rel = layerOutputs({ ...presets.tiny }, 2, 16);
    console.log(`tiny per-layer max relative difference ${rel.toExponential(2)}`);
    assert.ok(rel < 1e-5, `max relative difference ${rel}`);
  });

  test('native: a W1-sized layer (8 x 128 tokens, width 512, 8 heads) matches tfjs within 1e-5 relative', () => {
    const rel = layerOutputs({ ...presets.w1, nLayers: 1 }, 8, 128);
    console.log(`W1 layer max relative difference ${rel.toExponential(2)}`);
    assert.ok(rel < 1e-5, `max relative difference ${rel}`);
  });

  test('native: with two threads (idle ones sleeping) a W1-sized layer still matches tfjs within 1e-5 relative', () => {
    const rel = layerOutputs({ ...presets.w1, nLayers: 1 }, 8, 128, 2);
    console.log(`W1 layer, 2 threads, max relative difference ${rel.toExponential(2)}`);
    assert.ok(rel < 1e-5, `max relative difference ${rel}`);
  });

  test('native: its weights count while its sessions live, and no tfjs copy of the layers is kept', () => {
    const config = { ...presets.tiny };
    const before = nativeWeightBytes();
    const { plain, native } = pair(config, 4);
    assert.ok(nativeWeightBytes() > before, 'native weights counted');
    assert.not.ok([...native.weights().keys()].length < [...plain.weights().keys()].length, 'weights() still lists every layer');
    tf.tidy(() => native.layer(1, tf.zeros([16, config.dModel]) as tf.Tensor2D, 16));
    const tfjsLayerBytes = (bb: TransformerBackbone) =>
      [...(bb as unknown as { held: Map<string, tf.Tensor> }).held].filter(([n]) => n.startsWith('layers.')).length;
    assert.is(tfjsLayerBytes(native), 0, 'the layer weights live in the native engine only');
    native.releaseLayers();
    assert.is(nativeWeightBytes(), before + 0, 'sessions freed');
    // A layer after releaseLayers rebuilds the sessions from the model's source, same values.
    const h = tf.randomNormal([16, config.dModel], 0, 1, 'float32', 9) as tf.Tensor2D;
    const again = native.layer(2, h, 16).dataSync() as Float32Array;
    assert.ok(maxRel(again, plain.layer(2, h, 16).dataSync() as Float32Array) < 1e-5);
    h.dispose();
    plain.dispose();
    native.dispose();
    assert.is(nativeWeightBytes(), before);
  });

  test('native: a layer under a gradient tape or with hooks runs on tfjs (the gradient reaches h)', () => {
    const config = { ...presets.tiny };
    const { plain, native } = pair(config, 6);
    const h = tf.randomNormal([16, config.dModel], 0, 1, 'float32', 2) as tf.Tensor2D;
    const grad = (bb: TransformerBackbone) =>
      tf
        .grad((x: tf.Tensor) => tf.sum(bb.layer(1, x as tf.Tensor2D, 16)))(h)
        .dataSync() as Float32Array;
    assert.ok(maxRel(grad(native), grad(plain)) < 1e-6);
    h.dispose();
    plain.dispose();
    native.dispose();
  });

  test('native: the first gradient of the parallel method (W1-sized single layer) matches tfjs within 1e-5 relative', () => {
    const config = { ...presets.w1, nLayers: 1 };
    const { plain, native } = pair(config, 8);
    const data = markovDataset({ vocab: config.vocabSize, sequences: 4, length: 64, seed: 2 });
    const ids = tf.tensor2d(Int32Array.from(data.samples.flatMap((s) => [...s.ids])), [4, 64], 'int32');
    const targets = tf.tensor1d(Int32Array.from(data.samples.flatMap((s) => [...s.ids.slice(1), 0])), 'int32');
    const grads = (bb: TransformerBackbone) => {
      const method = createMethod('parallel', bb, { reduction: 8 }, 11);
      const { value, grads } = tf.variableGrads(() =>
        tf.tidy(() => tf.losses.softmaxCrossEntropy(tf.oneHot(targets, config.vocabSize), bb.head(method.hidden(ids))) as tf.Scalar),
      );
      const out = new Map(Object.entries(grads).map(([n, g]) => [n.replace(/#\d+$/, ''), g.dataSync().slice() as Float32Array]));
      const loss = value.dataSync()[0]!;
      tf.dispose([value, ...Object.values(grads)]);
      method.dispose();
      return { out, loss };
    };
    const a = grads(native),
      b = grads(plain);
    const rel = relDiff(b.out, a.out);
    console.log(`W1 layer first gradient relative difference ${rel.toExponential(2)}, loss ${Math.abs(a.loss - b.loss) / b.loss}`);
    assert.ok(rel < 1e-5, `gradient relative difference ${rel}`);
    tf.dispose([ids, targets]);
    plain.dispose();
    native.dispose();
  });

  test('native: the frozen head loss and dL/dh (W1 head, 1024 rows) match tfjs within 1e-5 relative, without a transposed copy', () => {
    const config = { ...presets.w1, nLayers: 1 };
    const { plain, native } = pair(config, 9);
    const rows = 1024;
    const ids = Int32Array.from({ length: rows }, (_, i) => (i * 7919) % config.vocabSize);
    const mask = new Float32Array(rows).fill(1);
    mask.fill(0, rows - 40); // padding rows drop out of the loss
    const { targets, weights } = nextTokenTargets(ids, mask, 8, rows / 8);
    const h = tf.randomNormal([rows, config.dModel], 0, 1, 'float32', 4) as tf.Tensor2D;
    const run = (bb: TransformerBackbone) => {
      const head = bb.frozenHead()!;
      const vg = tf.valueAndGrad((x: tf.Tensor) => frozenHeadCrossEntropy(x as tf.Tensor2D, head, targets, weights, 300))(h);
      const out = { loss: vg.value.dataSync()[0]!, grad: vg.grad.dataSync() as Float32Array };
      tf.dispose([vg.value, vg.grad]);
      return out;
    };
    const a = run(native),
      b = run(plain);
    const lossRel = Math.abs(a.loss - b.loss) / b.loss,
      gradRel = maxRel(a.grad, b.grad);
    console.log(`head loss relative difference ${lossRel.toExponential(2)}, dL/dh ${gradRel.toExponential(2)}`);
    assert.ok(lossRel < 1e-5 && gradRel < 1e-5, `loss ${lossRel}, gradient ${gradRel}`);
    assert.is((native as unknown as { headT?: tf.Tensor }).headT, undefined, 'no transposed head copy on the native path');
    h.dispose();
    plain.dispose();
    native.dispose();
  });

  async function train(config: ModelConfig, native: boolean, cached: boolean) {
    const { plain, native: nb } = pair(config, 5);
    const backbone = native ? nb : plain;
    (native ? plain : nb).dispose();
    const data = markovDataset({ vocab: config.vocabSize, sequences: 6, length: 24, seed: 3 });
    const method = createMethod('parallel', backbone, { reduction: 8 }, 11);
    const cache = cached ? new ActivationCache({ memoryBytes: 64 << 20 }) : undefined;
    const t = new Trainer({
      backbone,
      method,
      data,
      cache,
      // AdamW moves every element by about lr whatever its gradient's size, so an element whose
      // gradient is near zero turns a 1e-7 difference in it into a difference of order lr: lr is
      // kept small next to the parameters (about 2e-2) for the parameters to be comparable.
      config: { epochs: 2, batch: 3, seed: 11, seqLen: 24, task: 'lm', optimizer: { lr: 1e-4, weightDecay: 0.01 } },
    });
    t.run();
    const out = { losses: t.losses(), params: new Map([...t.parameters()].map(([n, v]) => [n, v.dataSync().slice() as Float32Array])) };
    t.dispose();
    method.dispose();
    backbone.dispose();
    return out;
  }

  for (const [label, config] of [
    ['tiny', { ...presets.tiny }],
    ['W1-sized single layer', { ...presets.w1, nLayers: 1 }],
  ] as const) {
    for (const cached of [false, true]) {
      test(`native: parallel training steps (${label}${cached ? ', cached' : ''}) match tfjs within 1e-5 relative`, async () => {
        const a = await train(config, true, cached);
        const b = await train(config, false, cached);
        const lossRel = Math.max(...a.losses.map((l, i) => Math.abs(l - b.losses[i]!) / Math.abs(b.losses[i]!)));
        const paramRel = relDiff(b.params, a.params);
        console.log(`${label}${cached ? ' cached' : ''}: losses ${lossRel.toExponential(2)}, parameters ${paramRel.toExponential(2)}`);
        assert.is(a.losses.length, b.losses.length);
        assert.ok(lossRel < 1e-5, `loss relative difference ${lossRel}`);
        assert.ok(paramRel < 1e-5, `parameter relative difference ${paramRel}`);
      });
    }
  }
}

test.run();
