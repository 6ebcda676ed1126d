/**
 * The production device actor (startDevice) against a real nats-server and the real coordinator,
 * with an in-process compute whose work the test releases: control requests drive the device
 * machine, heartbeats and `status` show its real state, role, step and phase, a drain during work
 * waits for the work, and failures come back as their own error classes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, startNatsServer, type NatsServer } from '../src/bus/index.ts';
import { startCoordinator, type Coordinator } from '../actors/coordinator/actor.ts';
import { control } from '../actors/coordinator/control.ts';
import { startDevice, type DeviceCompute, type DeviceHandle } from '../actors/device/actor.ts';
import { StepAborted, WrongState } from '../src/runtime/errors.ts';

let server: NatsServer, dir: string, bus: Bus, coordinator: Coordinator;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'charon-device-'));
  server = await startNatsServer({ runDir: dir, jetstream: false });
  bus = await Bus.connect({ servers: server.url, name: 'coordinator', run: 'dm' });
  coordinator = startCoordinator({ bus, expected: ['d0'] });
});
test.after(async () => {
  coordinator.stop();
  await bus.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A compute whose calls wait until the test releases them (by kind), recording what ran. */
function gatedCompute() {
  const ran: string[] = [];
  const gates = new Map<string, { resolve(v: unknown): void; reject(e: Error): void }>();
  const compute: DeviceCompute = {
    backend: 'fake',
    backendDetail: 'fake compute',
    measureMatmulGflops: async () => 10,
    run: (kind) =>
      new Promise((resolve, reject) => {
        ran.push(kind);
        gates.set(kind, { resolve, reject });
      }),
    signal: (kind) => {
      ran.push(`signal:${kind}`);
    },
    memoryBytes: () => 1234,
    close: async () => {
      ran.push('close');
    },
  };
  const until = async (kind: string) => {
    while (!gates.has(kind)) await new Promise((r) => setTimeout(r, 5));
  };
  const release = async (kind: string, result: unknown) => {
    await until(kind);
    gates.get(kind)!.resolve(result);
    gates.delete(kind);
  };
  const fail = async (kind: string, err: Error) => {
    await until(kind);
    gates.get(kind)!.reject(err);
    gates.delete(kind);
  };
  return { compute, ran, release, fail };
}

