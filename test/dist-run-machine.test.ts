import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromPromise, SimulatedClock, waitFor } from 'xstate';
import {
  runMachine,
  type CommitInput,
  type Committed,
  type DeployInput,
  type Deployment,
  type PlanInput,
  type PlannedRun,
  type ProfileInput,
  type RedistributeInput,
  type Redistributed,
  type FinishInput,
  type PersistedRun,
  type RunInput,
  type StepInput,
  type StepOutput,
} from '../actors/coordinator/run-machine.ts';
import { buildSummary, type RunSummary } from '../actors/coordinator/run-summary.ts';
import type { Profile } from '../src/plan/profile.ts';
import { epochSteps } from '../src/train/data.ts';
import { Ledger } from '../src/train/ledger.ts';
import { planned, profile, sideState, spec } from './fixtures/run-effects.ts';

const base: RunInput = { runId: 'r1', spec, expectedDevices: ['a', 'b'], gatherTimeoutMs: 5000 };

function fakes(log: string[], opts: { failStep?: number } = {}) {
  const commits: CommitInput[] = [];
  const machine = runMachine.provide({
    actors: {
      profileDevices: fromPromise<Profile, ProfileInput>(async ({ input }) => {
        log.push(`profile ${input.devices.join(',')}`);
        return profile;
      }),
      planRun: fromPromise<PlannedRun, PlanInput>(async ({ input }) => {
        log.push('plan');
        return planned(input.spec);
      }),
      deployPlan: fromPromise<Deployment, DeployInput>(async ({ input }) => {
        log.push(`deploy ${input.checkpointRef}`);
        return { fingerprint: 'fp', heldWeights: {}, side: input.checkpointRef ? sideState(1) : null, kept: [], redeployed: [] };
      }),
      trainStep: fromPromise<StepOutput, StepInput>(async ({ input }) => {
        log.push(`${input.phase} e${input.epoch} s${input.step} [${input.sampleIds.join(',')}]`);
        if (input.step === opts.failStep) throw new Error('stage 1 rank 0: shape mismatch');
        return { loss: 1 / input.step, seconds: 0.5, bytes: 100, peakBytes: { a: input.step, b: 3 }, side: input.side ?? sideState(1) };
      }),
      commitStep: fromPromise<Committed, CommitInput>(async ({ input }) => {
        commits.push(input);
        return { checkpointRef: `ckpt-${input.state.step}`, committedAt: 0 };
      }),
      redistribute: fromPromise<Redistributed, RedistributeInput>(async () => {
        log.push('redistribute');
        return {
          cached: { ranks: ['a', 'b'], shards: [[0], [1]] },
          redistribution: { bytes: 42, seconds: 1, shardSizes: { a: 1, b: 1 } },
          entries: { recomputed: 0, fromReplica: 0 },
          bytes: 42,
        };
      }),
      finishRun: fromPromise<RunSummary, FinishInput>(async ({ input }) => {
        log.push('finish');
        return buildSummary(input, { runDir: 'r1', checkpoint: 'ckpt', devices: [], seconds: 1 });
      }),
    },
  });
  return { machine, commits };
}

test('run machine: gathers, plans, trains epoch 1 pipelined then cached epochs, commits every step', async () => {
  const log: string[] = [];
  const { machine, commits } = fakes(log);
  const actor = createActor(machine, { input: base }).start();
  actor.send({ type: 'DEVICE_JOINED', device: 'a' });
  assert.is(actor.getSnapshot().value, 'gathering');
  actor.send({ type: 'DEVICE_JOINED', device: 'b' });
  const snap = await waitFor(actor, (s) => s.status === 'done');
  assert.is(snap.value, 'done');
  assert.is(snap.context.error, null);
  const stepsPerEpoch = Math.ceil(10 / 4);
  assert.is(commits.length, 3 * stepsPerEpoch);
  assert.equal(log.filter((l) => l.startsWith('pipeline')).length, stepsPerEpoch);
  assert.equal(log.filter((l) => l.startsWith('cached')).length, 2 * stepsPerEpoch);
  const lastPipeline = log.map((l) => l.startsWith('pipeline')).lastIndexOf(true);
  assert.ok(log.indexOf('redistribute') > lastPipeline);
  assert.ok(log.indexOf('redistribute') < log.findIndex((l) => l.startsWith('cached')));
  // ledger: every sample exactly once per epoch, steps taken from (seed, epoch)
  const ledger = Ledger.fromJSON(snap.context.ledger);
  for (const e of [1, 2, 3]) {
    assert.equal(ledger.check(e), []);
    assert.ok(ledger.isFinished(e));
    assert.equal(
      ledger.committedSteps(e).map((s) => s.sampleIds),
      epochSteps(spec, e),
    );
  }
  // the persisted state advances step by step and always names the checkpoint of the previous commit
  assert.equal(
    commits.map((c) => c.state.step),
    Array.from({ length: 9 }, (_, i) => i + 1),
  );
  assert.is(snap.context.checkpointRef, 'ckpt-9');
  assert.is(snap.context.epochs.length, 3);
  assert.equal(
    snap.context.epochs.map((e) => e.phase),
    ['pipeline', 'cached', 'cached'],
  );
  assert.is(snap.context.epochs[0]!.seconds, 1.5);
  assert.ok(Math.abs(snap.context.epochs[0]!.loss - (1 + 1 / 2 + 1 / 3) / 3) < 1e-12);
  assert.equal(snap.context.peakBytes, { a: 9, b: 3 });
  assert.equal(snap.context.redistribution, { bytes: 42, seconds: 1, shardSizes: { a: 1, b: 1 } });
});

