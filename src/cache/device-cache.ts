/**
 * The activation cache one device keeps for a run, as the device's training handlers use it:
 * filled with what its stage computes in epoch 1, redistributed so it holds every layer of its
 * cached-phase shard, then read by the cached epochs. The device process chooses the
 * implementation (the cache actor, which serves its puts on the bus) and hands it to the handlers.
 */
import type { CacheDtype } from './activation-cache.ts';

/** What the handlers fix about a device's cache. */
export interface DeviceCacheOptions {
  /** Keys of this model and sequence length. */
  fingerprint: string;
  /** Backbone layers L: entries are b_0..b_L. */
  layers: number;
  /** Values per entry (T * d). */
  width: number;
  memoryBytes: number;
  /** Disk tier of the memory tier's overflow. */
  dir?: string;
  dtype?: CacheDtype;
}

/** What redistribution moved on this device. */
export interface RedistributionReport {
  bytesIn: number;
  bytesOut: number;
  entriesIn: number;
  entriesOut: number;
  seconds: number;
}

/** What a device keeps beside its shard, and what it sends where (the coordinator plans both). */
export interface RedistributionMoves {
  /** Samples of other devices' shards this device keeps every layer of (the second copy). */
  keep?: number[];
  /** `sends[k]`: the samples whose layers this device sends `devices[k]` (absent: what it holds of `shards[k]`). */
  sends?: number[][];
}

export interface DeviceCache {
  /** Stores what this device's stage computed for `sampleIds` (layer -> rows * width, rows in id order). */
  fill(sampleIds: readonly number[], computed: Map<number, Float32Array>): void;
  /** Layers held per sample, ascending (index = sample id, `samples` entries). */
  holdings(samples: number): number[][];
  /**
   * Seals the epoch-1 cache and redistributes: `shards[k]` is the shard of `devices[k]`.
   * Resolves once this device holds every layer of its shard (and of `moves.keep`) and its sends
   * were acknowledged. A serving cache redistributes again (a re-plan over fewer devices).
   */
  redistribute(shards: number[][], devices: string[], moves?: RedistributionMoves): Promise<RedistributionReport>;
  /** Ends a redistribution in flight (it rejects); what the cache holds stays. */
  abort(): void;
  /** Every layer b_0..b_L of `sampleIds`, each as rows * width values (cached epochs). */
  activations(sampleIds: readonly number[]): Float32Array[];
  /** Memory-tier bytes now and at peak. */
  memory(): { bytes: number; peakBytes: number; diskBytes: number };
  /** Drops everything (memory and disk tier) and stops serving. */
  drop(): void;
}
