/**
 * Local search over a plan's sequence of groups, for when there are too many distinct devices to
 * search every subset and order: move a device to another group, a new stage or out of the plan,
 * swap two devices or two stages, merge neighbouring stages; each candidate sequence gets its best
 * layer split (an exact DP over the layers for that sequence), and the first candidate that beats
 * the plan replaces it, until none does or the budget runs out.
 */
import type { GroupPrices, Prices } from './prices.ts';
import { addLabel, type Budget, type ChosenStage, type Label, type SearchResult } from './search.ts';

const NO_CHAINS = new Int32Array(0);

/**
 * The least-makespan split of layers 1..L into one run per group, in this order, below `cut`.
 * A suffix DP over (stage, first layer) keeping the same labels as `search`.
 */
export function sequenceSearch(groups: GroupPrices[], prices: Prices, M: number, cut: number, budget: Budget): SearchResult {
  const L = prices.cm.layers;
  const rows = prices.rows;
  const S = groups.length;
  let best: Label | null = null;
  let labels = 0,
    work = 0;
  if (S > L || groups.some((g) => g.members.length > rows) || !underCycle(groups, prices, M, cut / M))
    return { best, value: cut, labels, aborted: false, bounded: true };
  // Rates of the groups before stage j for the prefix before layer x: what the layers before a stage can get.
  const before = new Float64Array(S * (L + 2)).fill(NaN);
  const rateBefore = (j: number, x: number): number => {
    let r = before[j * (L + 2) + x]!;
    if (Number.isNaN(r)) {
      r = 0;
      for (let i = 0; i < j; i++) r += prices.rate(groups[i]!, x);
      before[j * (L + 2) + x] = r;
    }
    return r;
  };
  let level = new Map<number, Label[]>([[L + 1, [{ maxc: 0, a: 0, z: 0, x: L + 1, y: L, pick: null, inFlight: 0, next: null }]]]);
  for (let j = S - 1; j >= 0; j--) {
    const next = new Map<number, Label[]>();
    const inFlight = Math.min(S - j, M);
    const g = groups[j]!;
    const pick = { prices: g, counts: NO_CHAINS };
    for (const [x, list] of level) {
      let minZ = Infinity,
        minA = Infinity,
        minMaxc = Infinity;
      for (const lb of list) {
        minZ = Math.min(minZ, lb.z);
        minA = Math.min(minA, lb.a);
        minMaxc = Math.min(minMaxc, lb.maxc);
      }
      for (let x1 = j === 0 ? 1 : x - 1; x1 >= j + 1; x1--) {
        const floor = prices.floor(g, x1, x - 1);
        if (Math.max(minZ, minA + floor) + (M - 1) * Math.max(floor, minMaxc) >= cut) break;
        const pre = j > 0 ? (rows * prices.prefixWork[x1]!) / rateBefore(j, x1) : 0;
        if (Math.max(minZ, minA + floor + pre) + (M - 1) * Math.max(floor, minMaxc, pre) >= cut) continue;
        work++;
        if (!prices.fit(g, x1, x - 1, inFlight)) break;
        const { f, b, c: cyc, ar } = prices;
        if (Math.max(minZ, minA + cyc) + (M - 1) * Math.max(cyc, minMaxc) >= cut) break;
        for (const nl of list) {
          const a = nl.a + f + b;
          const maxc = Math.max(cyc, nl.maxc);
          const z = Math.max(a + ar, nl.z + f);
          if (j === 0) {
            const v = z + (M - 1) * maxc;
            if (v < cut) {
              cut = v;
              best = { maxc, a, z, x: x1, y: x - 1, pick, inFlight, next: nl };
            }
            continue;
          }
          if (Math.max(z, a + pre) + (M - 1) * Math.max(maxc, pre) >= cut) continue;
          let states = next.get(x1);
          if (!states) {
            states = [];
            next.set(x1, states);
          }
          if (addLabel(states, maxc, a, z)) {
            states.push({ maxc, a, z, x: x1, y: x - 1, pick, inFlight, next: nl });
            labels++;
            work++;
          }
        }
      }
    }
    level = next;
  }
  budget.left -= work;
  return { best, value: cut, labels, aborted: false, bounded: true };
}

/**
 * Whether the layers split into one run per group with every cycle below `cycle`, a makespan
 * needs M cycles of its slowest stage. Each stage in turn takes all the layers it can: a cycle
 * only grows with the layers, so that leaves the most room to the stages after it.
 */
function underCycle(groups: GroupPrices[], prices: Prices, M: number, cycle: number): boolean {
  const L = prices.cm.layers;
  const S = groups.length;
  let x = 1;
  for (let j = 0; j < S; j++) {
    const g = groups[j]!;
    const inFlight = Math.min(S - j, M);
    const last = L - (S - 1 - j);
    if (j === S - 1) return prices.fit(g, x, L, inFlight) && prices.c < cycle;
    let y = x - 1;
    while (y < last && prices.fit(g, x, y + 1, inFlight) && prices.c < cycle) y++;
    if (y < x) return false;
    x = y + 1;
  }
  return true;
}

