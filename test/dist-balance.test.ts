import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { balanceShards } from '../src/plan/balance.ts';
import { epochSteps } from '../src/train/data.ts';

const run = { samples: 32, seed: 1, batch: 8 };

test('balance: shards keep the planned sizes and hold every sample once', () => {
  const steps = [...epochSteps(run, 2), ...epochSteps(run, 3)];
  const shards = balanceShards([20, 12], steps, () => false);
  assert.equal(
    shards.map((s) => s.length),
    [20, 12],
  );
  assert.equal(
    shards.flat().sort((a, b) => a - b),
    Array.from({ length: 32 }, (_, j) => j),
  );
});

test('balance: one cached epoch splits every step by the shard shares', () => {
  const steps = epochSteps(run, 2);
  const shards = balanceShards([16, 16], steps, () => false);
  for (const ids of steps) assert.equal(ids.filter((j) => shards[0]!.includes(j)).length, 4, `step ${ids.join(',')}`);
});

test('balance: two equal devices get half of every step of both cached epochs (W1 sizes), keeping more than a greedy pass', () => {
  const w1 = { samples: 256, seed: 1, batch: 8 };
  const steps = [...epochSteps(w1, 2), ...epochSteps(w1, 3)];
  // Epoch 1 left the samples split 160/96, as an uneven first plan does.
  const holder = (j: number) => (j % 8 < 5 ? 1 : 0);
  const shards = balanceShards([128, 128], steps, (k, j) => holder(j) === k);
  for (const ids of steps) assert.equal(ids.filter((j) => shards[0]!.includes(j)).length, 4, `step ${ids.join(',')}`);
  const kept = shards.reduce((n, s, k) => n + s.filter((j) => holder(j) === k).length, 0);
  // Any 128/128 split keeps at most 96 + 128 samples; balance costs some of that, not most.
  assert.ok(kept >= 160, `kept ${kept} of 256 samples where they were cached`);
});

test('balance: uneven shares split each step by them (four devices, the greedy pass alone leaves 9-row steps)', () => {
  const r = { samples: 384, seed: 1, batch: 16 };
  const steps = [...epochSteps(r, 2), ...epochSteps(r, 3)];
  const sizes = [150, 100, 80, 54];
  const shards = balanceShards(sizes, steps, () => false);
  const owner = new Map<number, number>();
  shards.forEach((s, k) => s.forEach((j) => owner.set(j, k)));
  for (const ids of steps) {
    const load = sizes.map(() => 0);
    for (const j of ids) load[owner.get(j)!]! += 1;
    load.forEach((l, k) => {
      const share = (sizes[k]! / 384) * ids.length;
      assert.ok(Math.abs(l - share) < 2, `step ${ids.join(',')}: device ${k} has ${l} rows, share ${share.toFixed(2)}`);
    });
  }
});

test('balance: among equally balanced choices a device keeps what it caches', () => {
  const steps = [
    [0, 1],
    [2, 3],
  ];
  const holder = (j: number) => (j === 1 || j === 2 ? 1 : 0);
  assert.equal(
    balanceShards([2, 2], steps, (k, j) => holder(j) === k),
    [
      [0, 3],
      [1, 2],
    ],
  );
});

test('balance: sizes that do not cover the samples are an error', () => {
  assert.throws(() => balanceShards([1, 1], [[0, 1, 2]], () => false), /add up to 2/);
});

test.run();
