/**
 * Where the cached phase keeps the second copy of each sample's cache entries, and which device
 * sends what in a redistribution. Pure functions over what the caches report holding; the
 * coordinator's redistribution (actors/coordinator/redistribute.ts) applies them.
 *
 * A replica goes to a device other than the sample's owner, preferably one that already holds
 * the sample's layers (nothing moves), within a quota per device equal to its own shard's size:
 * a device then holds about twice its shard, so memory follows speed as the shards do.
 */

/**
 * The samples each device keeps as a copy: `shards[k]` is device k's own shard, `held(k, j)` the
 * layers of sample j device k holds now. With fewer than two devices there is no second copy.
 */
export function assignReplicas(shards: readonly (readonly number[])[], held: (k: number, j: number) => number): number[][] {
  const D = shards.length;
  const replicas: number[][] = shards.map(() => []);
  if (D < 2) return replicas;
  const owner = new Map<number, number>();
  shards.forEach((s, k) => s.forEach((j) => owner.set(j, k)));
  // Samples whose copy is already somewhere choose first, so few others take those places.
  const best = (j: number) => Math.max(0, ...shards.map((_, k) => (k === owner.get(j) ? 0 : held(k, j))));
  const order = [...owner.keys()].sort((a, b) => best(b) - best(a) || a - b);
  for (const j of order) {
    const o = owner.get(j)!;
    let pick = -1;
    for (let k = 0; k < D; k++) {
      if (k === o) continue;
      if (pick < 0) {
        pick = k;
        continue;
      }
      const spare = (i: number) => replicas[i]!.length < shards[i]!.length;
      const better =
        spare(k) !== spare(pick)
          ? spare(k)
          : held(k, j) !== held(pick, j)
            ? held(k, j) > held(pick, j)
            : replicas[k]!.length - shards[k]!.length < replicas[pick]!.length - shards[pick]!.length;
      if (better) pick = k;
    }
    replicas[pick]!.push(j);
  }
  return replicas.map((r) => r.sort((a, b) => a - b));
}

/**
 * Which samples each sender sends to each receiver so that receiver k ends up holding every one
 * of `layers` layers of each sample in `want[k]`. `held(s, j)` lists the layers sender s holds of
 * sample j; receivers are senders 0..want.length-1 (later senders are leaving devices). A sample
 * comes from one sender holding every layer the receiver lacks when there is one (so a sample
 * held twice is not sent twice), else from every sender holding some of them. Returns
 * sends[s][k]: the samples sender s sends receiver k (all the layers it holds of them).
 */
export function planSends(
  want: readonly (readonly number[])[],
  senders: number,
  held: (s: number, j: number) => readonly number[],
  layers: number,
): number[][][] {
  const sends = Array.from({ length: senders }, () => want.map((): number[] => []));
  // Work spread over senders: the one with the least to send so far takes a sample first.
  const load = new Array<number>(senders).fill(0);
  want.forEach((samples, k) => {
    for (const j of samples) {
      const have = new Set(held(k, j));
      if (have.size >= layers) continue;
      const lacking = (s: number) => held(s, j).filter((l) => !have.has(l));
      const others = Array.from({ length: senders }, (_, s) => s).filter((s) => s !== k && lacking(s).length > 0);
      const whole = others.filter((s) => lacking(s).length + have.size >= layers).sort((a, b) => load[a]! - load[b]! || a - b);
      for (const s of whole.length > 0 ? [whole[0]!] : others) {
        sends[s]![k]!.push(j);
        load[s]! += 1;
      }
    }
  });
  return sends;
}
