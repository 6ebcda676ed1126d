/**
 * Cached-phase shards balanced per step. A cached step lasts as long as its most loaded device,
 * and a shard drawn without regard to the epochs' batches splits most mini-batches unevenly
 * between devices, so most steps wait for the device given more than its share. The order of
 * every cached epoch is known in advance (seeded), so the shards can give each device its share
 * of every step's rows, keeping the planner's shard sizes and, among equally balanced choices,
 * the samples a device already caches.
 */

/**
 * Reassigns samples to devices: device k gets exactly `sizes[k]` samples; greedily, each sample
 * goes to the device whose load in the sample's steps (over every cached epoch) is lowest
 * relative to its share, ties to a device already holding it, then to the lower rank.
 * `steps` lists the mini-batches of every cached epoch (each sample once per epoch);
 * `holds(k, j)` says whether device k caches sample j. Returns the sorted shards.
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
  return shards.map((s) => s.sort((a, b) => a - b));
}
