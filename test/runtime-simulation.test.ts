import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SimulatedClock } from 'xstate';
import { SimulatedDevice } from '../src/runtime/simulation.ts';

const settle = async () => {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
};

test('simulation: slowdown stretches compute by (slowdown - 1) x its time', async () => {
  const clock = new SimulatedClock();
  const dev = new SimulatedDevice({ slowdown: 3, bandwidthMbps: null }, clock);
  let done = false;
  void dev
    .compute(() => {
      clock.set(100);
      return 'out';
    })
    .then(() => {
      done = true;
    });
  await settle();
  clock.increment(199);
  await settle();
  assert.not.ok(done, 'a 100 ms compute at slowdown 3 ends no sooner than 300 ms');
  clock.increment(1);
  await settle();
  assert.ok(done);
});

test('simulation: sends queue on a link of bandwidthMbps', async () => {
  const clock = new SimulatedClock();
  const dev = new SimulatedDevice({ slowdown: 1, bandwidthMbps: 8 }, clock); // 1 MB/s: 1000 bytes per ms
  assert.equal(dev.transferMs(1_000_000), 1000);
  const sent: number[] = [];
  void dev.send(500_000, () => sent.push(clock.now()));
  void dev.send(500_000, () => sent.push(clock.now()));
  for (let t = 0; t < 1200; t += 100) {
    await settle();
    clock.increment(100);
  }
  await settle();
  assert.equal(sent, [500, 1000]);
  assert.throws(() => new SimulatedDevice({ slowdown: 0.5, bandwidthMbps: null }, clock), /slowdown must be >= 1/);
});

test.run();
