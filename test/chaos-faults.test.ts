/**
 * A message fault on a real run (real nats-server, real device processes): a dropped activation
 * is recovered by the step deadline (the step is given up and replayed under a new generation),
 * and the run ends where the fault-free run ends (1e-5).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { chaosJob, eventsOf, runFaulty } from './fixtures/chaos.ts';

const job = chaosJob('chaos-faults');

test('chaos faults: activations dropped for a while -> the step deadline replays the step, the run matches the fault-free run', async () => {
  const run = await runFaulty(job, 'drop', `- { at: { step: 3 }, kind: drop, subject: "fwd.>", durationMs: 1500 }\n`);
  const hits = run.fired[0]!.reports.reduce((a, r) => a + r.hit, 0);
  assert.ok(hits > 0, 'activations were dropped');
  const expired = eventsOf(run, 'STEP_EXPIRED');
  assert.ok(expired.length >= 1 && expired[0]!.step === 3, JSON.stringify(expired));
  const done3 = eventsOf(run, 'STEP_DONE').filter((e) => e.step === 3);
  assert.is(done3.length, 1, 'step 3 done once, by its replay');
  assert.ok((done3[0]!.at as number) > (expired[0]!.at as number));
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
