import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CostModel, memberPeakBytes, splitMicroBatch, splitRows, stepMakespan, type StageCost } from '../src/plan/cost.ts';
import { deviceOrderings, InfeasiblePlanError, microBatchOptions, planPipeline, type StagePlan } from '../src/plan/planner.ts';
import { loadProfile, selectDevices, type BlockCost, type Profile } from '../src/plan/profile.ts';
import { randomProfile } from './plan-fixtures.ts';

/** Every composition of n into k positive parts. */
function compositions(n: number, k: number): number[][] {
  if (k === 1) return [[n]];
  const out: number[][] = [];
  for (let first = 1; first <= n - k + 1; first++) for (const rest of compositions(n - first, k - 1)) out.push([first, ...rest]);
  return out;
}

/** Every sequence of k pairwise disjoint non-empty subsets of n devices, as bitmasks. */
function groupSequences(n: number, k: number): number[][] {
  const out: number[][] = [];
  const grow = (free: number, seq: number[]) => {
    if (seq.length === k) {
      out.push([...seq]);
      return;
    }
    for (let g = free; g > 0; g = (g - 1) & free) grow(free & ~g, [...seq, g]);
  };
  grow((1 << n) - 1, []);
  return out;
}

/**
 * The least 1F1B step time over every micro-batch count, stage count, layer split and sequence of
 * disjoint device groups (any subset, any order along the pipeline; each group in profile order).
 */
function bruteForce(profile: Profile, batch: number): number {
  const cm = new CostModel(profile);
  const L = profile.model.layers;
  const N = profile.devices.length;
  const priced = new Map<string, StageCost | null>();
  const price = (from: number, to: number, mask: number, rows: number, inFlight: number) => {
    const key = `${from} ${to} ${mask} ${rows} ${inFlight}`;
    if (!priced.has(key)) {
      const c = cm.stage(
        from,
        to,
        profile.devices.map((_, i) => i).filter((i) => mask & (1 << i)),
        rows,
        inFlight,
      );
      priced.set(key, c && 'members' in c ? c : null);
    }
    return priced.get(key)!;
  };
  let best = Infinity;
  for (const M of microBatchOptions(batch)) {
    for (let S = 1; S <= Math.min(N, L); S++) {
      const sequences = groupSequences(N, S);
      for (const layerParts of compositions(L, S)) {
        for (const groups of sequences) {
          const stages: StageCost[] = [];
          for (let s = 0, from = 1; s < S; from += layerParts[s++]!) {
            const c = price(from, from + layerParts[s]! - 1, groups[s]!, batch / M, Math.min(S - s, M));
            if (!c) break;
            stages.push(c);
          }
          if (stages.length === S) best = Math.min(best, stepMakespan(stages, M).stepMs);
        }
      }
    }
  }
  return best;
}

/**
 * The planner's plan after checking it against the brute force: the same least makespan from its
 * exact search, or, when the brute force finds no plan, InfeasiblePlanError (then null).
 */
function planMatchesBruteForce(profile: Profile, batch: number, where: string): StagePlan | null {
  const brute = bruteForce(profile, batch);
  if (brute === Infinity) {
    assert.throws(
      () => planPipeline(profile, { batchSize: batch }),
      (e: unknown) => e instanceof InfeasiblePlanError,
      where,
    );
    return null;
  }
  const plan = planPipeline(profile, { batchSize: batch });
  assert.ok(plan.search.exact, `${where}: exact search`);
  assert.ok(Math.abs(plan.predicted.stepMs - brute) / brute < 1e-9, `${where}: planner ${plan.predicted.stepMs} vs brute force ${brute}`);
  return plan;
}

