/**
 * What the planner hands back: the chosen placement priced member by member (StagePlan), or,
 * when nothing fits, the tightest placement and who lacks how much memory in it.
 */
import { type CostModel, memberPeakBytes, stepMakespan, type MemoryShortfall, type StageCost } from './cost.ts';
import { chainOf, deviceClasses, deviceOrderings, type OrderingName } from './devices.ts';
import type { PlannedStage, StagePlan } from './planner.ts';
import { boundaryBytesPerSample } from './profile.ts';
import { nextGroup, Space, type ChosenStage } from './search.ts';

export function buildPlan(
  cm: CostModel,
  chosen: { stages: ChosenStage[]; m: number; ordering: OrderingName | 'searched' },
  batchSize: number,
  samples: number | null,
  search: StagePlan['search'],
): StagePlan {
  const profile = cm.profile;
  const M = chosen.m;
  const costs: StageCost[] = chosen.stages.map(({ from, to, members, inFlight }) => {
    const c = cm.stage(from, to, members, batchSize / M, inFlight);
    if (!c || !('members' in c)) throw new Error(`planner: stage ${from}-${to} no longer prices as it did in the search`);
    return c;
  });
  const S = costs.length;
  const peakBytesPerDevice: Record<string, number> = {};
  const stages: PlannedStage[] = costs.map((c, index) => {
    const inFlight = Math.min(S - index, M);
    const devices = c.members.map((mb) => {
      const peakBytes = memberPeakBytes(mb, inFlight);
      peakBytesPerDevice[mb.device] = peakBytes;
      return { name: mb.device, rows: mb.rows, fwdMs: mb.fwdMs, bwdMs: mb.bwdMs, peakBytes };
    });
    return {
      index,
      layers: { from: c.from, to: c.to },
      devices,
      inFlight,
      fwdMs: c.fwdMs,
      bwdMs: c.bwdMs,
      cycleMs: c.cycleMs,
      allReduceMs: c.allReduceMs,
    };
  });
  let activations = 0;
  for (let s = 0; s + 1 < S; s++) {
    const b = boundaryBytesPerSample(profile.model, costs[s]!.to);
    activations += batchSize * (b.fwd + b.bwd);
  }
  const allReduce = costs.reduce((sum, c) => sum + 2 * (c.members.length - 1) * c.gradBytes, 0);
  const parts = stepMakespan(costs, M);
  const stepsPerEpoch = samples === null ? null : Math.ceil(samples / batchSize);
  return {
    ordering: chosen.ordering,
    stages,
    unusedDevices: profile.devices.map((d) => d.name).filter((n) => !(n in peakBytesPerDevice)),
    batchSize,
    microBatches: M,
    microBatchSize: batchSize / M,
    predicted: { stepMs: parts.stepMs, stepsPerEpoch, epochMs: stepsPerEpoch === null ? null : stepsPerEpoch * parts.stepMs, parts },
    peakBytesPerDevice,
    bytesPerStep: { activations, allReduce, total: activations + allReduce },
    search,
  };
}

type Priced = { from: number; to: number; shortfall: MemoryShortfall | null; over: number };
interface Node {
  worst: number;
  stage: Priced;
  next: Node | null;
}

/** Moves times layers up to which the explanation searches every device subset and order, not just the three orders. */
const EXPLAIN_MOVES = 20_000;

/**
 * Finds the placement whose worst member overshoots its memory the least (a min-max DP over the
 * planner's device orders, or over every device subset and order when that is small) and says,
 * per stage of it, who lacks how much. `proven`: the planner searched all it was asked to; else it
 * gave up on trying every device subset and order, and the first line says so.
 */
export function explainInfeasible(cm: CostModel, mOptions: number[], batchSize: number, proven: boolean): string[] {
  const profile = cm.profile;
  const all = profile.devices.map((_, i) => i);
  const classes = deviceClasses(profile, all);
  const whole = new Space(
    classes.map((devices) => ({ devices, uniform: true })),
    'searched',
  );
  const spaces =
    whole.moves * cm.layers <= EXPLAIN_MOVES
      ? [whole]
      : deviceOrderings(profile).map((o) => new Space([chainOf(o.order, classes)], o.name));
  let best: Node | null = null;
  // Small micro-batches need the least memory per member: a tight bound early prunes the rest.
  const byRows = [...mOptions].sort((a, b) => b - a);
  for (const space of spaces) for (const M of byRows) best = tightest(cm, space, batchSize / M, M, best);
  const L = cm.layers;
  const total = profile.devices.length;
  const lines = [
    proven
      ? `no placement of ${L} layers on ${total} device${total === 1 ? '' : 's'} fits in memory`
      : `found no placement of ${L} layers on ${total} devices that fits in memory (too many distinct devices to try every subset and order)`,
  ];
  let s = 0;
  for (let node: Node | null = best; node; node = node.next, s++) {
    const st = node.stage;
    if (st.shortfall) {
      const f = st.shortfall;
      const [need, have, short] = mebibytes(f.needBytes, f.haveBytes);
      lines.push(
        `in the tightest placement, stage ${s} (layers ${st.from}-${st.to}) on ${f.device} needs ${need} but has ${have} (short ${short})`,
      );
    }
  }
  return lines;
}

