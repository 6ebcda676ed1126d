/**
 * A side block: a narrow pre-norm transformer block of width r = d/k, of the backbone's own
 * family (GPT-2: LayerNorm, biases, GELU MLP; Llama: RMSNorm, rotary attention, SwiGLU MLP).
 *
 * Heads: the side block keeps the backbone's head dimension and uses r / headDim heads (W1:
 * 512/8 = 64 wide, head dim 64 -> 1 head), so that attention stays a few large per-head matmuls
 * and pruning can keep whole backbone heads. When r is not a multiple of the head dimension
 * (tiny models), it uses one head of dimension r. No grouped-query sharing inside the side
 * block: every side head has its own key and value. The MLP is dFF / k wide.
 */
import type * as tf from '@tensorflow/tfjs';
import { applyRotary, causalAttention, geluNew, layerNorm, linear, rmsNorm, silu } from '../ops.ts';
import type { ModelConfig } from '../types.ts';
import type { Init } from './init.ts';

/** Dimensions of every side block of one side network. */
export interface SideShape {
  family: ModelConfig['family'];
  /** Side width r. */
  width: number;
  nHeads: number;
  headDim: number;
  dFF: number;
  normEps: number;
  ropeTheta: number;
  /** q/k/v carry a bias (GPT-2 always, except the key: see sideBlockParameters; Llama when the backbone does). */
  qkvBias: boolean;
}

/** The side-block dimensions for a backbone config and reduction k (r = dModel / k). */
export function sideShape(config: ModelConfig, reduction: number): SideShape {
  if (!Number.isInteger(reduction) || reduction < 1 || config.dModel % reduction !== 0) {
    throw new Error(`side network: reduction k=${reduction} must be a positive integer dividing dModel=${config.dModel}`);
  }
  const width = config.dModel / reduction;
  const keepHeadDim = width % config.headDim === 0;
  return {
    family: config.family,
    width,
    nHeads: keepHeadDim ? width / config.headDim : 1,
    headDim: keepHeadDim ? config.headDim : width,
    dFF: Math.max(1, Math.round(config.dFF / reduction)),
    normEps: config.normEps,
    ropeTheta: config.ropeTheta,
    qkvBias: config.family === 'gpt2' || config.qkvBias,
  };
}

/** One parameter of a side block: its name under `side.blocks.<i>.`, shape and default init. */
export interface BlockParameter {
  suffix: string;
  shape: number[];
  init: Init;
}

/** The parameters of a side block, weights laid (din, dout) for plain matmuls. */
export function sideBlockParameters(s: SideShape): BlockParameter[] {
  const r = s.width,
    a = s.nHeads * s.headDim;
  const gpt2 = s.family === 'gpt2';
  const weight = (suffix: string, din: number, dout: number): BlockParameter => ({
    suffix,
    shape: [din, dout],
    init: { kind: 'kaiming', fanIn: din },
  });
  const vector = (suffix: string, n: number, init: Init): BlockParameter => ({ suffix, shape: [n], init });
  const out: BlockParameter[] = [vector('ln1.weight', r, { kind: 'ones' })];
  if (gpt2) out.push(vector('ln1.bias', r, { kind: 'zeros' }));
  for (const p of ['query', 'key', 'value']) {
    out.push(weight(`attn.${p}.weight`, r, a));
    // Without rotary embeddings a key bias adds q.b to every score of a query row, which softmax
    // ignores: its gradient is exactly zero, computed as rounding noise (~1e-10) that AdamW would
    // turn into lr-sized random steps. So GPT-2 side blocks have no key bias.
    if (s.qkvBias && !(p === 'key' && s.family === 'gpt2')) out.push(vector(`attn.${p}.bias`, a, { kind: 'zeros' }));
  }
  out.push(weight('attn.out.weight', a, r));
  if (gpt2) out.push(vector('attn.out.bias', r, { kind: 'zeros' }));
  out.push(vector('ln2.weight', r, { kind: 'ones' }));
  if (gpt2) out.push(vector('ln2.bias', r, { kind: 'zeros' }));
  if (!gpt2) out.push(weight('mlp.gate.weight', r, s.dFF));
  out.push(weight('mlp.up.weight', r, s.dFF));
  if (gpt2) out.push(vector('mlp.up.bias', s.dFF, { kind: 'zeros' }));
  out.push(weight('mlp.down.weight', s.dFF, r));
  if (gpt2) out.push(vector('mlp.down.bias', r, { kind: 'zeros' }));
  return out;
}

/** Looks up a block parameter by suffix. */
export type BlockWeights = (suffix: string) => tf.Tensor | undefined;

/** x (N, r) -> block(x) (N, r) with T = seqLen: x + attn(norm1(x)), then + mlp(norm2(.)). */
export function sideBlockForward(s: SideShape, w: BlockWeights, x: tf.Tensor2D, seqLen: number): tf.Tensor2D {
  const get = (suffix: string) => {
    const t = w(suffix);
    if (!t) throw new Error(`side block: missing parameter ${suffix}`);
    return t;
  };
  const w2 = (suffix: string) => get(suffix) as tf.Tensor2D;
  const w1 = (suffix: string) => w(suffix) as tf.Tensor1D | undefined;
  const norm = (h: tf.Tensor2D, n: 'ln1' | 'ln2') =>
    s.family === 'gpt2'
      ? layerNorm(h, get(`${n}.weight`) as tf.Tensor1D, get(`${n}.bias`) as tf.Tensor1D, s.normEps)
      : rmsNorm(h, get(`${n}.weight`) as tf.Tensor1D, s.normEps);

  const hn = norm(x, 'ln1'); // (N, r)
  let q = linear(hn, w2('attn.query.weight'), w1('attn.query.bias')); // (N, H*hd)
  let k = linear(hn, w2('attn.key.weight'), w1('attn.key.bias')); // (N, H*hd)
  const v = linear(hn, w2('attn.value.weight'), w1('attn.value.bias')); // (N, H*hd)
  if (s.family === 'llama') {
    q = applyRotary(q, seqLen, s.nHeads, s.headDim, s.ropeTheta);
    k = applyRotary(k, seqLen, s.nHeads, s.headDim, s.ropeTheta);
  }
  const att = causalAttention(q, k, v, seqLen, s.nHeads, s.nHeads, s.headDim); // (N, H*hd)
  const h = x.add(linear(att, w2('attn.out.weight'), w1('attn.out.bias'))) as tf.Tensor2D; // (N, r)

  const mn = norm(h, 'ln2'); // (N, r)
  const z =
    s.family === 'gpt2'
      ? geluNew(linear(mn, w2('mlp.up.weight'), w1('mlp.up.bias'))) // (N, f)
      : (silu(linear(mn, w2('mlp.gate.weight'))).mul(linear(mn, w2('mlp.up.weight'))) as tf.Tensor2D); // (N, f)
  return h.add(linear(z, w2('mlp.down.weight'), w1('mlp.down.bias'))) as tf.Tensor2D; // (N, r)
}
