/**
 * PAC's side network over a span of GPT-2 layers as ONNX graphs, forward and backward, for the
 * native engine. onnxruntime has no autodiff in its Node package, so the backward graph is
 * written out by hand: it re-runs the span's forward (the side network is small next to the
 * backbone, so recomputing beats carrying its intermediates out of the runtime and back) and then
 * applies the same gradients the tfjs ops use (src/model/ops.ts: linear, layerNorm, geluNew,
 * causalAttention, inputFrozenLinear), in the same arithmetic, so that both engines agree to
 * rounding. Parameters are graph inputs, not initializers: they change every step.
 *
 * Forward inputs: b_i (N, d) for the span's layers (and b_0 when it holds down_0), a_{from-1}
 * `a_in` (N, r) otherwise, the causal `mask` (T, T) and every parameter by its canonical name.
 * Output: `a_out` = a_to (N, r). The backward graph takes the same inputs plus `g_out` = dL/da_to
 * and outputs `grad:<name>` for every parameter the span holds but `side.up.weight`, and `g_in`
 * = dL/da_{from-1} when the span does not start the network. `up` and the frozen final norm stay
 * on tfjs, with the loss (they are one (N, r) x (r, d) product and a norm).
 */
import type { ModelConfig } from '../model/types.ts';
import type { SideShape } from '../model/methods/side-block.ts';
import { sideBlockParameters } from '../model/methods/side-block.ts';
import type { SideSpan } from '../model/methods/side-network.ts';
import { encodeModel, GraphBuilder, type OnnxValueInfo } from './onnx.ts';

const geluC = Math.sqrt(2 / Math.PI);

/** Whether the native side graphs cover this side network (GPT-2 blocks, as the native layers). */
export function nativeSideSupported(shape: SideShape): boolean {
  return shape.family === 'gpt2';
}

/** The parameters (canonical name, shape) of a span, in the order the graphs list them; `up` excluded. */
export function sideGraphParameters(config: ModelConfig, shape: SideShape, span: SideSpan): { name: string; shape: number[] }[] {
  const d = config.dModel,
    r = shape.width;
  const out: { name: string; shape: number[] }[] = [];
  if (span.hasDown0) out.push({ name: 'side.down.0.weight', shape: [d, r] });
  for (let i = span.from; i <= span.to; i++) {
    out.push({ name: `side.down.${i}.weight`, shape: [d, r] });
    for (const p of sideBlockParameters(shape)) out.push({ name: `side.blocks.${i}.${p.suffix}`, shape: p.shape });
  }
  return out;
}

/** What the backward pass of one block needs from its forward. */
interface BlockSaved {
  i: number;
  x: string;
  hn: string;
  xh1: string;
  r1: string;
  qh: string;
  kh: string;
  kt: string;
  vh: string;
  vt: string;
  p: string;
  att: string;
  mn: string;
  xh2: string;
  r2: string;
  u: string;
  s: string;
  z: string;
}

class SideGraph {
  readonly g = new GraphBuilder();
  private readonly axesLast: string;
  private axesRowsName: string | undefined;
  private readonly heads: string;

  constructor(private readonly shape: SideShape) {
    const g = this.g;
    this.axesLast = g.i64([-1]);
    // (N, H*hd) -> (B, T, H, hd), with T read from the mask's shape.
    this.heads = g.op('Concat', [g.i64([-1]), g.op('Shape', ['mask'], { start: 0, end: 1 }), g.i64([shape.nHeads, shape.headDim])], {
      axis: 0,
    });
  }

  meanLast(x: string): string {
    return this.g.op('ReduceMean', [x, this.axesLast], { keepdims: 1 });
  }

  sumRows(x: string): string {
    // Made on first use: an initializer the forward graph never reads draws a runtime warning.
    this.axesRowsName ??= this.g.i64([0]);
    return this.g.op('ReduceSum', [x, this.axesRowsName], { keepdims: 0 });
  }

