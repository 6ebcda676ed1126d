/**
 * Epoch-1 planner: splits the backbone into stages of consecutive layers, gives each stage a
 * group of consecutive devices (data parallel inside the group, micro-batch split by speed) and
 * picks the number of micro-batches, minimising the estimated 1F1B step time (`stepMakespan`).
 *
 * The search is the paper's dynamic programme over (layers, ordered devices, stages), run over
 * suffixes so that a stage knows how many stages follow it (its in-flight micro-batches, hence
 * its memory). It is exact for the makespan, not just the bottleneck: a suffix keeps every label
 * (slowest cycle, sum of f + b, drain-and-all-reduce tail) that no other label beats on all three,
 * and labels that cannot beat the best plan found so far are dropped. A cheap pass keeping one
 * label per state seeds that bound.
 *
 * Device orders considered: the profile's (topology) order, fastest first and slowest first
 * (speed = per-sample forward + backward time over all layers). Groups are consecutive in the
 * order. A plan may leave out devices at the front of an order (the slowest ones, in the
 * slowest-first order) when using them does not pay or they fit nowhere.
 */
import { CostModel, memberPeakBytes, stepMakespan, type Makespan, type MemoryShortfall, type StageCost, type StageQuote } from './cost.ts';
import { boundaryBytesPerSample, type Profile } from './profile.ts';

export type OrderingName = 'topology' | 'fastest-first' | 'slowest-first';

export interface PlanOptions {
  /** Samples per step (mini-batch); default profile.training.batchSize. */
  batchSize?: number;
  /** Samples per epoch, for the epoch estimate; default profile.training.samples. */
  samples?: number;
  /** Micro-batch counts to consider; default every divisor of the batch size. */
  microBatchOptions?: number[];
  /** Device orders to consider; default all three. */
  orderings?: OrderingName[];
}

export interface PlannedDevice {
  name: string;
  /** Rows of each micro-batch this device processes (its sample ids travel with them). */
  rows: number;
  fwdMs: number;
  bwdMs: number;
  peakBytes: number;
}

export interface PlannedStage {
  index: number;
  /** Backbone layers held, 1-based inclusive; the first stage also embeds, the last holds the head. */
  layers: { from: number; to: number };
  devices: PlannedDevice[];
  /** Micro-batches this stage keeps for backward under 1F1B: min(S - index, M). */
  inFlight: number;
  fwdMs: number;
  bwdMs: number;
  cycleMs: number;
  allReduceMs: number;
}

/** The chosen epoch-1 placement and what it is predicted to cost. */
export interface StagePlan {
  ordering: OrderingName;
  stages: PlannedStage[];
  unusedDevices: string[];
  batchSize: number;
  microBatches: number;
  microBatchSize: number;
  predicted: { stepMs: number; stepsPerEpoch: number | null; epochMs: number | null; parts: Makespan };
  peakBytesPerDevice: Record<string, number>;
  /** Bytes sent per step: b and a forward plus dL/da backward between stages, and ring all-reduce traffic. */
  bytesPerStep: { activations: number; allReduce: number; total: number };
  search: { orderings: number; microBatchOptions: number[]; labels: number; ms: number };
}

/** No placement fits in memory; `lines` say which device of which stage lacks how much in the tightest placement. */
export class InfeasiblePlanError extends Error {
  override name = 'InfeasiblePlanError';
  constructor(readonly lines: string[]) { super(lines.join('; ')); }
}

/** The device orders the planner tries, as profile indices, without duplicates. */
export function deviceOrderings(profile: Profile, names: readonly OrderingName[] = ['topology', 'fastest-first', 'slowest-first']): { name: OrderingName; order: number[] }[] {
  const time = profile.devices.map((d) => d.layers.reduce((s, l) => s + l.fwd.perSampleMs + l.bwd.perSampleMs, 0));
  const topo = profile.devices.map((_, i) => i);
  const out: { name: OrderingName; order: number[] }[] = [];
  for (const name of names) {
    const order = name === 'topology' ? topo
      : [...topo].sort((a, b) => (name === 'fastest-first' ? time[a]! - time[b]! : time[b]! - time[a]!) || a - b);
    if (!out.some((o) => o.order.every((v, i) => v === order[i]))) out.push({ name, order });
  }
  return out;
}

