/**
 * Devices joining a run mid-way, with a real nats-server and real device processes: an optional
 * topology device started with `charon device` during the pipeline epoch and an unlisted one
 * during a cached epoch (allowed by `elastic.allowUnlisted`; elastic-rejoin.test.ts checks the
 * refusal without it). Each joiner works within two step boundaries of its profile, and the run
 * ends as a fault-free run ends. Restarted and resumed devices: elastic-rejoin.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLaunch, type Ev } from './fixtures/launch.ts';
import { issueCredentials, seedPath } from '../src/security/credentials.ts';
import { checkRun, elasticTopology, joinLatency, metricSteps, startDevice, stopDevice } from './fixtures/elastic.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-join-'));
/**
 * dev0 and dev1 start the run; dev2 is listed, optional, on "another host"; others may join.
 * The local devices are slowed down (a sleep, not CPU) so that a device process started mid-run,
 * whose start takes seconds on a loaded machine, joins before the phase is over.
 */
const open = elasticTopology(tmp, 'join', {
  samples: 48,
  // Four cached epochs: a device process started at the end of epoch 1 takes seconds to boot on a
  // loaded machine, and must still find cached steps to join.
  epochs: 5,
  // Over this many steps lr 0.01 lets placements of different sizes drift apart by more than
  // 1e-5 without any fault (the order of sums differs); 0.001 keeps them within 1e-7.
  lr: 0.001,
  // The pipeline epoch must outlast a device process's start while two other test files load
  // the same cores; the slowdown is a sleep, so it costs time, not CPU.
  slowdown: 40,
  // Steps this slow on a loaded machine outlast the deadline derived from the (unslowed) profile;
  // a replay would add a re-plan this test does not expect.
  training: { stepDeadlineMs: 120_000 },
  extra: [{ name: 'dev2', local: false, optional: true }],
  elastic: { allowUnlisted: true },
});
const launch = (t: { file: string; profile: string }, runDir: string, onEvent: (e: Ev) => void) =>
  startLaunch([t.file, '--run-dir', runDir, '--profile', t.profile], onEvent).done;

test('elastic join: an optional device started during the pipeline epoch and an unlisted one during a cached epoch are put to work at step boundaries', async () => {
  const runDir = join(tmp, 'join');
  let dev2: ReturnType<typeof startDevice> | undefined;
  let guest: ReturnType<typeof startDevice> | undefined;
  let nats = '';
  // The run's bus is authenticated: launch issues keys for the topology's devices (dev2 too), and
  // an unlisted device needs its own, issued before (as `charon creds add` does).
  issueCredentials(runDir, 'join', 'guest', 'device');
  const creds = (name: string) => ['--creds', seedPath(runDir, name)];
  const run = await launch(open, runDir, (e) => {
    if (e.type === 'LAUNCHED') nats = e.nats as string;
    // Started as the first plan is made: its boot overlaps the deployment, so it registers during
    // the pipeline epoch however short that epoch is on an idle machine.
    if (!dev2 && e.type === 'RUN_PLANNED') dev2 = startDevice(nats, 'join', 'dev2', creds('dev2'));
    if (!guest && e.type === 'EPOCH_DONE') guest = startDevice(nats, 'join', 'guest', creds('guest'));
  });
  await Promise.all([stopDevice(dev2!), stopDevice(guest!)]);
  const { summary, diff } = await checkRun(open, runDir, run);

  assert.is(summary.faults.length, 0);
  const at = (type: string, extra: (e: Ev) => boolean = () => true) => run.events.find((e) => e.type === type && extra(e))?.at as number;
  const planned = at('RUN_PLANNED');
  const timing = `dev2 registered ${at('DEVICE_JOINED', (e) => e.device === 'dev2') - planned} ms after the first plan; the pipeline epoch ended ${at('EPOCH_DONE', (e) => e.epoch === 1) - planned} ms after it`;
  assert.equal(
    summary.joins.map((j) => [j.device, j.phase, j.rejoin]),
    [
      ['dev2', 'pipeline', false],
      ['guest', 'cached', false],
    ],
    timing,
  );
  assert.equal(
    summary.replans.map((r) => [r.joined, r.lost, r.left, [...r.devices].sort()]),
    [
      [['dev2'], [], [], ['dev0', 'dev1', 'dev2']],
      [['guest'], [], [], ['dev0', 'dev1', 'dev2', 'guest']],
    ],
  );
  const steps = metricSteps(runDir);
  const lines: string[] = [];
  for (const j of summary.joins) {
    const lat = joinLatency(run, runDir, j.device);
    assert.is(lat.first.step, j.step, `${j.device} works from the step it joined at`);
    assert.is(lat.first.phase, j.phase);
    assert.ok(lat.boundaries <= 2, `${j.device} first worked ${lat.boundaries} step boundaries after its profile`);
    assert.ok(
      steps.filter((m) => m.step >= j.step).every((m) => m.devices.includes(j.device) || m.phase === 'pipeline'),
      `${j.device} takes part in every cached step after it joined`,
    );
    lines.push(
      `${j.device} (${j.phase}): registered -> first step ${lat.first.step} done in ${lat.ms} ms, ${lat.boundaries} boundaries after its profile`,
    );
  }
  // The guest got its shard from the holders' caches.
  assert.ok((summary.redistribution?.shardSizes.guest ?? 0) > 0);
  console.log(`  join: ${timing}; ${lines.join('; ')}; relative difference ${diff.toExponential(1)}`);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
