import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { createMethod, methodNames, type MethodName } from '../src/model/methods/index.ts';
import { backboneHidden } from '../src/model/methods/method.ts';
import { fixedBatch, maxAbsDiff, methodLoss, tinyBackbone } from './methods-fixture.ts';

const backbone = await tinyBackbone();
const batch = fixedBatch(backbone);
const baseLogits = tf.keep(tf.tidy(() => backbone.head(backboneHidden(backbone, batch.tensor))));
// The base forward runs on the backbone's engine; lora and serial hook every layer and so run on
// tfjs. On tfjs both are the same kernels (exactly equal); a native engine matches within 1e-5.
const tolerance = backbone.engine === 'tfjs' ? 0 : 1e-5 * tf.tidy(() => tf.max(tf.abs(baseLogits)).dataSync()[0]!);

for (const name of ['lora', 'serial', 'parallel'] as const) {
  for (const sideInit of name === 'parallel' ? (['prune', 'random'] as const) : [undefined]) {
    test(`methods: ${name}${sideInit ? ` (${sideInit})` : ''} at step 0 gives the base model's logits exactly`, () => {
      const method = createMethod(name, backbone, { sideInit }, 3);
      const logits = tf.tidy(() => backbone.head(method.hidden(batch.tensor)));
      const diff = maxAbsDiff(logits, baseLogits);
      assert.ok(diff <= tolerance, `max difference ${diff} (allowed ${tolerance} on engine ${backbone.engine})`);
      // The equality comes from the zero-initialised factor, not from an adapter that does nothing:
      // perturbing every parameter changes the logits.
      for (const v of method.parameters().values()) v.assign(tf.tidy(() => v.add(tf.randomNormal(v.shape, 0, 0.05, 'float32', 11))));
      const moved = tf.tidy(() => backbone.head(method.hidden(batch.tensor)));
      assert.ok(maxAbsDiff(moved, baseLogits) > 1e-4);
      tf.dispose([logits, moved]);
      method.dispose();
    });
  }
}

const sgdRate: Record<MethodName, number> = { full: 0.05, lora: 0.5, serial: 0.5, parallel: 0.5 };

test('methods: one SGD step of each method lowers the loss on a fixed batch', async () => {
  // full last: it turns the backbone's weights into variables and changes them.
  const order: MethodName[] = ['lora', 'serial', 'parallel', 'full'];
  assert.equal([...order].sort(), [...methodNames].sort());
  for (const name of order) {
    const method = createMethod(name, backbone, {}, 5);
    const vars = [...method.parameters().values()];
    assert.ok(vars.length > 0, `${name} has parameters`);
    const before = tf.tidy(() => methodLoss(backbone, method, batch).dataSync()[0]!);
    const { value, grads } = tf.variableGrads(() => methodLoss(backbone, method, batch), vars);
    assert.ok(Math.abs(value.dataSync()[0]! - before) < 1e-5, `${name}: taped and untaped loss agree`);
    for (const v of vars) v.assign(tf.tidy(() => v.sub(grads[v.name]!.mul(sgdRate[name]))));
    tf.dispose([value, ...Object.values(grads)]);
    const after = tf.tidy(() => methodLoss(backbone, method, batch).dataSync()[0]!);
    assert.ok(after < before, `${name}: loss ${before} -> ${after}`);
    if (name !== 'full') method.dispose();
  }
});

test.run();
