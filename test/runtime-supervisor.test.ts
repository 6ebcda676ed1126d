import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { backoffDelay, supervisorMachine, type BackoffPolicy, type ChildInput } from '../src/runtime/supervisor.ts';

const policy: BackoffPolicy = { initialMs: 100, factor: 2, maxMs: 1000, maxRestarts: 4, stableMs: 5000 };
const settle = () => new Promise((r) => setImmediate(r));

test('supervisor: backoff doubles per failure and is capped', () => {
  assert.equal(
    [1, 2, 3, 4, 5, 6].map((n) => backoffDelay(policy, n)),
    [100, 200, 400, 800, 1000, 1000],
  );
});

test('supervisor: restarts a failing child after growing delays, then gives up', async () => {
  const clock = new SimulatedClock();
  const starts: number[] = [];
  const restarts: { restart: number; delayMs: number }[] = [];
  let gaveUp = false;
  const machine = supervisorMachine.provide({
    actors: {
      child: fromPromise<void, ChildInput>(async ({ input }) => {
        starts.push(clock.now());
        throw new Error(`crash ${input.start}`);
      }),
    },
    actions: {
      reportRestart: (_, p) => {
        restarts.push({ restart: p.restart, delayMs: p.delayMs });
      },
      reportGiveUp: () => {
        gaveUp = true;
      },
    },
  });
  const actor = createActor(machine, { input: { policy }, clock }).start();
  for (let t = 0; t < 3000 && actor.getSnapshot().status === 'active'; t += 50) {
    await settle();
    clock.increment(50);
  }
  await settle();
  assert.equal(actor.getSnapshot().value, 'failed');
  assert.ok(gaveUp);
  assert.equal(
    restarts.map((r) => r.delayMs),
    [100, 200, 400, 800],
  );
  assert.equal(starts.length, 5);
  // Each start comes no earlier than its backoff after the previous one.
  for (let i = 1; i < starts.length; i++) assert.ok(starts[i]! - starts[i - 1]! >= restarts[i - 1]!.delayMs);
  assert.equal(actor.getSnapshot().context.lastError, 'crash 4');
});

test('supervisor: a child that stays up for stableMs clears the failure streak', async () => {
  const clock = new SimulatedClock();
  let crash: (() => void) | undefined;
  const machine = supervisorMachine.provide({
    actors: {
      child: fromPromise<void, ChildInput>(
        () =>
          new Promise((_, reject) => {
            crash = () => reject(new Error('boom'));
          }),
      ),
    },
  });
  const actor = createActor(machine, { input: { policy }, clock }).start();
  await settle();
  crash!();
  await settle();
  assert.equal(actor.getSnapshot().context.restarts, 1);
  clock.increment(100);
  await settle();
  assert.equal(actor.getSnapshot().value, 'running');
  clock.increment(5000);
  assert.equal(actor.getSnapshot().context.restarts, 0);
});

test('supervisor: STOP aborts the running child', async () => {
  const clock = new SimulatedClock();
  let aborted = false;
  const machine = supervisorMachine.provide({
    actors: {
      child: fromPromise<void, ChildInput>(
        ({ signal }) =>
          new Promise(() => {
            signal.addEventListener('abort', () => {
              aborted = true;
            });
          }),
      ),
    },
  });
  const actor = createActor(machine, { input: { policy }, clock }).start();
  await settle();
  actor.send({ type: 'STOP' });
  assert.equal(actor.getSnapshot().value, 'stopped');
  assert.ok(aborted);
});

test.run();
