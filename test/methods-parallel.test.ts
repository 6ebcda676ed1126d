import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { fullRange, TransformerBackbone } from '../src/model/backbone.ts';
import { createMethod, type ParallelMethod, SideNetwork } from '../src/model/methods/index.ts';
import { presetWeights } from '../src/model/presets.ts';
import type { Backbone } from '../src/model/types.ts';
import { backwardKernels, fixedBatch, lossOf, maxAbsDiff, methodLoss, tinyBackbone } from './methods-fixture.ts';

const backbone = await tinyBackbone();
const batch = fixedBatch(backbone);
const L = backbone.config.nLayers;

test('methods: parallel trains only side-network parameters, and gradients reach only them', () => {
  const method = createMethod('parallel', backbone, {}, 1) as ParallelMethod;
  const params = method.parameters();
  assert.ok(params.size > 0);
  for (const name of params.keys()) assert.ok(name.startsWith('side.'), name);
  const backboneData = new Set([...backbone.weights().values()].map((w) => w.dataId));
  for (const v of params.values()) assert.not.ok(backboneData.has(v.dataId), `${v.name} shares a backbone weight`);
  for (const w of backbone.weights().values()) assert.not.ok(w instanceof tf.Variable && w.trainable, 'backbone weight is trainable');

  // Ask for gradients of every trainable variable in the process: only side parameters get one.
  const { value, grads } = tf.variableGrads(() => methodLoss(backbone, method, batch));
  const sideVarNames = new Set([...params.values()].map((v) => v.name));
  for (const name of Object.keys(grads)) assert.ok(sideVarNames.has(name), `gradient for ${name}`);
  assert.is(Object.keys(grads).length, params.size);
  tf.dispose([value, ...Object.values(grads)]);
  method.dispose();
});

test('methods: parallel backward does no backbone work (same as from cached activations) and keeps no backbone tensor', async () => {
  const method = createMethod('parallel', backbone, {}, 1) as ParallelMethod;
  const vars = [...method.parameters().values()];
  const acts = method.backboneActivations(batch.tensor).map((t) => tf.keep(t));
  const callsBefore = method.backboneLayerCalls;
  const fromCache = () => lossOf(backbone, method.hiddenFromActivations(acts, batch.seqLen), batch);
  const cachedWork = await backwardKernels(fromCache, vars);
  assert.is(method.backboneLayerCalls, callsBefore, 'the cached path ran no backbone layer');

  // The full path runs all L backbone layers with the tape on, yet backward costs exactly what the
  // side network alone costs: the backbone's share of the backward work is zero kernels, at any depth.
  const fullWork = await backwardKernels(() => methodLoss(backbone, method, batch), vars);
  assert.is(method.backboneLayerCalls, callsBefore + 2 * L);
  assert.ok(cachedWork > 0);
  assert.is(fullWork, cachedWork);

  // The measure sees backbone work when there is some: the same loss with the backbone run on
  // the tape (as a plain forward would) keeps its tensors for backward and costs more.
  const onTape = () => {
    const b: tf.Tensor2D[] = [backbone.embed(batch.tensor)];
    for (let i = 1; i <= L; i++) b.push(backbone.layer(i, b[i - 1]!, batch.seqLen));
    return lossOf(backbone, method.hiddenFromActivations(b, batch.seqLen), batch);
  };
  assert.ok((await backwardKernels(onTape, vars)) > cachedWork);
  tf.dispose(acts);
  method.dispose();
});

/** The tiny preset's architecture at another depth, seeded weights. */
function tinyAtDepth(nLayers: number): Backbone {
  const config = { ...backbone.config, nLayers };
  return new TransformerBackbone(config, fullRange(config), presetWeights(config, fullRange(config), 1), `tiny-depth-${nLayers}`);
}

test('methods: backward work of parallel grows with side blocks only, not with backbone depth', async () => {
  const work: Record<number, { parallel: number; sideOnly: number; lora: number }> = {};
  for (const depth of [2, 4]) {
    const bb = tinyAtDepth(depth);
    const b = fixedBatch(bb);
    const par = createMethod('parallel', bb, {}, 2) as ParallelMethod;
    const vars = [...par.parameters().values()];
    const acts = par.backboneActivations(b.tensor).map((t) => tf.keep(t));
    const lora = createMethod('lora', bb, {}, 2);
    work[depth] = {
      parallel: await backwardKernels(() => methodLoss(bb, par, b), vars),
      sideOnly: await backwardKernels(() => lossOf(bb, par.hiddenFromActivations(acts, b.seqLen), b), vars),
      lora: await backwardKernels(() => methodLoss(bb, lora, b), [...lora.parameters().values()]),
    };
    tf.dispose([...acts, b.tensor]);
    [par, lora, bb].forEach((x) => x.dispose());
  }
  // Backbone share = parallel - sideOnly: zero at both depths.
  assert.is(work[2]!.parallel, work[2]!.sideOnly);
  assert.is(work[4]!.parallel, work[4]!.sideOnly);
  // Two more layers add two side blocks' backward; LoRA adds two whole backbone layers' backward.
  const sideGrowth = work[4]!.parallel - work[2]!.parallel,
    loraGrowth = work[4]!.lora - work[2]!.lora;
  assert.ok(sideGrowth > 0 && loraGrowth > sideGrowth, `side +${sideGrowth} kernels, lora +${loraGrowth} kernels`);
  console.log(
    `backward kernels (2 -> 4 layers): parallel ${work[2]!.parallel} -> ${work[4]!.parallel}, lora ${work[2]!.lora} -> ${work[4]!.lora}`,
  );
});

