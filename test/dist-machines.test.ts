import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromPromise, waitFor } from 'xstate';
import { stageMachine } from '../actors/stage/machine.ts';
import type { AssignArgs } from '../src/runtime/ctl.ts';
import type { RankOutcome } from '../src/engine/index.ts';

/** A plan position with the fields the machine looks at. */
const assignment = (stage: number, rank: number) => ({ stage, rank, stages: [], firstStep: 1 }) as unknown as AssignArgs;
const outcome: RankOutcome = { loss: 1.5, rows: 2, bytesSent: 0, gradNorm: 0, reduced: new Float32Array(0) };
import { cacheMachine } from '../actors/cache/machine.ts';

test('stage machine: loads, runs a step, aborts a step and drops back to ready', async () => {
  const aborted: number[] = [];
  let finish: () => void = () => {};
  const m = stageMachine.provide({
    actors: {
      loadStage: fromPromise<void, AssignArgs>(async () => {}),
      runStep: fromPromise<RankOutcome, { step: number; sampleIds: number[] }>(({ input }) =>
        input.step === 2
          ? new Promise(() => {})
          : new Promise((r) => {
              finish = () => r(outcome);
            }),
      ),
      abortStep: fromPromise<void, { step: number }>(async ({ input }) => {
        aborted.push(input.step);
      }),
    },
  });
  const a = createActor(m).start();
  a.send({ type: 'LOAD', assignment: assignment(1, 0) });
  await waitFor(a, (s) => s.value === 'ready');
  a.send({ type: 'RUN_STEP', step: 1, sampleIds: [3, 4] });
  assert.is(a.getSnapshot().value, 'running');
  finish();
  await waitFor(a, (s) => s.value === 'ready');
  assert.is(a.getSnapshot().context.committed, 1);
  assert.equal(a.getSnapshot().context.outcome, outcome, "the step's output is the machine's to hand out");
  a.send({ type: 'RUN_STEP', step: 2, sampleIds: [5] });
  a.send({ type: 'ABORT', step: 1 }); // a stale abort is ignored
  assert.is(a.getSnapshot().value, 'running');
  a.send({ type: 'ABORT', step: 2 });
  await waitFor(a, (s) => s.value === 'ready');
  assert.equal(aborted, [2]);
  assert.is(a.getSnapshot().context.committed, 1);
  assert.is(a.getSnapshot().context.outcome, null);
  assert.match(a.getSnapshot().context.error ?? '', /step 2 aborted/);
  a.send({ type: 'RUN_STEP', step: 3, sampleIds: [6] });
  a.send({ type: 'ABORT' }); // recovery aborts whatever step is running
  await waitFor(a, (s) => s.value === 'ready');
  assert.equal(aborted, [2, 3]);
});

test('stage machine: a failed load returns to unloaded with the reason', async () => {
  const m = stageMachine.provide({
    actors: {
      loadStage: fromPromise<void, AssignArgs>(async () => {
        throw new Error('layer 3 missing in model.safetensors');
      }),
    },
  });
  const a = createActor(m).start();
  a.send({ type: 'LOAD', assignment: assignment(0, 0) });
  const s = await waitFor(a, (x) => x.value === 'unloaded' && x.context.error !== null);
  assert.match(s.context.error!, /layer 3 missing/);
});

test('stage machine: a re-plan rebinds a loaded stage to its new position; a rebinding that fails unloads it', async () => {
  const unloaded: number[] = [];
  const m = stageMachine.provide({
    actors: {
      loadStage: fromPromise<void, AssignArgs>(async () => {}),
      rebindStage: fromPromise<AssignArgs, AssignArgs>(async ({ input }) => {
        if (input.rank === 9) throw new Error('no such rank');
        return input;
      }),
      unloadStage: fromPromise<void, void>(async () => {
        unloaded.push(1);
      }),
    },
  });
  const a = createActor(m).start();
  a.send({ type: 'REBIND', assignment: assignment(0, 1) });
  assert.is(a.getSnapshot().value, 'unloaded', 'nothing loaded to rebind');
  a.send({ type: 'LOAD', assignment: assignment(0, 0) });
  await waitFor(a, (s) => s.value === 'ready');
  a.send({ type: 'REBIND', assignment: assignment(0, 1) });
  const s = await waitFor(a, (x) => x.value === 'ready');
  assert.is(s.context.assignment!.rank, 1, 'the new position');
  assert.equal(unloaded, []);
  a.send({ type: 'REBIND', assignment: assignment(0, 9) });
  const f = await waitFor(a, (x) => x.value === 'unloaded');
  assert.match(f.context.error!, /no such rank/);
  assert.is(f.context.assignment, null);
  assert.equal(unloaded, [1]);
});

test('cache machine: fills, seals, redistributes with byte accounting, serves, drops', async () => {
  const m = cacheMachine.provide({
    actors: {
      redistribute: fromPromise<{ bytesIn: number; bytesOut: number }, { shards: number[][]; devices: string[] }>(async ({ input }) => ({
        bytesIn: 10 * input.shards[0]!.length,
        bytesOut: 7,
      })),
    },
  });
  const a = createActor(m).start();
  a.send({ type: 'REDISTRIBUTE', shards: [[1]], devices: ['a'] }); // not before sealing
  assert.is(a.getSnapshot().value, 'empty');
  a.send({ type: 'FILL' });
  a.send({ type: 'SEAL' });
  a.send({ type: 'REDISTRIBUTE', shards: [[1, 2, 3]], devices: ['a'] });
  const s = await waitFor(a, (x) => x.value === 'serving');
  assert.is(s.context.bytesIn, 30);
  assert.is(s.context.bytesOut, 7);
  a.send({ type: 'DROP' });
  assert.is(a.getSnapshot().status, 'done');
});

test('cache machine: a re-plan redistributes a serving cache again; an abort returns to sealed, ready for the next', async () => {
  const asked: string[][] = [];
  const m = cacheMachine.provide({
    actors: {
      redistribute: fromPromise<{ bytesIn: number; bytesOut: number }, { shards: number[][]; devices: string[] }>(({ input }) => {
        asked.push(input.devices);
        return input.devices.includes('lost') ? new Promise(() => {}) : Promise.resolve({ bytesIn: 1, bytesOut: 2 });
      }),
    },
  });
  const a = createActor(m).start();
  a.send({ type: 'FILL' });
  a.send({ type: 'SEAL' });
  a.send({ type: 'REDISTRIBUTE', shards: [[1], [2], [3]], devices: ['a', 'b', 'lost'] });
  a.send({ type: 'ABORT' });
  assert.equal([a.getSnapshot().value, a.getSnapshot().context.error], ['sealed', 'redistribution aborted']);
  a.send({ type: 'REDISTRIBUTE', shards: [[1, 3], [2]], devices: ['a', 'b'] });
  await waitFor(a, (x) => x.value === 'serving');
  a.send({ type: 'REDISTRIBUTE', shards: [[1, 2, 3]], devices: ['a'] });
  assert.equal([a.getSnapshot().value, a.getSnapshot().context.error], ['redistributing', null]);
  await waitFor(a, (x) => x.value === 'serving');
  assert.equal(asked, [['a', 'b', 'lost'], ['a', 'b'], ['a']]);
});

test.run();
