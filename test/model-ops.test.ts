import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import { forwardLogits } from '../src/model/backbone.ts';
import { loadBackbone } from '../src/model/load.ts';
import { applyRotary, causalAttention, frozenLinear, geluNew, linear } from '../src/model/ops.ts';
import { seededNormal } from '../src/model/presets.ts';

// wasm whatever else is installed: its kernels that Charon replaces (Slice, Unpack, GatherV2,
// UnsortedSegmentSum) are under test here. The default choice is model-backend.test.ts's.
await initBackend('wasm');

const rand = (name: string, shape: number[], std = 1) =>
  tf.tensor(
    seededNormal(
      42,
      name,
      shape.reduce((a, b) => a * b, 1),
      std,
    ),
    shape,
  );

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.is(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= tol * (1 + Math.abs(b[i]!)), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

test('model-ops: rotary embedding follows the HF rotate_half convention', () => {
  const B = 2,
    T = 5,
    H = 3,
    hd = 8,
    theta = 500;
  const x = rand('rope', [B * T, H * hd]) as tf.Tensor2D;
  const got = applyRotary(x, T, H, hd, theta).dataSync();
  const xs = x.dataSync();
  const want = new Float32Array(xs.length);
  const half = hd / 2;
  for (let b = 0; b < B; b++)
    for (let p = 0; p < T; p++)
      for (let h = 0; h < H; h++) {
        const base = (b * T + p) * H * hd + h * hd;
        for (let i = 0; i < half; i++) {
          const ang = p / theta ** ((2 * i) / hd);
          const x1 = xs[base + i]!,
            x2 = xs[base + half + i]!;
          want[base + i] = x1 * Math.cos(ang) - x2 * Math.sin(ang);
          want[base + half + i] = x2 * Math.cos(ang) + x1 * Math.sin(ang);
        }
      }
  close(got, want, 1e-5, 'rope');
});

test('model-ops: causal grouped-query attention matches a direct computation', () => {
  const B = 2,
    T = 4,
    H = 4,
    Hkv = 2,
    hd = 3;
  const q = rand('q', [B * T, H * hd]) as tf.Tensor2D,
    k = rand('k', [B * T, Hkv * hd]) as tf.Tensor2D,
    v = rand('v', [B * T, Hkv * hd]) as tf.Tensor2D;
  const got = causalAttention(q, k, v, T, H, Hkv, hd).dataSync();
  const Q = q.dataSync(),
    K = k.dataSync(),
    V = v.dataSync();
  const want = new Float32Array(B * T * H * hd);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / Hkv));
      for (let i = 0; i < T; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let c = 0; c < hd; c++) dot += Q[(b * T + i) * H * hd + h * hd + c]! * K[(b * T + j) * Hkv * hd + g * hd + c]!;
          s.push(dot / Math.sqrt(hd));
        }
        const m = Math.max(...s),
          e = s.map((z) => Math.exp(z - m)),
          sum = e.reduce((a, z) => a + z, 0);
        for (let c = 0; c < hd; c++) {
          let o = 0;
          for (let j = 0; j <= i; j++) o += (e[j]! / sum) * V[(b * T + j) * Hkv * hd + g * hd + c]!;
          want[(b * T + i) * H * hd + h * hd + c] = o;
        }
      }
    }
  close(got, want, 1e-5, 'attention');
});

