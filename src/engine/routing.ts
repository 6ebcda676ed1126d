/**
 * Who computes which rows: the pure bookkeeping of hybrid pipeline + data parallelism.
 *
 * A step's mini-batch (sample ids, fixed by seed and epoch) is cut into micro-batches; inside a
 * stage's device group each micro-batch is split into contiguous row ranges in proportion to the
 * devices' shares (largest remainder, ties to the lower rank), so a row always stays with its
 * sample id. Every party computes the same split from the plan, so nobody has to be told who
 * sends what: a sender knows which next-stage ranks need which of its rows, and a receiver knows
 * whom to wait for.
 */

/** The part of a stage plan that routing needs. Layers are 1-based inclusive, as in BackboneRange. */
export interface StageLayout {
  from: number;
  to: number;
  /** Device names of the group, in rank order. */
  devices: string[];
  /** Relative row shares per rank (speed-proportional); any positive numbers. */
  shares: number[];
}

/** Splits n rows over ranks in proportion to shares: largest remainder, ties to the lower rank. */
export function splitRows(n: number, shares: number[]): number[] {
  if (shares.length === 0) throw new Error('splitRows: a group needs at least one rank');
  if (shares.some((s) => !(s > 0))) throw new Error(`splitRows: shares must be positive, got [${shares.join(', ')}]`);
  const total = shares.reduce((a, b) => a + b, 0);
  const exact = shares.map((s) => (n * s) / total);
  const counts = exact.map((x) => Math.floor(x));
  let left = n - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => ({ i, frac: x - Math.floor(x) })).sort((p, q) => q.frac - p.frac || p.i - q.i);
  for (const { i } of order) {
    if (left === 0) break;
    counts[i]! += 1;
    left -= 1;
  }
  return counts;
}

/** Cuts a step's sample ids into `count` contiguous micro-batches of near-equal size (earlier ones larger). */
export function microBatches(stepIds: readonly number[], count: number): number[][] {
  const n = stepIds.length,
    base = Math.floor(n / count),
    extra = n % count;
  const out: number[][] = [];
  let at = 0;
  for (let m = 0; m < count; m++) {
    const len = base + (m < extra ? 1 : 0);
    out.push(stepIds.slice(at, at + len));
    at += len;
  }
  return out;
}

/** The rows (sample ids, in micro-batch order) that `rank` of a group with `shares` computes. */
export function rankRows(mbIds: readonly number[], shares: number[], rank: number): number[] {
  // A rank past the group would otherwise get an empty slice and silently compute nothing.
  if (!Number.isInteger(rank) || rank < 0 || rank >= shares.length)
    throw new Error(`rankRows: rank ${rank} is not in a group of ${shares.length}`);
  const counts = splitRows(mbIds.length, shares);
  let at = 0;
  for (let r = 0; r < rank; r++) at += counts[r]!;
  return mbIds.slice(at, at + counts[rank]!);
}

/**
 * Which of `fromRank`'s rows each rank of the other group needs: a map toRank -> sample ids (in
 * micro-batch order), holding only non-empty intersections.
 */
export function routeRows(mbIds: readonly number[], fromShares: number[], fromRank: number, toShares: number[]): Map<number, number[]> {
  const mine = new Set(rankRows(mbIds, fromShares, fromRank));
  const out = new Map<number, number[]>();
  for (let r = 0; r < toShares.length; r++) {
    const ids = rankRows(mbIds, toShares, r).filter((id) => mine.has(id));
    if (ids.length > 0) out.set(r, ids);
  }
  return out;
}

/** The ranks of the other group that send rows to `toRank` for this micro-batch (ascending). */
export function expectedSenders(mbIds: readonly number[], fromShares: number[], toShares: number[], toRank: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < fromShares.length; r++) if (routeRows(mbIds, fromShares, r, toShares).has(toRank)) out.push(r);
  return out;
}

/**
 * Assembles the rows sent by several ranks into the receiver's row order. Each part carries its
 * sample ids and a flat array of `width` values per row; the result is one flat array.
 */
export function assembleRows(
  want: readonly number[],
  parts: { ids: readonly number[]; data: Float32Array }[],
  width: number,
): Float32Array {
  const out = new Float32Array(want.length * width);
  const at = new Map<number, number>();
  want.forEach((id, i) => at.set(id, i));
  let filled = 0;
  for (const p of parts) {
    if (p.data.length !== p.ids.length * width)
      throw new Error(`assembleRows: part of ${p.ids.length} rows has ${p.data.length} values, expected ${p.ids.length * width}`);
    p.ids.forEach((id, j) => {
      const i = at.get(id);
      if (i === undefined) throw new Error(`assembleRows: sample ${id} is not a row of this rank`);
      out.set(p.data.subarray(j * width, (j + 1) * width), i * width);
      filled++;
    });
  }
  if (filled !== want.length) throw new Error(`assembleRows: got ${filled} rows, expected ${want.length}`);
  return out;
}

/** Copies the rows of `ids` (a subset of `from`, in any order) out of a flat array laid out in `from` order. */
export function selectRows(from: readonly number[], data: Float32Array, ids: readonly number[], width: number): Float32Array {
  const index = new Map<number, number>();
  from.forEach((id, i) => index.set(id, i));
  const out = new Float32Array(ids.length * width);
  ids.forEach((id, j) => {
    const i = index.get(id);
    if (i === undefined) throw new Error(`selectRows: sample ${id} not among the rows`);
    out.set(data.subarray(i * width, (i + 1) * width), j * width);
  });
  return out;
}

/** A rank's place in the ring over every rank of every stage (stages in order, ranks in order). */
export function crossPlace(
  stages: readonly { devices: readonly string[] }[],
  stage: number,
  rank: number,
): { rank: number; members: readonly string[] } {
  return {
    rank: stages.slice(0, stage).reduce((a, st) => a + st.devices.length, 0) + rank,
    members: stages.flatMap((st) => st.devices),
  };
}
