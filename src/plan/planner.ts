/**
 * Epoch-1 planner: splits the backbone into stages of consecutive layers, gives each stage a
 * group of devices (data parallel inside the group, micro-batch split by speed) and picks the
 * number of micro-batches, minimising the estimated 1F1B step time (`stepMakespan`).
 *
 * Any subset of the devices may be used, in any order along the pipeline; devices that fit
 * nowhere are left out first. Three searches (search.ts, refine.ts), each pruning with the best
 * plan the ones before found:
 * - the paper's DP over its three device orders;
 * - unless the exact search is cheap: on up to SINGLES_DEVICES devices, the exact search
 *   restricted to one device per stage (every subset and order of single devices: 2^N states per
 *   layer, not 3^N), then a local search from the best plan so far (moving devices between
 *   groups, stages and the unused); these stand when the exact search would take too long;
 * - the exact search over every device subset and order, with identical devices collapsed into a
 *   count (eight identical Nanos are 9 states per layer, not 256), when that is small enough and
 *   finishes within its budget. Then the plan is the cost model's optimum (`search.exact`); cut
 *   short, it still hands over the best plan it found.
 *
 * A search with no plan to prune with asks for a plan below a guess near a lower bound and raises
 * the guess until one turns up: the first plan found below a guess is the optimum of that search,
 * since every cheaper plan was in reach.
 */
import { CostModel, type Makespan } from './cost.ts';
import { chainOf, deviceClasses, deviceOrderings, usableDevices, type OrderingName } from './devices.ts';
import { buildPlan, explainInfeasible } from './plan-report.ts';
import { Bounds, Prices } from './prices.ts';
import type { Profile } from './profile.ts';
import { refine } from './refine.ts';
import { search, Space, stagesOf, type Budget, type Chain, type ChosenStage, type Label } from './search.ts';
import { planShape, type PlanShape } from './shapes.ts';

export { deviceOrderings, type OrderingName } from './devices.ts';

export interface PlanOptions {
  /** Samples per step (mini-batch); default profile.training.batchSize. */
  batchSize?: number;
  /** Samples per epoch, for the epoch estimate; default profile.training.samples. */
  samples?: number;
  /** Micro-batch counts to consider; default every divisor of the batch size. */
  microBatchOptions?: number[];
  /**
   * Only the paper's DP over these device orders (groups consecutive in the order, devices left out
   * at its front), after devices that fit nowhere are left out; default: every device subset and order.
   */
  orderings?: OrderingName[];
  /** A plan of this shape instead of the search's choice (shapes.ts); default 'auto'. */
  shape?: 'auto' | PlanShape;
  /** Work the exact search may spend before the other searches' plan stands (Infinity: always to the end, however long). */
  exactBudget?: number;
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
  /** 'searched' unless the options restricted the search to device orders: then the order used. */
  ordering: OrderingName | 'searched';
  stages: PlannedStage[];
  unusedDevices: string[];
  batchSize: number;
  microBatches: number;
  microBatchSize: number;
  predicted: { stepMs: number; stepsPerEpoch: number | null; epochMs: number | null; parts: Makespan };
  peakBytesPerDevice: Record<string, number>;
  /** Bytes sent per step: b and a forward plus dL/da backward between stages, and ring all-reduce traffic. */
  bytesPerStep: { activations: number; allReduce: number; total: number };
  /**
   * orderings: searches run (one per device order, one for the exact search); exact: the plan is
   * the cost model's optimum over every device subset and order (false after the local search
   * alone, or with given orders).
   */
  search: { orderings: number; microBatchOptions: number[]; labels: number; ms: number; exact: boolean };
  /** Set when the plan has a shape asked for (training.plan), not the search's choice. */
  shape?: PlanShape;
}

/** No placement fits in memory; `lines` say which device of which stage lacks how much in the tightest placement. */
export class InfeasiblePlanError extends Error {
  override name = 'InfeasiblePlanError';
  constructor(readonly lines: string[]) {
    super(lines.join('; '));
  }
}