/** Waits until the coordinator's status shows d0 matching `want` (heartbeats every 500 ms). */
async function statusOf(want: (d: { state: string; role: string | null; step: number; phase: string | null }) => boolean, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    const d = coordinator.status().devices.find((x) => x.name === 'd0');
    if (d && want(d)) return d;
    if (Date.now() > until) throw new Error(`status never matched; last: ${JSON.stringify(d)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let device: DeviceHandle;
const g = gatedCompute();

test('device actor: registers, profiles and idles; status shows the real state', async () => {
  device = startDevice({ nats: server.url, run: 'dm', name: 'd0', memoryMb: 512, compute: g.compute });
  await coordinator.whenAssembled();
  const d = await statusOf((x) => x.state === 'idle');
  assert.is(d.role, null);
  assert.is(d.step, -1);
});

test('device actor: assign loads (state loading -> ready, role from the request)', async () => {
  const reply = control(bus, 'd0', 'assign', { stage: 1, rank: 0 });
  await statusOf((x) => x.state === 'loading');
  await g.release('assign', { fingerprint: 'f' });
  assert.equal(await reply, { fingerprint: 'f' });
  const d = await statusOf((x) => x.state === 'ready');
  assert.is(d.role, 'stage 1 rank 0');
});

test("device actor: a step shows working with its step and phase; the reply is the step's output", async () => {
  const reply = control(bus, 'd0', 'step', { step: 3, sampleIds: [0, 1], withState: false });
  const d = await statusOf((x) => x.state === 'working');
  assert.is(d.step, 3);
  assert.is(d.phase, 'pipeline');
  await g.release('step', { loss: 1.25 });
  assert.equal(await reply, { loss: 1.25 });
  await statusOf((x) => x.state === 'ready');
});

test('device actor: failures cross the bus as their own class; wrong-state requests are refused by name', async () => {
  const reply = control(bus, 'd0', 'step', { step: 4, sampleIds: [2], withState: false });
  await g.fail('step', new StepAborted(4));
  const err = await reply.catch((e: unknown) => e);
  assert.instance(err, StepAborted);
  assert.is((err as StepAborted).retryable, true);
  assert.is((err as StepAborted).step, 4);
  assert.match((err as Error).message, /device d0: step: step 4 aborted/);
  await statusOf((x) => x.state === 'ready');
  const wrong = await control(bus, 'd0', 'cached-load', { rank: 0 }).catch((e: unknown) => e);
  assert.instance(wrong, WrongState);
  assert.is((wrong as WrongState).retryable, false);
});

test('device actor: abort is delivered at once; its answer waits until the work it ends has handed back', async () => {
  const reply = control(bus, 'd0', 'step', { step: 5, sampleIds: [3], withState: false });
  await statusOf((x) => x.state === 'working' && x.step === 5);
  let answered = false;
  const aborted = control(bus, 'd0', 'abort', { step: 5 }).then((r) => {
    answered = true;
    return r;
  });
  while (!g.ran.includes('signal:abort')) await new Promise((r) => setTimeout(r, 10));
  assert.not.ok(answered, 'the device is still working');
  await g.fail('step', new StepAborted(5));
  await reply.catch(() => {});
  assert.equal(await aborted, { state: 'ready' });
});

test('device actor: control links measures on the compute, refuses bad arguments by field, and says when the compute cannot', async () => {
  const args = { peers: ['d9'], bytes: 1024, messageBytes: 256, timeoutMs: 1000 };
  const none = await control(bus, 'd0', 'links', args).catch((e: unknown) => e);
  assert.match((none as Error).message, /device d0: links: device d0 cannot measure links/);
  const asked: unknown[] = [];
  g.compute.measureLinks = async (req) => {
    asked.push(req);
    return req.peers.map((peer) => ({ peer, mbps: 5, latencyMs: 1, bytes: req.bytes }));
  };
  try {
    const bad = await control(bus, 'd0', 'links', { ...args, peers: [] }).catch((e: unknown) => e);
    assert.match((bad as Error).message, /links: peers: /);
    assert.equal(await control(bus, 'd0', 'links', args), [{ peer: 'd9', mbps: 5, latencyMs: 1, bytes: 1024 }]);
    assert.equal(asked, [args]);
  } finally {
    delete g.compute.measureLinks;
  }
  await statusOf((x) => x.state === 'ready');
});

test("device actor: a re-plan's assign reaches a device that holds a stage (the stage keeps what it can)", async () => {
  await statusOf((x) => x.state === 'ready');
  const reply = control(bus, 'd0', 'assign', { stage: 0, rank: 1 });
  await statusOf((x) => x.state === 'loading');
  await g.release('assign', { fingerprint: 'f', kept: false });
  assert.equal(await reply, { fingerprint: 'f', kept: false });
  const d = await statusOf((x) => x.state === 'ready');
  assert.is(d.role, 'stage 0 rank 1');
});

test('device actor: a drain during work waits for the work, answers it, then leaves', async () => {
  const reply = control(bus, 'd0', 'step', { step: 6, sampleIds: [4], withState: false });
  await statusOf((x) => x.state === 'working' && x.step === 6);
  device.drain('SIGTERM');
  await new Promise((r) => setTimeout(r, 100));
  assert.is(device.state(), 'working', 'a drain never abandons a step');
  await g.release('step', { loss: 2 });
  assert.equal(await reply, { loss: 2 });
  const final = await device.done;
  assert.is(final.value, 'stopped');
  assert.is(coordinator.registry.get('d0')!.state, 'left');
  assert.ok(g.ran.includes('close'), 'the compute is released');
});

test.run();
