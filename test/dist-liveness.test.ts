/**
 * The run's device policy (watchRunDevices) on the real registry and a simulated clock: compute
 * runs off the device's event loop, so silence past the heartbeat deadline is a loss, at once.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SimulatedClock } from 'xstate';
import { DeviceRegistry } from '../actors/coordinator/registry.ts';
import { watchRunDevices } from '../actors/coordinator/liveness.ts';
import { LOST_AFTER_MS } from '../src/runtime/heartbeat.ts';
import type { JoinRequest } from '../src/runtime/messages.ts';

const hello = (device: string, pid: number): JoinRequest => ({
  device,
  backend: 'wasm',
  memoryMb: 1024,
  pid,
  host: 'h',
  slowdown: 1,
  bandwidthMbps: null,
});

function setup() {
  const clock = new SimulatedClock();
  const registry = new DeviceRegistry(clock);
  const log: string[] = [];
  const at = () => clock.now();
  const watch = watchRunDevices({
    registry,
    joined: (d) => log.push(`joined ${d} @${at()}`),
    lost: (d, reason) => log.push(`lost ${d} @${at()}: ${reason}`),
  });
  const start = (d: string, pid: number) => {
    registry.join(hello(d, pid));
    registry.profile({ device: d, matmulGflops: 10, backendDetail: 'wasm' });
  };
  const beat = (d: string) =>
    registry.heartbeat({
      device: d,
      state: 'working',
      step: 1,
      role: 'stage 0 rank 0',
      phase: 'pipeline',
      memoryBytes: 0,
      seq: 0,
      sentAt: clock.now(),
    });
  /** Advances the clock in 100 ms ticks; `beating` heartbeat on every tick. */
  const run = (ms: number, beating: string[]) => {
    for (let t = 0; t < ms; t += 100) {
      clock.increment(100);
      beating.forEach(beat);
    }
  };
  return { clock, registry, log, watch, start, beat, run };
}

test('run liveness: a device silent past the heartbeat deadline is lost at once, and only once', () => {
  const s = setup();
  s.start('a', 1);
  s.start('b', 2);
  assert.equal(s.log, ['joined a @0', 'joined b @0']);
  s.run(1000, ['a', 'b']);
  s.run(5000, ['a']);
  assert.equal(s.log.slice(2), [`lost b @${1000 + LOST_AFTER_MS}: silent for ${LOST_AFTER_MS} ms`]);
  assert.ok(LOST_AFTER_MS <= 2000, 'the deadline is at most 2 s');
  s.watch.stop();
});

test('run liveness: a stalled device that speaks again comes back as a join, not as the lost one', () => {
  const s = setup();
  s.start('a', 1);
  s.start('b', 2);
  s.run(1000, ['a', 'b']);
  s.run(3000, ['a']); // b stopped (SIGSTOP): lost
  s.run(1000, ['a', 'b']); // SIGCONT: b beats again from the same process
  assert.equal(s.log.slice(2), [`lost b @${1000 + LOST_AFTER_MS}: silent for ${LOST_AFTER_MS} ms`, 'joined b @4100']);
  s.watch.stop();
});

test('run liveness: a device leaving is lost at once; a new process under a lost name joins', () => {
  const s = setup();
  s.start('a', 1);
  s.start('b', 2);
  s.run(1000, ['a', 'b']);
  s.registry.leave('a', 'SIGTERM');
  assert.equal(s.log.slice(2), ['lost a @1000: left: SIGTERM']);
  s.run(3000, []); // b killed
  s.start('b', 3); // and restarted
  assert.equal(s.log.slice(3), [`lost b @${1000 + LOST_AFTER_MS}: silent for ${LOST_AFTER_MS} ms`, 'joined b @4000']);
  s.run(20_000, ['b']);
  assert.is(s.log.length, 5);
  s.watch.stop();
});

test('run liveness: stop ends the watch', () => {
  const s = setup();
  s.start('a', 1);
  s.watch.stop();
  s.run(5000, []);
  assert.equal(s.log, ['joined a @0']);
});

test.run();
