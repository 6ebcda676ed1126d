import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planOptionsForRun, planPipeline } from '../src/plan/planner.ts';
import { loadProfile, selectDevices, type Profile } from '../src/plan/profile.ts';
import { loadTopology } from '../src/topology/load.ts';
import { specFromTopology } from '../src/train/run-spec.ts';

const charon = (...args: string[]) => spawnSync(process.execPath, ['tools/charon.js', 'plan', ...args], { encoding: 'utf8' });

const paper: Record<string, string[]> = {
  't5-base': ['[2]', '[4]', '[6]', '[8]'],
  'bart-large': ['[1-1]', '[2-2]', '[3-3]', '[4-4]'],
  't5-large': ['[1-1]', '[2-1-1]', '[2-2-2]', '[3-3-2]'],
};

test("plan: the Jetson Nano profiles plan on 2, 4, 6 and 8 devices (groupings beside the paper's)", () => {
  const rows: string[] = [];
  for (const model of Object.keys(paper)) {
    const profile = loadProfile(`topologies/profiles/${model}-jetson-nano.json`);
    const ours = [2, 4, 6, 8].map((n) => {
      const plan = planPipeline(selectDevices(profile, { count: n }));
      const used = plan.stages.reduce((s, st) => s + st.devices.length, 0) + plan.unusedDevices.length;
      assert.is(used, n);
      assert.is(plan.stages.at(-1)!.layers.to, profile.model.layers);
      return `[${plan.stages.map((s) => s.devices.length).join('-')}] M=${plan.microBatches}`;
    });
    rows.push(`${model.padEnd(11)} ours ${ours.join('  ')}   paper ${paper[model]!.join(' ')}`);
  }
  process.stderr.write(rows.join('\n') + '\n');
});

test('plan: charon plan --json prints one plan document, --simulate adds the replay', () => {
  const r = charon('--profile', 'topologies/profiles/t5-base-jetson-nano.json', '--devices', '2', '--simulate', '--json');
  assert.is(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.is(doc.plan.batchSize, 16);
  assert.ok(doc.plan.stages.length >= 1);
  assert.ok(doc.simulation.stepMs > 0);
  const text = charon('topologies/jetson-nano-8.yaml', '--profile', 'topologies/profiles/t5-large-jetson-nano.json', '--simulate');
  assert.is(text.status, 0, text.stderr);
  assert.match(text.stdout, /stage 0 {2}layers 1-/);
  assert.match(text.stdout, /predicted step .* simulated step|simulated step/s);
  assert.match(text.stdout, /bytes per step: activations/);
});

test('plan: charon plan TOPOLOGY plans with the settings charon launch uses and says which profile it used', () => {
  const profile = ['--profile', 'topologies/profiles/t5-large-jetson-nano.json'];
  const pinned = JSON.parse(charon('topologies/jetson-nano-8.yaml', ...profile, '--json').stdout);
  assert.equal(pinned.plan.search.microBatchOptions, [4], 'training.microBatches');
  assert.is(pinned.plan.microBatches, 4);
  assert.is(pinned.plan.batchSize, 8);
  assert.is(pinned.profileSource, 'from --profile topologies/profiles/t5-large-jetson-nano.json');
  const spec = specFromTopology(loadTopology('topologies/jetson-nano-8.yaml'));
  const launched = planPipeline(applyBudgets(loadProfile('topologies/profiles/t5-large-jetson-nano.json')), planOptionsForRun(spec));
  assert.is(pinned.plan.predicted.stepMs, launched.predicted.stepMs, 'the plan launch would run');
  const overridden = JSON.parse(charon('topologies/jetson-nano-8.yaml', ...profile, '--micro-batches', '2', '--json').stdout);
  assert.is(overridden.plan.microBatches, 2);
  const analytic = charon('topologies/local-2.yaml');
  assert.is(analytic.status, 0, analytic.stderr);
  assert.match(analytic.stdout, /\n {2}profile: analytic estimate at 15 GFLOP\/s/);
  const indivisible = charon('topologies/jetson-nano-8.yaml', ...profile, '--batch', '6');
  assert.is(indivisible.status, 2);
  assert.match(indivisible.stderr, /training\.microBatches 4 does not divide the batch size 6/);
});

/** The Nano profile with the topology's 4096 MiB budgets, as `charon plan` and launch apply them. */
function applyBudgets(p: Profile): Profile {
  return { ...p, devices: p.devices.map((d) => ({ ...d, memoryBytes: Math.min(d.memoryBytes, 4096 * 2 ** 20) })) };
}

test('plan: bad input is one clear line and a non-zero exit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plan-cli-'));
  const missing = charon('--profile', join(dir, 'none.json'));
  assert.is(missing.status, 2);
  assert.match(missing.stderr, /^charon plan: .*none\.json: \(root\): cannot read: ENOENT\n$/);
  const profile = loadProfile('topologies/profiles/t5-large-jetson-nano.json');
  writeFileSync(join(dir, 'one.json'), JSON.stringify(selectDevices(profile, { count: 1 })));
  const infeasible = charon('--profile', join(dir, 'one.json'));
  assert.is(infeasible.status, 1);
  assert.match(
    infeasible.stderr,
    /^charon plan: infeasible: no placement of 48 layers on 1 device fits in memory; .*nano-0 needs \d+ MiB but has 3072 MiB/,
  );
  const remote = charon('topologies/jetson-nano-8.yaml');
  assert.is(remote.status, 2);
  assert.match(remote.stderr, /device 'nano-0' is not local.*--profile/);
  const none = charon();
  assert.is(none.status, 2);
});
test.run();
