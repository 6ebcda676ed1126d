/**
 * Cached-phase planner: after epoch 1 every device trains the whole side network on its own
 * shard of samples from the activation cache. Shard sizes follow device speed; which samples go
 * where is chosen so that the fewest cache bytes move (a sample's layers already on a device
 * stay there).
 */

export interface CachedDevice {
  name: string;
  /** Side-network forward + backward time per cached sample (all layers). */
  msPerSample: number;
}

/** Cache bytes of one sample that a device holds after epoch 1 (the layers it computed). */
export interface CacheHolding {
  device: string;
  bytes: number;
}

export interface CachedPhasePlan {
  /** One shard per device, in the order given; sample ids ascending. */
  shards: { device: string; samples: number[] }[];
  /** Cache bytes that must move so every device holds every layer of its shard. */
  bytesMoved: number;
  /** The same bytes by (holder, receiver). */
  transfers: { from: string; to: string; bytes: number; samples: number }[];
}

/** Integer shard sizes summing to `total`, proportional to 1 / msPerSample (largest remainder, ties to the earlier device). */
export function shardSizes(devices: readonly CachedDevice[], total: number): number[] {
  const speed = devices.map((d) => 1 / d.msPerSample);
  const sum = speed.reduce((a, b) => a + b, 0);
  const exact = speed.map((s) => (total * s) / sum);
  const sizes = exact.map(Math.floor);
  let left = total - sizes.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => ({ i, frac: e - Math.floor(e) })).sort((a, b) => b.frac - a.frac || a.i - b.i);
  for (let k = 0; left > 0; k++, left--) sizes[order[k % order.length]!.i]! += 1;
  return sizes;
}

/**
 * Assigns `samples` to `devices` with speed-proportional shard sizes, maximising the cache bytes
 * that stay where they are (equivalently, minimising bytes moved). A greedy assignment (largest
 * holdings first) is improved by cancelling profitable cycles of moves between devices (a sample
 * from device A to B, another from B to C, ..., back to A keeps every shard size); when no such
 * cycle remains the assignment is optimal (the transportation problem's optimality condition).
 * A sample absent from `currentHolders` has no cached bytes: it is recomputed wherever it goes.
 */
export function planCachedPhase(
  devices: readonly CachedDevice[],
  samples: readonly number[],
  currentHolders: ReadonlyMap<number, readonly CacheHolding[]>,
): CachedPhasePlan {
  const D = devices.length;
  if (D === 0) throw new RangeError('planCachedPhase needs at least one device');
  for (const d of devices) if (!(d.msPerSample > 0)) throw new RangeError(`device '${d.name}': msPerSample must be positive`);
  const index = new Map(devices.map((d, i) => [d.name, i]));
  const n = samples.length;
  // held[j * D + i]: bytes of sample j on device i; total[j]: all its cached bytes.
  const held = new Float64Array(n * D);
  const total = new Float64Array(n);
  samples.forEach((id, j) => {
    for (const h of currentHolders.get(id) ?? []) {
      const i = index.get(h.device);
      total[j]! += h.bytes;
      if (i !== undefined) held[j * D + i]! += h.bytes;
    }
  });
  const quota = shardSizes(devices, n);
  const owner = new Int32Array(n).fill(-1);
  const triples: { j: number; i: number; b: number }[] = [];
  for (let j = 0; j < n; j++) for (let i = 0; i < D; i++) if (held[j * D + i]! > 0) triples.push({ j, i, b: held[j * D + i]! });
  triples.sort((a, b) => b.b - a.b || a.j - b.j || a.i - b.i);
  const left = [...quota];
  for (const t of triples)
    if (owner[t.j] === -1 && left[t.i]! > 0) {
      owner[t.j] = t.i;
      left[t.i]! -= 1;
    }
  for (let j = 0, i = 0; j < n; j++) {
    if (owner[j] !== -1) continue;
    while (left[i] === 0) i++;
    owner[j] = i;
    left[i]! -= 1;
  }
  cancelCycles(owner, held, D);
  const shards = devices.map((d) => ({ device: d.name, samples: [] as number[] }));
  const pairs = new Map<string, { from: string; to: string; bytes: number; samples: number }>();
  let bytesMoved = 0;
  samples.forEach((id, j) => {
    const to = owner[j]!;
    shards[to]!.samples.push(id);
    for (const h of currentHolders.get(id) ?? []) {
      if (h.device === devices[to]!.name || h.bytes === 0) continue;
      bytesMoved += h.bytes;
      const key = `${h.device}\u0000${devices[to]!.name}`;
      const p = pairs.get(key) ?? { from: h.device, to: devices[to]!.name, bytes: 0, samples: 0 };
      p.bytes += h.bytes;
      p.samples += 1;
      pairs.set(key, p);
    }
  });
  for (const s of shards) s.samples.sort((a, b) => a - b);
  return { shards, bytesMoved, transfers: [...pairs.values()] };
}

/** Repeatedly applies the most profitable cycle of single-sample moves found by Bellman-Ford on the device graph. */
function cancelCycles(owner: Int32Array, held: Float64Array, D: number): void {
  const n = owner.length;
  const eps = 1e-9;
  for (;;) {
    // Best sample to move along each edge a -> b, and its gain held(b) - held(a).
    const gain = new Float64Array(D * D).fill(-Infinity);
    const pick = new Int32Array(D * D).fill(-1);
    for (let j = 0; j < n; j++) {
      const a = owner[j]!;
      for (let b = 0; b < D; b++) {
        if (b === a) continue;
        const g = held[j * D + b]! - held[j * D + a]!;
        if (g > gain[a * D + b]!) {
          gain[a * D + b] = g;
          pick[a * D + b] = j;
        }
      }
    }
    // Longest paths (most gain); a relaxation in round D means a positive cycle.
    const dist = new Float64Array(D);
    const pred = new Int32Array(D).fill(-1);
    let touched = -1;
    for (let round = 0; round < D; round++) {
      touched = -1;
      for (let a = 0; a < D; a++)
        for (let b = 0; b < D; b++) {
          const g = gain[a * D + b]!;
          if (g === -Infinity || a === b) continue;
          if (dist[a]! + g > dist[b]! + eps) {
            dist[b] = dist[a]! + g;
            pred[b] = a;
            touched = b;
          }
        }
      if (touched === -1) return;
    }
    // Walk back D steps to land on the cycle, then collect it.
    let v = touched;
    for (let k = 0; k < D; k++) v = pred[v]!;
    const cycle: number[] = [];
    for (let u = v; ; u = pred[u]!) {
      cycle.push(u);
      if (cycle.length > 1 && u === v) break;
    }
    let total = 0;
    for (let k = cycle.length - 1; k > 0; k--) total += gain[cycle[k]! * D + cycle[k - 1]!]!;
    if (total <= eps) return;
    const moves: [number, number][] = [];
    for (let k = cycle.length - 1; k > 0; k--) moves.push([pick[cycle[k]! * D + cycle[k - 1]!]!, cycle[k - 1]!]);
    for (const [j, to] of moves) owner[j] = to;
  }
}
