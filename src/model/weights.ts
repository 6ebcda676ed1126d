/**
 * Canonical weight naming, shared by both families, in the fast layout: every projection is
 * stored (din, dout) so that forward is a plain x @ W. Layers are numbered 1..L as in the paper
 * (HF's `h.0` / `model.layers.0` is layer 1).
 *
 *   embed.tokens (V, d)            embed.positions (P, d)            [gpt2]
 *   layers.i.attn_norm.weight (d)  layers.i.attn_norm.bias (d)       [bias: gpt2]
 *   layers.i.query.weight (d, H*hd)   .bias (H*hd)                   [bias: gpt2, qkvBias]
 *   layers.i.key.weight (d, Hkv*hd)   .bias;  layers.i.value.weight (d, Hkv*hd)  .bias
 *   layers.i.attn_out.weight (H*hd, d)  .bias (d)                    [bias: gpt2]
 *   layers.i.mlp_norm.weight (d)   .bias                             [bias: gpt2]
 *   layers.i.mlp_up.weight (d, dFF)  .bias;  layers.i.mlp_gate.weight (d, dFF)  [gate: llama]
 *   layers.i.mlp_down.weight (dFF, d)  .bias                         [bias: gpt2]
 *   final_norm.weight (d)  final_norm.bias (d)                       [bias: gpt2]
 *   head.weight (d, V)
 */
import { ModelLoadError } from './errors.ts';
import type { TensorSource } from './safetensors.ts';
import type { BackboneRange, ModelConfig } from './types.ts';

/** A weight as plain data: f32 values and shape. */
export interface WeightData {
  data: Float32Array;
  shape: number[];
}

/** How a preset initialises a weight (GPT-2 style). */
export type WeightInit = 'normal' | 'residual' | 'ones' | 'zeros';

export interface WeightSpec {
  name: string;
  shape: number[];
  init: WeightInit;
}

/** The canonical weights a process holding `range` has, in a fixed order. */
export function weightSpecs(c: ModelConfig, range: BackboneRange): WeightSpec[] {
  const d = c.dModel,
    q = c.nHeads * c.headDim,
    kv = c.nKvHeads * c.headDim;
  const gpt2 = c.family === 'gpt2';
  const out: WeightSpec[] = [];
  const norm = (name: string) => {
    out.push({ name: `${name}.weight`, shape: [d], init: 'ones' });
    if (gpt2) out.push({ name: `${name}.bias`, shape: [d], init: 'zeros' });
  };
  const proj = (name: string, din: number, dout: number, bias: boolean, init: WeightInit = 'normal') => {
    out.push({ name: `${name}.weight`, shape: [din, dout], init });
    if (bias) out.push({ name: `${name}.bias`, shape: [dout], init: 'zeros' });
  };
  if (range.embed) {
    out.push({ name: 'embed.tokens', shape: [c.vocabSize, d], init: 'normal' });
    if (gpt2) out.push({ name: 'embed.positions', shape: [c.maxPositions, d], init: 'normal' });
  }
  for (let i = range.from; i <= range.to; i++) {
    const p = `layers.${i}`;
    norm(`${p}.attn_norm`);
    proj(`${p}.query`, d, q, c.qkvBias);
    proj(`${p}.key`, d, kv, c.qkvBias);
    proj(`${p}.value`, d, kv, c.qkvBias);
    proj(`${p}.attn_out`, q, d, gpt2, 'residual');
    norm(`${p}.mlp_norm`);
    if (!gpt2) proj(`${p}.mlp_gate`, d, c.dFF, false);
    proj(`${p}.mlp_up`, d, c.dFF, gpt2);
    proj(`${p}.mlp_down`, c.dFF, d, gpt2, 'residual');
  }
  if (range.head) {
    norm('final_norm');
    out.push({ name: 'head.weight', shape: [d, c.vocabSize], init: 'normal' });
  }
  return out;
}

/** (rows, cols) -> (cols, rows), row-major. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  if (data.length !== rows * cols) throw new Error(`transpose2d: ${data.length} values are not a (${rows}, ${cols}) matrix`);
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c]!;
  }
  return out;
}

/** Columns [from, from+width) of a (rows, cols) matrix. */
export function columns(data: Float32Array, rows: number, cols: number, from: number, width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * cols + from, r * cols + from + width), r * width);
  return out;
}

/** Concatenates (rows, w_k) matrices side by side into (rows, sum w_k). */
export function concatColumns(parts: Float32Array[], rows: number): Float32Array {
  const total = parts.reduce((a, p) => a + p.length / rows, 0);
  const out = new Float32Array(rows * total);
  for (let r = 0; r < rows; r++) {
    let off = r * total;
    for (const p of parts) {
      const w = p.length / rows;
      out.set(p.subarray(r * w, (r + 1) * w), off);
      off += w;
    }
  }
  return out;
}

/**
 * Reads HF tensor `name` from `src`, checking it exists and has `shape`; errors name the file,
 * the tensor, the expected and the actual shape.
 */
export function readChecked(src: TensorSource, file: string, name: string, shape: number[]): Float32Array {
  if (!src.has(name)) throw new ModelLoadError(file, `tensor missing (expected shape [${shape}])`, name);
  const e = src.entry(name);
  if (e.shape.length !== shape.length || e.shape.some((v, k) => v !== shape[k])) {
    throw new ModelLoadError(e.file, `shape [${e.shape}] disagrees with config.json (expected [${shape}])`, name);
  }
  return src.read(name);
}

/** Mapping between a family's Hugging Face tensor names and the canonical weights. */
export interface FamilyMapping {
  /** Reads the canonical weights of `range` (only those) from HF-named tensors. */
  read(c: ModelConfig, range: BackboneRange, src: TensorSource, file: string): Map<string, WeightData>;
  /** HF-named tensors (HF layouts) for a full set of canonical weights. */
  write(c: ModelConfig, weights: Map<string, WeightData>, options?: { bareNames?: boolean }): Map<string, WeightData>;
}
