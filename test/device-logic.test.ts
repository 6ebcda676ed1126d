/**
 * The device machine's registration and connection logic with fakes and a simulated clock (the
 * work states are driven through the production actor in device-machine.test.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { deviceMachine, deviceStateName } from '../actors/device/machine.ts';
import type { JoinReply } from '../src/runtime/messages.ts';
import type { BackoffPolicy } from '../src/runtime/supervisor.ts';

const policy: BackoffPolicy = { initialMs: 100, factor: 2, maxMs: 400, maxRestarts: 3, stableMs: 10_000 };
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};
const accepted: JoinReply = { ok: true, role: 'worker', heartbeatMs: 500, lostAfterMs: 1500 };

/** A device machine with instant fakes; `overrides` replaces some of them. */
function fakeDevice(overrides: Parameters<typeof deviceMachine.provide>[0]['actors'] = {}, log: string[] = []) {
  return deviceMachine.provide({
    actors: {
      connect: fromPromise(async () => {}),
      register: fromPromise<JoinReply, { attempt: number }>(async () => accepted),
      profile: fromPromise(async () => {}),
      drain: fromPromise<void, { reason: string }>(async ({ input }) => {
        log.push(`drain:${input.reason}`);
      }),
      ...overrides,
    },
    actions: {
      startHeartbeats: () => {
        log.push('hb:start');
      },
      stopHeartbeats: () => {
        log.push('hb:stop');
      },
      reportError: (_, p) => {
        log.push(`error:${p.what}`);
      },
    },
  });
}

test('device machine: connects, registers, profiles and idles; heartbeats start on registration', async () => {
  const log: string[] = [];
  const states: string[] = [];
  const actor = createActor(fakeDevice({}, log), { input: { device: 'd0', policy }, clock: new SimulatedClock() });
  actor.subscribe((s) => {
    if (states.at(-1) !== deviceStateName(s)) states.push(deviceStateName(s));
  });
  actor.start();
  await settle();
  assert.equal(states, ['connecting', 'registering', 'profiling', 'idle']);
  assert.equal(log, ['hb:start']);
});

test('device machine: registration retries with growing backoff on the simulated clock', async () => {
  const clock = new SimulatedClock();
  const attempts: number[] = [];
  const machine = fakeDevice({
    register: fromPromise<JoinReply, { attempt: number }>(async ({ input }) => {
      attempts.push(clock.now());
      if (input.attempt < 2) throw new Error('no responders');
      return accepted;
    }),
  });
  const actor = createActor(machine, { input: { device: 'd0', policy }, clock }).start();
  await settle();
  assert.equal(attempts, [0]);
  clock.increment(99);
  await settle();
  assert.equal(attempts.length, 1, 'no retry before the first backoff (100 ms)');
  clock.increment(1);
  await settle();
  assert.equal(attempts, [0, 100]);
  clock.increment(199);
  await settle();
  assert.equal(attempts.length, 2, 'second backoff is 200 ms');
  clock.increment(1);
  await settle();
  assert.equal(attempts, [0, 100, 300]);
  assert.equal(deviceStateName(actor.getSnapshot()), 'idle');
});

test('device machine: gives up registering after maxRestarts and a refusal is final', async () => {
  const clock = new SimulatedClock();
  const failing = createActor(
    fakeDevice({
      register: fromPromise<JoinReply, { attempt: number }>(async () => {
        throw new Error('timeout');
      }),
    }),
    { input: { device: 'd0', policy }, clock },
  ).start();
  for (let i = 0; i < 40 && failing.getSnapshot().status === 'active'; i++) {
    await settle();
    clock.increment(50);
  }
  assert.equal(failing.getSnapshot().value, 'failed');
  assert.match(failing.getSnapshot().context.error ?? '', /cannot register: timeout/);

  const refused = createActor(
    fakeDevice({ register: fromPromise<JoinReply, { attempt: number }>(async () => ({ ok: false, reason: 'name in use' })) }),
    { input: { device: 'd0', policy }, clock: new SimulatedClock() },
  ).start();
  await settle();
  assert.equal(refused.getSnapshot().value, 'failed');
  assert.match(refused.getSnapshot().context.error ?? '', /name in use/);
});

test('device machine: a dropped bus reconnects and registers again', async () => {
  let registrations = 0;
  const actor = createActor(
    fakeDevice({
      register: fromPromise<JoinReply, { attempt: number }>(async () => {
        registrations++;
        return accepted;
      }),
    }),
    { input: { device: 'd0', policy }, clock: new SimulatedClock() },
  ).start();
  await settle();
  actor.send({ type: 'DISCONNECTED' });
  assert.equal(deviceStateName(actor.getSnapshot()), 'reconnecting');
  actor.send({ type: 'RECONNECTED' });
  await settle();
  assert.equal(deviceStateName(actor.getSnapshot()), 'idle');
  assert.equal(registrations, 2);
  actor.send({ type: 'CLOSED', error: 'server gone' });
  assert.equal(actor.getSnapshot().value, 'failed');
});

test('device machine: a drain without a connection stops at once instead of waiting for the leave', async () => {
  const log: string[] = [];
  const actor = createActor(
    fakeDevice(
      {
        drain: fromPromise<void, { reason: string }>(({ input }) => {
          log.push(`drain:${input.reason}`);
          return new Promise(() => {});
        }),
      },
      log,
    ),
    { input: { device: 'd0', policy }, clock: new SimulatedClock() },
  ).start();
  await settle();
  actor.send({ type: 'DRAIN', reason: 'SIGINT' });
  assert.equal(deviceStateName(actor.getSnapshot()), 'draining');
  actor.send({ type: 'DISCONNECTED' });
  assert.equal(actor.getSnapshot().value, 'stopped', 'disconnected while the leave is unanswered');

  const offline = createActor(fakeDevice(), { input: { device: 'd1', policy }, clock: new SimulatedClock() }).start();
  await settle();
  offline.send({ type: 'DISCONNECTED' });
  offline.send({ type: 'DRAIN', reason: 'SIGTERM' });
  assert.equal(offline.getSnapshot().value, 'stopped', 'drained while reconnecting');

  const working = createActor(fakeDevice({ work: fromPromise(() => new Promise(() => {})) }), {
    input: { device: 'd2', policy },
    clock: new SimulatedClock(),
  }).start();
  await settle();
  working.send({ type: 'WORK', request: { id: 1, kind: 'step', args: {} }, step: 1, phase: 'pipeline' });
  working.send({ type: 'DRAIN', reason: 'SIGINT' });
  assert.equal(deviceStateName(working.getSnapshot()), 'working', 'the drain waits for the work');
  working.send({ type: 'DISCONNECTED' });
  assert.equal(working.getSnapshot().value, 'stopped', 'the work lost its connection: the remembered drain is taken');
  assert.equal(log, ['hb:start', 'drain:SIGINT', 'hb:stop']);
});

test.run();
