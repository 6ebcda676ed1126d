/**
 * A classification run survives a SIGKILLed device: three local device processes, labelled data,
 * PAC planned dev0 | dev1+dev2, and dev2 (a rank of the last stage, which holds the head) killed
 * in the pipeline epoch. The run re-plans over the survivors, redeploys the committed head and
 * side network, replays the step in flight, and ends with the weights of an uninterrupted run.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pinTwoStageProfile, referenceRun, startLaunch } from './fixtures/launch.ts';
import { relDiff } from './fixtures/compare.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { writeClassifyTopology, writeLabelledData } from './fixtures/classification.ts';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-elastic-classify-'));
const SAMPLES = 24,
  STEPS = SAMPLES / 4;

const dataFile = join(tmp, 'labelled.jsonl');
writeLabelledData(dataFile, { sequences: SAMPLES, seed: 3, length: (i) => 8 + (i % 3) * 4, label: (t) => ['a', 'b', 'c'][t % 3]! });
const file = join(tmp, 'classify-3.yaml');
writeClassifyTopology(file, {
  run: 'classify-3',
  dataFile,
  training: { epochs: 2, batch: 4, microBatches: 2, lr: 0.01, seed: 1 },
  devices: ['dev0', 'dev1', 'dev2'],
});

/** The plan is dev0 | dev1+dev2 whatever the load: dev2 holds half of the last stage, with the head. */
const profile = join(tmp, 'classify-3.profile.json');
pinTwoStageProfile(file, profile);

test('classification: a last-stage device SIGKILLed in the pipeline epoch; the run recovers and ends as an uninterrupted run', async () => {
  const runDir = join(tmp, 'run');
  const pids = new Map<string, number>();
  let killed = false;
  const run = await startLaunch([file, '--run-dir', runDir, '--profile', profile], (e) => {
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!killed && e.type === 'STEP_DONE' && e.phase === 'pipeline') {
      killed = true;
      process.kill(pids.get('dev2')!, 'SIGKILL');
    }
  }).done;
  assert.is(run.code, 0, run.stderr.slice(-3000));
  assert.ok(killed, 'dev2 was killed');
  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.equal(
    summary.replans[0]?.from.stages.map((s) => s.devices),
    [['dev0'], ['dev1', 'dev2']],
    'the head was on dev1 and dev2',
  );
  assert.is(summary.faults.length, 1, JSON.stringify(summary.faults));
  assert.is(summary.faults[0]!.device, 'dev2');
  assert.equal(summary.ledger.problems, [], 'every sample exactly once per epoch');
  assert.equal(
    summary.epochs.map((e) => e.steps),
    [STEPS, STEPS],
  );
  assert.is(summary.task, 'classification');
  const ref = await referenceRun(file);
  const ck = loadCheckpoint(join(runDir, 'checkpoints', 'latest'));
  assert.equal(ck.meta.labelNames, ['a', 'b', 'c']);
  const got = new Map([...ck.state.parameters].map(([n, p]) => [n, p.data]));
  const diff = relDiff(ref.params, got);
  const head = (m: Map<string, Float32Array>) => new Map([...m].filter(([n]) => n.startsWith('head.')));
  process.stderr.write(
    `classification recovery: relative difference ${diff.toExponential(1)} (head ${relDiff(head(ref.params), head(got)).toExponential(1)})\n`,
  );
  assert.ok(diff <= 1e-5, `the recovered run differs from an uninterrupted one by ${diff}`);
  assert.ok(relDiff(head(ref.params), head(got)) <= 1e-5, 'head weights');
  summary.epochs.forEach((e, i) =>
    assert.ok(Math.abs(e.accuracy! - ref.epochAccuracy![i]!) < 1e-9, `epoch ${i + 1} accuracy ${e.accuracy} vs ${ref.epochAccuracy![i]}`),
  );
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