test('plan: the planner finds the least makespan a brute-force search over every device subset and order finds', () => {
  let feasible = 0,
    infeasible = 0,
    partial = 0,
    copied = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const copies = seed % 7 === 0 ? 1 + (seed % 2) : 0;
    const devices = 1 + (seed % 4) - (copies > 1 && seed % 4 === 3 ? 1 : 0);
    const layers = 1 + ((seed * 7) % (devices + copies >= 4 ? 4 : 6));
    const profile = randomProfile(seed, devices, layers, { memoryScale: [0.3, 0.6, 1][seed % 3]!, copies });
    const batch = [4, 6, 8][seed % 3]!;
    const plan = planMatchesBruteForce(profile, batch, `seed ${seed}`);
    if (!plan) {
      infeasible++;
      continue;
    }
    feasible++;
    if (plan.unusedDevices.length > 0) partial++;
    if (copies > 0) copied++;
  }
  assert.ok(
    feasible > 150 && infeasible > 10 && partial > 20 && copied > 15,
    `every kind of instance is exercised (${feasible} feasible, ${infeasible} infeasible, ${partial} leaving devices out, ${copied} with identical devices)`,
  );
});

test('plan: on five distinct devices and three to eight layers the planner still finds the brute-force optimum', () => {
  let partial = 0,
    infeasible = 0,
    pipelined = 0,
    grouped = 0;
  for (let seed = 1001; seed <= 1018; seed++) {
    const layers = 3 + (seed % 6);
    const profile = randomProfile(seed, 5, layers, { memoryScale: [0.25, 0.5, 1][seed % 3]! });
    // Eight rows let groups form; four keep the brute force quick.
    const batch = seed % 2 === 0 ? 8 : 4;
    const plan = planMatchesBruteForce(profile, batch, `seed ${seed}`);
    if (!plan) {
      infeasible++;
      continue;
    }
    if (plan.unusedDevices.length > 0) partial++;
    if (plan.stages.length > 1) pipelined++;
    if (plan.stages.some((s) => s.devices.length > 1)) grouped++;
  }
  assert.ok(
    partial > 0 && pipelined > 0 && grouped > 0 && infeasible > 0,
    `${partial} leaving devices out, ${pipelined} pipelined, ${grouped} with a group, ${infeasible} infeasible`,
  );
});

test('plan: memory limits hold for every device, layers are covered once, rows fill each micro-batch', () => {
  for (let seed = 200; seed < 260; seed++) {
    const profile = randomProfile(seed, 2 + (seed % 3), 3 + (seed % 4), { memoryScale: 0.6 });
    let plan: StagePlan;
    try {
      plan = planPipeline(profile);
    } catch (e) {
      assert.ok(e instanceof InfeasiblePlanError);
      continue;
    }
    for (const d of profile.devices) {
      const peak = plan.peakBytesPerDevice[d.name];
      if (peak !== undefined) assert.ok(peak <= d.memoryBytes, `seed ${seed}: ${d.name} peak ${peak} > ${d.memoryBytes}`);
    }
    let next = 1;
    for (const s of plan.stages) {
      assert.is(s.layers.from, next);
      next = s.layers.to + 1;
      assert.is(
        s.devices.reduce((a, d) => a + d.rows, 0),
        plan.microBatchSize,
      );
      assert.is(s.inFlight, Math.min(plan.stages.length - s.index, plan.microBatches));
    }
    assert.is(next, profile.model.layers + 1);
    assert.is(plan.microBatches * plan.microBatchSize, plan.batchSize);
  }
});

test('plan: an infeasible model is explained by device, stage and missing bytes', () => {
  const profile = randomProfile(7, 3, 4, { memoryScale: 0.01 });
  try {
    planPipeline(profile);
    assert.unreachable('expected InfeasiblePlanError');
  } catch (e) {
    assert.instance(e, InfeasiblePlanError);
    const lines = (e as InfeasiblePlanError).lines;
    assert.match(lines[0]!, /no placement of 4 layers on 3 devices fits in memory/);
    assert.ok(lines.length >= 2, lines.join('\n'));
    assert.match(lines[1]!, /stage \d+ \(layers \d+-\d+\) on d\d needs [\d.]+ MiB but has [\d.]+ MiB \(short [\d.]+ MiB\)/);
  }
});

