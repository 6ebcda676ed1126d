/**
 * Structural pruning of a backbone layer into a side block (PAC initialises side blocks from the
 * backbone this way). Importance is weight magnitude (sum of squares):
 * - residual dimensions: the rows of the projections that read the residual stream (q, k, v, MLP
 *   up/gate) plus the columns of those that write it (attention out, MLP down); keep the r best;
 * - heads: when the side head dimension equals the backbone's, keep the best whole heads (their
 *   q columns, the k/v columns of the key/value head they read, their rows of the out projection);
 *   otherwise keep, inside the best head, the best rotary pairs (c, c + hd/2) so that
 *   rotate-half still pairs the right columns;
 * - MLP hidden units: their up/gate columns and down rows; keep dFF / k.
 * Kept indices stay in ascending order. The side network's down_i selects the same residual
 * dimensions, so block i reads b_i's kept coordinates at step 0.
 */
import type { Backbone } from '../types.ts';
import { layerWeights, type LayerWeights, type Matrix } from './layer-weights.ts';
import type { SideShape } from './side-block.ts';

export interface PrunedBlock {
  /** Kept residual dimensions of the backbone (length r, ascending). */
  residual: number[];
  /** Values by side-block parameter suffix (see sideBlockParameters). */
  values: Map<string, Float32Array>;
}

// Indices below stay inside their arrays by construction: a Matrix's data is rows * cols long (it is
// a 2-D weight of that shape), score arrays are sized from the same dimensions, and kept indices
// come from topIndices over those scores.

/** out[i] += sum of squares of row i. */
function rowEnergy(m: Matrix, out: Float64Array): void {
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[i]! += m.data[i * m.cols + j]! ** 2;
}

/** out[j] += sum of squares of column j. */
function colEnergy(m: Matrix, out: Float64Array): void {
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[j]! += m.data[i * m.cols + j]! ** 2;
}

/** Indices of the n largest scores, ascending. Ties go to the lower index. */
export function topIndices(scores: ArrayLike<number>, n: number): number[] {
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  idx.sort((a, b) => scores[b]! - scores[a]! || a - b);
  return idx.slice(0, n).sort((a, b) => a - b);
}

function sliceMatrix(m: Matrix, rows: number[], cols: number[]): Float32Array {
  const out = new Float32Array(rows.length * cols.length);
  rows.forEach((r, i) =>
    cols.forEach((c, j) => {
      out[i * cols.length + j] = m.data[r * m.cols + c]!;
    }),
  );
  return out;
}

function sliceVector(v: Float32Array, idx: number[]): Float32Array {
  return Float32Array.from(idx, (i) => v[i]!);
}

/** Columns kept of q (and rows of out) and of k/v, for the side block's heads. */
function keptAttentionColumns(w: LayerWeights, s: SideShape): { q: number[]; kv: number[] } {
  const { nHeads, nKvHeads, headDim: hd } = w;
  const group = nHeads / nKvHeads;
  const colScores = (cols: (c: number) => number[]) => {
    const q = new Float64Array(nHeads * hd),
      k = new Float64Array(nKvHeads * hd),
      v = new Float64Array(nKvHeads * hd),
      o = new Float64Array(nHeads * hd);
    colEnergy(w.query, q);
    colEnergy(w.key, k);
    colEnergy(w.value, v);
    rowEnergy(w.attnOut, o);
    return (h: number, c: number) =>
      cols(c).reduce(
        (acc, cc) => acc + q[h * hd + cc]! + o[h * hd + cc]! + k[Math.floor(h / group) * hd + cc]! + v[Math.floor(h / group) * hd + cc]!,
        0,
      );
  };
  const score = colScores((c) => [c]);
  const headScore = Array.from({ length: nHeads }, (_, h) => Array.from({ length: hd }, (_, c) => score(h, c)).reduce((a, b) => a + b, 0));
  const heads = topIndices(headScore, Math.min(s.nHeads, nHeads));
  if (s.headDim === hd && heads.length === s.nHeads) {
    const q = heads.flatMap((h) => Array.from({ length: hd }, (_, c) => h * hd + c));
    const kv = heads.flatMap((h) => Array.from({ length: hd }, (_, c) => Math.floor(h / group) * hd + c));
    return { q, kv };
  }
  // One narrow head (sideShape's only other case): the best rotary pairs of the best head.
  const h = heads[0]!,
    half = hd / 2,
    keepPairs = Math.floor(s.headDim / 2);
  const pairs = topIndices(
    Array.from({ length: half }, (_, i) => score(h, i) + score(h, i + half)),
    keepPairs,
  );
  const within = [...pairs, ...pairs.map((i) => i + half)];
  return { q: within.map((c) => h * hd + c), kv: within.map((c) => Math.floor(h / group) * hd + c) };
}

/** Side block i's values pruned from backbone layer i, which `backbone` must hold. */
export function prunedBlock(backbone: Backbone, layer: number, s: SideShape): PrunedBlock {
  const w = layerWeights(backbone, layer);
  const d = backbone.config.dModel;
  if (s.nHeads * s.headDim > w.nHeads * w.headDim)
    throw new Error(`prune: side attention ${s.nHeads}x${s.headDim} is wider than layer ${layer}'s`);

  const residualScore = new Float64Array(d);
  for (const m of [w.query, w.key, w.value, w.mlpUp, ...(w.mlpGate ? [w.mlpGate] : [])]) rowEnergy(m, residualScore);
  colEnergy(w.attnOut, residualScore);
  colEnergy(w.mlpDown, residualScore);
  const residual = topIndices(residualScore, s.width);

  const { q, kv } = keptAttentionColumns(w, s);

  const unitScore = new Float64Array(w.mlpUp.cols);
  colEnergy(w.mlpUp, unitScore);
  if (w.mlpGate) colEnergy(w.mlpGate, unitScore);
  rowEnergy(w.mlpDown, unitScore);
  const units = topIndices(unitScore, s.dFF);

  const values = new Map<string, Float32Array>();
  const put = (suffix: string, v: Float32Array | undefined) => {
    if (v) values.set(suffix, v);
  };
  put('ln1.weight', sliceVector(w.ln1Weight, residual));
  put('ln1.bias', w.ln1Bias && sliceVector(w.ln1Bias, residual));
  put('attn.query.weight', sliceMatrix(w.query, residual, q));
  put('attn.key.weight', sliceMatrix(w.key, residual, kv));
  put('attn.value.weight', sliceMatrix(w.value, residual, kv));
  if (s.qkvBias) {
    put('attn.query.bias', w.queryBias && sliceVector(w.queryBias, q));
    put('attn.key.bias', w.keyBias && sliceVector(w.keyBias, kv));
    put('attn.value.bias', w.valueBias && sliceVector(w.valueBias, kv));
  }
  put('attn.out.weight', sliceMatrix(w.attnOut, q, residual));
  put('attn.out.bias', w.attnOutBias && sliceVector(w.attnOutBias, residual));
  put('ln2.weight', sliceVector(w.ln2Weight, residual));
  put('ln2.bias', w.ln2Bias && sliceVector(w.ln2Bias, residual));
  put('mlp.up.weight', sliceMatrix(w.mlpUp, residual, units));
  put('mlp.up.bias', w.mlpUpBias && sliceVector(w.mlpUpBias, units));
  put('mlp.gate.weight', w.mlpGate && sliceMatrix(w.mlpGate, residual, units));
  put('mlp.down.weight', sliceMatrix(w.mlpDown, units, residual));
  put('mlp.down.bias', w.mlpDownBias && sliceVector(w.mlpDownBias, residual));
  return { residual, values };
}
