/**
 * The run machine's recovery with fake effects: a device lost during a pipeline step, a cached
 * step, a commit or a recovery; a device that stops answering; the last device lost; a device
 * that comes back. What each recovery effect receives, what is replayed, what the summary records.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromPromise, SimulatedClock, toPromise, waitFor } from 'xstate';
import type {
  AbortInput,
  CommitInput,
  Committed,
  ProfileInput,
  RunInput,
  RunOutput,
  StepInput,
} from '../actors/coordinator/run-machine.ts';
import type { Profile } from '../src/plan/profile.ts';
import { survivorsProfile } from '../actors/coordinator/run-faults.ts';
import { NoResponders } from '../src/bus/errors.ts';
import { epochSteps } from '../src/train/data.ts';
import { Ledger } from '../src/train/ledger.ts';
import { fakeRun, input, planned, profile3, spec } from './fixtures/run-effects.ts';

type Machine = ReturnType<typeof fakeRun>['machine'];
const three: RunInput = { ...input, expectedDevices: ['d0', 'd1', 'd2'] };
const never = () => new Promise<void>(() => {});
/** A `beforeStep` hook: the first attempt of step `step` does `first()`, every other attempt goes on. */
function onFirstAttempt(step: number, first: () => Promise<void>) {
  let tried = false;
  return (s: StepInput): Promise<void> => {
    if (s.step !== step || tried) return Promise.resolve();
    tried = true;
    return first();
  };
}
/** The first attempt of step `step` never ends (its devices wait on the lost one). */
const hangFirst = (step: number) => onFirstAttempt(step, never);

function start(machine: Machine, inp: RunInput = three, clock?: SimulatedClock) {
  const actor = createActor(machine, { input: inp, ...(clock ? { clock } : {}) }).start();
  for (const d of inp.expectedDevices) actor.send({ type: 'DEVICE_JOINED', device: d });
  return actor;
}

type Actor = ReturnType<typeof start>;
const inStep = (actor: Actor, calls: { step: StepInput[] }, phase: 'pipelineEpoch' | 'cachedEpochs', step: number) =>
  waitFor(actor, (s) => s.matches({ training: { [phase]: 'step' } }) && calls.step.at(-1)?.step === step);

function done(out: RunOutput) {
  if (out.status !== 'done') throw new Error(`run failed: ${out.error}`);
  return out.summary;
}

