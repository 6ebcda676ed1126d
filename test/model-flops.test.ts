import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { epochFlops, layerForwardFlops } from '../src/model/flops.ts';
import { presets } from '../src/model/presets.ts';

// The tiny preset (d 64, 2 layers, 4 heads of 16, MLP 256, vocab 256) over 16 sequences of 32
// tokens: N = 512 rows. Every figure below is worked out by hand from those sizes.
const tiny = presets.tiny;
const run = { samples: 16, seqLen: 32 };
const projections = 2 * 512 * (64 * 64 * 4 + 2 * 64 * 256); // q, k, v, out; MLP up and down
const attention = 4 * 16 * 4 * 32 * 32 * 16; // scores and probs @ v, per head
const backboneForward = 2 * (projections + attention);
const activationGrads = 2 * (projections + 2 * attention);
const head = 2 * 512 * 64 * 256;

test('flops: one tiny layer forward is its projections and attention products', () => {
  assert.is(projections, 50_331_648);
  assert.is(attention, 4_194_304);
  assert.is(layerForwardFlops(tiny, 16, 32), 54_525_952);
});

test('flops: full fine-tuning backpropagates weights and activations through every layer and the head', () => {
  const f = epochFlops(tiny, 'full', {}, run);
  assert.is(f.forward, backboneForward + head);
  assert.is(f.backward, activationGrads + 2 * projections + 2 * head);
  assert.is(f.total, 3 * (109_051_904 + 16_777_216));
});

test('flops: LoRA and serial adapters backprop activations through the frozen backbone, weights of adapters only', () => {
  const lora = 2 * 2 * (2 * 512 * (64 * 8 + 8 * 64)); // 2 layers x (query, value), rank 8
  const l = epochFlops(tiny, 'lora', { rank: 8, targets: ['query', 'value'] }, run);
  assert.is(l.forward, backboneForward + lora + head);
  assert.is(l.backward, activationGrads + 2 * lora + head);
  assert.is(l.total, 272_629_760);
  const serial = 2 * 2 * (2 * 512 * (64 * 64 + 64 * 64)); // 2 layers x (attention, MLP), bottleneck 64
  const s = epochFlops(tiny, 'serial', { bottleneck: 64 }, run);
  assert.is(s.total, backboneForward + activationGrads + 3 * serial + 2 * head);
});

test('flops: parallel trains the side network and the head dL/dh only; a cached epoch skips the backbone', () => {
  // Side width r = 64 / 8 = 8: one head of 8 (not a multiple of the head dim), MLP 256 / 8 = 32.
  const downs = 3 * 2 * 512 * 64 * 8; // down_0..down_2
  const blockProj = 2 * 512 * (3 * 8 * 8 + 8 * 8 + 2 * 8 * 32);
  const blockAttn = 4 * 16 * 1 * 32 * 32 * 8;
  const blocks = 2 * (blockProj + blockAttn);
  const up = 2 * 512 * 8 * 64;
  const p = epochFlops(tiny, 'parallel', { reduction: 8 }, run);
  assert.is(p.forward, backboneForward + downs + blocks + up + head);
  assert.is(p.backward, downs + 2 * blocks + 2 * up + head);
  const c = epochFlops(tiny, 'parallel', { reduction: 8 }, { ...run, cached: true });
  assert.is(c.forward, p.forward - backboneForward);
  assert.is(c.backward, p.backward);
  assert.is(c.total, 2 * 1_572_864 + 3 * 2_621_440 + 3 * 524_288 + 2 * 16_777_216);
  assert.throws(() => epochFlops(tiny, 'lora', {}, { ...run, cached: true }), /cached/);
});

test.run();
