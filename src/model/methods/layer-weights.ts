/**
 * One backbone layer's weights as plain arrays, read by their canonical names (see ../weights.ts:
 * `layers.<i>.<query|key|value|attn_out|mlp_up|mlp_gate|mlp_down>.weight` laid (din, dout),
 * `layers.<i>.<attn_norm|mlp_norm>.weight`, biases where the family has them). Used once at
 * initialisation (pruning), so a synchronous read is fine.
 */
import type { Backbone } from '../types.ts';

/** A row-major (rows, cols) matrix. */
export interface Matrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

export interface LayerWeights {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  ln1Weight: Float32Array;
  ln1Bias?: Float32Array;
  query: Matrix;
  queryBias?: Float32Array;
  key: Matrix;
  keyBias?: Float32Array;
  value: Matrix;
  valueBias?: Float32Array;
  attnOut: Matrix;
  attnOutBias?: Float32Array;
  ln2Weight: Float32Array;
  ln2Bias?: Float32Array;
  mlpUp: Matrix;
  mlpUpBias?: Float32Array;
  mlpGate?: Matrix;
  mlpDown: Matrix;
  mlpDownBias?: Float32Array;
}

/** Layer i's weights from a backbone that holds it. */
export function layerWeights(backbone: Backbone, i: number): LayerWeights {
  const w = backbone.weights();
  const p = `layers.${i}`;
  const vector = (name: string): Float32Array | undefined => {
    const t = w.get(`${p}.${name}`);
    return t ? (t.dataSync() as Float32Array) : undefined;
  };
  const required = (name: string): Float32Array => {
    const v = vector(name);
    if (!v) throw new Error(`prune: backbone weight ${p}.${name} missing (layers held: ${backbone.range.from}..${backbone.range.to})`);
    return v;
  };
  const matrix = (name: string): Matrix => {
    const t = w.get(`${p}.${name}.weight`);
    if (t?.rank !== 2) throw new Error(`prune: backbone weight ${p}.${name}.weight missing or not 2-D`);
    return { data: t.dataSync() as Float32Array, rows: t.shape[0]!, cols: t.shape[1]! };
  };
  const c = backbone.config;
  return {
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    ln1Weight: required('attn_norm.weight'),
    ln1Bias: vector('attn_norm.bias'),
    query: matrix('query'),
    queryBias: vector('query.bias'),
    key: matrix('key'),
    keyBias: vector('key.bias'),
    value: matrix('value'),
    valueBias: vector('value.bias'),
    attnOut: matrix('attn_out'),
    attnOutBias: vector('attn_out.bias'),
    ln2Weight: required('mlp_norm.weight'),
    ln2Bias: vector('mlp_norm.bias'),
    mlpUp: matrix('mlp_up'),
    mlpUpBias: vector('mlp_up.bias'),
    mlpGate: c.family === 'llama' ? matrix('mlp_gate') : undefined,
    mlpDown: matrix('mlp_down'),
    mlpDownBias: vector('mlp_down.bias'),
  };
}