  /** ops.ts' layerNorm: xc = x - mean, r = 1/sqrt(mean(xc^2) + eps), y = xc r gamma + beta. */
  layerNorm(x: string, gamma: string, beta: string): { y: string; xh: string; r: string } {
    const g = this.g;
    const xc = g.op('Sub', [x, this.meanLast(x)]);
    const r = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [this.meanLast(g.op('Mul', [xc, xc])), g.f32(this.shape.normEps)])])]);
    const xh = g.op('Mul', [xc, r]);
    return { y: g.op('Add', [g.op('Mul', [xh, gamma]), beta]), xh, r };
  }

  /** dx = r (gx - mean(gx) - xh mean(gx xh)), gx = dy gamma; dgamma = sum(dy xh); dbeta = sum(dy). */
  layerNormBack(dy: string, xh: string, r: string, gamma: string): { dx: string; dgamma: string; dbeta: string } {
    const g = this.g;
    const gx = g.op('Mul', [dy, gamma]);
    const dx = g.op('Mul', [
      g.op('Sub', [g.op('Sub', [gx, this.meanLast(gx)]), g.op('Mul', [xh, this.meanLast(g.op('Mul', [gx, xh]))])]),
      r,
    ]);
    return { dx, dgamma: this.sumRows(g.op('Mul', [dy, xh])), dbeta: this.sumRows(dy) };
  }

  linear(x: string, w: string, b?: string): string {
    return b ? this.g.op('Gemm', [x, w, b]) : this.g.op('MatMul', [x, w]);
  }

  /** x^T dy: a weight's gradient. */
  weightGrad(x: string, dy: string): string {
    return this.g.op('Gemm', [x, dy], { transA: 1 });
  }

  /** dy w^T: the input's gradient. */
  inputGrad(dy: string, w: string): string {
    return this.g.op('Gemm', [dy, w], { transB: 1 });
  }

  /** (N, H*hd) -> (B, H, T, hd) with `perm` [0, 2, 1, 3], or (B, H, hd, T) with [0, 2, 3, 1]. */
  split(x: string, perm: number[]): string {
    return this.g.op('Transpose', [this.g.op('Reshape', [x, this.heads])], { perm });
  }

  /** (B, H, T, hd) -> (N, H*hd). */
  merge(x: string): string {
    const a = this.shape.nHeads * this.shape.headDim;
    return this.g.op('Reshape', [this.g.op('Transpose', [x], { perm: [0, 2, 1, 3] }), this.g.i64([-1, a])]);
  }

  /** Block i on x (N, r): returns its output and what backward needs. */
  block(i: number, x: string): { y: string; saved: BlockSaved } {
    const g = this.g;
    const w = (s: string) => `side.blocks.${i}.${s}`;
    const c = 1 / Math.sqrt(this.shape.headDim);
    const n1 = this.layerNorm(x, w('ln1.weight'), w('ln1.bias'));
    const q = this.linear(n1.y, w('attn.query.weight'), w('attn.query.bias'));
    const k = this.linear(n1.y, w('attn.key.weight'));
    const v = this.linear(n1.y, w('attn.value.weight'), w('attn.value.bias'));
    const qh = this.split(q, [0, 2, 1, 3]),
      kh = this.split(k, [0, 2, 1, 3]),
      kt = this.split(k, [0, 2, 3, 1]),
      vh = this.split(v, [0, 2, 1, 3]),
      vt = this.split(v, [0, 2, 3, 1]);
    const p = g.op('Softmax', [g.op('Add', [g.op('Mul', [g.op('MatMul', [qh, kt]), g.f32(c)]), 'mask'])], { axis: -1 }); // (B, H, T, T)
    const att = this.merge(g.op('MatMul', [p, vh])); // (N, H*hd)
    const h = g.op('Add', [x, this.linear(att, w('attn.out.weight'), w('attn.out.bias'))]);
    const n2 = this.layerNorm(h, w('ln2.weight'), w('ln2.bias'));
    const u = this.linear(n2.y, w('mlp.up.weight'), w('mlp.up.bias')); // (N, f)
    // gelu_new as u sigmoid(2z), as ops.ts computes it.
    const s = g.op('Sigmoid', [
      g.op('Mul', [g.op('Add', [g.op('Mul', [g.op('Mul', [u, u]), g.f32(2 * geluC * 0.044715)]), g.f32(2 * geluC)]), u]),
    ]);
    const z = g.op('Mul', [u, s]);
    const y = g.op('Add', [h, this.linear(z, w('mlp.down.weight'), w('mlp.down.bias'))]);
    return {
      y,
      saved: { i, x, hn: n1.y, xh1: n1.xh, r1: n1.r, qh, kh, kt, vh, vt, p, att, mn: n2.y, xh2: n2.xh, r2: n2.r, u, s, z },
    };
  }

  /** Gradients of block `sv.i` given dL/dy; returns dL/dx and sets each parameter's gradient. */
  blockBack(sv: BlockSaved, dy: string, grads: Map<string, string>): string {
    const g = this.g;
    const name = (s: string) => `side.blocks.${sv.i}.${s}`;
    const w = name;
    const c = 1 / Math.sqrt(this.shape.headDim);
    const set = (s: string, v: string) => grads.set(name(s), v);
    // y = h + z Wd + bd
    set('mlp.down.weight', this.weightGrad(sv.z, dy));
    set('mlp.down.bias', this.sumRows(dy));
    const dz = this.inputGrad(dy, w('mlp.down.weight'));
    const dzz = g.op('Add', [g.op('Mul', [g.op('Mul', [sv.u, sv.u]), g.f32(2 * geluC * 3 * 0.044715)]), g.f32(2 * geluC)]);
    const oneMinusS = g.op('Sub', [g.f32(1), sv.s]);
    const du = g.op('Mul', [dz, g.op('Add', [sv.s, g.op('Mul', [g.op('Mul', [sv.u, g.op('Mul', [sv.s, oneMinusS])]), dzz])])]);
    set('mlp.up.weight', this.weightGrad(sv.mn, du));
    set('mlp.up.bias', this.sumRows(du));
    const n2 = this.layerNormBack(this.inputGrad(du, w('mlp.up.weight')), sv.xh2, sv.r2, w('ln2.weight'));
    set('ln2.weight', n2.dgamma);
    set('ln2.bias', n2.dbeta);
    const dh = g.op('Add', [dy, n2.dx]);
    // h = x + att Wo + bo
    set('attn.out.weight', this.weightGrad(sv.att, dh));
    set('attn.out.bias', this.sumRows(dh));
    const dOh = this.split(this.inputGrad(dh, w('attn.out.weight')), [0, 2, 1, 3]); // (B, H, T, hd)
    const dp = g.op('MatMul', [dOh, sv.vt]); // (B, H, T, T)
    const ds = g.op('Mul', [
      sv.p,
      g.op('Mul', [g.op('Sub', [dp, g.op('ReduceSum', [g.op('Mul', [dp, sv.p]), this.axesLast], { keepdims: 1 })]), g.f32(c)]),
    ]);
    const dq = this.merge(g.op('MatMul', [ds, sv.kh]));
    const dk = this.merge(g.op('MatMul', [g.op('Transpose', [ds], { perm: [0, 1, 3, 2] }), sv.qh]));
    const dv = this.merge(g.op('MatMul', [g.op('Transpose', [sv.p], { perm: [0, 1, 3, 2] }), dOh]));
    set('attn.query.weight', this.weightGrad(sv.hn, dq));
    set('attn.query.bias', this.sumRows(dq));
    set('attn.key.weight', this.weightGrad(sv.hn, dk));
    set('attn.value.weight', this.weightGrad(sv.hn, dv));
    set('attn.value.bias', this.sumRows(dv));
    const dhn = g.op('Add', [
      g.op('Add', [this.inputGrad(dq, w('attn.query.weight')), this.inputGrad(dk, w('attn.key.weight'))]),
      this.inputGrad(dv, w('attn.value.weight')),
    ]);
    const n1 = this.layerNormBack(dhn, sv.xh1, sv.r1, w('ln1.weight'));
    set('ln1.weight', n1.dgamma);
    set('ln1.bias', n1.dbeta);
    return g.op('Add', [dh, n1.dx]);
  }
}

