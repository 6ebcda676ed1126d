/**
 * The coordinator's copy of the side-network state, kept current from the reduced gradients the
 * stage groups ship (replayStep), ends bit for bit where the devices' AdamW leaves their
 * parameters and moments: with warm-up, cosine decay, weight decay on matrices only and clipping
 * by each group's own gradient norm (two stage groups, as in a pipeline epoch).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { AdamW, type AdamWOptions } from '../src/train/optim.ts';
import { replayStep, type PackedGrads, type SideState } from '../src/engine/index.ts';
import { packValue, unpackValue, WireTensor } from '../src/tensor/index.ts';

/** Deterministic pseudo-random floats. */
function floats(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * scale;
  }
  return out;
}

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

test('dist replay: the coordinator replaying shipped gradients equals the devices bit for bit', async () => {
  await initBackend('wasm');
  const options: AdamWOptions = { lr: 0.05, weightDecay: 0.1, maxGradNorm: 1, warmupSteps: 2, schedule: 'cosine', totalSteps: 6 };
  // Two stage groups with disjoint parameters (matrices and vectors), each with its own optimiser.
  const groups = [
    { 'b.down': [6, 4], 'b.gain': [4] },
    { 'c.up': [4, 6], 'c.bias': [6], 'a.mix': [3, 3] },
  ] as Record<string, number[]>[];
  const devices = groups.map((g, k) => ({
    params: new Map(
      Object.entries(g).map(([n, shape], j) => [
        n,
        tf.variable(
          tf.tensor(
            floats(
              shape.reduce((a, b) => a * b, 1),
              7 + 13 * k + j,
              2,
            ),
            shape,
          ),
        ),
      ]),
    ),
    optimizer: new AdamW(options),
  }));
  // Step 1 as the coordinator gets it: the full state of every group, then only gradients.
  let coordinator: SideState | null = null;
  for (let step = 1; step <= 6; step++) {
    const shipped: PackedGrads[] = [];
    devices.forEach((d, k) => {
      const names = [...d.params.keys()].sort();
      // Large gradients on some steps so that clipping engages for one group and not the other.
      const flat = names.map((n, j) => floats(d.params.get(n)!.size, 100 * step + 10 * k + j, k === 0 && step % 2 === 0 ? 50 : 0.5));
      const grads = new Map(names.map((n, j) => [n, tf.tensor(flat[j]!, d.params.get(n)!.shape)]));
      d.optimizer.apply(d.params, grads);
      for (const g of grads.values()) g.dispose();
      shipped.push(
        unpackValue(
          packValue(Object.fromEntries(names.map((n, j) => [n, new WireTensor('float32', d.params.get(n)!.shape, flat[j]!)]))),
        ) as PackedGrads,
      );
    });
    if (!coordinator) {
      coordinator = { params: new Map(), shapes: new Map(), optimizer: { step: 1, m: new Map(), v: new Map() } };
      for (const d of devices) {
        const st = d.optimizer.state();
        for (const [n, p] of d.params) {
          coordinator.params.set(n, (p.dataSync() as Float32Array).slice());
          coordinator.shapes.set(n, p.shape);
        }
        for (const [n, x] of st.m) coordinator.optimizer.m.set(n, x);
        for (const [n, x] of st.v) coordinator.optimizer.v.set(n, x);
      }
    } else {
      replayStep(coordinator, options, shipped);
    }
    assert.is(coordinator.optimizer.step, step);
    for (const d of devices) {
      const st = d.optimizer.state();
      assert.is(st.step, step);
      for (const [n, p] of d.params) {
        assert.equal(bits(coordinator.params.get(n)!), bits(p.dataSync() as Float32Array), `step ${step}: ${n} parameters`);
        assert.equal(bits(coordinator.optimizer.m.get(n)!), bits(st.m.get(n)!), `step ${step}: ${n} first moment`);
        assert.equal(bits(coordinator.optimizer.v.get(n)!), bits(st.v.get(n)!), `step ${step}: ${n} second moment`);
      }
    }
  }
  for (const d of devices) for (const p of d.params.values()) p.dispose();
});

test('dist replay: a gradient that matches no parameter is refused with its name', () => {
  const state: SideState = {
    params: new Map([['w', new Float32Array(4)]]),
    shapes: new Map([['w', [2, 2]]]),
    optimizer: { step: 1, m: new Map(), v: new Map() },
  };
  assert.throws(
    () => replayStep(state, { lr: 0.1 }, [{ w: new WireTensor('float32', [3], new Float32Array(3)) }]),
    /gradient w matches no parameter/,
  );
  assert.throws(() => replayStep(state, { lr: 0.1 }, [{ x: new WireTensor('float32', [4], new Float32Array(4)) }]), /gradient x/);
});

test.run();
