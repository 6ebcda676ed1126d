import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SimulatedClock } from 'xstate';
import { startHeartbeats, HEARTBEAT_MS, LOST_AFTER_MS, type Heartbeat } from '../src/runtime/heartbeat.ts';
import { DeviceRegistry, type RegistryEvent } from '../actors/coordinator/registry.ts';
import type { JoinRequest } from '../src/runtime/messages.ts';

const hello = (device: string, pid = 100): JoinRequest => ({
  device,
  backend: 'wasm',
  memoryMb: 1024,
  pid,
  host: 'h',
  slowdown: 1,
  bandwidthMbps: null,
});

test('heartbeat: one at once, then one every 500 ms with increasing seq', () => {
  const clock = new SimulatedClock();
  const beats: Heartbeat[] = [];
  const stop = startHeartbeats(
    {
      device: 'd0',
      sample: () => ({ state: 'idle', step: -1, role: null, phase: null, memoryBytes: 42 }),
      publish: (hb) => beats.push(hb),
    },
    clock,
  );
  for (let t = 0; t < 2000; t += 50) clock.increment(50);
  stop();
  clock.increment(5000);
  assert.equal(
    beats.map((b) => b.sentAt),
    [0, 500, 1000, 1500, 2000],
  );
  assert.equal(
    beats.map((b) => b.seq),
    [0, 1, 2, 3, 4],
  );
  assert.equal(beats[0], { device: 'd0', state: 'idle', step: -1, role: null, phase: null, memoryBytes: 42, seq: 0, sentAt: 0 });
  assert.equal(HEARTBEAT_MS * 3, LOST_AFTER_MS);
});

test('registry: a device that stops heartbeating is lost after 1.5 s, not before', () => {
  const clock = new SimulatedClock();
  const reg = new DeviceRegistry(clock);
  const events: RegistryEvent[] = [];
  reg.subscribe((e) => events.push(e));
  assert.equal(reg.join(hello('a')).ok, true);
  reg.join(hello('b', 101));
  const beat = (device: string) =>
    reg.heartbeat({ device, state: 'idle', step: -1, role: null, phase: null, memoryBytes: 0, seq: 0, sentAt: 0 });
  for (let t = 0; t < 1000; t += 100) {
    clock.increment(100);
    beat('a');
    beat('b');
  }
  // b goes silent at t = 1000; a keeps beating.
  let lostAt = -1;
  reg.subscribe((e) => {
    if (e.type === 'DEVICE_LOST') lostAt = clock.now();
  });
  for (let t = 1000; t < 4000; t += 100) {
    clock.increment(100);
    beat('a');
  }
  assert.equal(lostAt, 1000 + LOST_AFTER_MS);
  assert.equal(
    events.map((e) => `${e.type}:${e.device.name}`),
    ['DEVICE_JOINED:a', 'DEVICE_JOINED:b', 'DEVICE_LOST:b'],
  );
  assert.equal(reg.alive(), ['a']);
  const lost = events[2]!;
  assert.ok(lost.type === 'DEVICE_LOST' && lost.silentMs === LOST_AFTER_MS);
  assert.equal(reg.status().find((s) => s.name === 'b')!.state, 'lost');
  reg.close();
});

test('registry: names are unique among live processes; a lost one can come back', () => {
  const clock = new SimulatedClock();
  const reg = new DeviceRegistry(clock);
  const events: string[] = [];
  reg.subscribe((e) => events.push(`${e.type}${'rejoin' in e && e.rejoin ? '(rejoin)' : ''}`));
  reg.join(hello('a', 1));
  const clash = reg.join(hello('a', 2));
  assert.equal(clash.ok, false);
  assert.match(clash.ok ? '' : clash.reason, /in use by pid 1/);
  assert.equal(reg.join(hello('a', 1)).ok, true, 'the same process may join again (reconnect)');
  clock.increment(LOST_AFTER_MS);
  assert.equal(reg.join(hello('a', 2)).ok, true, 'a new process replaces a lost one');
  assert.ok(reg.leave('a', 'drained'));
  clock.increment(10 * LOST_AFTER_MS);
  assert.equal(events, ['DEVICE_JOINED', 'DEVICE_LOST', 'DEVICE_JOINED(rejoin)', 'DEVICE_LEFT']);
  assert.equal(
    reg.heartbeat({ device: 'ghost', state: 'idle', step: -1, role: null, phase: null, memoryBytes: 0, seq: 0, sentAt: 0 }),
    false,
  );
  reg.close();
});

test.run();