function stageSplit(k: number, sideInit: 'prune' | 'random', seed: number) {
  const init = { seed, sideInit, backbone };
  const whole = new SideNetwork(backbone.config, { from: 1, to: L, hasDown0: true, hasUp: true }, init);
  const first = new SideNetwork(backbone.config, { from: 1, to: k, hasDown0: true, hasUp: false }, init);
  const last = new SideNetwork(backbone.config, { from: k + 1, to: L, hasDown0: false, hasUp: true }, init);
  return { whole, first, last };
}

for (const sideInit of ['random', 'prune'] as const) {
  test(`methods: a side network split into two stages has the whole one's parameters (${sideInit} init)`, () => {
    for (let k = 1; k < L; k++) {
      const { whole, first, last } = stageSplit(k, sideInit, 9);
      const union = new Map([...first.parameters(), ...last.parameters()]);
      assert.is(first.parameters().size + last.parameters().size, union.size, 'stages share no name');
      assert.equal([...union.keys()].sort(), [...whole.parameters().keys()].sort());
      for (const [name, v] of whole.parameters()) assert.is(maxAbsDiff(v, union.get(name)!), 0, name);
      [whole, first, last].forEach((s) => s.dispose());
    }
  });
}

test('methods: a side network split into stages computes the same output and gradients as the whole one', () => {
  const k = Math.max(1, Math.floor(L / 2));
  const { whole, first, last } = stageSplit(k, 'random', 4);
  // Non-zero up so that gradients flow into every block.
  for (const s of [whole, last]) {
    const up = s.parameters().get('side.up.weight')!;
    up.assign(tf.randomNormal(up.shape, 0, 0.1, 'float32', 5));
  }
  const T = batch.seqLen;
  const acts = method0Activations();
  const probe = tf.keep(tf.randomNormal([acts[0]!.shape[0], backbone.config.dModel], 0, 1, 'float32', 6)); // (N, d)
  const objective = (out: tf.Tensor2D) => tf.sum(tf.mul(out, probe)) as tf.Scalar;

  const wholeVars = [...whole.parameters().values()];
  const w = tf.variableGrads(() => objective(whole.output(acts[L]!, whole.stageForward(acts, null, T))), wholeVars);

  // Pipeline protocol: stage 1 forward -> a_k; stage 2 forward+backward -> dL/da_k; stage 1 backward.
  const aK = tf.tidy(() => first.stageForward(acts, null, T));
  const aKVar = tf.variable(aK, true, 'test.aK');
  const lastVars = [...last.parameters().values()];
  const l = tf.variableGrads(() => objective(last.output(acts[L]!, last.stageForward(acts, aKVar, T))), [...lastVars, aKVar]);
  const dA = l.grads[aKVar.name]!;
  const firstVars = [...first.parameters().values()];
  const f = tf.variableGrads(() => tf.sum(tf.mul(first.stageForward(acts, null, T), dA)) as tf.Scalar, firstVars);

  const rel = (a: tf.Tensor, b: tf.Tensor) =>
    maxAbsDiff(a, b) /
    Math.max(
      1e-12,
      tf.tidy(() => tf.max(tf.abs(a)).dataSync()[0]!),
    );
  assert.ok(Math.abs(w.value.dataSync()[0]! - l.value.dataSync()[0]!) <= 1e-5 * Math.abs(w.value.dataSync()[0]!));
  const byName = (net: SideNetwork, grads: tf.NamedTensorMap) => new Map([...net.parameters()].map(([n, v]) => [n, grads[v.name]!]));
  const wholeGrads = byName(whole, w.grads);
  const splitGrads = new Map([...byName(first, f.grads), ...byName(last, l.grads)]);
  assert.is(splitGrads.size, wholeGrads.size);
  for (const [name, g] of wholeGrads) {
    assert.ok(g, `whole gradient ${name}`);
    assert.ok(rel(g, splitGrads.get(name)!) < 1e-4, `${name}: relative difference ${rel(g, splitGrads.get(name)!)}`);
  }
  tf.dispose([
    w.value,
    l.value,
    f.value,
    ...Object.values(w.grads),
    ...Object.values(l.grads),
    ...Object.values(f.grads),
    aK,
    aKVar,
    probe,
    ...acts,
  ]);
  [whole, first, last].forEach((s) => s.dispose());
});

function method0Activations(): tf.Tensor2D[] {
  const m = createMethod('parallel', backbone, { sideInit: 'random' }, 0) as ParallelMethod;
  const acts = m.backboneActivations(batch.tensor).map((t) => tf.keep(t));
  m.dispose();
  return acts;
}

test.run();
