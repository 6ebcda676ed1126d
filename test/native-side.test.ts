/**
 * PAC's side network on the native engine (a forward graph and a hand-written backward graph)
 * against the same network on tfjs, from the same seeded parameters: the span's output a_to, every
 * parameter's gradient and dL/da_{from-1}, within 1e-5 relative, for a first span (down_0 from
 * b_0), a middle span (a_in from the previous stage) and the tiny preset's one-head-of-width-r
 * blocks. Skips, saying why, only where onnxruntime-node cannot load.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { presets } from '../src/model/presets.ts';
import type { ModelConfig } from '../src/model/types.ts';
import { SideNetwork, type SideSpan } from '../src/model/methods/side-network.ts';
import { loadNativeRuntime } from '../src/native/runtime.ts';
import { leanVariableGrads } from '../src/train/grads.ts';

const why = loadNativeRuntime();
if (why) console.log(`native side tests skipped: ${why}`);
await initBackend('wasm');

/** ||a - b|| / ||b||. */
function rel(a: Float32Array, b: Float32Array): number {
  assert.is(a.length, b.length);
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** a_to and the gradients of sum(a_to * G) on one engine. */
function run(config: ModelConfig, span: SideSpan, engine: 'native' | 'tfjs', rows: number, seqLen: number) {
  const side = new SideNetwork(config, span, { seed: 3, reduction: 8, engine });
  assert.is(side.engine, engine);
  // Zero-initialised parameters (up, biases) would leave some gradient paths untested: move them all.
  for (const [name, v] of side.parameters())
    v.assign(tf.tidy(() => tf.add(v, tf.mul(tf.randomNormal(v.shape, 0, 1, 'float32', name.length * 31 + (v.size % 97)), 0.05))));
  const N = rows * seqLen,
    d = config.dModel,
    r = side.shape.width;
  const acts: Record<number, tf.Tensor2D> = {};
  for (let i = span.hasDown0 ? 0 : span.from; i <= span.to; i++) acts[i] = tf.randomNormal([N, d], 0, 1, 'float32', 100 + i) as tf.Tensor2D;
  const aIn = span.hasDown0 ? null : tf.variable(tf.randomNormal([N, r], 0, 1, 'float32', 5) as tf.Tensor2D, true, `a-in-${engine}`);
  const g = tf.randomNormal([N, r], 0, 1, 'float32', 9) as tf.Tensor2D;
  const vars = [...side.parameters().values()];
  const out = tf.tidy(() => side.stageForward(acts, aIn, seqLen).dataSync().slice() as Float32Array);
  const { value, grads } = leanVariableGrads(
    () => tf.sum(tf.mul(side.stageForward(acts, aIn, seqLen), g)) as tf.Scalar,
    [...vars, ...(aIn ? [aIn] : [])],
  );
  const byName = new Map([...side.parameters()].map(([n, v]) => [n, grads[v.name]!.dataSync().slice() as Float32Array]));
  const gIn = aIn ? (grads[aIn.name]!.dataSync().slice() as Float32Array) : null;
  tf.dispose([value, ...Object.values(grads), ...Object.values(acts), g, ...(aIn ? [aIn] : [])]);
  side.dispose();
  return { out, grads: byName, gIn };
}

function compare(config: ModelConfig, span: SideSpan, rows: number, seqLen: number): void {
  const n = run(config, span, 'native', rows, seqLen),
    t = run(config, span, 'tfjs', rows, seqLen);
  const outRel = rel(n.out, t.out);
  assert.ok(outRel < 1e-5, `a_${span.to} differs by ${outRel}`);
  let worst = 0;
  for (const [name, gt] of t.grads) {
    if (name === 'side.up.weight') continue;
    const e = rel(n.grads.get(name)!, gt);
    worst = Math.max(worst, e);
    assert.ok(e < 1e-5, `${name}: gradient differs by ${e}`);
  }
  if (t.gIn) {
    const e = rel(n.gIn!, t.gIn);
    assert.ok(e < 1e-5, `dL/da_${span.from - 1} differs by ${e}`);
  }
  console.log(`span ${span.from}..${span.to}: a_out ${outRel.toExponential(2)}, worst parameter gradient ${worst.toExponential(2)}`);
}

if (!why) {
  test('native side: a first span of W1 (down_0 to a_8, 2 sequences of 128) matches tfjs', () => {
    compare({ ...presets.w1 }, { from: 1, to: 8, hasDown0: true, hasUp: false }, 2, 128);
  });

  test('native side: a middle span of W1 (layers 3-5 from a_2) matches tfjs, dL/da_2 included', () => {
    compare({ ...presets.w1 }, { from: 3, to: 5, hasDown0: false, hasUp: false }, 3, 64);
  });

  test('native side: the tiny preset (one head of the side width) matches tfjs', () => {
    const config = { ...presets.tiny };
    compare(config, { from: 1, to: config.nLayers, hasDown0: true, hasUp: false }, 4, 20);
  });

  test('native side: a side network without a native backbone stays on tfjs; Llama blocks stay on tfjs', () => {
    const w1 = new SideNetwork({ ...presets.w1 }, { from: 1, to: 1, hasDown0: true, hasUp: false }, { seed: 1 });
    assert.is(w1.engine, 'tfjs');
    w1.dispose();
    const llama = new SideNetwork(
      { ...presets['tiny-llama'] },
      { from: 1, to: 1, hasDown0: true, hasUp: false },
      { seed: 1, engine: 'native' },
    );
    assert.is(llama.engine, 'tfjs');
    llama.dispose();
  });
}

test.run();
