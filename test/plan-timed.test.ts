/**
 * Profiles from the run's own work timed on the device (src/engine/probe.ts): the probe runs the
 * real stages at the run's shapes, and the planner takes lines fitted to its timings.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../src/model/backend.ts';
import { loadConfig } from '../src/model/load.ts';
import { probeWork } from '../src/engine/probe.ts';
import { measuredProfile, methodShape, modelShape, withTimings, type WorkTimings } from '../src/plan/device-profile.ts';
import { planPipeline } from '../src/plan/planner.ts';
import { runJoinTerms, specFromTopology, stageSpec } from '../src/train/run-spec.ts';
import { loadTopology } from '../src/topology/load.ts';

const root = new URL('..', import.meta.url).pathname;

test('probe: the join terms of a launched topology ask for its own stages at its shapes', () => {
  const topology = loadTopology(`${root}topologies/local-2.yaml`);
  const spec = specFromTopology(topology);
  const { probe } = runJoinTerms(topology, spec);
  assert.equal(probe.model, spec.model);
  assert.equal(probe.spec, stageSpec(spec));
  assert.is(probe.layers, loadConfig(spec.model).nLayers);
  assert.equal(probe.microBatches, [1, Math.max(2, Math.min(8, Math.ceil(spec.batch / 2)))]);
});

test('probe: every method times a layer, the embedding and the head at each micro-batch size', async () => {
  await initBackend('wasm');
  for (const method of ['parallel', 'lora', 'serial', 'full'] as const) {
    const r = await probeWork({
      model: { preset: 'tiny' },
      layers: 2,
      microBatches: [1, 3],
      repeats: 1,
      spec: { method, seed: 1, reduction: 8, sideInit: 'random', seqLen: 16, optimizer: { lr: 1e-3 } },
    });
    assert.equal(
      r.runs.map((x) => x.microBatch),
      [1, 3],
    );
    for (const x of r.runs)
      for (const t of [x.layer, x.embed, x.head])
        assert.ok(t.fwdMs >= 0 && t.bwdMs >= 0 && t.updateMs >= 0 && Number.isFinite(t.fwdMs + t.bwdMs + t.updateMs), method);
    assert.ok(
      r.runs.every((x) => x.layer.updateMs > 0),
      `${method}: a layer's update takes time`,
    );
    assert.ok(
      r.runs.every((x) => x.layer.fwdMs > 0),
      `${method}: a layer's forward takes time`,
    );
  }
});

test('timed profile: a device that timed the work is planned by lines through its timings; the others keep their estimate', () => {
  const config = loadConfig({ preset: 'tiny' });
  const base = measuredProfile(
    modelShape(config, 16, 8, 'tiny', methodShape('parallel')),
    [
      { name: 'a', matmulGflops: 10, memoryBytes: 2 ** 30, bandwidthMbps: null },
      { name: 'b', matmulGflops: 10, memoryBytes: 2 ** 30, bandwidthMbps: null },
    ],
    { batchSize: 8, samples: 64 },
  );
  // Device a: each block costs 2 ms + 1 ms per row forward, 4 + 3 per row backward.
  // Its update does not depend on the rows: the fastest timing (0.5 ms) stands for every size.
  const line = (rows: number) => ({ fwdMs: 2 + rows, bwdMs: 4 + 3 * rows, updateMs: rows === 1 ? 0.7 : 0.5 });
  const timings: WorkTimings = [1, 4].map((m) => ({ microBatch: m, layer: line(m), embed: line(m), head: line(m) }));
  const p = withTimings(base, new Map([['a', timings]]));
  const a = p.devices[0]!;
  for (const block of [a.embed, a.head, ...a.layers]) {
    assert.ok(Math.abs(block.fwd.fixedMs - 2) < 1e-9 && Math.abs(block.fwd.perSampleMs - 1) < 1e-9);
    assert.ok(Math.abs(block.bwd.fixedMs - 4) < 1e-9 && Math.abs(block.bwd.perSampleMs - 3) < 1e-9);
    assert.ok(block.sideBytes > 0, 'bytes stay the model’s');
    assert.is(block.updateMs, 0.5);
  }
  assert.equal(p.devices[1], base.devices[1]);
  // Device a is now far slower than its matmul estimate said: the planner gives it fewer rows.
  const plan = planPipeline(p, { microBatchOptions: [1] });
  const rows = new Map(plan.stages.flatMap((s) => s.devices.map((d) => [d.name, d.rows] as const)));
  assert.ok((rows.get('a') ?? 0) < (rows.get('b') ?? 0), JSON.stringify([...rows]));
});

test.run();