interface Sequence {
  groups: number[][];
  unused: number[];
}

export interface Refined {
  label: Label;
  m: number;
  value: number;
}

/**
 * Improves `start` (a plan at `m` micro-batches worth `value`, Infinity if it does not fit) by
 * local search; found is null when no neighbour beats it. `usable` are the devices a plan may use.
 */
export function refine(
  start: ChosenStage[],
  m: number,
  value: number,
  usable: readonly number[],
  prices: Map<number, Prices>,
  mOptions: readonly number[],
  budget: Budget,
): { found: Refined | null; labels: number } {
  const inPlan = new Set(start.flatMap((s) => s.members));
  let cur: Sequence = { groups: start.map((s) => [...s.members].sort((a, b) => a - b)), unused: usable.filter((d) => !inPlan.has(d)) };
  const out: { found: Refined | null; labels: number } = { found: null, labels: 0 };
  const seen = new Set<string>();
  const tryOne = (seq: Sequence, M: number): boolean => {
    const key = `${M}:${seq.groups.map((g) => g.join(',')).join('|')}`;
    if (seen.has(key)) return false;
    seen.add(key);
    const p = prices.get(M)!;
    const r = sequenceSearch(
      seq.groups.map((g) => p.group(g)),
      p,
      M,
      value * (1 - 1e-12),
      budget,
    );
    out.labels += r.labels;
    if (!r.best) return false;
    cur = seq;
    m = M;
    value = r.value;
    out.found = { label: r.best, m, value };
    return true;
  };
  if (value === Infinity) tryOne(cur, m);
  for (let improved = true; improved && budget.left > 0; ) {
    improved = false;
    for (const seq of neighbours(cur)) {
      if (budget.left <= 0) break;
      if (tryOne(seq, m)) {
        improved = true;
        break;
      }
    }
    if (!improved)
      for (const M of mOptions)
        if (M !== m && tryOne(cur, M)) {
          improved = true;
          break;
        }
  }
  return out;
}

/** The neighbours of a sequence: stages moved or merged, then devices moved or swapped. */
function* neighbours(s: Sequence): Generator<Sequence> {
  const { groups, unused } = s;
  const S = groups.length;
  const sorted = (g: number[]) => [...g].sort((a, b) => a - b);
  const without = (g: number[], d: number) => g.filter((x) => x !== d);
  for (let i = 0; i < S; i++)
    for (let j = i + 1; j < S; j++) {
      const gs = [...groups];
      gs[i] = groups[j]!;
      gs[j] = groups[i]!;
      yield { groups: gs, unused };
    }
  for (let i = 0; i < S; i++)
    for (let j = 0; j < S; j++) {
      if (j === i || j === i + 1 || j === i - 1) continue;
      const gs = groups.filter((_, k) => k !== i);
      gs.splice(j, 0, groups[i]!);
      yield { groups: gs, unused };
    }
  for (let i = 0; i + 1 < S; i++)
    yield { groups: [...groups.slice(0, i), sorted([...groups[i]!, ...groups[i + 1]!]), ...groups.slice(i + 2)], unused };
  // Every device, from its group or from the unused, to anywhere else.
  const homes = [...groups.map((g, i) => ({ i, g })), { i: -1, g: unused }];
  for (const { i, g } of homes) {
    for (const d of g) {
      const rest = groups.map((h, k) => (k === i ? without(h, d) : h));
      const left = i === -1 ? without(unused, d) : unused;
      const keep = (gs: number[][]) => gs.filter((h) => h.length > 0);
      for (let j = 0; j < S; j++) if (j !== i) yield { groups: keep(rest.map((h, k) => (k === j ? sorted([...h, d]) : h))), unused: left };
      for (let p = 0; p <= S; p++) yield { groups: keep([...rest.slice(0, p), [d], ...rest.slice(p)]), unused: left };
      if (i !== -1) yield { groups: keep(rest), unused: sorted([...unused, d]) };
    }
  }
  for (let a = 0; a < homes.length; a++)
    for (let b = a + 1; b < homes.length; b++) {
      const A = homes[a]!,
        B = homes[b]!;
      for (const d of A.g)
        for (const e of B.g) {
          const swap = (h: number[]) => sorted(h.map((x) => (x === d ? e : x === e ? d : x)));
          yield {
            groups: groups.map((h, k) => (k === A.i || k === B.i ? swap(h) : h)),
            unused: A.i === -1 || B.i === -1 ? swap(unused) : unused,
          };
        }
    }
}