test('run recovery: a device lost in a pipeline step: abort on the survivors, re-plan over them, redeploy the committed side network under generation 1, replay the step', async () => {
  const { machine, calls } = fakeRun({ profileOf: profile3, beforeStep: hangFirst(2) });
  const actor = start(machine);
  await inStep(actor, calls, 'pipelineEpoch', 2);
  actor.send({ type: 'DEVICE_LOST', device: 'd2', reason: 'silent for 1500 ms', at: 1500 });
  const summary = done(await toPromise(actor));

  assert.equal(calls.order.slice(0, 9), ['profile', 'plan', 'deploy', 'step', 'commit', 'step', 'abort', 'plan', 'deploy']);
  assert.equal(calls.abort, [{ devices: ['d0', 'd1'], release: [], lost: ['d2'] }], 'the survivors keep their stages for the re-plan');
  const replan = calls.plan[1]!;
  assert.equal(
    replan.profile.devices.map((d) => d.name),
    ['d0', 'd1'],
  );
  assert.is(replan.spec.microBatches, undefined, 'the survivors may get another micro-batch count');
  const survivors = planned(spec, survivorsProfile(profile3, ['d0', 'd1']));
  const side = calls.outputs.step[0]!.side;
  const deploy = calls.deploy[1]!;
  assert.equal(
    { generation: deploy.generation, firstStep: deploy.firstStep, epoch: deploy.epoch, layout: deploy.layout },
    { generation: 1, firstStep: 2, epoch: 1, layout: survivors.layout },
  );
  assert.is(deploy.side, side, "the coordinator's committed side network, not what a survivor may have applied");

  // Step 2 runs again on the new plan's groups with the same samples, from the state after step 1.
  assert.equal(
    calls.step.map((s) => s.step),
    [1, 2, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  const [aborted, replay] = [calls.step[1]!, calls.step[2]!];
  assert.equal(replay.sampleIds, aborted.sampleIds);
  assert.equal(
    replay.groups,
    survivors.layout.map((s) => s.devices),
  );
  assert.equal(calls.sideStepAtStep.slice(0, 4), [null, 1, 1, 2]);
  assert.equal(
    calls.commit.map((c) => c.state.step),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  assert.equal(
    calls.redistribute.map((r) => [r.devices, r.generation]),
    [[['d0', 'd1'], 1]],
  );
  for (const s of calls.step.filter((x) => x.phase === 'cached')) assert.equal(s.groups, [['d0', 'd1']]);

  // The aborted attempt stays in the ledger, uncommitted; every sample is in one committed step per epoch.
  const ledger = Ledger.fromJSON(calls.finish[0]!.state.ledger);
  assert.equal(
    ledger.toJSON().epochs[0]!.steps.map((s) => [s.step, s.committed]),
    [
      [1, true],
      [2, false],
      [2, true],
      [3, true],
    ],
  );
  assert.equal(summary.ledger.problems, []);
  assert.equal(summary.faults, [
    { device: 'd2', reason: 'silent for 1500 ms', during: 'pipeline step', epoch: 1, step: 2, lostAt: 1500, recoveredAt: 2002 },
  ]);
  const full = planned(spec, profile3);
  assert.equal(summary.replans, [
    {
      generation: 1,
      lost: ['d2'],
      joined: [],
      left: [],
      devices: ['d0', 'd1'],
      at: 1000,
      from: { stages: full.layout, microBatches: full.plan.microBatches, cachedRanks: null },
      to: { stages: survivors.layout, microBatches: survivors.plan.microBatches, cachedRanks: null },
      kept: [],
      redeployed: [],
    },
  ]);
  assert.equal(summary.plan.stages, survivors.layout);
});

test('run recovery: a device lost in a cached step: its shard is recomputed through a forward-only pipeline over the survivors and redistributed, then the step is replayed', async () => {
  const { machine, calls } = fakeRun({ profileOf: profile3, beforeStep: hangFirst(5) });
  const actor = start(machine);
  await inStep(actor, calls, 'cachedEpochs', 5);
  actor.send({ type: 'DEVICE_LOST', device: 'd1', reason: 'left: SIGKILL', at: 1700 });
  const summary = done(await toPromise(actor));

  const at = calls.order.indexOf('abort');
  assert.equal(calls.order.slice(at - 1, at + 6), ['step', 'abort', 'plan', 'deploy', 'redistribute', 'step', 'commit']);
  const survivors = planned(spec, survivorsProfile(profile3, ['d0', 'd2']));
  const side = calls.outputs.step[0]!.side;
  const deploy = calls.deploy[1]!;
  assert.equal(
    { generation: deploy.generation, epoch: deploy.epoch, firstStep: deploy.firstStep, layout: deploy.layout },
    { generation: 1, epoch: 2, firstStep: 5, layout: survivors.layout },
  );
  assert.is(deploy.side, side);
  const again = calls.redistribute[1]!;
  assert.equal(
    { devices: again.devices, generation: again.generation, layout: again.layout, firstStep: again.firstStep },
    { devices: ['d0', 'd2'], generation: 1, layout: survivors.layout, firstStep: 5 },
  );
  assert.is(again.side, side);

  assert.equal(
    calls.step.map((s) => s.step),
    [1, 2, 3, 4, 5, 5, 6, 7, 8, 9],
  );
  assert.equal(calls.step[5]!.sampleIds, epochSteps(spec, 2)[1]!);
  assert.equal(calls.step[5]!.groups, [['d0', 'd2']]);
  assert.equal(calls.sideStepAtStep[5], 4, 'replayed from the state after step 4');
  assert.equal(summary.ledger.problems, []);
  assert.equal(summary.bytesPerPhase.redistribution, 100, 'both redistributions count');
  assert.equal(
    summary.faults.map((f) => [f.device, f.during, f.epoch, f.step, f.recoveredAt]),
    [['d1', 'cached step', 2, 5, 2005]],
  );
  assert.equal(
    summary.replans.map((r) => [r.generation, r.from.cachedRanks, r.to.cachedRanks, r.to.stages]),
    [[1, ['d0', 'd1', 'd2'], ['d0', 'd2'], survivors.layout]],
  );
  assert.equal(summary.redistribution!.shardSizes, { d0: 5, d2: 5 });
});

test('run recovery: a device lost while a step commits waits for the commit; the committed step is not replayed', async () => {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const { machine, calls } = fakeRun({ profileOf: profile3 });
  const gated = machine.provide({
    actors: {
      commitStep: fromPromise<Committed, CommitInput>(async ({ input: c }) => {
        calls.order.push('commit');
        calls.commit.push(c);
        if (c.state.step === 3) await gate;
        return { checkpointRef: `ckpt-${c.state.step}`, committedAt: 2000 + c.state.step };
      }),
    },
  });
  const actor = start(gated);
  await waitFor(actor, (s) => s.matches({ training: { pipelineEpoch: 'commit' } }) && calls.commit.length === 3);
  actor.send({ type: 'DEVICE_LOST', device: 'd0', reason: 'silent for 1500 ms', at: 1600 });
  assert.ok(actor.getSnapshot().matches({ training: { pipelineEpoch: 'commit' } }));
  release();
  const summary = done(await toPromise(actor));
  assert.equal(calls.order.slice(calls.order.indexOf('abort') - 1, calls.order.indexOf('abort') + 5), [
    'commit',
    'abort',
    'plan',
    'deploy',
    'redistribute',
    'step',
  ]);
  assert.equal(
    calls.step.map((s) => s.step),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  assert.equal(
    calls.redistribute.map((r) => r.devices),
    [['d1', 'd2']],
    'epoch 1 ended: one redistribution, over the survivors',
  );
  assert.equal(
    summary.faults.map((f) => [f.during, f.step, f.recoveredAt]),
    [['committing', 3, 2004]],
  );
});

test('run recovery: a device that stops answering stalls the run until liveness reports it lost; without a report the run fails with the error', async () => {
  const noAnswer = () => Promise.reject(new NoResponders('charon.r1.dev.d2.ctl'));
  const reported = fakeRun({ profileOf: profile3, beforeStep: onFirstAttempt(2, noAnswer) });
  const a = start(reported.machine);
  await waitFor(a, (s) => s.matches({ training: 'stalled' }));
  a.send({ type: 'DEVICE_LOST', device: 'd2', reason: 'silent for 1500 ms' });
  const summary = done(await toPromise(a));
  assert.equal(
    summary.faults.map((f) => [f.device, f.during, f.step]),
    [['d2', 'stalled', 2]],
  );

  const clock = new SimulatedClock();
  const silent = fakeRun({ profileOf: profile3, beforeStep: (s) => (s.step === 2 ? noAnswer() : Promise.resolve()) });
  const b = start(silent.machine, { ...three, stallTimeoutMs: 3000 }, clock);
  await waitFor(b, (s) => s.matches({ training: 'stalled' }));
  clock.increment(2999);
  assert.ok(b.getSnapshot().matches({ training: 'stalled' }));
  clock.increment(1);
  assert.equal(await toPromise(b), { status: 'failed', error: 'no responders on charon.r1.dev.d2.ctl' });
});

test('run recovery: a second loss during recovery starts it over with fewer survivors: one re-plan, one generation', async () => {
  let releaseAbort: () => void = () => {};
  const { machine, calls } = fakeRun({ profileOf: profile3, beforeStep: hangFirst(2) });
  const gated = machine.provide({
    actors: {
      abortWork: fromPromise<void, AbortInput>(async ({ input: a }) => {
        calls.order.push('abort');
        calls.abort.push(a);
        if (calls.abort.length === 1)
          await new Promise<void>((r) => {
            releaseAbort = r;
          });
      }),
    },
  });
  const actor = start(gated);
  await inStep(actor, calls, 'pipelineEpoch', 2);
  actor.send({ type: 'DEVICE_LOST', device: 'd2', reason: 'silent' });
  await waitFor(actor, (s) => s.matches({ training: { recovering: 'aborting' } }));
  actor.send({ type: 'DEVICE_LOST', device: 'd0', reason: 'silent' });
  releaseAbort();
  const summary = done(await toPromise(actor));
  assert.equal(calls.abort, [
    { devices: ['d0', 'd1'], release: [], lost: ['d2'] },
    { devices: ['d1'], release: [], lost: ['d2', 'd0'] },
  ]);
  assert.equal(
    calls.deploy.map((d) => d.generation),
    [0, 1],
  );
  assert.equal(
    summary.replans.map((r) => [r.generation, r.lost, r.devices, r.to.stages.map((s) => s.devices)]),
    [[1, ['d2', 'd0'], ['d1'], [['d1']]]],
  );
  assert.equal(
    summary.faults.map((f) => [f.device, f.during]),
    [
      ['d2', 'pipeline step'],
      ['d0', 'recovery'],
    ],
  );
  assert.equal(summary.ledger.problems, []);
});

test('run recovery: with no device left, or none the model fits on, the run fails saying so', async () => {
  const lastTwo = fakeRun({ beforeStep: hangFirst(2) });
  const a = start(lastTwo.machine, input);
  await inStep(a, lastTwo.calls, 'pipelineEpoch', 2);
  a.send({ type: 'DEVICE_LOST', device: 'd1', reason: 'silent' });
  a.send({ type: 'DEVICE_LOST', device: 'd0', reason: 'left: SIGTERM' });
  assert.equal(await toPromise(a), {
    status: 'failed',
    error: 'device d0 lost (left: SIGTERM): no device is left to train on (lost: d1, d0)',
  });

  // The fixture's model fits on neither of its two devices alone.
  const tooSmall = fakeRun({ beforeStep: hangFirst(2) });
  const b = start(tooSmall.machine, input);
  await inStep(b, tooSmall.calls, 'pipelineEpoch', 2);
  b.send({ type: 'DEVICE_LOST', device: 'd1', reason: 'silent' });
  const out = await toPromise(b);
  assert.is(out.status, 'failed');
  assert.match(
    out.status === 'failed' ? out.error : '',
    /^re-planning over d0 after losing d1: no placement of 4 layers on 1 device fits in memory/,
  );
  assert.is(tooSmall.calls.commit.length, 1);
});

test('run recovery: a device that comes back joins at the next step boundary as a new device, without a replay; lost again, the run recovers again', async () => {
  const { machine, calls } = fakeRun({ profileOf: profile3, beforeStep: hangFirst(2) });
  const actor = start(machine);
  await inStep(actor, calls, 'pipelineEpoch', 2);
  actor.send({ type: 'DEVICE_LOST', device: 'd2', reason: 'silent', at: 1500 });
  await inStep(actor, calls, 'pipelineEpoch', 3);
  actor.send({ type: 'DEVICE_JOINED', device: 'd2', at: 1800 });
  actor.send({ type: 'DEVICE_JOINED', device: 'd2', at: 1801 });
  assert.equal(
    actor.getSnapshot().context.joining.map((j) => j.device),
    ['d2'],
  );
  await waitFor(actor, (s) => s.matches({ training: 'cachedEpochs' }) && calls.step.at(-1)?.step === 6);
  actor.send({ type: 'DEVICE_LOST', device: 'd2', reason: 'silent' });
  const summary = done(await toPromise(actor));
  // Step 3 ran once on the survivors; the joiner was released, profiled, planned in and given its shard.
  assert.equal(
    calls.step.map((s) => s.step),
    [1, 2, 2, 3, 4, 5, 6, 6, 7, 8, 9],
  );
  assert.equal(
    calls.abort[1],
    { devices: ['d0', 'd1', 'd2'], release: ['d0', 'd1', 'd2'], lost: [] },
    'the cached-phase workers are released',
  );
  assert.equal(calls.profile[1]!.devices, ['d0', 'd1', 'd2']);
  assert.equal(calls.redistribute[0]!.devices, ['d0', 'd1', 'd2']);
  assert.equal(calls.step[4]!.groups, [['d0', 'd1', 'd2']]);
  assert.equal(summary.joins, [
    { device: 'd2', at: 1800, plannedAt: 1000, generation: 2, phase: 'cached', epoch: 2, step: 4, rejoin: true },
  ]);
  assert.equal(
    summary.replans.map((r) => [r.generation, r.lost, r.joined, r.devices]),
    [
      [1, ['d2'], [], ['d0', 'd1']],
      [2, [], ['d2'], ['d0', 'd1', 'd2']],
      [3, ['d2'], [], ['d0', 'd1']],
    ],
  );
  assert.is(summary.faults.length, 2);
  assert.equal(summary.joinedLate, []);
  assert.equal(summary.ledger.problems, []);
});

test('run recovery: a loss and joins arriving within the debounce window make one re-plan', async () => {
  const { machine: fake, calls } = fakeRun({ profileOf: profile3, beforeStep: hangFirst(2) });
  // Profiles only the devices it is asked about, as the real effect does.
  const machine = fake.provide({
    actors: {
      profileDevices: fromPromise<Profile, ProfileInput>(async ({ input: p }) => {
        calls.order.push('profile');
        calls.profile.push(p);
        return survivorsProfile(profile3, p.devices);
      }),
    },
  });
  const actor = start(machine, { ...three, expectedDevices: ['d0', 'd1'] });
  await inStep(actor, calls, 'pipelineEpoch', 2);
  actor.send({ type: 'DEVICE_LOST', device: 'd1', reason: 'silent' });
  await new Promise((r) => setTimeout(r, 50));
  actor.send({ type: 'DEVICE_JOINED', device: 'd2' });
  const summary = done(await toPromise(actor));
  assert.equal(
    summary.replans.map((r) => [r.lost, r.joined, r.devices]),
    [[['d1'], ['d2'], ['d0', 'd2']]],
  );
  assert.equal(
    calls.abort,
    [{ devices: ['d0', 'd2'], release: ['d2'], lost: ['d1'] }],
    'the joiner is released, the survivor keeps its stage',
  );
  assert.ok(calls.step.slice(0, 2).every((s) => !s.groups.flat().includes('d2')));
  assert.ok(calls.step.slice(2).every((s) => s.groups.flat().includes('d2')));
  assert.equal(
    calls.step.map((s) => s.step),
    [1, 2, 2, 3, 4, 5, 6, 7, 8, 9],
  );
});

test('run recovery: a lost device that speaks again while the survivors are aborted is aborted and released too before the re-plan takes it in', async () => {
  const { machine: fake, calls } = fakeRun({ profileOf: profile3, beforeStep: hangFirst(2) });
  let release!: () => void;
  const slowAbort = new Promise<void>((r) => {
    release = r;
  });
  const machine = fake.provide({
    actors: {
      abortWork: fromPromise<void, AbortInput>(async ({ input }) => {
        calls.order.push('abort');
        calls.abort.push(input);
        // The first abort is slow (a loaded machine): the lost device comes back meanwhile.
        if (calls.abort.length === 1) await slowAbort;
      }),
    },
  });
  const actor = start(machine);
  await inStep(actor, calls, 'pipelineEpoch', 2);
  actor.send({ type: 'DEVICE_LOST', device: 'd2', reason: 'silent', at: 1500 });
  await waitFor(actor, () => calls.abort.length === 1);
  actor.send({ type: 'DEVICE_JOINED', device: 'd2', at: 1600 });
  release();
  const summary = done(await toPromise(actor));
  assert.equal(calls.abort, [
    { devices: ['d0', 'd1'], release: [], lost: ['d2'] },
    { devices: ['d0', 'd1', 'd2'], release: ['d2'], lost: ['d2'] },
  ]);
  assert.equal(calls.deploy[1]!.layout.flatMap((s) => s.devices).sort(), ['d0', 'd1', 'd2']);
  assert.equal(summary.ledger.problems, []);
});

test.run();
