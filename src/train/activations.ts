/**
 * Backbone activations b_0..b_L for a batch, through the activation cache: the parallel method's
 * backbone runs only for samples whose entries are missing (all of them in epoch 1; any missing or
 * corrupt entry later). Each sample's entry for layer l is its (T, d) block of b_l.
 */
import * as tf from '@tensorflow/tfjs';
import type { ActivationCache } from '../cache/activation-cache.ts';
import type { Batch } from './data.ts';

/** The part of the parallel method the cache path needs. */
export interface CacheableMethod {
  backboneActivations(ids: tf.Tensor2D): tf.Tensor2D[];
  hiddenFromActivations(acts: { readonly [layer: number]: tf.Tensor2D | undefined }, seqLen: number): tf.Tensor2D;
}

export function isCacheable(m: object): m is CacheableMethod {
  return typeof (m as Partial<CacheableMethod>).backboneActivations === 'function' && typeof (m as Partial<CacheableMethod>).hiddenFromActivations === 'function';
}

export interface CachedBatchReport {
  /** Samples whose activations were computed by the backbone in this call. */
  computed: number;
}

/**
 * b_0..b_L (each (B*T, d)) for `batch`, read from `cache` under `fingerprint`, computing and
 * storing what is missing. The caller owns (and disposes) the returned tensors.
 */
export function cachedActivations(method: CacheableMethod, cache: ActivationCache, fingerprint: string, batch: Batch, nLayers: number, dModel: number): { acts: tf.Tensor2D[]; report: CachedBatchReport } {
  const { batch: B, seqLen: T } = batch;
  const rows = T * dModel;
  const layers = Array.from({ length: nLayers + 1 }, () => new Float32Array(B * rows));
  const missing: number[] = [];
  for (let b = 0; b < B; b++) {
    const sample = batch.sampleIds[b]!;
    for (let l = 0; l <= nLayers; l++) {
      const v = cache.get({ fingerprint, sample, layer: l });
      if (!v) { missing.push(b); break; }
      layers[l]!.set(v, b * rows);
    }
  }
  if (missing.length === B) {
    // Nothing cached (epoch 1): one batched backbone pass, then store every sample's blocks.
    const acts = tf.tidy(() => method.backboneActivations(tf.tensor2d(batch.ids, [B, T], 'int32')));
    acts.forEach((t, l) => {
      const data = t.dataSync() as Float32Array;
      for (let b = 0; b < B; b++) cache.put({ fingerprint, sample: batch.sampleIds[b]!, layer: l }, data.subarray(b * rows, (b + 1) * rows));
    });
    return { acts, report: { computed: B } };
  }
  for (const b of missing) {
    const sample = batch.sampleIds[b]!;
    const acts = tf.tidy(() => method.backboneActivations(tf.tensor2d(batch.ids.subarray(b * T, (b + 1) * T), [1, T], 'int32')));
    acts.forEach((t, l) => {
      const data = t.dataSync() as Float32Array;
      cache.put({ fingerprint, sample, layer: l }, data);
      layers[l]!.set(data, b * rows);
      t.dispose();
    });
  }
  return { acts: layers.map((d) => tf.tensor2d(d, [B * T, dModel])), report: { computed: missing.length } };
}
