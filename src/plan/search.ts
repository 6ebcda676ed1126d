/**
 * The planner's search: a dynamic programme over pipeline suffixes. A state is (first layer x of
 * the suffix, the devices the suffix uses, its stage count capped at M); a move prepends one stage
 * (layers x'..x-1 on a group of devices the suffix does not use). The cost model makes this exact:
 * a stage's price depends on its layers, its group and how many micro-batches it keeps in flight
 * (min(stages from it to the end, M), which the capped count gives), not on its neighbours: each
 * member pays its own slowest link to send, so the order of groups along the pipeline matters
 * only through in-flight memory and the makespan's warm-up, drain and all-reduce tail, which the
 * labels carry.
 *
 * Devices come in chains. A stage takes, from each chain, devices just before the ones the suffix
 * already took from that chain's end, so a state is one count per chain. When every chain holds
 * interchangeable devices (same costs, memory and links) nothing is lost: which of them a stage
 * gets cannot change its price. That is the exact search over every device subset and order, with
 * identical devices collapsed into a count. A chain of different devices is the paper's DP over
 * one device order (groups consecutive in it, devices left out at its front). A group's members
 * rank chain by chain; their order changes its price only where the speed split breaks an exact
 * tie between different devices.
 *
 * A state keeps every label (slowest cycle, sum of f + b, drain-and-all-reduce tail) no other
 * label beats on all three: prepending stages never lowers any of them, and the makespan grows with
 * each. Labels and stages that cannot beat `cut` (the best plan so far, or the caller's bound) are
 * dropped: the layers before x' still need their work done by the devices left, at best at the
 * sum of their rates; states whose devices left cannot even hold those layers' weights are too.
 *
 * Work: L x prod_c (n_c + 1) states (chain c holding n_c devices) times min(M, L, N) + 1 stage
 * counts, each trying every group of its free devices (prod_c over its untaken counts) and every
 * first layer x' < x, each against the state's labels: O(L^2 x W x prod_c (n_c + 1)(n_c + 2) / 2
 * x labels) with W = min(M, L, N) + 1. Polynomial for a few classes of identical devices (16 Nanos
 * in one class: 153 state-group pairs per layer), exponential in the number of distinct devices
 * (3^N pairs), which is why the planner runs it only where that stays small.
 */
import type { GroupPrices, Prices } from './prices.ts';

export interface Chain {
  /** Profile indices; stages nearer the pipeline's end take devices nearer the chain's end. */
  devices: readonly number[];
  /** Every device of the chain is interchangeable with the others. */
  uniform: boolean;
}

/** A group as a move: its prices and how many devices it takes from each chain. */
export interface Pick {
  prices: GroupPrices;
  counts: Int32Array;
}

/** A suffix of stages: its first stage and the rest, with the three numbers its makespan needs. */
export interface Label {
  /** Slowest cycle (f + b) of the suffix. */
  maxc: number;
  /** Sum of f + b over the suffix. */
  a: number;
  /** a plus the all-reduce tail: max over its stages s of (AR_s - sum of b before s). */
  z: number;
  x: number;
  y: number;
  pick: Pick | null;
  inFlight: number;
  next: Label | null;
}

/** The states of one set of chains: a state is one count per chain, packed in mixed radix. */
export class Space {
  readonly k: number;
  readonly sizes: Int32Array;
  readonly strides: Int32Array;
  readonly states: number;
  readonly devices: number;
  /** Pairs of a state and a group of devices it leaves free: what a search's work grows with. */
  readonly moves: number;
  private readonly picks = new Map<Prices, Map<number, Pick>>();

  /** `maxGroup`: the most devices one stage may take (1: every stage a single device). */
  constructor(
    readonly chains: readonly Chain[],
    readonly name: string,
    readonly maxGroup = Infinity,
  ) {
    this.k = chains.length;
    this.sizes = Int32Array.from(chains, (c) => c.devices.length);
    this.strides = new Int32Array(this.k);
    let states = 1,
      moves = 1;
    for (let c = 0; c < this.k; c++) {
      this.strides[c] = states;
      states *= this.sizes[c]! + 1;
      moves *= ((this.sizes[c]! + 1) * (this.sizes[c]! + 2)) / 2;
    }
    this.states = states;
    this.moves = moves;
    this.devices = this.sizes.reduce((s, n) => s + n, 0);
  }

  /** The group a state `used` (counts per chain) gets when it takes `take` more from each chain. */
  pick(prices: Prices, used: Int32Array, take: Int32Array): Pick {
    let cache = this.picks.get(prices);
    if (!cache) {
      cache = new Map();
      this.picks.set(prices, cache);
    }
    let code = 0;
    for (let c = 0; c < this.k; c++) {
      const n = this.sizes[c]!;
      const start = this.chains[c]!.uniform ? 0 : n - used[c]! - take[c]!;
      code = code * ((n + 1) * (n + 1)) + start * (n + 1) + take[c]!;
    }
    let p = cache.get(code);
    if (!p) {
      const members: number[] = [];
      for (let c = 0; c < this.k; c++) {
        const chain = this.chains[c]!;
        const start = chain.uniform ? 0 : this.sizes[c]! - used[c]! - take[c]!;
        for (let i = 0; i < take[c]!; i++) members.push(chain.devices[start + i]!);
      }
      p = { prices: prices.group(members), counts: take.slice() };
      cache.set(code, p);
    }
    return p;
  }
}

