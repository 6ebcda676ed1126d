/**
 * A device SIGTERMed mid-run (real processes): it leaves, the run recovers over the others as
 * from a loss, and ends where the fault-free run ends (1e-5), every sample once per epoch.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { chaosJob, eventsOf, runFaulty } from './fixtures/chaos.ts';

const job = chaosJob('chaos-term');

test('chaos faults: a device SIGTERMed in the pipeline epoch leaves; the run recovers without it', async () => {
  const run = await runFaulty(job, 'term', `- { at: { step: 3 }, kind: term, device: dev2 }\n`);
  const left = eventsOf(run, 'DEVICE_LEFT');
  const firedAt = run.fired[0]!.firedAt!;
  assert.ok(
    left.some((e) => e.device === 'dev2' && (e.at as number) >= firedAt),
    JSON.stringify(left),
  );
  assert.ok(eventsOf(run, 'RECOVERING').length >= 1, 'the run recovered');
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
