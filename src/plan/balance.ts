/**
 * Cached-phase shards balanced per step. A cached step lasts as long as its most loaded device,
 * and a shard drawn without regard to the epochs' batches splits most mini-batches unevenly
 * between devices, so most steps wait for the device given more than its share. The order of
 * every cached epoch is known in advance (seeded), so the shards can give each device its share
 * of every step's rows, keeping the planner's shard sizes and, where balance allows, the samples
 * a device already caches (each kept sample is one less to move).
 *
 * A greedy pass alone leaves its last samples no choice (the devices with room left take them,
 * whatever their steps), so it is followed by a local search over swaps of two samples between
 * devices, which keeps the sizes. Its objective is, per step and device, the squared distance of
 * the device's rows from its share of the step (smooth, where the slowest device's rows are not:
 * a swap that evens one step of three devices without touching the busiest still counts), plus
 * MOVE_COST for each sample placed on a device that does not already cache it.
 */
import { createRng } from '../train/rng.ts';

/**
 * What placing a sample on a device that must first receive it costs, in the objective's units
 * (a step split 5/3 instead of 4/4 costs 2): moving an entry once is cheaper than waiting for one
 * extra row in a step, so balance wins, and among equally balanced shards the one that moves less.
 */
const MOVE_COST = 0.5;
/** Swap proposals per sample; the search also stops after SEARCH_BUDGET_MS. */
const PROPOSALS_PER_SAMPLE = 400;
const SEARCH_BUDGET_MS = 1000;

/**
 * Reassigns samples to devices: device k gets exactly `sizes[k]` samples, each step's rows split
 * as closely as possible by the shares `sizes[k] / total` (over every cached epoch), samples
 * staying where `holds(k, j)` where that costs no balance. `steps` lists the mini-batches of every
 * cached epoch (each sample once per epoch). Deterministic. Returns the sorted shards.
 * @throws Error when the sizes do not add up to the samples of one epoch.
 */
export function balanceShards(
  sizes: readonly number[],
  steps: readonly (readonly number[])[],
  holds: (k: number, j: number) => boolean,
): number[][] {
  const total = sizes.reduce((a, b) => a + b, 0);
  const stepsOf = new Map<number, number[]>();
  steps.forEach((ids, s) => {
    for (const j of ids) {
      let l = stepsOf.get(j);
      if (!l) stepsOf.set(j, (l = []));
      l.push(s);
    }
  });
  if (stepsOf.size !== total)
    throw new Error(`balanceShards: shard sizes add up to ${total}, the cached epochs have ${stepsOf.size} samples`);
  const load = steps.map(() => sizes.map(() => 0));
  const left = [...sizes];
  const shards: number[][] = sizes.map(() => []);
  // Samples in the order of the first cached epoch: early steps fill while every device has room.
  const order = [...new Set(steps.flat())];
  for (const j of order) {
    let best = -1,
      bestScore = Infinity,
      bestHeld = false;
    for (let k = 0; k < sizes.length; k++) {
      if (left[k]! === 0) continue;
      const share = sizes[k]! / total;
      let score = 0;
      for (const s of stepsOf.get(j)!) score += (load[s]![k]! + 1) / (share * steps[s]!.length);
      const held = holds(k, j);
      if (score < bestScore - 1e-9 || (Math.abs(score - bestScore) <= 1e-9 && held && !bestHeld)) {
        best = k;
        bestScore = score;
        bestHeld = held;
      }
    }
    shards[best]!.push(j);
    left[best]! -= 1;
    for (const s of stepsOf.get(j)!) load[s]![best]! += 1;
  }
  improveBySwaps(sizes, steps, stepsOf, shards, load, holds);
  return shards.map((s) => s.sort((a, b) => a - b));
}

/** Hill-climbs `shards` (and their per-step `load`) by swapping two samples of different devices; rewrites `shards`. */
function improveBySwaps(
  sizes: readonly number[],
  steps: readonly (readonly number[])[],
  stepsOf: Map<number, number[]>,
  shards: number[][],
  load: number[][],
  holds: (k: number, j: number) => boolean,
): void {
  const K = sizes.length;
  if (K < 2) return;
  const total = sizes.reduce((a, b) => a + b, 0);
  const target = steps.map((ids) => sizes.map((n) => (n / total) * ids.length));
  const ids: number[] = [];
  const owner: number[] = [];
  shards.forEach((shard, k) =>
    shard.forEach((j) => {
      ids.push(j);
      owner.push(k);
    }),
  );
  const held = (k: number, x: number): number => (holds(k, ids[x]!) ? 0 : MOVE_COST);
  // Change of the objective when sample x leaves device `from` for `to`, with `load` as it is now.
  const moveDelta = (x: number, from: number, to: number): number => {
    let d = held(to, x) - held(from, x);
    for (const s of stepsOf.get(ids[x]!)!) {
      const l = load[s]!,
        t = target[s]!;
      d += -2 * (l[from]! - t[from]!) + 1 + 2 * (l[to]! - t[to]!) + 1;
    }
    return d;
  };
  const move = (x: number, from: number, to: number): void => {
    for (const s of stepsOf.get(ids[x]!)!) {
      load[s]![from]! -= 1;
      load[s]![to]! += 1;
    }
    owner[x] = to;
  };
  const n = ids.length;
  const rng = createRng(n, K, steps.length);
  const started = performance.now();
  const proposals = PROPOSALS_PER_SAMPLE * n;
  for (let it = 0; it < proposals; it++) {
    if ((it & 4095) === 0 && performance.now() - started > SEARCH_BUDGET_MS) break;
    const a = rng.int(n),
      b = rng.int(n);
    const p = owner[a]!,
      q = owner[b]!;
    if (p === q) continue;
    const da = moveDelta(a, p, q);
    move(a, p, q);
    const db = moveDelta(b, q, p);
    // Sideways moves too: they walk the search off the plateaus the integer loads make.
    if (da + db <= 0) move(b, q, p);
    else move(a, q, p);
  }
  shards.forEach((shard) => (shard.length = 0));
  ids.forEach((j, x) => shards[owner[x]!]!.push(j));
}
