/**
 * Devices leaving a run on purpose, with a real nats-server and real device processes: SIGTERM
 * to a local device process in the pipeline epoch and in a cached epoch. The device finishes its
 * share of the step in flight, the run re-plans at the step boundary without it and without a
 * replay (a leave, no fault), in the cached phase its cache entries are handed to their new
 * owners instead of being recomputed, and the run ends as a fault-free run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLaunch, type Ev } from './fixtures/launch.ts';
import { checkRun, elasticTopology, eventsOf, metricSteps } from './fixtures/elastic.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-leave-'));
const three = elasticTopology(tmp, 'leave', { samples: 32, epochs: 2, slowdown: 4, local: 3 });

async function leaveDuring(name: string, device: string, when: (e: Ev) => boolean) {
  const runDir = join(tmp, name);
  const pids = new Map<string, number>();
  let termAt = 0;
  const run = await startLaunch([three.file, '--run-dir', runDir, '--profile', three.profile], (e) => {
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!termAt && when(e)) {
      termAt = Date.now();
      process.kill(pids.get(device)!, 'SIGTERM');
    }
  }).done;
  const { summary, diff } = await checkRun(three, runDir, run);
  assert.equal(summary.faults, [], 'a leave is not a fault');
  assert.is(summary.leaves.length, 1);
  const leave = summary.leaves[0]!;
  assert.equal([leave.device, leave.reason], [device, 'SIGTERM']);
  assert.ok(leave.at! >= termAt);
  assert.equal(
    summary.replans.map((r) => [r.left, r.lost, r.joined, [...r.devices].sort()]),
    [[[device], [], [], ['dev0', 'dev1', 'dev2'].filter((d) => d !== device)]],
  );
  assert.is(eventsOf(run, 'DEVICE_SPAWNED', device).length, 1, 'a device that left is not restarted');
  assert.ok(eventsOf(run, 'DEVICE_LEFT', device).length === 1);
  assert.ok(eventsOf(run, 'DEVICE_DISMISSED', device).length === 1);
  // It finished its share of the step in flight, then was in no step after the re-plan.
  const steps = metricSteps(runDir);
  assert.ok(steps.filter((m) => m.step < leave.step).some((m) => m.devices.includes(device)));
  assert.ok(steps.filter((m) => m.step >= leave.step).every((m) => !m.devices.includes(device)));
  const next = run.events.find((e) => e.type === 'STEP_DONE' && e.step === leave.step)!;
  console.log(
    `  ${name}: SIGTERM to ${device} -> re-planned step ${leave.step} done ${(next.at as number) - termAt} ms later; relative difference ${diff.toExponential(1)}`,
  );
  return { run, summary, termAt };
}

test('elastic leave: SIGTERM to a device in the pipeline epoch; the run re-plans at the step boundary without a replay', async () => {
  await leaveDuring('pipeline', 'dev2', (e) => e.type === 'STEP_DONE' && e.step === 2);
});

test('elastic leave: SIGTERM to a device in a cached epoch hands its cache entries over (nothing recomputed), no replay', async () => {
  const { run, termAt } = await leaveDuring('cached', 'dev1', (e) => e.type === 'STEP_DONE' && e.phase === 'cached');
  const refills = run.events.filter((e) => e.type === 'CACHE_REFILLED' && (e.at as number) > termAt);
  assert.equal(refills, [], 'the leaver handed its entries over instead of losing them');
  const moved = run.events.filter((e) => e.type === 'REDISTRIBUTED' && (e.at as number) > termAt);
  assert.is(moved.length, 1);
  assert.ok((moved[0]!.bytes as number) > 0);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
