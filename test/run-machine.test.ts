/**
 * The run orchestration with fake effects (no processes, no bus): what each effect receives from
 * the ones before it, and what the run resolves with.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromPromise, SimulatedClock, toPromise } from 'xstate';
import type { CoordinatorRecord, FaultRecord, PersistedRun, RunOutput } from '../actors/coordinator/run-machine.ts';
import { epochSteps } from '../src/train/data.ts';
import { Ledger } from '../src/train/ledger.ts';
import { devices, fakeRun, input, profile, spec } from './fixtures/run-effects.ts';

type Machine = ReturnType<typeof fakeRun>['machine'];

/** Starts the machine, lets every device join and resolves with the run's output. */
function runToEnd(machine: Machine, resume?: PersistedRun): Promise<RunOutput> {
  const actor = createActor(machine, { input: { ...input, ...(resume ? { resume } : {}) } }).start();
  for (const d of devices) actor.send({ type: 'DEVICE_JOINED', device: d });
  return toPromise(actor);
}

const allSamples = Array.from({ length: spec.samples }, (_, j) => j);
const stepsPerEpoch = epochSteps(spec, 1).length;

test('run machine: each effect receives what the effects before it produced', async () => {
  const { machine, calls } = fakeRun();
  const out = await runToEnd(machine);
  const { plan: planned, deploy: deployment, redistribute: redistributed } = calls.outputs;

  assert.equal(
    calls.order.filter((e) => e !== 'step' && e !== 'commit'),
    ['profile', 'plan', 'deploy', 'redistribute', 'finish'],
  );
  assert.equal(calls.profile[0]!.devices, devices);
  assert.is(calls.plan[0]!.profile, profile);
  assert.is(calls.plan[0]!.spec.microBatches, undefined);

  // deploy: the planner's layout and the spec with the plan's micro-batch count, from step 1
  const deploy = calls.deploy[0]!;
  assert.is(deploy.layout, planned!.layout);
  assert.is(deploy.spec.microBatches, planned!.plan.microBatches);
  assert.equal(
    { checkpointRef: deploy.checkpointRef, epoch: deploy.epoch, firstStep: deploy.firstStep },
    { checkpointRef: null, epoch: 1, firstStep: 1 },
  );

  // steps: pipeline epoch 1 on the plan's stage groups, then cached epochs on the cached ranks,
  // each epoch's mini-batches in (seed, epoch) order: every sample exactly once per epoch
  assert.equal(
    calls.step.map((s) => [s.phase, s.epoch, s.step]),
    [1, 2, 3].flatMap((e) => epochSteps(spec, e).map((_, i) => [e === 1 ? 'pipeline' : 'cached', e, (e - 1) * stepsPerEpoch + i + 1])),
  );
  for (const e of [1, 2, 3]) {
    const ids = calls.step.filter((s) => s.epoch === e).map((s) => s.sampleIds);
    assert.equal(ids, epochSteps(spec, e));
    assert.equal(
      ids.flat().sort((a, b) => a - b),
      allSamples,
    );
  }
  for (const s of calls.step) {
    assert.is(s.spec, deploy.spec);
    assert.equal(s.groups, s.phase === 'pipeline' ? planned!.layout.map((st) => st.devices) : [redistributed!.cached.ranks]);
  }
  // the side network: none before the first step, then the one the first step returned, advanced once per step
  const side = calls.outputs.step[0]!.side;
  assert.equal(calls.sideStepAtStep, [null, ...Array.from({ length: 8 }, (_, i) => i + 1)]);
  for (const s of calls.step.slice(1)) assert.is(s.side, side);

  // redistribution: once, between the last pipeline step's commit and the first cached step
  const at = calls.order.indexOf('redistribute');
  assert.is(calls.redistribute.length, 1);
  assert.equal(calls.order.slice(at - 2, at + 2), ['step', 'commit', 'redistribute', 'step']);
  const r = calls.redistribute[0]!;
  assert.equal(
    { fingerprint: r.fingerprint, firstStep: r.firstStep },
    { fingerprint: deployment!.fingerprint, firstStep: stepsPerEpoch + 1 },
  );
  assert.is(r.side, side);
  assert.is(r.layout, planned!.layout);

  // commits: steps 1..9 in order, each after its step, with that step's result and ledger
  assert.equal(
    calls.commit.map((c) => c.state.step),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  calls.commit.forEach((c, i) => {
    assert.equal(c.result, { loss: 1 / (i + 1), seconds: 0.5, bytes: 100, peakBytes: { [devices[0]!]: i + 1, [devices[1]!]: 3 } });
    assert.is(c.side, side);
    assert.is(c.fingerprint, 'fp-1');
    const committed = Ledger.fromJSON(c.state.ledger)
      .toJSON()
      .epochs.flatMap((e) => e.steps)
      .filter((s) => s.committed)
      .map((s) => s.step);
    assert.equal(
      committed,
      Array.from({ length: i + 1 }, (_, k) => k + 1),
    );
    assert.is(c.state.checkpointRef, i === 0 ? null : `ckpt-${i}`);
  });

  // finish and the run's output
  const f = calls.finish[0]!;
  assert.is(f.plan, planned!.plan);
  assert.is(f.heldWeights, deployment!.heldWeights);
  assert.equal(f.bytes, { pipeline: 300, redistribution: 50, cached: 600 });
  assert.is(f.redistribution, redistributed!.redistribution);
  assert.is(f.resumedFromStep, null);
  assert.equal(out, { status: 'done', summary: calls.outputs.finish! });
  if (out.status !== 'done') return;
  const summary = out.summary;
  assert.equal(
    summary.epochs.map((e) => [e.epoch, e.phase, e.steps]),
    [
      [1, 'pipeline', 3],
      [2, 'cached', 3],
      [3, 'cached', 3],
    ],
  );
  assert.is(summary.spec.microBatches, planned!.plan.microBatches);
  assert.equal(summary.plan.stages, planned!.layout);
  assert.is(summary.plan.simulatedStepMs, 12.5);
  assert.equal(summary.ledger, { epochs: 3, problems: [] });
  assert.equal(summary.peakBytesPerDevice, { [devices[0]!]: 9, [devices[1]!]: 3 });
  assert.ok(Math.abs(summary.finalLoss - (1 / 7 + 1 / 8 + 1 / 9) / 3) < 1e-12);
});

test('run machine: a resumed run continues at the next uncommitted step with the checkpoint it names', async () => {
  const whole = fakeRun();
  const full = await runToEnd(whole.machine);
  assert.is(full.status, 'done');
  for (const committed of [2, 4]) {
    const resume = { ...whole.calls.commit[committed - 1]!.state, checkpointRef: `ckpt-${committed}` };
    const { machine, calls } = fakeRun();
    const out = await runToEnd(machine, resume);
    const cached = resume.epoch > 1;

    assert.equal(
      calls.deploy.map((d) => [d.checkpointRef, d.epoch, d.firstStep]),
      [[`ckpt-${committed}`, resume.epoch, committed + 1]],
    );
    const restored = calls.outputs.deploy!.side!;
    assert.is(calls.step[0]!.side, restored);
    assert.equal(
      calls.step.map((s) => s.step),
      Array.from({ length: 9 - committed }, (_, i) => committed + 1 + i),
    );
    const [first] = calls.step;
    assert.equal(
      [first!.phase, first!.epoch, first!.sampleIds],
      [cached ? 'cached' : 'pipeline', resume.epoch, epochSteps(spec, resume.epoch)[resume.stepInEpoch]!],
    );
    // in the cached phase redistribution comes right after deploying, from the restored side network
    assert.is(calls.redistribute.length, 1);
    assert.is(calls.order[calls.order.indexOf('redistribute') - 1], cached ? 'deploy' : 'commit');
    if (cached) assert.is(calls.redistribute[0]!.side, restored);
    assert.equal(calls.redistribute[0]!.firstStep, cached ? committed + 1 : stepsPerEpoch + 1);

    assert.ok(out.status === 'done' && full.status === 'done');
    if (out.status !== 'done' || full.status !== 'done') return;
    assert.is(out.summary.resumedFromStep, committed);
    assert.equal(out.summary.epochs, full.summary.epochs);
    assert.equal(calls.finish[0]!.state.ledger, whole.calls.finish[0]!.state.ledger);
  }
});

test("run machine: faults, re-plans, joins, leaves and coordinators go into every commit, so a successor's summary tells the whole run", async () => {
  const whole = fakeRun();
  await runToEnd(whole.machine);
  for (const c of whole.calls.commit)
    assert.equal(c.state.history, {
      faults: [],
      replans: [],
      joins: [],
      leaves: [],
      coordinators: [],
      cacheEntries: { recomputed: 0, fromReplica: 0 },
    });

  const fault: FaultRecord = { device: 'gone', reason: 'silent', during: 'pipeline step', epoch: 1, step: 3, lostAt: 5, recoveredAt: 6 };
  const first: CoordinatorRecord = { epoch: 1, startedAt: 1, resumedFromStep: null, adopted: [] };
  const second: CoordinatorRecord = { epoch: 2, startedAt: 7, resumedFromStep: 4, adopted: [...devices] };
  const history = {
    faults: [fault],
    replans: [],
    joins: [],
    leaves: [],
    coordinators: [first],
    cacheEntries: { recomputed: 3, fromReplica: 2 },
  };
  const resume = { ...whole.calls.commit[3]!.state, checkpointRef: 'ckpt-4', history };
  const { machine, calls } = fakeRun();
  const actor = createActor(machine, { input: { ...input, resume, coordinatorProcess: second } }).start();
  for (const d of devices) actor.send({ type: 'DEVICE_JOINED', device: d });
  const out = await toPromise(actor);
  assert.ok(out.status === 'done');
  if (out.status !== 'done') return;
  for (const c of calls.commit) assert.equal(c.state.history, { ...history, coordinators: [first, second] });
  assert.equal(out.summary.faults, [fault]);
  assert.equal(out.summary.coordinators, [first, second]);
  assert.equal([out.summary.cache.recomputed, out.summary.cache.fromReplica], [3, 2], 'cache counts carried over');
  assert.is(out.summary.replans.length, 0, 'a fault answered before the commit is not answered again');
});

test('run machine: resumed after its last commit (no summary yet), the run deploys and finishes without a step', async () => {
  const whole = fakeRun();
  const full = await runToEnd(whole.machine);
  const last = whole.calls.commit.at(-1)!.state;
  const { machine, calls } = fakeRun();
  const out = await runToEnd(machine, { ...last, checkpointRef: 'ckpt-last' });
  assert.equal(calls.order, ['profile', 'plan', 'deploy', 'finish']);
  assert.ok(out.status === 'done' && full.status === 'done');
  if (out.status !== 'done' || full.status !== 'done') return;
  assert.equal(out.summary.epochs, full.summary.epochs);
  assert.equal(out.summary.ledger.problems, []);
});

test('run machine: a failing effect ends the run in failed with its error, and nothing after it runs', async () => {
  const effects = {
    profileDevices: 'profile',
    planRun: 'plan',
    deployPlan: 'deploy',
    redistribute: 'redistribute',
    commitStep: 'commit',
    finishRun: 'finish',
  } as const;
  for (const [name, label] of Object.entries(effects)) {
    const { machine, calls } = fakeRun();
    const failing = machine.provide({
      actors: {
        [name]: fromPromise(async () => {
          calls.order.push(label);
          throw new Error(`${name}: device d1 said no`);
        }),
      },
    });
    const actor = createActor(failing, { input }).start();
    for (const d of devices) actor.send({ type: 'DEVICE_JOINED', device: d });
    const out = await toPromise(actor);
    assert.equal(out, { status: 'failed', error: `${name}: device d1 said no` }, name);
    assert.is(actor.getSnapshot().value, 'failed');
    assert.is(calls.order.at(-1), label, name);
    assert.is(calls.order.filter((e) => e === label).length, 1, name);
  }
  const { machine, calls } = fakeRun({ failStep: 5 });
  assert.equal(await runToEnd(machine), { status: 'failed', error: 'stage 1 rank 0: shape mismatch' });
  assert.equal(
    calls.commit.map((c) => c.state.step),
    [1, 2, 3, 4],
  );
});

test('run machine: a device that leaves while gathering must join again before the deadline', () => {
  const clock = new SimulatedClock();
  const { machine, calls } = fakeRun();
  const actor = createActor(machine, { input, clock }).start();
  actor.send({ type: 'DEVICE_JOINED', device: devices[0]! });
  actor.send({ type: 'DEVICE_LOST', device: devices[0]! });
  actor.send({ type: 'DEVICE_JOINED', device: devices[1]! });
  clock.increment(4999);
  assert.is(actor.getSnapshot().value, 'gathering');
  clock.increment(1);
  assert.is(actor.getSnapshot().value, 'failed');
  assert.equal(actor.getSnapshot().output, { status: 'failed', error: `gathering timed out: waiting for ${devices[0]}` });
  assert.is(calls.profile.length, 0);
});

test.run();