/** Every micro-batch count that divides the batch evenly. */
export function microBatchOptions(batchSize: number): number[] {
  const out: number[] = [];
  for (let m = 1; m <= batchSize; m++) if (batchSize % m === 0) out.push(m);
  return out;
}

/**
 * A suffix of stages: its first stage (layers x..y on order[devStart .. devStart+m), keeping
 * `inFlight` micro-batches) and the rest, with the three numbers its makespan needs.
 */
interface Label {
  /** Slowest cycle (f + b) of the suffix. */
  maxc: number;
  /** Sum of f + b over the suffix. */
  a: number;
  /** a plus the all-reduce tail: max over its stages s of (AR_s - sum of b before s). */
  z: number;
  x: number; y: number; devStart: number; m: number; inFlight: number;
  next: Label | null;
}

interface Run { best: Label | null; labels: number }

interface Chosen { label: Label; ordering: OrderingName; order: number[]; m: number; value: number }

class Search {
  readonly n: number;
  readonly l: number;
  /** Quotes ignoring memory, by (layer range, device range); undefined = not priced yet. */
  private readonly memo: (StageQuote | null | undefined)[];
  private readonly capped = new Map<number, StageQuote | null>();
  /** prefixWork[x]: rows x sum over layers 1..x-1 of the least per-sample f + b among the devices. */
  private readonly prefixWork: Float64Array;
  /** perSample[i * (l + 1) + y]: per-sample f + b of layers 1..y on order[i], compute only. */
  private readonly perSample: Float64Array;

  constructor(private readonly cm: CostModel, readonly order: number[], readonly m: number, private readonly rows: number) {
    this.n = order.length;
    this.l = cm.layers;
    this.memo = new Array<StageQuote | null | undefined>(((this.l * (this.l + 1)) / 2) * ((this.n * (this.n + 1)) / 2)).fill(undefined);
    this.prefixWork = new Float64Array(this.l + 2);
    const devices = order.map((i) => cm.profile.devices[i]!);
    for (let x = 2; x <= this.l + 1; x++) {
      let least = Infinity;
      for (const d of devices) least = Math.min(least, d.layers[x - 2]!.fwd.perSampleMs + d.layers[x - 2]!.bwd.perSampleMs);
      this.prefixWork[x] = this.prefixWork[x - 1]! + rows * least;
    }
    this.perSample = new Float64Array(this.n * (this.l + 1));
    devices.forEach((d, i) => {
      for (let y = 1; y <= this.l; y++) {
        const c = d.layers[y - 1]!;
        this.perSample[i * (this.l + 1) + y] = this.perSample[i * (this.l + 1) + y - 1]! + c.fwd.perSampleMs + c.bwd.perSampleMs;
      }
    });
  }

  /**
   * A lower bound of the cycle of layers x..y on order[devStart .. devStart+m), without pricing
   * it: the rows spread fluidly over the members' compute speeds (split, fixed costs, transfers,
   * embedding and head only add to it). Grows with y.
   */
  private cycleFloor(x: number, y: number, devStart: number, m: number): number {
    const stride = this.l + 1;
    let speed = 0;
    for (let i = devStart; i < devStart + m; i++) speed += 1 / (this.perSample[i * stride + y]! - this.perSample[i * stride + x - 1]!);
    return this.rows / speed;
  }

  /** Index of (layers x..y, devices devStart..devStart+m-1): pairs x <= y and devStart + m <= n, packed. */
  private key(x: number, y: number, devStart: number, m: number): number {
    const span = ((y - 1) * y) / 2 + (x - 1);
    const group = ((devStart + m - 1) * (devStart + m)) / 2 + devStart;
    return span * ((this.n * (this.n + 1)) / 2) + group;
  }

  /** Stage x..y on order[devStart .. devStart+m) ignoring memory; null if the group exceeds the rows. */
  private base(x: number, y: number, devStart: number, m: number): StageQuote | null {
    const key = this.key(x, y, devStart, m);
    let q = this.memo[key];
    if (q === undefined) {
      q = this.cm.quote(x, y, this.order, devStart, m, this.rows, null);
      this.memo[key] = q;
    }
    return q;
  }

