import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { planPipeline, type StagePlan } from '../src/plan/planner.ts';
import type { BlockCost, Profile } from '../src/plan/profile.ts';
import { simulatePlan } from '../src/plan/simulator.ts';
import { randomProfile } from './plan-fixtures.ts';

const block = (fwd: number, bwd: number): BlockCost => ({
  fwd: { fixedMs: 0, perSampleMs: fwd },
  bwd: { fixedMs: 0, perSampleMs: bwd },
  backboneBytes: 0,
  sideBytes: 0,
  sideGradBytes: 0,
  activationBytesPerSample: 0,
  workBytesPerSample: 0,
});
const zero = block(0, 0);

/** S identical one-layer stages on S devices, free links. */
function homogeneous(S: number, f: number, b: number): Profile {
  return {
    version: 1,
    model: { layers: S, encoderLayers: 0, dModel: 8, sideWidth: 1, seqLen: 4, bytesPerActivation: 4 },
    devices: Array.from({ length: S }, (_, i) => ({
      name: `d${i}`,
      memoryBytes: 1e9,
      embed: zero,
      head: zero,
      layers: Array.from({ length: S }, () => block(f, b)),
    })),
    links: { defaultMbps: 1e15, latencyMs: 0, pairs: [] },
  };
}

function manualPlan(S: number, M: number, rows: number): StagePlan {
  return {
    ordering: 'topology',
    unusedDevices: [],
    batchSize: M * rows,
    microBatches: M,
    microBatchSize: rows,
    stages: Array.from({ length: S }, (_, s) => ({
      index: s,
      layers: { from: s + 1, to: s + 1 },
      devices: [{ name: `d${s}`, rows, fwdMs: 0, bwdMs: 0, peakBytes: 0 }],
      inFlight: S - s,
      fwdMs: 0,
      bwdMs: 0,
      cycleMs: 0,
      allReduceMs: 0,
    })),
    predicted: { stepMs: 0, stepsPerEpoch: 10, epochMs: 0, parts: { stepMs: 0, warmupMs: 0, steadyMs: 0, drainMs: 0, allReduceTailMs: 0 } },
    peakBytesPerDevice: {},
    bytesPerStep: { activations: 0, allReduce: 0, total: 0 },
    search: { orderings: 1, microBatchOptions: [M], labels: 0, ms: 0, exact: true },
  };
}

test('simulator: a homogeneous pipeline with free transfers takes (M + S - 1)(f + b)', () => {
  for (const [S, M, f, b] of [
    [1, 1, 3, 1],
    [2, 4, 3, 1],
    [4, 8, 2, 2],
    [3, 2, 5, 0.5],
    [5, 12, 1, 3],
  ] as const) {
    const sim = simulatePlan(manualPlan(S, M, 2), homogeneous(S, f, b));
    const expect = (M + S - 1) * 2 * (f + b);
    assert.ok(Math.abs(sim.stepMs - expect) < 1e-9, `S=${S} M=${M}: ${sim.stepMs} vs ${expect}`);
    assert.is(sim.epochMs, sim.stepMs * 10);
  }
});

test('simulator: agrees with the planner estimate on its own homogeneous plans', () => {
  const profile = homogeneous(4, 2, 1);
  const plan = planPipeline(profile, { batchSize: 8 });
  const sim = simulatePlan(plan, profile);
  assert.ok(Math.abs(sim.stepMs - plan.predicted.stepMs) / plan.predicted.stepMs < 1e-9, `${sim.stepMs} vs ${plan.predicted.stepMs}`);
});

test('simulator: heterogeneous plans replay without deadlock, bytes match the plan', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const profile = randomProfile(seed, 2 + (seed % 3), 2 + (seed % 5), { memoryScale: 10 });
    const plan = planPipeline(profile);
    const sim = simulatePlan(plan, profile);
    assert.ok(sim.stepMs > 0 && Number.isFinite(sim.stepMs));
    assert.ok(
      Math.abs(sim.activationBytes - plan.bytesPerStep.activations) <= 1e-6 * Math.max(1, plan.bytesPerStep.activations),
      `seed ${seed}: ${sim.activationBytes} vs ${plan.bytesPerStep.activations}`,
    );
    // The simulator overlaps sending with compute, the planner charges it to the sender: never slower by much.
    assert.ok(sim.stepMs <= plan.predicted.stepMs * 1.5, `seed ${seed}: sim ${sim.stepMs} vs plan ${plan.predicted.stepMs}`);
  }
});
test("simulator and planner: a stage's measured update comes after its last backward, once per step", () => {
  const S = 3,
    M = 4,
    f = 2,
    b = 1;
  const updated = homogeneous(S, f, b);
  // Stage 1's device updates slowest: its update ends the step though its last backward is not the last.
  const update = [1, 9, 2];
  updated.devices.forEach((d, s) => {
    d.layers = d.layers.map((l) => ({ ...l, updateMs: update[s]! }));
  });
  const base = simulatePlan(manualPlan(S, M, 2), homogeneous(S, f, b));
  const sim = simulatePlan(manualPlan(S, M, 2), updated);
  const lastBackward = base.stages.map((st) => st.lastBackwardMs);
  // One layer per stage in the manual plan: each stage updates one layer's parameters.
  const expect = Math.max(...lastBackward.map((t, s) => t + update[s]!));
  assert.ok(Math.abs(sim.stepMs - expect) < 1e-9, `${sim.stepMs} vs ${expect}`);
  assert.ok(sim.stepMs > base.stepMs);
  assert.equal(
    sim.stages.map((st) => st.updateMs),
    update,
  );
  // The planner prices the same update in each stage's tail.
  const plan = planPipeline(updated, { batchSize: 8 });
  const plain = planPipeline(homogeneous(S, f, b), { batchSize: 8 });
  assert.ok(plan.predicted.stepMs > plain.predicted.stepMs, `${plan.predicted.stepMs} vs ${plain.predicted.stepMs}`);
  const again = simulatePlan(plan, updated);
  assert.ok(Math.abs(again.stepMs - plan.predicted.stepMs) / plan.predicted.stepMs < 0.25, `${again.stepMs} vs ${plan.predicted.stepMs}`);
});
test.run();