test('model-ops: the attention gradient equals autodiff of a direct tfjs formulation (grouped heads)', () => {
  const B = 2,
    T = 5,
    H = 4,
    Hkv = 2,
    hd = 3;
  const q = rand('gq', [B * T, H * hd]) as tf.Tensor2D,
    k = rand('gk', [B * T, Hkv * hd]) as tf.Tensor2D,
    v = rand('gv', [B * T, Hkv * hd]) as tf.Tensor2D;
  const r = rand('gr', [B * T, H * hd]);
  const mask = tf.tensor2d(
    Array.from({ length: T * T }, (_, i) => (i % T > Math.floor(i / T) ? -1e9 : 0)),
    [T, T],
  );
  const direct = (qi: tf.Tensor, ki: tf.Tensor, vi: tf.Tensor) => {
    const heads = (x: tf.Tensor, n: number) => tf.transpose(tf.reshape(x, [B, T, n, hd]), [0, 2, 1, 3]); // (B, n, T, hd)
    const rep = (x: tf.Tensor) => {
      const kvs = tf.unstack(x, 1);
      return tf.stack(
        Array.from({ length: H }, (_, h) => kvs[Math.floor(h / (H / Hkv))]!),
        1,
      );
    };
    const qh = heads(qi, H),
      kh = rep(heads(ki, Hkv)),
      vh = rep(heads(vi, Hkv));
    const p = tf.softmax(tf.add(tf.div(tf.matMul(qh, kh, false, true), Math.sqrt(hd)), mask));
    return tf.reshape(tf.transpose(tf.matMul(p, vh), [0, 2, 1, 3]), [B * T, H * hd]);
  };
  const loss = (att: (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor) => (qi: tf.Tensor, ki: tf.Tensor, vi: tf.Tensor) =>
    tf.sum(tf.mul(att(qi, ki, vi), r));
  const ours = tf.grads(loss((a, b, c) => causalAttention(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor2D, T, H, Hkv, hd)))([q, k, v]);
  const theirs = tf.grads(loss(direct))([q, k, v]);
  ours.forEach((g, i) => close(g.dataSync(), theirs[i]!.dataSync(), 1e-5, `attention grad ${'qkv'[i]}`));
  const one = tf.grads(loss((a, b, c) => causalAttention(a as tf.Tensor2D, b as tf.Tensor2D, c as tf.Tensor2D, T, 1, 1, 12)))([
    rand('q1', [B * T, 12]),
    rand('k1', [B * T, 12]),
    rand('v1', [B * T, 12]),
  ]);
  assert.is(one.length, 3, 'single head');
});

test('model-ops: linear gradients equal tfjs matMul gradients; frozenLinear gives no weight gradient', () => {
  const x = rand('x', [6, 5]) as tf.Tensor2D,
    w = rand('w', [5, 7]) as tf.Tensor2D,
    b = rand('b', [7]) as tf.Tensor1D;
  const r = rand('r', [6, 7]);
  const ours = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) =>
    tf.sum(tf.mul(linear(xi as tf.Tensor2D, wi as tf.Tensor2D, bi as tf.Tensor1D), r)),
  )([x, w, b]);
  const theirs = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(tf.add(tf.matMul(xi, wi), bi), r)))([x, w, b]);
  ours.forEach((g, i) => close(g.dataSync(), theirs[i]!.dataSync(), 1e-5, `grad ${i}`));
  const dx = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(frozenLinear(xi as tf.Tensor2D, w, b), r)))(x);
  close(dx.dataSync(), theirs[0]!.dataSync(), 1e-5, 'frozen dx');
  const wv = tf.variable(w);
  // tfjs refuses when no variable is connected to the loss: the frozen weight is not on the tape.
  assert.throws(
    () => tf.variableGrads(() => tf.sum(tf.mul(frozenLinear(x, wv as unknown as tf.Tensor2D), r)) as tf.Scalar, [wv]),
    /Cannot find a connection/,
  );
});

test('model-ops: frozenLinear keeps a temporary weight alive until backward', () => {
  const x = rand('xt', [3, 4]) as tf.Tensor2D,
    w = rand('wt', [4, 2]) as tf.Tensor2D;
  const f = (xi: tf.Tensor) => {
    const y = tf.tidy(() => frozenLinear(xi as tf.Tensor2D, tf.mul(w, 2) as tf.Tensor2D)); // the doubled weight dies with the tidy
    return tf.sum(y);
  };
  const dx = tf.grad(f)(x).dataSync();
  const W = w.dataSync();
  const want = Array.from({ length: 12 }, (_, k) => 2 * (W[(k % 4) * 2]! + W[(k % 4) * 2 + 1]!));
  close(dx, want, 1e-6, 'dx');
});

test('model-ops: gelu_new equals 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))', () => {
  const x = rand('gelu', [4, 9], 3) as tf.Tensor2D;
  const want = Array.from(x.dataSync(), (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))));
  close(geluNew(x).dataSync(), want, 1e-5, 'gelu');
});