test('plan: the micro-batch split follows device speed and sums to the micro-batch', () => {
  assert.equal(
    splitRows(16, [
      { fixed: 0, perRow: 1 },
      { fixed: 0, perRow: 3 },
    ]),
    [12, 4],
  );
  assert.equal(
    splitRows(10, [
      { fixed: 0, perRow: 1 },
      { fixed: 0, perRow: 1 },
      { fixed: 0, perRow: 2 },
    ]),
    [4, 4, 2],
  );
  const rows = splitRows(13, [
    { fixed: 5, perRow: 2 },
    { fixed: 0, perRow: 1 },
    { fixed: 1, perRow: 7 },
  ])!;
  assert.is(
    rows.reduce((a, b) => a + b, 0),
    13,
  );
  assert.ok(rows.every((r) => r >= 1));
  assert.equal(
    splitRows(
      8,
      [
        { fixed: 0, perRow: 1 },
        { fixed: 0, perRow: 1 },
      ],
      [3, 10],
    ),
    [3, 5],
    'caps bind',
  );
  assert.is(
    splitRows(
      8,
      [
        { fixed: 0, perRow: 1 },
        { fixed: 0, perRow: 1 },
      ],
      [3, 4],
    ),
    null,
    'caps too small',
  );
  assert.is(
    splitRows(1, [
      { fixed: 0, perRow: 1 },
      { fixed: 0, perRow: 1 },
    ]),
    null,
    'more devices than rows',
  );
  assert.equal(splitMicroBatch([10, 11, 12, 13, 14], [3, 2]), [
    [10, 11, 12],
    [13, 14],
  ]);
  assert.throws(() => splitMicroBatch([1, 2], [1, 2]), /rows sum to 3/);
});

test('plan: a stage prices the same whatever the rank order of its group', () => {
  const permutations = (xs: number[]): number[][] =>
    xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
  for (let seed = 300; seed < 330; seed++) {
    const profile = randomProfile(seed, 4, 5);
    const cm = new CostModel(profile);
    const group = [0, 1, 2, 3].filter((i) => (seed >> i) & 1 || i === seed % 4);
    for (const [from, to] of [
      [1, 5],
      [2, 3],
      [4, 5],
    ] as const) {
      const prices = permutations(group).map((order) => cm.stage(from, to, order, 8, 2));
      const first = prices[0]!;
      for (const p of prices) {
        if (!first || !('members' in first)) {
          assert.ok(!p || !('members' in p), `seed ${seed}: feasible in one order only`);
          continue;
        }
        assert.ok(p && 'members' in p, `seed ${seed}: feasible in one order only`);
        for (const k of ['fwdMs', 'bwdMs', 'cycleMs', 'allReduceMs'] as const)
          assert.ok(Math.abs(p[k] - first[k]) <= 1e-12 * first[k], `seed ${seed} ${k}: ${p[k]} vs ${first[k]}`);
      }
    }
  }
});

test('plan: the 1F1B estimate takes the slowest stage and counts the last backward once', () => {
  const st = (f: number, b: number, ar = 0) => ({ fwdMs: f, bwdMs: b, cycleMs: f + b, allReduceMs: ar });
  const homo = stepMakespan([st(2, 1), st(2, 1), st(2, 1)], 4);
  assert.is(homo.stepMs, (4 + 3 - 1) * 3);
  const slowMiddle = stepMakespan([st(1, 1), st(5, 1), st(1, 1)], 3);
  assert.is(slowMiddle.steadyMs, 2 * 6, 'steady state paced by the slowest (middle) stage');
  assert.is(slowMiddle.stepMs, 7 + 12 + 3);
  const tail = stepMakespan([st(1, 1, 10), st(1, 1, 0)], 2);
  assert.is(tail.stepMs, 2 + 2 + 2 + 10, 'stage 0 finishes last, its all-reduce ends the step');
});