export interface SearchResult {
  best: Label | null;
  value: number;
  labels: number;
  aborted: boolean;
  /** Something was dropped for not beating the cut: a higher cut may find more. */
  bounded: boolean;
}

/** Work units (stage prices looked up plus labels made) searches may still spend. */
export interface Budget {
  left: number;
}

/**
 * The least-makespan plan of `M` micro-batches over `space` whose makespan is below `cut`, or
 * null if there is none. Gives up (aborted) when `budget` runs out.
 */
export function search(space: Space, prices: Prices, M: number, cut: number, budget: Budget): SearchResult {
  const L = prices.cm.layers;
  const rows = prices.rows;
  const { k: K, sizes, strides } = space;
  const W = Math.min(M, L, space.devices) + 1;
  const levels: (Map<number, Label[]> | undefined)[] = new Array(L + 2);
  levels[L + 1] = new Map([[0, [{ maxc: 0, a: 0, z: 0, x: L + 1, y: L, pick: null, inFlight: 0, next: null }]]]);
  const used = new Int32Array(K);
  const take = new Int32Array(K);
  const freeRate = new Float64Array(L + 2);
  let best: Label | null = null;
  let labels = 0;
  let work = 0;
  let bounded = false;
  let freeBytes = 0;
  const decode = (u: number) => {
    let free = 0;
    freeBytes = 0;
    for (let c = 0; c < K; c++) {
      used[c] = Math.floor(u / strides[c]!) % (sizes[c]! + 1);
      take[c] = 0;
      free += sizes[c]! - used[c]!;
      for (let i = 0; i < sizes[c]! - used[c]!; i++) freeBytes += prices.cm.profile.devices[space.chains[c]!.devices[i]!]!.memoryBytes;
    }
    return free;
  };
  // Rates of a state's free devices for each prefix, filled as its moves ask for them.
  const freeRateAt = (x1: number): number => {
    let r = freeRate[x1]!;
    if (Number.isNaN(r)) {
      r = 0;
      for (let c = 0; c < K; c++) {
        const chain = space.chains[c]!;
        const n = sizes[c]! - used[c]!;
        if (chain.uniform) r += n > 0 ? n * prices.prefixRate[chain.devices[0]! * (L + 2) + x1]! : 0;
        else for (let i = 0; i < n; i++) r += prices.prefixRate[chain.devices[i]! * (L + 2) + x1]!;
      }
      freeRate[x1] = r;
    }
    return r;
  };
  for (let x = L + 1; x >= 2; x--) {
    const level = levels[x];
    if (!level) continue;
    levels[x] = undefined;
    for (const [slot, list] of level) {
      if (work > budget.left) {
        budget.left -= work;
        return { best, value: cut, labels, aborted: true, bounded };
      }
      const u = Math.floor(slot / W);
      const kc = slot - u * W;
      const free = decode(u);
      const inFlight = Math.min(kc + 1, M);
      const nextSlotK = Math.min(kc + 1, W - 1);
      let minZ = Infinity,
        minA = Infinity,
        minMaxc = Infinity;
      for (const lb of list) {
        minZ = Math.min(minZ, lb.z);
        minA = Math.min(minA, lb.a);
        minMaxc = Math.min(minMaxc, lb.maxc);
      }
      freeRate.fill(NaN);
      const preAll = x > 1 ? (rows * prices.prefixWork[x]!) / freeRateAt(x) : 0;
      if (Math.max(minZ, minA + preAll) + (M - 1) * Math.max(minMaxc, preAll) >= cut) {
        bounded = true;
        continue;
      }
      if (prices.prefixBytes[x]! > freeBytes) continue;
      // Every non-empty group of free devices, as counts per chain (an odometer over take).
      for (let group = nextGroup(take, used, sizes, strides, u); group; group = nextGroup(take, used, sizes, strides, u)) {
        const { m, target } = group;
        if (m > rows || m > space.maxGroup) continue;
        work++;
        const rest = free - m;
        const pick = space.pick(prices, used, take);
        const g = pick.prices;
        const targetSlot = target * W + nextSlotK;
        // With no device left for them, the layers before x' must be none; and the more layers
        // are left to the devices left, the longer they take (at their best rate on any layer).
        let top = 1;
        if (rest > 0) {
          const perWork = rows / (freeRateAt(L + 1) - prices.rate(g, L + 1));
          let lo = 1,
            hi = x;
          while (hi - lo > 1) {
            const mid = (lo + hi) >> 1;
            const pre = perWork * prices.prefixWork[mid]!;
            if (Math.max(minZ, minA + pre) + (M - 1) * Math.max(minMaxc, pre) >= cut) hi = mid;
            else lo = mid;
          }
          if (hi < x) bounded = true;
          top = lo;
        }
        for (let x1 = top; x1 >= 1; x1--) {
          work++;
          const floor = prices.floor(g, x1, x - 1);
          const head = Math.max(minZ, minA + floor);
          if (head + (M - 1) * Math.max(floor, minMaxc) >= cut) {
            bounded = true;
            break;
          }
          if (prices.prefixBytes[x1]! > freeBytes - g.memoryBytes) continue;
          const pre = x1 > 1 ? (rows * prices.prefixWork[x1]!) / (freeRateAt(x1) - prices.rate(g, x1)) : 0;
          if (Math.max(minZ, minA + floor + pre) + (M - 1) * Math.max(floor, minMaxc, pre) >= cut) {
            bounded = true;
            continue;
          }
          // More layers need more memory.
          if (!prices.fit(g, x1, x - 1, inFlight)) break;
          const { f, b, c: cyc, ar } = prices;
          // The cycle grows with the layers too (the split is the least-cycle one), and f + b >= cycle.
          if (Math.max(minZ, minA + cyc) + (M - 1) * Math.max(cyc, minMaxc) >= cut) {
            bounded = true;
            break;
          }
          for (const nl of list) {
            const a = nl.a + f + b;
            const maxc = Math.max(cyc, nl.maxc);
            const z = Math.max(a + ar, nl.z + f);
            if (x1 === 1) {
              const v = z + (M - 1) * maxc;
              if (v < cut) {
                cut = v;
                best = { maxc, a, z, x: x1, y: x - 1, pick, inFlight, next: nl };
              } else bounded = true;
              continue;
            }
            if (Math.max(z, a + pre) + (M - 1) * Math.max(maxc, pre) >= cut) {
              bounded = true;
              continue;
            }
            let into = levels[x1];
            if (!into) {
              into = new Map();
              levels[x1] = into;
            }
            let states = into.get(targetSlot);
            if (!states) {
              states = [];
              into.set(targetSlot, states);
            }
            if (addLabel(states, maxc, a, z)) {
              states.push({ maxc, a, z, x: x1, y: x - 1, pick, inFlight, next: nl });
              labels++;
              work++;
            }
          }
        }
      }
    }
  }
  budget.left -= work;
  return { best, value: cut, labels, aborted: false, bounded };
}

