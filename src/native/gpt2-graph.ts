/**
 * One frozen GPT-2 block as an ONNX graph, the same computation as TransformerBackbone.layer
 * (src/model/backbone.ts) in inference mode: pre-norm LayerNorm, fused q/k/v projection, causal
 * multi-head attention, output projection, residual, LayerNorm, gelu_new MLP, residual.
 *
 * Inputs: x (N, d) with N = B*T rows, and the additive causal mask (T, T) — its first dim gives
 * T, so one session serves every batch size and sequence length. Output: y (N, d).
 * Weights are initializers (constants), so the runtime prepacks every matmul weight once.
 */
import type { ModelConfig } from '../model/types.ts';
import type { WeightData } from '../model/weights.ts';
import { encodeModel, GraphBuilder } from './onnx.ts';

const geluC = Math.sqrt(2 / Math.PI);

/** The (d, 3d) matrix [q | k | v] and its (3d) bias, from the canonical per-projection weights. */
function fusedQkv(get: (name: string) => WeightData, p: string, d: number): { w: Float32Array; b: Float32Array } {
  const w = new Float32Array(d * 3 * d),
    b = new Float32Array(3 * d);
  (['query', 'key', 'value'] as const).forEach((name, k) => {
    const src = get(`${p}.${name}.weight`).data;
    for (let r = 0; r < d; r++) w.set(src.subarray(r * d, (r + 1) * d), r * 3 * d + k * d);
    b.set(get(`${p}.${name}.bias`).data, k * d);
  });
  return { w, b };
}

/** The serialised ONNX model of GPT-2 layer `i` from the loaded weights (canonical names). */
export function gpt2LayerModel(c: ModelConfig, i: number, weights: Map<string, WeightData>): Uint8Array {
  if (c.family !== 'gpt2') throw new Error(`native gpt2 graph: model family is ${c.family}`);
  const d = c.dModel,
    H = c.nHeads,
    hd = c.headDim;
  const p = `layers.${i}`;
  const get = (name: string) => {
    const w = weights.get(name);
    if (!w) throw new Error(`native gpt2 graph: weight ${name} missing`);
    return w;
  };
  const g = new GraphBuilder();
  const param = (name: string) => g.init(name, get(name).shape, get(name).data);
  const layerNorm = (x: string, name: string) =>
    g.op('LayerNormalization', [x, param(`${name}.weight`), param(`${name}.bias`)], { axis: -1, epsilon: { float: c.normEps } });

  const a = layerNorm('x', `${p}.attn_norm`); // (N, d)
  const qkv = fusedQkv(get, p, d);
  const qkvOut = g.op('Gemm', [a, g.init(`${p}.qkv.weight`, [d, 3 * d], qkv.w), g.init(`${p}.qkv.bias`, [3 * d], qkv.b)]); // (N, 3d)
  const [q, k, v] = ['q', 'k', 'v'].map((n) => `${n}_${i}`) as [string, string, string];
  g.nodes.push({ op: 'Split', inputs: [qkvOut], outputs: [q, k, v], attrs: { axis: 1, num_outputs: 3 } });
  // (N, d) -> (B, T, H, hd), with T read from the mask's shape.
  const heads = g.op('Concat', [g.i64([-1]), g.op('Shape', ['mask'], { start: 0, end: 1 }), g.i64([H, hd])], { axis: 0 });
  const split = (x: string, perm: number[]) => g.op('Transpose', [g.op('Reshape', [x, heads])], { perm });
  const qh = split(q, [0, 2, 1, 3]), // (B, H, T, hd)
    kt = split(k, [0, 2, 3, 1]), // (B, H, hd, T)
    vh = split(v, [0, 2, 1, 3]); // (B, H, T, hd)
  const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [qh, kt]), g.f32(1 / Math.sqrt(hd))]), 'mask']); // (B, H, T, T)
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const att = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [probs, vh])], { perm: [0, 2, 1, 3] }), g.i64([-1, d])]); // (N, d)
  const o = g.op('Gemm', [att, param(`${p}.attn_out.weight`), param(`${p}.attn_out.bias`)]);
  const h1 = g.op('Add', ['x', o]);
  const m = layerNorm(h1, `${p}.mlp_norm`);
  const up = g.op('Gemm', [m, param(`${p}.mlp_up.weight`), param(`${p}.mlp_up.bias`)]); // (N, dFF)
  // gelu_new as x * sigmoid(2z), in the same order of operations as ops.ts' geluNew.
  const z2 = g.op('Mul', [g.op('Add', [g.op('Mul', [g.op('Mul', [up, up]), g.f32(2 * geluC * 0.044715)]), g.f32(2 * geluC)]), up]);
  const gelu = g.op('Mul', [up, g.op('Sigmoid', [z2])]);
  const down = g.op('Gemm', [gelu, param(`${p}.mlp_down.weight`), param(`${p}.mlp_down.bias`)]);
  g.nodes.push({ op: 'Add', inputs: [h1, down], outputs: ['y'] });
  return encodeModel({
    name: `gpt2_layer_${i}`,
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [
      { name: 'x', type: 'float', dims: ['N', d] },
      { name: 'mask', type: 'float', dims: ['T', 'T'] },
    ],
    outputs: [{ name: 'y', type: 'float', dims: ['N', d] }],
    opset: 18,
  });
}

/** Bytes of the weights a layer's graph holds. */
export function gpt2LayerWeightBytes(c: ModelConfig): number {
  const d = c.dModel;
  return 4 * (4 * d * d + 2 * d * c.dFF + 3 * d + d + c.dFF + d + 4 * d);
}

/**
 * The frozen LM head fused with its cross-entropy gradient, for rows of final hidden states:
 * inputs h (rows, d), targets t int64 (rows), scale (rows, 1); outputs nll (rows, 1) =
 * -log softmax(h W)[t] and dh (rows, d) = scale (softmax(h W) - onehot(t)) W^T. W (d, V) is the
 * only weight, read by the two products alone, and no transposed copy of it is made.
 */
export function headLossModel(w: WeightData): Uint8Array {
  const [d, V] = w.shape as [number, number];
  const g = new GraphBuilder();
  const W = g.init('head.weight', [d, V], w.data);
  const z = g.op('MatMul', ['h', W]); // (rows, V)
  const t2 = g.op('Unsqueeze', ['t', g.i64([1])]); // (rows, 1)
  g.nodes.push({ op: 'Neg', inputs: [g.op('GatherElements', [g.op('LogSoftmax', [z], { axis: 1 }), t2], { axis: 1 })], outputs: ['nll'] });
  const p = g.op('Softmax', [z], { axis: 1 }); // (rows, V)
  // p - onehot(t): the target column of each row lowered by one in place.
  const pt = g.op('Sub', [g.op('GatherElements', [p, t2], { axis: 1 }), g.f32(1)]); // (rows, 1)
  const grad = g.op('ScatterElements', [p, t2, pt], { axis: 1 }); // (rows, V)
  g.nodes.push({ op: 'Mul', inputs: [g.op('Gemm', [grad, W], { transB: 1 }), 'scale'], outputs: ['dh'] });
  return encodeModel({
    name: 'head_loss',
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [
      { name: 'h', type: 'float', dims: ['rows', d] },
      { name: 't', type: 'int64', dims: ['rows'] },
      { name: 'scale', type: 'float', dims: ['rows', 1] },
    ],
    outputs: [
      { name: 'nll', type: 'float', dims: ['rows', 1] },
      { name: 'dh', type: 'float', dims: ['rows', d] },
    ],
    opset: 18,
  });
}