test('plan: a device far slower than the rest is left out instead of pacing its group', () => {
  const profile = randomProfile(11, 3, 4, { memoryScale: 100 });
  const slow = profile.devices[1]!;
  profile.devices[1] = { ...slow, layers: slow.layers.map((l) => ({ ...l, fwd: { ...l.fwd, perSampleMs: l.fwd.perSampleMs * 1000 } })) };
  const plan = planPipeline(profile);
  assert.equal(plan.unusedDevices, ['d1']);
  assert.is(plan.ordering, 'searched');
});
test('plan: a shortfall of less than a MiB is shown with the decimals that keep it above zero', () => {
  for (const [shortBytes, shown] of [
    [0.3 * 2 ** 20, 'short 0.3 MiB'],
    [1000, 'short 0.001 MiB'],
    [3 * 2 ** 20, 'short 3 MiB'],
    // Whole MiB or one decimal, whichever keeps need - have = short as shown (checked below).
    [3.8 * 2 ** 20, 'short '],
  ] as const) {
    const profile = randomProfile(5, 1, 3);
    const need = memberPeakBytes((new CostModel(profile).stage(1, 3, [0], 1, 1) as StageCost).members[0]!, 1);
    profile.devices[0] = { ...profile.devices[0]!, memoryBytes: need - shortBytes };
    try {
      planPipeline(profile, { batchSize: 4 });
      assert.unreachable('expected InfeasiblePlanError');
    } catch (e) {
      assert.instance(e, InfeasiblePlanError);
      const lines = (e as InfeasiblePlanError).lines;
      assert.ok(
        lines.some((l) => l.includes(shown)),
        `${shown}: ${lines.join('; ')}`,
      );
      // As shown, need - have = short: no "needs 15 MiB but has 12 MiB (short 4 MiB)".
      for (const l of lines)
        for (const [, need, have, short] of l.matchAll(/needs ([\d.]+) MiB but has ([\d.]+) MiB \(short ([\d.]+) MiB\)/g)) {
          const digits = short!.split('.')[1]?.length ?? 0;
          assert.ok(Math.abs(Number(need) - Number(have) - Number(short)) < 0.5 * 10 ** -digits, l);
        }
    }
  }
});

/** Devices with the same cost for every layer, named by what they are; links are free. */
function uniformProfile(layers: number, devices: { name: string; msPerLayer: number; memoryBytes: number }[]): Profile {
  const block = (ms: number): BlockCost => ({
    fwd: { fixedMs: 0, perSampleMs: ms * 0.8 },
    bwd: { fixedMs: 0, perSampleMs: ms * 0.2 },
    backboneBytes: 1e6,
    sideBytes: 1e5,
    sideGradBytes: 1e4,
    activationBytesPerSample: 1e4,
    workBytesPerSample: 1e4,
  });
  return {
    version: 1,
    model: { layers, encoderLayers: 0, dModel: 8, sideWidth: 1, seqLen: 4, bytesPerActivation: 4 },
    devices: devices.map((d) => ({
      name: d.name,
      memoryBytes: d.memoryBytes,
      embed: block(0),
      head: block(0),
      layers: Array.from({ length: layers }, () => block(d.msPerLayer)),
    })),
    links: { defaultMbps: 1e9, latencyMs: 0, pairs: [] },
  };
}