test('model-ops: in-place wasm slice and unstack return the right values', () => {
  const x = tf.tensor(
    Float32Array.from({ length: 2 * 3 * 4 * 5 }, (_, i) => i),
    [2, 3, 4, 5],
  );
  const s = tf.slice(x, [1, 1, 2, 1], [1, 2, 2, 3]).dataSync();
  const want: number[] = [];
  for (let j = 1; j < 3; j++) for (let k = 2; k < 4; k++) for (let l = 1; l < 4; l++) want.push(60 + j * 20 + k * 5 + l);
  assert.equal(Array.from(s), want);
  const block = tf.slice(x, [1, 1, 2, 0], [1, 2, 2, 5]).dataSync(); // trailing axis whole: runs of 10
  const wantBlock: number[] = [];
  for (let j = 1; j < 3; j++) for (let k = 2; k < 4; k++) for (let l = 0; l < 5; l++) wantBlock.push(60 + j * 20 + k * 5 + l);
  assert.equal(Array.from(block), wantBlock);
  assert.equal(
    Array.from(tf.slice(x, [1, 0, 0, 0], [1, 3, 4, 5]).dataSync()),
    Array.from({ length: 60 }, (_, i) => 60 + i),
  );
  const parts = tf.unstack(x, 2);
  assert.equal(parts[3]!.shape, [2, 3, 5]);
  assert.equal(Array.from(parts[3]!.dataSync()).slice(0, 5), [15, 16, 17, 18, 19]);
});

test('model-ops: the wasm gather copies the right slices (rows, inner axis, batch dims) and refuses bad indices', () => {
  const x = tf.tensor(
    Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i),
    [2, 3, 4],
  );
  const at = (b: number, r: number, c: number) => b * 12 + r * 4 + c;
  const rows = tf.gather(x, tf.tensor1d([1, 0, 1], 'int32'));
  assert.equal(rows.shape, [3, 3, 4]);
  assert.equal(Array.from(rows.dataSync()).slice(0, 13), [...Array.from({ length: 12 }, (_, i) => 12 + i), 0]);
  const inner = tf.gather(x, tf.tensor1d([2, 0], 'int32'), 1);
  assert.equal(
    Array.from(inner.dataSync()),
    [0, 1].flatMap((b) => [2, 0].flatMap((r) => [0, 1, 2, 3].map((c) => at(b, r, c)))),
  );
  const batched = tf.gather(
    x,
    tf.tensor2d(
      [
        [0, 2],
        [1, 1],
      ],
      [2, 2],
      'int32',
    ),
    1,
    1,
  );
  assert.equal(
    Array.from(batched.dataSync()),
    [
      [0, 2],
      [1, 1],
    ].flatMap((rs, b) => rs.flatMap((r) => [0, 1, 2, 3].map((c) => at(b, r, c)))),
  );
  assert.equal(Array.from(tf.gather(tf.tensor1d([5, 6, 7], 'int32'), tf.tensor1d([2, 2, 0], 'int32')).dataSync()), [7, 7, 5]);
  assert.throws(() => tf.gather(x, tf.tensor1d([3], 'int32')), /index value 3/);
});

test('model-ops: full fine-tuning reaches the embedding through gather on wasm (UnsortedSegmentSum)', async () => {
  const bb = await loadBackbone({ preset: 'tiny', seed: 2 });
  const vars = bb.makeTrainable();
  assert.ok(!bb.weights().has('head.weight'), 'tied head reads the embedding variable');
  const ids = tf.tensor2d([[7, 7, 9, 1]], [1, 4], 'int32');
  const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(forwardLogits(bb, ids))) as tf.Scalar, vars);
  assert.ok(value.dataSync()[0]! > 0);
  const embed = bb.weights().get('embed.tokens') as tf.Variable;
  const g = grads[embed.name]!.dataSync();
  const rowNorm = (r: number) => Math.hypot(...g.subarray(r * 64, (r + 1) * 64));
  assert.ok(rowNorm(7) > 0 && rowNorm(9) > 0 && rowNorm(1) > 0, 'used rows get gradient');
  assert.is(Object.keys(grads).length, vars.length, 'every weight gets a gradient');
  bb.dispose();
});

test('model-ops: UnsortedSegmentSum sums repeated gather rows exactly', () => {
  const E = tf.variable(rand('E', [6, 3]));
  const ids = tf.tensor1d([4, 1, 4, 4], 'int32');
  const r = rand('rows', [4, 3]);
  const { grads } = tf.variableGrads(() => tf.sum(tf.mul(tf.gather(E, ids), r)) as tf.Scalar, [E]);
  const R = r.dataSync();
  const want = new Float32Array(18);
  [4, 1, 4, 4].forEach((id, row) => {
    for (let c = 0; c < 3; c++) want[id * 3 + c]! += R[row * 3 + c]!;
  });
  close(grads[E.name]!.dataSync(), want, 1e-6, 'segment sum');
});

test.run();