/** What a run's settings ask of the planner: `charon plan TOPOLOGY` and `charon launch` both plan with this. */
export function planOptionsForRun(spec: {
  batch: number;
  samples?: number;
  microBatches?: number;
  plan?: 'auto' | PlanShape;
}): PlanOptions {
  return {
    ...(spec.plan && spec.plan !== 'auto' ? { shape: spec.plan } : {}),
    batchSize: spec.batch,
    ...(spec.samples !== undefined ? { samples: spec.samples } : {}),
    ...(spec.microBatches !== undefined ? { microBatchOptions: [spec.microBatches] } : {}),
  };
}

/** Every micro-batch count that divides the batch evenly. */
export function microBatchOptions(batchSize: number): number[] {
  const out: number[] = [];
  for (let m = 1; m <= batchSize; m++) if (batchSize % m === 0) out.push(m);
  return out;
}

/** Moves times layers of the exact search's space up to which it is tried. */
const EXACT_MOVES = 600_000;
/** Up to this many it is cheap enough to run without a local search first. */
const SMALL_MOVES = 5_000;
/** Work units (groups tried, layer ranges tried, labels made) the exact search may spend before the local search's plan stands. */
const EXACT_BUDGET = 2_000_000;
/** Devices up to which pipelines of single devices are searched before the local search (2^N subsets). */
const SINGLES_DEVICES = 9;
/** Work units that search may spend. */
const SINGLES_BUDGET = 4_000_000;
/** Work units (layer ranges priced, labels made) the local search may spend. */
const REFINE_BUDGET = 1_000_000;

interface Found {
  label: Label;
  chains: readonly Chain[] | null;
  name: string;
  m: number;
  value: number;
}

/**
 * Plans epoch 1 for `profile`: the feasible placement (device subset and order, stage count,
 * layer ranges, groups, micro-batch count) with the least estimated 1F1B step time. Throws
 * InfeasiblePlanError when nothing fits in memory.
 */