test('plan: a fast device in the middle of every device order is used, not passed over for a slow one', () => {
  // The paper's orders put 'fast' between others in each, and 'tiny' (fastest by the orders'
  // measure, little memory) or 'slow' at the end of each: groups consecutive in an order, devices
  // left out at its front, could not use 'fast' without them.
  const fleet = (tinyBytes: number) =>
    uniformProfile(4, [
      { name: 'slow', msPerLayer: 1000, memoryBytes: 1e12 },
      { name: 'fast', msPerLayer: 1, memoryBytes: 1e12 },
      { name: 'tiny', msPerLayer: 0.5, memoryBytes: tinyBytes },
      { name: 'medium', msPerLayer: 20, memoryBytes: 1e12 },
    ]);
  const paper = ['topology', 'fastest-first', 'slowest-first'] as const;
  const uses = (plan: { stages: { devices: { name: string }[] }[] }, name: string) =>
    plan.stages.some((s) => s.devices.some((d) => d.name === name));
  // 'tiny' fits nowhere: the paper's DP left out 'fast' with it and ran on 'medium' alone.
  const nowhere = fleet(1e3);
  for (const { order } of deviceOrderings(nowhere)) {
    const at = order.indexOf(1);
    assert.ok(at > 0 && at < order.length - 1, `'fast' is inside ${order}`);
  }
  const plan = planPipeline(nowhere, { batchSize: 4 });
  assert.ok(uses(plan, 'fast') && !uses(plan, 'tiny') && !uses(plan, 'slow'), JSON.stringify(plan.stages));
  const without = planPipeline(selectDevices(nowhere, { names: ['slow', 'medium'] }), { batchSize: 4 });
  assert.ok(plan.predicted.stepMs * 4 < without.predicted.stepMs, `${plan.predicted.stepMs} vs ${without.predicted.stepMs} without 'fast'`);
  // 'tiny' holds one middle layer: the paper's orders pipeline 'fast' with it and 'medium'.
  const middle = fleet(1.5e6);
  const best = planPipeline(middle, { batchSize: 4 });
  const ordered = planPipeline(middle, { batchSize: 4, orderings: [...paper] });
  assert.ok(uses(best, 'fast') && !uses(best, 'medium'), JSON.stringify(best.stages));
  assert.ok(
    best.predicted.stepMs * 4 < ordered.predicted.stepMs,
    `${best.predicted.stepMs} vs ${ordered.predicted.stepMs} over the paper's orders`,
  );
});

test('plan: a small-memory device at the end of every order no longer makes T5-Base on four Nanos infeasible', () => {
  const nanos = selectDevices(loadProfile('topologies/profiles/t5-base-jetson-nano.json'), { count: 4 });
  const three = planPipeline(selectDevices(nanos, { count: 3 }));
  const withLast = (mib: number) => ({
    ...nanos,
    devices: nanos.devices.map((d, i) => (i === 3 ? { ...d, memoryBytes: mib * 2 ** 20 } : d)),
  });
  // Room for a layer or two: used where it helps (a middle stage keeps few micro-batches).
  const small = planPipeline(withLast(100));
  assert.ok(small.predicted.stepMs <= three.predicted.stepMs, `${small.predicted.stepMs} vs ${three.predicted.stepMs} on three`);
  for (const [name, peak] of Object.entries(small.peakBytesPerDevice))
    assert.ok(peak <= withLast(100).devices.find((d) => d.name === name)!.memoryBytes, name);
  // Room for nothing: left out, and the plan is the three others' plan.
  const none = planPipeline(withLast(10));
  assert.equal(none.unusedDevices, ['nano-3']);
  assert.is(none.predicted.stepMs, three.predicted.stepMs);
});

test('plan: on eight distinct devices x 48 layers, too many for the exact search, the plan is still the optimum it finds given all the time it needs', () => {
  // Per-layer speeds differ by device, so the best order of single-device stages is one the
  // local search's swaps alone missed by 2%; the search over single-device pipelines finds it.
  const profile = randomProfile(21, 8, 48, { memoryScale: 3 });
  const plan = planPipeline(profile, { batchSize: 16 });
  assert.not.ok(plan.search.exact);
  const optimum = planPipeline(profile, { batchSize: 16, exactBudget: Infinity });
  assert.ok(optimum.search.exact);
  assert.ok(plan.predicted.stepMs <= optimum.predicted.stepMs * (1 + 1e-9), `${plan.predicted.stepMs} vs ${optimum.predicted.stepMs}`);
});

test("plan: 16 heterogeneous devices x 48 layers plan to a valid placement no worse than the paper's orders give (speed is measured by charon bench plan)", () => {
  const profile = randomProfile(99, 16, 48, { memoryScale: 3 });
  const plan = planPipeline(profile, { batchSize: 16 });
  assert.is(plan.stages[0]!.layers.from, 1);
  assert.is(plan.stages.at(-1)!.layers.to, 48);
  const orders = planPipeline(profile, { batchSize: 16, orderings: ['topology', 'fastest-first', 'slowest-first'] });
  assert.ok(plan.predicted.stepMs <= orders.predicted.stepMs, `${plan.predicted.stepMs} vs ${orders.predicted.stepMs}`);
});
test.run();
