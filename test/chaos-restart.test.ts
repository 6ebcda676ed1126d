/**
 * The bus itself restarts: the nats-server is stopped and started again on the same port, once
 * in the pipeline epoch and once (after 300 ms down) in a cached epoch, each while a delay fault
 * holds the all-reduce back. Every process reconnects, the step in flight is replayed, no device is
 * declared lost for the server's silence, and the run ends where the fault-free run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chaosJob, eventsOf, runFaulty } from './fixtures/chaos.ts';

const job = chaosJob('chaos-restart');

test('chaos faults: nats-server restarts mid-run -> reconnect, replay, no device lost, same weights', async () => {
  // Each restart lands inside a step: the all-reduce of the steps around it is held back for
  // 300 ms (the rule is in place a step earlier), so no tiny step can finish before the server stops.
  const run = await runFaulty(
    job,
    'restart',
    `- { at: { step: 2 }, kind: delay, subject: "grad.>", durationMs: 4000, delayMs: 300 }
- { at: { step: 3 }, kind: nats-restart }
- { at: { epoch: 2, step: 2 }, kind: delay, subject: "grad.>", durationMs: 4000, delayMs: 300 }
- { at: { epoch: 2, step: 3 }, kind: nats-restart, durationMs: 300 }
`,
  );
  assert.is(eventsOf(run, 'DEVICE_LOST').length, 0, 'no device lost');
  const summary = JSON.parse(readFileSync(join(job.dir, 'restart', 'summary.json'), 'utf8'));
  assert.equal(summary.faults, []);
  // Each restart lands in a step: that step is given up and run again under a new deployment
  // (re-deployed, workers reloaded, or a deadline replay), and no step is skipped or done twice.
  for (const i of [1, 3]) {
    const t = run.fired[i]!.firedAt!;
    const done = eventsOf(run, 'STEP_DONE');
    const before = done.filter((e) => (e.at as number) <= t).at(-1)!;
    const after = done.find((e) => (e.at as number) > t)!;
    const around = run.launch.events
      .filter((e) => (e.at as number) >= t - 200 && (e.at as number) <= (after.at as number))
      .map((e) => `${e.type}${e.step !== undefined ? `:${e.step}` : ''}@${(e.at as number) - t}`)
      .join(' ');
    assert.is(after.step, (before.step as number) + 1, around);
    assert.ok(
      run.launch.events.some(
        (e) =>
          ['STEP_EXPIRED', 'RUN_DEPLOYED', 'RUN_RELOADED'].includes(e.type) &&
          (e.at as number) > t &&
          (e.at as number) < (after.at as number),
      ),
      `the step in flight at restart ${i} was given up and run again (events: ${around})`,
    );
  }
  for (const i of [0, 2])
    assert.ok(
      run.fired[i]!.reports.some((r) => r.hit > 0),
      `all-reduce messages were delayed (${JSON.stringify(run.fired[i]!.reports)})`,
    );
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