  /** The same stage holding `inFlight` micro-batches: the speed split if it fits, else one capped by memory, else null. */
  private fitted(base: StageQuote, x: number, y: number, devStart: number, m: number, inFlight: number): StageQuote | null {
    if (inFlight <= base.maxInFlight) return base;
    const key = this.key(x, y, devStart, m) * (this.n + 1) + inFlight;
    let q = this.capped.get(key);
    if (q === undefined) {
      q = this.cm.quote(x, y, this.order, devStart, m, this.rows, inFlight);
      this.capped.set(key, q);
    }
    return q;
  }

  /**
   * Suffix DP over states (first layer x, last nd devices of the order, k stages). exact: keeps
   * every label no other label of its state beats on all three numbers; otherwise one label (least
   * makespan so far) per state. Either way a label is dropped when a lower bound of every plan
   * completing it reaches `bound`: prepending stages never lowers z or maxc, and the stages
   * before the suffix share the layers before x over N - nd devices.
   */
  run(exact: boolean, bound: number): Run {
    const { n: N, l: L, m: M } = this;
    const W = N + 1;
    const states = new Array<Label[] | null>((L + 2) * W * W).fill(null);
    const minZ = new Float64Array((L + 2) * W * W).fill(Infinity);
    const minMaxc = new Float64Array((L + 2) * W * W).fill(Infinity);
    // The same minima over every stage count k, by (x, nd).
    const anyZ = new Float64Array((L + 2) * W).fill(Infinity);
    const anyMaxc = new Float64Array((L + 2) * W).fill(Infinity);
    const at = (x: number, nd: number, k: number) => (x * W + nd) * W + k;
    let labels = 0;
    for (let x = L; x >= 1; x--) {
      // A suffix starting after layer 1 must leave a device for the layers before it.
      for (let nd = 1; nd <= (x === 1 ? N : N - 1); nd++) {
        const devStart = N - nd;
        const prefixCycle = x === 1 ? 0 : this.prefixWork[x]! / (N - nd);
        for (let m = 1; m <= nd; m++) {
          const whole = m === nd;
          for (let y = whole ? L : x; y <= (whole ? L : L - 1); y++) {
            // The stage x..y on the first m of the suffix's devices, then k - 1 stages on the rest.
            const floor = Math.max(this.cycleFloor(x, y, devStart, m), prefixCycle);
            if (M * floor >= bound) break;
            if (!whole && anyZ[(y + 1) * W + nd - m]! + (M - 1) * Math.max(floor, anyMaxc[(y + 1) * W + nd - m]!) >= bound) continue;
            const base = this.base(x, y, devStart, m);
            if (base === null) break;
            // More layers on the same devices only lengthen the cycle, and f + b >= cycle.
            if (M * Math.max(base.cycleMs, prefixCycle) >= bound) break;
            const kMax = whole ? 1 : Math.min(nd - m, L - y) + 1;
            for (let k = whole ? 1 : 2; k <= kMax; k++) {
              const restSlot = whole ? -1 : at(y + 1, nd - m, k - 1);
              const rest = whole ? null : states[restSlot];
              if (!whole && (!rest || rest.length === 0)) continue;
              const s = this.fitted(base, x, y, devStart, m, Math.min(k, M));
              if (!s) continue;
              if (rest && minZ[restSlot]! + s.fwdMs + (M - 1) * Math.max(s.cycleMs, minMaxc[restSlot]!, prefixCycle) >= bound) continue;
              const fb = s.fwdMs + s.bwdMs;
              const slot = at(x, nd, k);
              const count = rest ? rest.length : 1;
              for (let r = 0; r < count; r++) {
                const nl = rest ? rest[r]! : null;
                const a = (nl ? nl.a : 0) + fb;
                const maxc = nl ? Math.max(s.cycleMs, nl.maxc) : s.cycleMs;
                const z = nl ? Math.max(a + s.allReduceMs, nl.z + s.fwdMs) : a + s.allReduceMs;
                if (z + (M - 1) * Math.max(maxc, prefixCycle) >= bound) continue;
                let list = states[slot]!;
                if (list === null) { list = []; states[slot] = list; }
                if (!exact) {
                  if (list.length > 0 && z + (M - 1) * maxc >= list[0]!.z + (M - 1) * list[0]!.maxc) continue;
                  list.length = 0;
                } else {
                  let dominated = false;
                  for (const o of list) if (o.maxc <= maxc && o.a <= a && o.z <= z) { dominated = true; break; }
                  if (dominated) continue;
                  let w = 0;
                  for (const o of list) if (!(maxc <= o.maxc && a <= o.a && z <= o.z)) list[w++] = o;
                  list.length = w;
                }
                list.push({ maxc, a, z, x, y, devStart, m, inFlight: Math.min(k, M), next: nl });
                minZ[slot] = Math.min(minZ[slot]!, z);
                minMaxc[slot] = Math.min(minMaxc[slot]!, maxc);
                anyZ[x * W + nd] = Math.min(anyZ[x * W + nd]!, z);
                anyMaxc[x * W + nd] = Math.min(anyMaxc[x * W + nd]!, maxc);
                labels++;
              }
            }
          }
        }
      }
    }
    let best: Label | null = null;
    let bestValue = Infinity;
    for (let nd = 1; nd <= N; nd++) {
      for (let k = 1; k <= Math.min(nd, L); k++) {
        for (const lb of states[at(1, nd, k)] ?? []) {
          const v = lb.z + (M - 1) * lb.maxc;
          if (v < bestValue) { best = lb; bestValue = v; }
        }
      }
    }
    return { best, labels };
  }
}

