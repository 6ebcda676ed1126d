/**
 * The chaos runner's `coordinator-kill` (real processes): the coordinator process SIGKILLed in a
 * cached epoch while a device joined by the runner is part of the run; a successor takes the
 * live devices over (none restarted) and the run ends where the fault-free run ends (1e-5),
 * every sample once per epoch, nothing left behind (the standby coordinator included).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { chaosJob, eventsOf, runFaulty, STEPS } from './fixtures/chaos.ts';

const job = chaosJob('chaos-coordinator');

test('chaos faults: the coordinator SIGKILLed in a cached epoch; a successor takes the live devices over', async () => {
  const run = await runFaulty(job, 'coordinator', `- { at: { step: ${STEPS / 3 + 3} }, kind: coordinator-kill }\n`);
  const fired = run.fired[0]!;
  const started = eventsOf(run, 'COORDINATOR_STARTED');
  assert.is(started.length, 2, JSON.stringify(started));
  assert.is(fired.pid, started[0]!.pid, 'the coordinator at work was killed');
  assert.ok(eventsOf(run, 'COORDINATOR_LOST').some((e) => e.pid === fired.pid));
  assert.equal(eventsOf(run, 'DEVICE_SPAWNED').length, 3, 'no device restarted');
  assert.equal(
    eventsOf(run, 'DEVICE_ADOPTED')
      .map((e) => e.device)
      .sort(),
    ['dev0', 'dev1', 'dev2'],
  );
  assert.not.ok(eventsOf(run, 'DEVICE_LOST').length, 'no device lost');
  const next = run.launch.events.find((e) => e.type === 'STEP_DONE' && (e.at as number) > fired.firedAt!)!;
  console.log(`  coordinator-kill: next step done ${(next.at as number) - fired.firedAt!} ms after the kill`);
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
