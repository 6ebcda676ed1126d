/**
 * StageCompute's loss backward (side forward, fused frozen-head loss a few rows at a time and side
 * backward on one tape, scaled to the rank's share) against plain autodiff through the whole side
 * network and an unfused head.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone } from '../src/model/load.ts';
import { SideNetwork } from '../src/model/methods/side-network.ts';
import { StageCompute } from '../src/engine/index.ts';
import { crossEntropy, nextTokenTargets } from '../src/train/loss.ts';
import { markovDataset, makeBatch } from '../src/train/data.ts';

test('stage compute: the loss backward equals autodiff of the whole loss', async () => {
  await initBackend('wasm');
  const T = 32,
    rows = 17; // 544 rows: more than one chunk of frozenHeadCrossEntropy's logits
  const backbone = await loadBackbone({ preset: 'tiny' }, { from: 1, to: 2, embed: true, head: true });
  const side = new SideNetwork(backbone.config, { from: 1, to: 2, hasDown0: true, hasUp: true }, { seed: 3, reduction: 8 });
  // up starts at zero (no gradient would reach the blocks): give it values first.
  const up = side.parameters().get('side.up.weight')!;
  tf.tidy(() => up.assign(tf.randomNormal(up.shape, 0, 0.1, 'float32', 7)));
  const compute = new StageCompute(backbone, side, T);
  const data = markovDataset({ vocab: 256, sequences: rows, length: T, seed: 2 });
  const { ids, mask } = makeBatch(data.samples, T);
  const stepTokens = 2 * nextTokenTargets(ids, mask, rows, T).count; // as if a second rank held as many tokens

  const out = compute.forward(0, rows, { kind: 'ids', ids });
  const { loss } = compute.lossBackward(0, { ids, mask }, stepTokens);
  const fused = compute.flatGradients();

  // Reference: one tape over side forward, head and cross-entropy, scaled the same way.
  const { targets, weights, count } = nextTokenTargets(ids, mask, rows, T);
  const acts = Object.fromEntries([...out.computed].map(([l, v]) => [l, tf.tensor2d(v, [rows * T, backbone.config.dModel])]));
  const names = compute.names();
  const { value, grads } = tf.variableGrads(
    () => {
      const h = side.output(acts[2]!, side.stageForward(acts, null, T));
      return tf.mul(
        crossEntropy(backbone.head(backbone.finalNorm(h)), tf.tensor1d(targets, 'int32'), tf.tensor1d(weights)),
        count / stepTokens,
      ) as tf.Scalar;
    },
    names.map((n) => side.parameters().get(n)!),
  );
  assert.ok(Math.abs(value.dataSync()[0]! - loss) <= 1e-5 * Math.abs(loss), `loss ${loss} vs ${value.dataSync()[0]}`);
  let num = 0,
    den = 0,
    at = 0;
  for (const n of names) {
    const g = grads[side.parameters().get(n)!.name]!.dataSync();
    for (let i = 0; i < g.length; i++, at++) {
      num += (fused[at]! - g[i]!) ** 2;
      den += g[i]! ** 2;
    }
  }
  assert.is(at, fused.length);
  assert.ok(den > 0 && Math.sqrt(num / den) <= 1e-5, `gradients differ by ${Math.sqrt(num / den)}`);
});

test.run();
