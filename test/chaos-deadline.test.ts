/**
 * The step deadline in the run machine (fake effects, simulated clock): a step that does not
 * return in time is given up and replayed on the same devices under a new generation; a bus
 * reconnect gives up the step in flight at once; a step that never completes fails the run after
 * MAX_STEP_ATTEMPTS, its deadline doubling at each attempt.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, SimulatedClock, toPromise, waitFor } from 'xstate';
import type { RunInput, RunOutput, StepInput } from '../actors/coordinator/run-machine.ts';
import { MAX_STEP_ATTEMPTS, STEP_DEADLINE_FLOOR_MS, stepDeadlineMs } from '../actors/coordinator/step-deadline.ts';
import { fakeRun, input } from './fixtures/run-effects.ts';

const never = () => new Promise<void>(() => {});
/** A `beforeStep` hook: the first attempt of step `step` never returns, every other attempt goes on. */
function hangFirst(step: number) {
  let tried = false;
  return (s: StepInput): Promise<void> => {
    if (s.step !== step || tried) return Promise.resolve();
    tried = true;
    return never();
  };
}
// No debounce: with a simulated clock every wait must be advanced by hand, and these tests are about the deadline.
const withDeadline: RunInput = { ...input, stepDeadlineMs: 1000, debounceMs: 0 };

function start(machine: ReturnType<typeof fakeRun>['machine'], clock: SimulatedClock) {
  const actor = createActor(machine, { input: withDeadline, clock }).start();
  for (const d of withDeadline.expectedDevices) actor.send({ type: 'DEVICE_JOINED', device: d });
  return actor;
}

function done(out: RunOutput) {
  if (out.status !== 'done') throw new Error(`run failed: ${out.error}`);
  return out.summary;
}

test('step deadline: from the plan, with a floor, doubling per attempt, or fixed by the topology', () => {
  assert.is(stepDeadlineMs({ simulatedStepMs: 5, attempt: 0 }), STEP_DEADLINE_FLOOR_MS);
  assert.is(stepDeadlineMs({ simulatedStepMs: 5000, attempt: 0 }), 50_000);
  assert.is(stepDeadlineMs({ simulatedStepMs: 5000, attempt: 2 }), 200_000);
  assert.is(stepDeadlineMs({ simulatedStepMs: 5000, attempt: 1, fixedMs: 3000 }), 6000);
});

test('step deadline: a step that does not return is given up and replayed under generation 1 on the same stages, without a re-plan', async () => {
  const { machine, calls } = fakeRun({ beforeStep: hangFirst(2) });
  const clock = new SimulatedClock();
  const actor = start(machine, clock);
  await waitFor(actor, () => calls.step.some((s) => s.step === 2));
  clock.increment(999);
  await Promise.resolve();
  assert.is(calls.abort.length, 0, 'not before the deadline');
  clock.increment(1);
  const summary = done(await toPromise(actor));
  assert.equal(calls.order.slice(0, 9), ['profile', 'plan', 'deploy', 'step', 'commit', 'step', 'abort', 'deploy', 'step']);
  assert.equal(calls.abort[0], { devices: calls.deploy[0]!.devices, release: [], lost: [] }, 'the stages stay loaded');
  assert.equal(calls.deploy[1]!.generation, 1);
  assert.equal(calls.deploy[1]!.firstStep, 2);
  assert.equal(calls.deploy[1]!.layout, calls.deploy[0]!.layout, 'the same plan');
  assert.equal(calls.deploy[1]!.side, calls.commit[0]!.side, 'the committed side network');
  assert.equal(calls.step.map((s) => s.step).slice(0, 4), [1, 2, 2, 3]);
  assert.equal(
    summary.replans.map((r) => [r.generation, r.lost]),
    [[1, []]],
  );
  assert.equal(summary.faults, []);
  assert.equal(summary.ledger.problems, []);
});

test('step deadline: a cached step given up reloads the workers over the same shards under a new generation: no re-plan, no redistribution', async () => {
  const { machine, calls } = fakeRun({ beforeStep: hangFirst(5) });
  const clock = new SimulatedClock();
  const actor = start(machine, clock);
  await waitFor(actor, () => calls.step.some((s) => s.step === 5));
  clock.increment(1000);
  const summary = done(await toPromise(actor));
  const at = calls.order.indexOf('abort');
  assert.equal(calls.order.slice(at - 2, at + 3), ['commit', 'step', 'abort', 'reload', 'step']);
  assert.equal(
    calls.order.filter((o) => o === 'plan' || o === 'redistribute' || o === 'deploy').length,
    3,
    'planned, deployed and redistributed once',
  );
  const devices = calls.redistribute[0]!.devices;
  assert.equal(calls.abort[0], { devices, release: devices, lost: [] }, 'the workers are released');
  assert.equal(calls.reload, [{ cached: calls.outputs.redistribute!.cached, generation: 1, firstStep: 5, side: calls.commit[3]!.side }]);
  assert.equal(calls.step.map((s) => s.step).slice(3, 7), [4, 5, 5, 6]);
  assert.equal(
    summary.replans.map((r) => [r.generation, r.lost, r.joined, r.left, r.from, r.to, r.kept, r.redeployed]),
    [[1, [], [], [], summary.replans[0]!.from, summary.replans[0]!.from, [], []]],
  );
  assert.equal(summary.replans[0]!.from.cachedRanks, devices);
  assert.equal(summary.ledger.problems, []);
});

test('step deadline: the coordinator reconnecting to the bus gives up the step in flight at once', async () => {
  const { machine, calls } = fakeRun({ beforeStep: hangFirst(3) });
  const clock = new SimulatedClock();
  const actor = start(machine, clock);
  await waitFor(actor, () => calls.step.some((s) => s.step === 3));
  actor.send({ type: 'BUS_RECONNECTED' });
  const summary = done(await toPromise(actor));
  assert.equal(calls.step.map((s) => s.step).slice(0, 4), [1, 2, 3, 3]);
  assert.is(summary.replans.length, 1);
});

test('step deadline: a step that never returns fails the run after the last attempt', async () => {
  const { machine, calls } = fakeRun({ beforeStep: (s: StepInput) => (s.step === 2 ? never() : Promise.resolve()) });
  const clock = new SimulatedClock();
  const actor = start(machine, clock);
  for (let attempt = 0; attempt < MAX_STEP_ATTEMPTS; attempt++) {
    await waitFor(actor, () => calls.step.filter((s) => s.step === 2).length === attempt + 1);
    clock.increment(1000 * 2 ** attempt);
  }
  const out = await toPromise(actor);
  assert.equal(out, { status: 'failed', error: `step 2 (epoch 1) did not complete in ${MAX_STEP_ATTEMPTS} attempts` });
  assert.is(calls.abort.length, MAX_STEP_ATTEMPTS - 1);
});

test.run();