export interface SideGraphs {
  forward: Uint8Array;
  backward: Uint8Array;
  /** The parameters both graphs take, in order (`up` excluded). */
  parameters: { name: string; shape: number[] }[];
}

/** The forward and backward graphs of a GPT-2 side network over `span`. */
export function sideGraphModels(config: ModelConfig, shape: SideShape, span: SideSpan): SideGraphs {
  if (!nativeSideSupported(shape)) throw new Error(`native side graph: no graph for the ${shape.family} family`);
  const parameters = sideGraphParameters(config, shape, span);
  const d = config.dModel,
    r = shape.width;
  const layers = Array.from({ length: span.to - span.from + 1 }, (_, j) => span.from + j);
  const inputs: OnnxValueInfo[] = [
    ...(span.hasDown0 ? [0] : []).concat(layers).map((i) => ({ name: `b${i}`, type: 'float' as const, dims: ['N', d] })),
    ...(span.hasDown0 ? [] : [{ name: 'a_in', type: 'float' as const, dims: ['N', r] }]),
    { name: 'mask', type: 'float', dims: ['T', 'T'] },
    ...parameters.map((p) => ({ name: p.name, type: 'float' as const, dims: p.shape })),
  ];
  const build = (backward: boolean): Uint8Array => {
    const sg = new SideGraph(shape);
    const g = sg.g;
    let a = span.hasDown0 ? g.op('MatMul', ['b0', 'side.down.0.weight']) : 'a_in';
    const saved: BlockSaved[] = [];
    for (const i of layers) {
      const x = g.op('Add', [a, g.op('MatMul', [`b${i}`, `side.down.${i}.weight`])]);
      const blk = sg.block(i, x);
      saved.push(blk.saved);
      a = blk.y;
    }
    if (!backward) {
      g.nodes.push({ op: 'Identity', inputs: [a], outputs: ['a_out'] });
      return encodeModel({
        name: 'side_forward',
        nodes: g.nodes,
        initializers: g.initializers,
        inputs,
        outputs: [{ name: 'a_out', type: 'float', dims: ['N', r] }],
        opset: 18,
      });
    }
    const grads = new Map<string, string>();
    let da = 'g_out';
    for (const sv of saved.reverse()) {
      const dx = sg.blockBack(sv, da, grads);
      grads.set(`side.down.${sv.i}.weight`, sg.weightGrad(`b${sv.i}`, dx));
      da = dx;
    }
    if (span.hasDown0) grads.set('side.down.0.weight', sg.weightGrad('b0', da));
    else g.nodes.push({ op: 'Identity', inputs: [da], outputs: ['g_in'] });
    for (const p of parameters) {
      const src = grads.get(p.name);
      if (!src) throw new Error(`native side graph: no gradient for ${p.name}`);
      g.nodes.push({ op: 'Identity', inputs: [src], outputs: [`grad:${p.name}`] });
    }
    return encodeModel({
      name: 'side_backward',
      nodes: g.nodes,
      initializers: g.initializers,
      inputs: [...inputs, { name: 'g_out', type: 'float', dims: ['N', r] }],
      outputs: [
        ...parameters.map((p) => ({ name: `grad:${p.name}`, type: 'float' as const, dims: p.shape })),
        ...(span.hasDown0 ? [] : [{ name: 'g_in', type: 'float' as const, dims: ['N', r] }]),
      ],
      opset: 18,
    });
  };
  return { forward: build(false), backward: build(true), parameters };
}