test('run machine: a restarted coordinator resumes after the last committed step', async () => {
  const log: string[] = [];
  const first = fakes(log);
  const a1 = createActor(first.machine, { input: base }).start();
  a1.send({ type: 'DEVICE_JOINED', device: 'a' });
  a1.send({ type: 'DEVICE_JOINED', device: 'b' });
  await waitFor(a1, (s) => s.status === 'done');
  const persistedAfter4: PersistedRun = first.commits[3]!.state; // epoch 2, step 4 committed
  const log2: string[] = [];
  const second = fakes(log2);
  const a2 = createActor(second.machine, { input: { ...base, resume: persistedAfter4 } }).start();
  a2.send({ type: 'DEVICE_JOINED', device: 'a' });
  a2.send({ type: 'DEVICE_JOINED', device: 'b' });
  const snap = await waitFor(a2, (s) => s.status === 'done');
  assert.is(
    log2.find((l) => l.startsWith('cached')),
    `cached e2 s5 [${epochSteps(spec, 2)[1]!.join(',')}]`,
  );
  assert.ok(log2.includes('redistribute'));
  assert.is(log2.filter((l) => l.startsWith('pipeline')).length, 0);
  assert.equal(snap.context.ledger, a1.getSnapshot().context.ledger);
});

test('run machine: a failing step fails the run and leaves the ledger uncommitted for it', async () => {
  const log: string[] = [];
  const { machine, commits } = fakes(log, { failStep: 2 });
  const actor = createActor(machine, { input: base }).start();
  actor.send({ type: 'DEVICE_JOINED', device: 'a' });
  actor.send({ type: 'DEVICE_JOINED', device: 'b' });
  const snap = await waitFor(actor, (s) => s.status === 'done');
  assert.is(snap.value, 'failed');
  assert.match(snap.context.error!, /shape mismatch/);
  assert.is(commits.length, 1);
  const steps = Ledger.fromJSON(snap.context.ledger).toJSON().epochs[0]!.steps;
  assert.equal(
    steps.map((s) => s.committed),
    [true, false],
  );
});

test('run machine: gathering times out on the simulated clock, naming the missing device', async () => {
  const clock = new SimulatedClock();
  const { machine } = fakes([]);
  const actor = createActor(machine, { input: base, clock }).start();
  actor.send({ type: 'DEVICE_JOINED', device: 'a' });
  clock.increment(4999);
  assert.is(actor.getSnapshot().value, 'gathering');
  clock.increment(1);
  assert.is(actor.getSnapshot().value, 'failed');
  assert.match(actor.getSnapshot().context.error!, /waiting for b/);
});

test('run machine: a join during training is queued for the next step boundary; losing every device fails the run naming them', async () => {
  const log: string[] = [];
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const machine = fakes(log).machine.provide({
    actors: {
      trainStep: fromPromise<StepOutput, StepInput>(async () => {
        await gate;
        return { loss: 1, seconds: 1, bytes: 1, peakBytes: {}, side: sideState(1) };
      }),
    },
  });
  const actor = createActor(machine, { input: base }).start();
  actor.send({ type: 'DEVICE_JOINED', device: 'a' });
  actor.send({ type: 'DEVICE_JOINED', device: 'b' });
  await waitFor(actor, (s) => s.matches({ training: 'pipelineEpoch' }));
  actor.send({ type: 'DEVICE_JOINED', device: 'c' });
  assert.equal(
    actor.getSnapshot().context.joining.map((j) => j.device),
    ['c'],
  );
  actor.send({ type: 'DEVICE_LOST', device: 'b', reason: 'heartbeat timeout' });
  actor.send({ type: 'DEVICE_LOST', device: 'a', reason: 'heartbeat timeout' });
  const snap = actor.getSnapshot();
  assert.is(snap.value, 'failed');
  assert.is(snap.context.error, 'device a lost (heartbeat timeout): no device is left to train on (lost: b, a)');
  release();
});

test.run();