export function planPipeline(profile: Profile, options: PlanOptions = {}): StagePlan {
  const started = performance.now();
  const batchSize = options.batchSize ?? profile.training?.batchSize;
  if (!batchSize || !Number.isInteger(batchSize) || batchSize < 1)
    throw new RangeError('batch size unknown: give options.batchSize or profile.training.batchSize');
  const samples = options.samples ?? profile.training?.samples ?? null;
  const mOptions = (options.microBatchOptions ?? microBatchOptions(batchSize)).filter((m) => batchSize % m === 0);
  if (mOptions.length === 0) throw new RangeError(`no micro-batch count divides the batch size ${batchSize}`);
  if (options.shape && options.shape !== 'auto') return planShape(profile, options.shape, batchSize, samples, mOptions);
  const cm = new CostModel(profile);
  const usable = usableDevices(cm);
  const classes = deviceClasses(profile, usable);
  const bounds = new Bounds(cm, usable);
  const prices = new Map(mOptions.map((m) => [m, new Prices(cm, batchSize / m, bounds)]));
  // No plan beats the batch's compute done at every usable device's best rate at once.
  const lowest =
    (batchSize * bounds.prefixWork[cm.layers + 1]!) /
    usable.reduce((s, d) => s + bounds.prefixRate[d * (cm.layers + 2) + cm.layers + 1]!, 0);
  let labels = 0;
  // The paper's orders: quick, and a bound to prune with.
  const orders = deviceOrderings(profile, options.orderings)
    .map(({ name, order }) => ({ name, order: order.filter((d) => usable.includes(d)) }))
    .filter(({ order }) => order.length > 0)
    .map(({ name, order }) => new Space([chainOf(order, classes)], name));
  const seed = solve(orders, prices, mOptions, lowest, { left: Infinity });
  labels += seed.labels;
  let found = seed.found;
  let exact = false;
  let searched = orders.length;
  if (!options.orderings && usable.length > 0) {
    const whole = new Space(
      classes.map((devices) => ({ devices, uniform: true })),
      'searched',
    );
    const size = whole.moves * cm.layers;
    if (size > SMALL_MOVES) {
      // Pipelines of single devices, over every subset and order: where layers suit devices
      // differently, the best order is one the local search's swaps rarely reach.
      if (usable.length <= SINGLES_DEVICES) {
        const singles = new Space(whole.chains, 'searched', 1);
        const r = solve([singles], prices, mOptions, lowest, { left: SINGLES_BUDGET }, found?.value);
        labels += r.labels;
        if (r.found && (!found || r.found.value < found.value)) found = r.found;
      }
      // With no plan from the orders, start from every device a stage of its own, roomiest first.
      const start = found ? stagesOf(found.label, found.chains) : spreadOut(profile, usable, cm.layers);
      const r = refine(start, found?.m ?? Math.max(...mOptions), found?.value ?? Infinity, usable, prices, mOptions, {
        left: REFINE_BUDGET,
      });
      labels += r.labels;
      if (r.found) found = { ...r.found, chains: null, name: 'searched' };
    }
    if (size <= EXACT_MOVES || options.exactBudget === Infinity) {
      const r = solve([whole], prices, mOptions, lowest, { left: options.exactBudget ?? EXACT_BUDGET }, found?.value);
      labels += r.labels;
      searched++;
      // Cut short, it is only as good as what it found; complete, it is the optimum.
      if (r.found && (!found || r.found.value < found.value)) found = r.found;
      exact = !r.aborted;
    }
  }
  if (!found)
    throw new InfeasiblePlanError(
      explainInfeasible(cm, mOptions, batchSize, exact || options.orderings !== undefined || usable.length === 0),
    );
  const ordering = options.orderings ? (found.name as OrderingName) : 'searched';
  return buildPlan(cm, { stages: stagesOf(found.label, found.chains), m: found.m, ordering }, batchSize, samples, {
    orderings: searched,
    microBatchOptions: mOptions,
    labels,
    ms: performance.now() - started,
    exact,
  });
}

/**
 * The best plan over `spaces` and micro-batch counts below `upper`, else found by asking for one
 * below a rising guess (see the file comment); null when none fits. When the budget runs out
 * (aborted), the best plan found so far, which need not be the optimum.
 */
function solve(
  spaces: Space[],
  prices: Map<number, Prices>,
  mOptions: number[],
  lower: number,
  budget: Budget,
  upper = Infinity,
): { found: Found | null; labels: number; aborted: boolean } {
  let labels = 0;
  let found: Found | null = null;
  const first = upper < Infinity ? upper : lower > 0 ? lower * 1.25 : Infinity;
  for (let guess = first, round = 0; ; guess = ++round >= 12 ? Infinity : guess * 1.5) {
    let bounded = false;
    for (const space of spaces) {
      for (const m of mOptions) {
        const r = search(space, prices.get(m)!, m, Math.min(guess, found?.value ?? Infinity), budget);
        labels += r.labels;
        bounded ||= r.bounded;
        if (r.best && (!found || r.value < found.value))
          found = { label: r.best, chains: space.chains, name: space.name, m, value: r.value };
        if (r.aborted) return { found, labels, aborted: true };
      }
    }
    if (found || !bounded || guess === Infinity || upper < Infinity) return { found, labels, aborted: false };
  }
}

/** Every usable device a stage of its own (some share when there are more devices than layers), roomiest first. */
function spreadOut(profile: Profile, usable: number[], layers: number): ChosenStage[] {
  const byRoom = [...usable].sort((a, b) => profile.devices[b]!.memoryBytes - profile.devices[a]!.memoryBytes || a - b);
  const S = Math.min(layers, byRoom.length);
  return Array.from({ length: S }, (_, s) => ({ from: 0, to: 0, inFlight: 0, members: byRoom.filter((_, i) => i % S === s) }));
}
