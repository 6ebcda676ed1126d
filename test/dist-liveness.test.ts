/**
 * The run's device policy (watchRunDevices) on the real registry and a simulated clock: a device
 * reported lost that speaks again from the same process within the grace stays in the run.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SimulatedClock } from 'xstate';
import { DeviceRegistry } from '../actors/coordinator/registry.ts';
import { watchRunDevices } from '../actors/coordinator/liveness.ts';
import { LOST_AFTER_MS } from '../src/runtime/heartbeat.ts';
import type { JoinRequest } from '../src/runtime/messages.ts';

const hello = (device: string, pid: number): JoinRequest => ({ device, backend: 'wasm', memoryMb: 1024, pid, host: 'h', slowdown: 1, bandwidthMbps: null });

function setup(graceMs = 10_000) {
  const clock = new SimulatedClock();
  const registry = new DeviceRegistry(clock);
  const log: string[] = [];
  const at = () => clock.now();
  const watch = watchRunDevices({
    registry, clock, graceMs,
    joined: (d) => log.push(`joined ${d} @${at()}`),
    lost: (d, reason) => log.push(`lost ${d} @${at()}: ${reason}`),
    recovered: (d) => log.push(`recovered ${d} @${at()}`),
  });
  const start = (d: string, pid: number) => { registry.join(hello(d, pid)); registry.profile({ device: d, matmulGflops: 10, backendDetail: 'wasm' }); };
  const beat = (d: string) => registry.heartbeat({ device: d, state: 'working', step: 1, memoryBytes: 0, seq: 0, sentAt: clock.now() });
  /** Advances the clock in 100 ms ticks; `beating` heartbeat on every tick. */
  const run = (ms: number, beating: string[]) => { for (let t = 0; t < ms; t += 100) { clock.increment(100); beating.forEach(beat); } };
  return { clock, registry, log, watch, start, beat, run };
}

test('run liveness: a device silent for one long burst and speaking again from the same process is kept', () => {
  const s = setup();
  s.start('a', 1); s.start('b', 2);
  assert.equal(s.log, ['joined a @0', 'joined b @0']);
  s.run(1000, ['a', 'b']);
  s.run(4000, ['a']); // b blocked for 4 s: the registry reports it lost at 2.5 s, the run waits
  assert.is(s.registry.get('b')!.alive, false);
  s.run(2000, ['a', 'b']);
  assert.equal(s.log, ['joined a @0', 'joined b @0', 'recovered b @5100']);
  s.run(20_000, ['a', 'b']); // the cancelled grace never fires
  assert.is(s.log.length, 3);
  s.watch.stop();
});

test('run liveness: a device still silent after the grace is lost to the run, once', () => {
  const s = setup(3000);
  s.start('a', 1); s.start('b', 2);
  s.run(1000, ['a', 'b']);
  s.run(10_000, ['a']);
  assert.equal(s.log.slice(2), [`lost b @${1000 + LOST_AFTER_MS + 3000}: silent for ${LOST_AFTER_MS + 3000} ms`]);
  s.watch.stop();
});

test('run liveness: a device replaced by a new process, or leaving, is lost at once', () => {
  const s = setup();
  s.start('a', 1); s.start('b', 2);
  s.run(1000, ['a', 'b']);
  s.run(2000, ['a']); // b lost by the registry, in its grace
  s.start('b', 3); // a new process takes the name
  assert.equal(s.log.slice(2), ['lost b @3000: replaced by process 3']);
  s.registry.leave('a', 'SIGTERM');
  assert.equal(s.log.slice(3), ['lost a @3000: left: SIGTERM']);
  s.run(20_000, ['b']);
  assert.is(s.log.length, 4, 'no grace fires after the loss was reported');
  s.watch.stop();
});

test('run liveness: stop cancels pending graces', () => {
  const s = setup(1000);
  s.start('a', 1);
  s.run(2000, []); // lost by the registry at 1.5 s, grace until 2.5 s
  assert.is(s.registry.get('a')!.alive, false);
  s.watch.stop();
  s.run(5000, []);
  assert.equal(s.log, ['joined a @0']);
});

test.run();
