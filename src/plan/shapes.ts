/**
 * Plans of a fixed shape, on demand (a baseline to compare with, or a user's what-if), priced by
 * the same cost model as the planner's own search:
 * - data-parallel: one stage of every layer over every device (rows split by speed and memory);
 * - pipeline: one device per stage, every device used, in the fastest-first order, layers split
 *   to minimise the predicted 1F1B step.
 * Refused with InfeasiblePlanError naming the device that lacks memory when the shape does not fit.
 */
import { CostModel, stepMakespan, type StageCost } from './cost.ts';
import { deviceOrderings } from './devices.ts';
import { buildPlan, mebibytes } from './plan-report.ts';
import type { Profile } from './profile.ts';
import type { ChosenStage } from './search.ts';
import { InfeasiblePlanError, type StagePlan } from './planner.ts';

export type PlanShape = 'data-parallel' | 'pipeline';

interface Best {
  stages: ChosenStage[];
  m: number;
  stepMs: number;
}

/** The cheapest plan of `shape` over micro-batch counts `mOptions`. */
export function planShape(profile: Profile, shape: PlanShape, batchSize: number, samples: number | null, mOptions: number[]): StagePlan {
  const started = performance.now();
  const cm = new CostModel(profile);
  const L = cm.layers;
  const N = profile.devices.length;
  let best: Best | null = null;
  const short: string[] = [];
  const consider = (stages: ChosenStage[], m: number, costs: StageCost[]) => {
    const stepMs = stepMakespan(costs, m).stepMs;
    if (!best || stepMs < best.stepMs) best = { stages, m, stepMs };
  };
  if (shape === 'data-parallel') {
    const all = profile.devices.map((_, i) => i);
    for (const m of mOptions) {
      const c = cm.stage(1, L, all, batchSize / m, 1);
      if (c === null) short.push(`${m} micro-batch(es) of ${batchSize / m} rows cannot give each of ${N} devices a row`);
      else if (!('members' in c)) {
        const [need, have] = mebibytes(c.shortfall.needBytes, c.shortfall.haveBytes);
        short.push(`with ${m} micro-batch(es), ${c.shortfall.device} needs ${need} for all ${L} layers but has ${have}`);
      } else consider([{ from: 1, to: L, members: all, inFlight: 1 }], m, [c]);
    }
  } else {
    if (N > L) throw new InfeasiblePlanError([`pipeline: ${N} devices need at least ${N} layers, the model has ${L}`]);
    const order = deviceOrderings(profile, ['fastest-first'])[0]!.order;
    for (const m of mOptions) {
      const split = bestSplit(cm, order, batchSize / m, m);
      if (split) consider(split.stages, m, split.costs);
    }
    if (!best) short.push(`no split of ${L} layers over ${N} devices, one per stage, fits in memory`);
  }
  const found = best as Best | null;
  if (!found) throw new InfeasiblePlanError([`${shape}: ${short.join('; ')}`]);
  const plan = buildPlan(cm, { stages: found.stages, m: found.m, ordering: 'searched' }, batchSize, samples, {
    orderings: 1,
    microBatchOptions: mOptions,
    labels: 0,
    ms: performance.now() - started,
    exact: false,
  });
  return { ...plan, shape };
}

/**
 * The split of layers over `order` (one device per stage) with the least 1F1B step: a DP over
 * (stage, last layer) keeping, per state, the split with the least slowest cycle and then the
 * least summed forward + backward (the two terms of the step that a prefix decides).
 */
function bestSplit(cm: CostModel, order: number[], rows: number, M: number): { stages: ChosenStage[]; costs: StageCost[] } | null {
  const L = cm.layers,
    S = order.length;
  type Cell = { cycle: number; sum: number; stages: ChosenStage[]; costs: StageCost[] } | null;
  let prev: Cell[] = Array.from({ length: L + 1 }, (_, l) => (l === 0 ? { cycle: 0, sum: 0, stages: [], costs: [] } : null));
  for (let s = 0; s < S; s++) {
    const next: Cell[] = Array.from({ length: L + 1 }, () => null);
    const inFlight = Math.min(S - s, M);
    for (let to = s + 1; to <= L - (S - 1 - s); to++) {
      for (let from = s + 1; from <= to; from++) {
        const p = prev[from - 1];
        if (!p) continue;
        const c = cm.stage(from, to, [order[s]!], rows, inFlight);
        if (!c || !('members' in c)) continue;
        const cell = { cycle: Math.max(p.cycle, c.cycleMs), sum: p.sum + c.fwdMs + c.bwdMs };
        const cur = next[to];
        if (!cur || cell.cycle < cur.cycle || (cell.cycle === cur.cycle && cell.sum < cur.sum))
          next[to] = {
            ...cell,
            stages: [...p.stages, { from, to, members: [order[s]!], inFlight }],
            costs: [...p.costs, c],
          };
      }
    }
    prev = next;
  }
  const end = prev[L];
  return end ? { stages: end.stages, costs: end.costs } : null;
}
