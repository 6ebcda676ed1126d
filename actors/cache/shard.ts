/**
 * The cached-phase shard plan: which device trains from which samples after epoch 1. Shard sizes
 * follow device speed (largest remainder); within that, each sample goes to the device that
 * already holds the most of its layers, so redistribution moves the fewest cache bytes.
 */
import { splitRows } from '../../src/runtime/pipeline.ts';

/**
 * `holders(sample)` lists, per device index, how many layers of the sample it holds after
 * epoch 1. Returns the sample ids of each device's shard (ascending).
 */
export function shardSamples(samples: number, speeds: number[], holders: (sample: number) => number[]): number[][] {
  const capacity = splitRows(samples, speeds);
  const shards: number[][] = speeds.map(() => []);
  // Samples with the most lopsided holdings choose first: they save the most by staying put.
  const order = Array.from({ length: samples }, (_, j) => j).map((j) => ({ j, h: holders(j) }))
    .sort((p, q) => Math.max(...q.h) - Math.max(...p.h) || p.j - q.j);
  for (const { j, h } of order) {
    let best = -1;
    for (let d = 0; d < speeds.length; d++) if (shards[d]!.length < capacity[d]! && (best < 0 || h[d]! > h[best]!)) best = d;
    shards[best]!.push(j);
  }
  return shards.map((s) => s.sort((a, b) => a - b));
}
