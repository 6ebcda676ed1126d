/**
 * The bus itself restarts: the nats-server is stopped and started again on the same port, once
 * in the pipeline epoch and once (after 300 ms down) in a cached epoch, with a delay fault on the
 * all-reduce between. Every process reconnects, the step in flight is replayed, no device is
 * declared lost for the server's silence, and the run ends where the fault-free run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chaosJob, eventsOf, runFaulty } from './fixtures/chaos.ts';

const job = chaosJob('chaos-restart');

test('chaos faults: nats-server restarts mid-run -> reconnect, replay, no device lost, same weights', async () => {
  const run = await runFaulty(
    job,
    'restart',
    `- { at: { step: 3 }, kind: nats-restart }
- { at: { step: 5 }, kind: delay, subject: "grad.>", durationMs: 1000, delayMs: 200 }
- { at: { epoch: 2, step: 3 }, kind: nats-restart, durationMs: 300 }
`,
  );
  assert.is(eventsOf(run, 'DEVICE_LOST').length, 0, 'no device lost');
  const summary = JSON.parse(readFileSync(join(job.dir, 'restart', 'summary.json'), 'utf8'));
  assert.equal(summary.faults, []);
  assert.ok(eventsOf(run, 'STEP_EXPIRED').length >= 1, 'the step in flight was given up');
  assert.ok(
    run.fired[1]!.reports.some((r) => r.hit > 0),
    'all-reduce messages were delayed',
  );
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