/**
 * Need, have and their difference in MiB, with the fewest decimals that keep the difference above
 * zero and the three figures consistent as shown (need - have = short): "needs 15 MiB but has
 * 12 MiB (short 4 MiB)" reads as a mistake, "needs 15.4 MiB but has 11.6 MiB (short 3.8 MiB)" does not.
 */
export function mebibytes(need: number, have: number): [string, string, string] {
  const MiB = 2 ** 20;
  const at = (b: number, digits: number) => Number((b / MiB).toFixed(digits));
  const shows = (digits: number) =>
    at(need - have, digits) > 0 && Math.abs(at(need, digits) - at(have, digits) - at(need - have, digits)) < 0.5 * 10 ** -digits;
  let digits = 0;
  while (digits < 6 && !shows(digits)) digits++;
  const fmt = (b: number) => `${(b / MiB).toFixed(digits)} MiB`;
  if (at(need - have, digits) <= 0) return [fmt(need), fmt(have), `${(need - have).toPrecision(2)} bytes`];
  return [fmt(need), fmt(have), fmt(need - have)];
}

/** The min-max-overshoot placement over `space` at `rows` per micro-batch, if it beats `best`. */
function tightest(cm: CostModel, space: Space, rows: number, M: number, best: Node | null): Node | null {
  const L = cm.layers;
  const { k: K, sizes, strides } = space;
  const W = Math.min(M, L, space.devices) + 1;
  const levels: (Map<number, Node | null> | undefined)[] = new Array(L + 2);
  levels[L + 1] = new Map([[0, null]]);
  const used = new Int32Array(K);
  const take = new Int32Array(K);
  const priced = new Map<string, Priced | null>();
  for (let x = L + 1; x >= 2; x--) {
    const level = levels[x];
    if (!level) continue;
    for (const [slot, rest] of level) {
      const worstSoFar = rest ? rest.worst : -Infinity;
      if (best && worstSoFar >= best.worst) continue;
      const u = Math.floor(slot / W);
      const kc = slot - u * W;
      let free = 0;
      for (let c = 0; c < K; c++) {
        used[c] = Math.floor(u / strides[c]!) % (sizes[c]! + 1);
        take[c] = 0;
        free += sizes[c]! - used[c]!;
      }
      for (let group = nextGroup(take, used, sizes, strides, u); group; group = nextGroup(take, used, sizes, strides, u)) {
        const { m, target } = group;
        if (m > rows) continue;
        const members: number[] = [];
        space.chains.forEach((chain, i) => {
          const start = chain.uniform ? 0 : sizes[i]! - used[i]! - take[i]!;
          members.push(...chain.devices.slice(start, start + take[i]!));
        });
        const targetSlot = target * W + Math.min(kc + 1, W - 1);
        for (let x1 = free === m ? 1 : x - 1; x1 >= 1; x1--) {
          const key = `${members.join(',')} ${x1} ${x - 1} ${Math.min(kc + 1, M)}`;
          let stage = priced.get(key);
          if (stage === undefined) {
            stage = price(cm, x1, x - 1, members, rows, Math.min(kc + 1, M));
            priced.set(key, stage);
          }
          if (!stage) break;
          // More layers only need more memory.
          if (best && stage.over >= best.worst) break;
          const node: Node = { worst: Math.max(stage.over, worstSoFar), stage, next: rest };
          if (x1 === 1) {
            if (!best || node.worst < best.worst) best = node;
            continue;
          }
          let into = levels[x1];
          if (!into) {
            into = new Map();
            levels[x1] = into;
          }
          const o = into.get(targetSlot);
          if (o === undefined || (o && node.worst < o.worst)) into.set(targetSlot, node);
        }
      }
    }
  }
  return best;
}

function price(cm: CostModel, x: number, y: number, members: number[], rows: number, inFlight: number): Priced | null {
  const c = cm.stage(x, y, members, rows, inFlight);
  if (!c) return null;
  if ('shortfall' in c) return { from: x, to: y, shortfall: c.shortfall, over: c.shortfall.needBytes - c.shortfall.haveBytes };
  return { from: x, to: y, shortfall: null, over: Math.max(...c.members.map((mb) => memberPeakBytes(mb, inFlight) - mb.budgetBytes)) };
}
