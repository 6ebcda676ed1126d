/**
 * A run survives its coordinator: `charon launch` on two local device processes (tiny preset, a
 * real nats-server), the coordinator process SIGKILLed (a) in the pipeline epoch, (b) in a
 * cached epoch. The launcher starts another coordinator, which takes the same device processes
 * over (no device restarted, no cache recomputed in the cached phase) and continues from the last
 * committed step; the run ends where an uninterrupted run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromReference, startLaunch, type Ev, writeCiTopology } from './fixtures/launch.ts';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';
import { alive } from './fixtures/processes.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-coord-'));
const SAMPLES = 24,
  EPOCHS = 3,
  STEPS = SAMPLES / 4;

const file = writeCiTopology(join(tmp, 'local-2.yaml'), { run: 'coord-restart', samples: SAMPLES, epochs: EPOCHS });

/** The analytic profile, so that both coordinators make the same plan whatever the machine's load. */
const profile = join(tmp, 'local-2.profile.json');
{
  const r = spawnSync(process.execPath, [join(root, 'tools/charon.js'), 'plan', file, '--write-profile', profile, '--json'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.is(r.status, 0, r.stderr);
}

/** SIGKILLs the coordinator process at the first event `when` matches; checks the run against an uninterrupted one. */
async function killCoordinator(name: string, when: (e: Ev) => boolean): Promise<void> {
  const runDir = join(tmp, name);
  const devicePids = new Map<string, number[]>();
  let coordinatorPid = 0;
  let killedAt = 0;
  let liveAtKill: boolean[] = [];
  const run = await startLaunch([file, '--run-dir', runDir, '--profile', profile], (e) => {
    if (e.type === 'DEVICE_SPAWNED') devicePids.set(e.device as string, [...(devicePids.get(e.device as string) ?? []), e.pid as number]);
    if (e.type === 'COORDINATOR_STARTED') coordinatorPid = e.pid as number;
    if (!killedAt && when(e)) {
      killedAt = Date.now();
      process.kill(coordinatorPid, 'SIGKILL');
      liveAtKill = [...devicePids.values()].flat().map(alive);
    }
  }).done;
  assert.is(run.code, 0, run.stderr.slice(-3000));
  assert.is(run.events.at(-1)!.reason, 'trained', run.stderr.slice(-3000));
  assert.ok(killedAt > 0, 'the coordinator was killed');
  assert.equal(liveAtKill, [true, true]);

  // The same two device processes served the whole run: none was restarted.
  assert.equal(
    [...devicePids.values()].map((p) => p.length),
    [1, 1],
    JSON.stringify([...devicePids]),
  );
  const started = run.events.filter((e) => e.type === 'COORDINATOR_STARTED');
  assert.is(started.length, 2, 'one successor');
  assert.is(started[1]!.epoch, 2);
  assert.ok(typeof started[1]!.resumedFromStep === 'number', 'the successor resumed from a committed step');
  assert.not.ok(alive(coordinatorPid) || alive(started[0]!.pid as number), 'no coordinator left');
  const adopted = run.events.filter((e) => e.type === 'DEVICE_ADOPTED');
  assert.equal(adopted.map((e) => e.device).sort(), ['dev0', 'dev1']);
  for (const a of adopted) assert.is(a.pid, devicePids.get(a.device as string)![0]);
  assert.not.ok(
    run.events.some((e) => e.type === 'DEVICE_LOST'),
    'no device lost',
  );

  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.equal(
    summary.epochs.map((e) => e.steps),
    [STEPS, STEPS, STEPS],
  );
  assert.equal(summary.ledger.problems, [], 'every sample exactly once per epoch');
  // The successor's summary names both coordinators: the first (from the committed state) and itself.
  assert.equal(
    summary.coordinators.map((c) => [c.epoch, c.resumedFromStep, [...c.adopted].sort()]),
    [
      [1, null, []],
      [2, started[1]!.resumedFromStep, ['dev0', 'dev1']],
    ],
  );
  const committed = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; step?: number })
    .filter((m) => m.type === 'step')
    .map((m) => m.step);
  assert.equal(
    committed,
    Array.from({ length: EPOCHS * STEPS }, (_, i) => i + 1),
    'every step recorded once',
  );

  const restarted = run.events.find((e) => e.type === 'COORDINATOR_STARTED' && (e.at as number) > killedAt)!;
  const next = run.events.find((e) => e.type === 'STEP_DONE' && (e.at as number) > killedAt)!;
  const refill = run.events.find((e) => e.type === 'CACHE_REFILLED' && (e.at as number) > killedAt);
  const { diff } = await fromReference(file, runDir);
  console.log(
    `  ${name}: coordinator killed; successor up ${(restarted.at as number) - killedAt} ms, step ${next.step} done ` +
      `${(next.at as number) - killedAt} ms after the kill; ${refill ? `${refill.samples} samples refilled` : 'no refill'}; ` +
      `relative difference ${diff.toExponential(1)}`,
  );
  assert.ok(diff <= 1e-5, `${name}: the run differs from an uninterrupted one by ${diff}`);
  assert.not.ok(refill, 'the devices kept their caches: nothing recomputed');
  // Nothing is left: every coordinator (the standby too) and device process has exited.
  const pids = [...devicePids.values()]
    .flat()
    .concat(run.events.filter((e) => e.type === 'COORDINATOR_SPAWNED').map((e) => e.pid as number));
  for (let i = 0; i < 50 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(pids.filter(alive), [], 'no process left');
}

test('coordinator restart: SIGKILLed in the pipeline epoch, a successor takes the live devices over and the run ends as an uninterrupted run', async () => {
  await killCoordinator('pipeline', (e) => e.type === 'STEP_DONE' && e.phase === 'pipeline' && e.step === 2);
});

test('coordinator restart: SIGKILLed in a cached epoch, the devices keep their cache shards (nothing recomputed)', async () => {
  await killCoordinator('cached', (e) => e.type === 'STEP_DONE' && e.phase === 'cached' && e.step === STEPS + 2);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
