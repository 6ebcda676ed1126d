/**
 * A batch's backbone activations as activation-cache entries: one entry per (sample, layer), the
 * sample's (T, d) block of b_layer. The one place that lays rows out as entries, for the stage
 * that fills a cache in epoch 1 and the cached epochs that read it back.
 */
import type { ActivationCache } from '../cache/activation-cache.ts';

export interface CacheRowsOptions {
  /** Keys of this model and sequence length. */
  fingerprint: string;
  /** Backbone layers L: entries are b_0..b_L. */
  layers: number;
  /** Values per entry (T * d). */
  width: number;
}

export class CacheRows {
  constructor(
    readonly cache: ActivationCache,
    readonly o: CacheRowsOptions,
  ) {}

  /** One entry, or undefined when it is missing or corrupt. */
  get(sample: number, layer: number): Float32Array | undefined {
    return this.cache.get({ fingerprint: this.o.fingerprint, sample, layer });
  }

  put(sample: number, layer: number, values: Float32Array): void {
    this.cache.put({ fingerprint: this.o.fingerprint, sample, layer }, values);
  }

  /** Stores computed activations of `sampleIds` (layer -> rows * width, rows in id order). */
  fill(sampleIds: readonly number[], computed: Map<number, Float32Array>): void {
    const w = this.o.width;
    sampleIds.forEach((id, j) => {
      for (const [layer, v] of computed) this.put(id, layer, v.subarray(j * w, (j + 1) * w));
    });
  }

  /**
   * b_0..b_L of `sampleIds`, each rows * width, and the positions in `sampleIds` of the rows that
   * lack some layer (their blocks are left zero).
   */
  read(sampleIds: readonly number[]): { acts: Float32Array[]; missing: number[] } {
    const w = this.o.width;
    const acts = Array.from({ length: this.o.layers + 1 }, () => new Float32Array(sampleIds.length * w));
    const missing: number[] = [];
    sampleIds.forEach((id, j) => {
      for (let l = 0; l <= this.o.layers; l++) {
        if (!this.cache.copyTo({ fingerprint: this.o.fingerprint, sample: id, layer: l }, acts[l]!, j * w, w)) {
          missing.push(j);
          return;
        }
      }
    });
    return { acts, missing };
  }

  /** Every layer of `sampleIds`. @throws Error naming the first missing entry. */
  activations(sampleIds: readonly number[]): Float32Array[] {
    const { acts, missing } = this.read(sampleIds);
    if (missing.length)
      throw new Error(
        `activation cache: sample ${sampleIds[missing[0]!]} lacks a layer (evicted without a disk tier, or its file is corrupt)`,
      );
    return acts;
  }
}