/**
 * Plans epoch 1 for `profile`: the feasible placement (device order, stage count, layer ranges,
 * groups, micro-batch count) with the least estimated 1F1B step time. Throws
 * InfeasiblePlanError when nothing fits in memory.
 */
export function planPipeline(profile: Profile, options: PlanOptions = {}): StagePlan {
  const started = performance.now();
  const batchSize = options.batchSize ?? profile.training?.batchSize;
  if (!batchSize || !Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batch size unknown: give options.batchSize or profile.training.batchSize');
  const samples = options.samples ?? profile.training?.samples ?? null;
  const mOptions = (options.microBatchOptions ?? microBatchOptions(batchSize)).filter((m) => batchSize % m === 0);
  if (mOptions.length === 0) throw new RangeError(`no micro-batch count divides the batch size ${batchSize}`);
  const cm = new CostModel(profile);
  const orderings = deviceOrderings(profile, options.orderings);
  const found: { best: Chosen | null } = { best: null };
  let labels = 0;
  const consider = (label: Label | null, ordering: OrderingName, order: number[], m: number) => {
    if (!label) return;
    const value = label.z + (m - 1) * label.maxc;
    if (!found.best || value < found.best.value) found.best = { label, ordering, order, m, value };
  };
  // One label per state first, over every order and micro-batch count: a good plan early makes
  // the exact pass prune hard.
  const searches = orderings.flatMap(({ name, order }) => mOptions.map((m) => ({ name, search: new Search(cm, order, m, batchSize / m) })));
  for (const { name, search } of searches) {
    const seed = search.run(false, found.best?.value ?? Infinity);
    labels += seed.labels;
    consider(seed.best, name, search.order, search.m);
  }
  for (const { name, search } of searches) {
    const exact = search.run(true, found.best?.value ?? Infinity);
    labels += exact.labels;
    consider(exact.best, name, search.order, search.m);
  }
  if (!found.best) throw new InfeasiblePlanError(explainInfeasible(cm, orderings, mOptions, batchSize));
  return buildPlan(cm, profile, found.best, batchSize, samples, { orderings: orderings.length, microBatchOptions: mOptions, labels, ms: performance.now() - started });
}

function buildPlan(cm: CostModel, profile: Profile, best: Chosen, batchSize: number, samples: number | null, search: StagePlan['search']): StagePlan {
  const costs: StageCost[] = [];
  for (let lb: Label | null = best.label; lb; lb = lb.next) {
    const { x, y, devStart, m, inFlight } = lb;
    const c = cm.stage(x, y, best.order.slice(devStart, devStart + m), batchSize / best.m, inFlight);
    if (!c || !('members' in c)) throw new Error(`planner: stage ${x}-${y} no longer prices as it did in the search`);
    costs.push(c);
  }
  const S = costs.length;
  const M = best.m;
  const peakBytesPerDevice: Record<string, number> = {};
  const stages: PlannedStage[] = costs.map((c, index) => {
    const inFlight = Math.min(S - index, M);
    const devices = c.members.map((mb) => {
      const peakBytes = memberPeakBytes(mb, inFlight);
      peakBytesPerDevice[mb.device] = peakBytes;
      return { name: mb.device, rows: mb.rows, fwdMs: mb.fwdMs, bwdMs: mb.bwdMs, peakBytes };
    });
    return { index, layers: { from: c.from, to: c.to }, devices, inFlight, fwdMs: c.fwdMs, bwdMs: c.bwdMs, cycleMs: c.cycleMs, allReduceMs: c.allReduceMs };
  });
  const used = new Set(Object.keys(peakBytesPerDevice));
  let activations = 0;
  for (let s = 0; s + 1 < S; s++) {
    const b = boundaryBytesPerSample(profile.model, costs[s]!.to);
    activations += batchSize * (b.fwd + b.bwd);
  }
  const allReduce = costs.reduce((sum, c) => sum + 2 * (c.members.length - 1) * c.gradBytes, 0);
  const parts = stepMakespan(costs, M);
  const stepsPerEpoch = samples === null ? null : Math.ceil(samples / batchSize);
  return {
    ordering: best.ordering,
    stages,
    unusedDevices: best.order.map((i) => profile.devices[i]!.name).filter((n) => !used.has(n)),
    batchSize,
    microBatches: M,
    microBatchSize: batchSize / M,
    predicted: { stepMs: parts.stepMs, stepsPerEpoch, epochMs: stepsPerEpoch === null ? null : stepsPerEpoch * parts.stepMs, parts },
    peakBytesPerDevice,
    bytesPerStep: { activations, allReduce, total: activations + allReduce },
    search,
  };
}

/**
 * Finds the placement whose worst member overshoots its memory the least (a min-max DP over the
 * same candidates) and says, per stage of it, who lacks how much.
 */
function explainInfeasible(cm: CostModel, orderings: { name: OrderingName; order: number[] }[], mOptions: number[], batchSize: number): string[] {
  const L = cm.layers;
  type Node = { worst: number; stage: StageCost | { from: number; to: number; shortfall: MemoryShortfall }; next: Node | null };
  let best: Node | null = null;
  for (const { order } of orderings) {
    for (const M of mOptions) {
      const rows = batchSize / M;
      const N = order.length;
      const W = N + 1;
      const states: (Node | undefined)[] = [];
      const at = (x: number, nd: number, k: number) => (x * W + nd) * W + k;
      const price = (x: number, y: number, devStart: number, m: number, inFlight: number): Node['stage'] & { over: number } | null => {
        const c = cm.stage(x, y, order.slice(devStart, devStart + m), rows, inFlight);
        if (!c) return null;
        if ('shortfall' in c) return { from: x, to: y, shortfall: c.shortfall, over: c.shortfall.needBytes - c.shortfall.haveBytes };
        return { ...c, over: Math.max(...c.members.map((mb) => memberPeakBytes(mb, inFlight) - mb.budgetBytes)) };
      };
      for (let x = L; x >= 1; x--) {
        for (let nd = 1; nd <= N; nd++) {
          const put = (slot: number, node: Node) => { const o = states[slot]; if (!o || node.worst < o.worst) states[slot] = node; };
          const whole = price(x, L, N - nd, nd, 1);
          if (whole) put(at(x, nd, 1), { worst: whole.over, stage: whole, next: null });
          for (let y = x; y < L; y++) {
            for (let m = 1; m < nd; m++) {
              for (let k = 2; k <= Math.min(nd - m, L - y) + 1; k++) {
                const rest = states[at(y + 1, nd - m, k - 1)];
                if (!rest) continue;
                const s = price(x, y, N - nd, m, Math.min(k, M));
                if (s) put(at(x, nd, k), { worst: Math.max(s.over, rest.worst), stage: s, next: rest });
              }
            }
          }
        }
      }
      for (let nd = 1; nd <= N; nd++) for (let k = 1; k <= Math.min(nd, L); k++) {
        const node = states[at(1, nd, k)];
        if (node && (!best || node.worst < best.worst)) best = node;
      }
    }
  }
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const total = cm.profile.devices.length;
  const lines = [`no placement of ${L} layers on ${total} device${total === 1 ? '' : 's'} fits in memory`];
  if (!best) return lines;
  let s = 0;
  for (let node: Node | null = best; node; node = node.next, s++) {
    const st = node.stage;
    if ('shortfall' in st) {
      const f = st.shortfall;
      lines.push(`in the tightest placement, stage ${s} (layers ${st.from}-${st.to}) on ${f.device} needs ${mb(f.needBytes)} but has ${mb(f.haveBytes)} (short ${mb(f.needBytes - f.haveBytes)})`);
    }
  }
  return lines;
}