/** Whether (maxc, a, z) is beaten by no label of `list`; if so, drops the labels it beats. */
export function addLabel(list: Label[], maxc: number, a: number, z: number): boolean {
  for (const o of list) if (o.maxc <= maxc && o.a <= a && o.z <= z) return false;
  let w = 0;
  for (const o of list) if (!(maxc <= o.maxc && a <= o.a && z <= o.z)) list[w++] = o;
  list.length = w;
  return true;
}

/** A found plan's stages as layer ranges on devices (profile indices in rank order). */
export interface ChosenStage {
  from: number;
  to: number;
  members: number[];
  inFlight: number;
}

/**
 * The stages of a plan found over `chains` (null: its groups name their devices): each chain gives
 * its last devices to the last stages, as the search took them.
 */
export function stagesOf(label: Label, chains: readonly Chain[] | null): ChosenStage[] {
  const labels: Label[] = [];
  for (let lb: Label | null = label; lb?.pick; lb = lb.next) labels.push(lb);
  const taken = chains ? chains.map(() => 0) : [];
  const stages: ChosenStage[] = [];
  for (let s = labels.length - 1; s >= 0; s--) {
    const { x, y, pick, inFlight } = labels[s]!;
    let members = pick!.prices.members;
    if (chains) {
      members = [];
      chains.forEach((chain, c) => {
        const n = pick!.counts[c]!;
        const start = chain.devices.length - taken[c]! - n;
        members.push(...chain.devices.slice(start, start + n));
        taken[c] = taken[c]! + n;
      });
    }
    stages.unshift({ from: x, to: y, members, inFlight });
  }
  return stages;
}

/**
 * Steps `take` (devices per chain in a group, all zero to start) to the next non-empty group of
 * the free devices (at most sizes[c] - used[c] from chain c): an odometer over every such group.
 * Returns the group's size and the used-set code it leads to from `u`, or null once all are seen.
 */
export function nextGroup(
  take: Int32Array,
  used: Int32Array,
  sizes: ArrayLike<number>,
  strides: ArrayLike<number>,
  u: number,
): { m: number; target: number } | null {
  const K = take.length;
  let c = 0;
  while (c < K && take[c] === sizes[c]! - used[c]!) take[c++] = 0;
  if (c === K) return null;
  take[c] = take[c]! + 1;
  let m = 0,
    target = u;
  for (let i = 0; i < K; i++) {
    m += take[i]!;
    target += take[i]! * strides[i]!;
  }
  return { m, target };
}
