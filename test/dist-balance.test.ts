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
