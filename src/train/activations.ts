/**
 * Backbone activations b_0..b_L for a batch, through the activation cache: the parallel method's
 * backbone runs only for samples whose entries are missing (all of them in epoch 1; any missing or
 * corrupt entry later). Entries are laid out by the engine's CacheRows, as on a distributed run.
 */
import * as tf from '@tensorflow/tfjs';
import type { CacheRows } from '../engine/cache-rows.ts';
import type { Batch } from './data.ts';

/** The part of the parallel method the cache path needs. */
export interface CacheableMethod {
  backboneActivations(ids: tf.Tensor2D): tf.Tensor2D[];
  hiddenFromActivations(acts: { readonly [layer: number]: tf.Tensor2D | undefined }, seqLen: number): tf.Tensor2D;
}

export function isCacheable(m: object): m is CacheableMethod {
  return (
    typeof (m as Partial<CacheableMethod>).backboneActivations === 'function' &&
    typeof (m as Partial<CacheableMethod>).hiddenFromActivations === 'function'
  );
}

export interface CachedBatchReport {
  /** Samples whose activations were computed by the backbone in this call. */
  computed: number;
}

/**
 * b_0..b_L (each (B*T, d)) for `batch`, read from `rows`, computing and storing what is missing.
 * The caller owns (and disposes) the returned tensors.
 */
export function cachedActivations(
  method: CacheableMethod,
  rows: CacheRows,
  batch: Batch,
): { acts: tf.Tensor2D[]; report: CachedBatchReport } {
  const { batch: B, seqLen: T } = batch;
  const w = rows.o.width,
    d = w / T;
  const { acts: layers, missing } = rows.read(batch.sampleIds);
  if (missing.length === B) {
    // Nothing cached (epoch 1): one batched backbone pass, then store every sample's blocks.
    const acts = tf.tidy(() => method.backboneActivations(tf.tensor2d(batch.ids, [B, T], 'int32')));
    rows.fill(batch.sampleIds, new Map(acts.map((t, l) => [l, t.dataSync() as Float32Array])));
    return { acts, report: { computed: B } };
  }
  for (const b of missing) {
    const acts = tf.tidy(() => method.backboneActivations(tf.tensor2d(batch.ids.subarray(b * T, (b + 1) * T), [1, T], 'int32')));
    const computed = new Map(acts.map((t, l) => [l, t.dataSync() as Float32Array]));
    for (const t of acts) t.dispose();
    rows.fill([batch.sampleIds[b]!], computed);
    for (const [l, v] of computed) layers[l]!.set(v, b * w);
  }
  return { acts: layers.map((v) => tf.tensor2d(v, [B * T, d])), report: { computed: missing.length } };
}
