import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { planCachedPhase, shardSizes, type CacheHolding } from '../src/plan/cached.ts';
import { rng } from './plan-fixtures.ts';

test('cached: shard sizes follow speed and sum to the sample count', () => {
  assert.equal(
    shardSizes(
      [
        { name: 'a', msPerSample: 1 },
        { name: 'b', msPerSample: 3 },
      ],
      16,
    ),
    [12, 4],
  );
  const sizes = shardSizes(
    [
      { name: 'a', msPerSample: 1 },
      { name: 'b', msPerSample: 1.7 },
      { name: 'c', msPerSample: 2.9 },
    ],
    101,
  );
  assert.is(
    sizes.reduce((x, y) => x + y, 0),
    101,
  );
  assert.ok(sizes[0]! > sizes[1]! && sizes[1]! > sizes[2]!);
});

/** Least bytes moved over every assignment with the given shard sizes. */
function bruteForce(n: number, names: string[], quota: number[], holders: Map<number, CacheHolding[]>): number {
  let best = Infinity;
  const owner: number[] = [];
  const left = [...quota];
  const go = (j: number, moved: number) => {
    if (moved >= best) return;
    if (j === n) {
      best = moved;
      return;
    }
    for (let i = 0; i < names.length; i++) {
      if (left[i] === 0) continue;
      left[i]!--;
      owner[j] = i;
      const m = (holders.get(j) ?? []).filter((h) => h.device !== names[i]).reduce((s, h) => s + h.bytes, 0);
      go(j + 1, moved + m);
      left[i]!++;
    }
  };
  go(0, 0);
  return best;
}

test('cached: the assignment moves the fewest cache bytes (brute force on small instances)', () => {
  for (let seed = 1; seed <= 60; seed++) {
    const r = rng(seed);
    const D = 2 + (seed % 3);
    const n = 4 + (seed % 5);
    const devices = Array.from({ length: D }, (_, i) => ({ name: `d${i}`, msPerSample: 0.5 + r() * 3 }));
    const holders = new Map<number, CacheHolding[]>();
    for (let j = 0; j < n; j++) {
      if (r() < 0.1) continue;
      holders.set(
        j,
        devices.filter(() => r() < 0.6).map((d) => ({ device: d.name, bytes: Math.round(1 + r() * 100) })),
      );
    }
    const samples = Array.from({ length: n }, (_, j) => j);
    const plan = planCachedPhase(devices, samples, holders);
    const quota = shardSizes(devices, n);
    assert.equal(
      plan.shards.map((s) => s.samples.length),
      quota,
    );
    assert.equal(
      plan.shards.flatMap((s) => s.samples).sort((a, b) => a - b),
      samples,
      'each sample exactly once',
    );
    assert.is(
      plan.bytesMoved,
      bruteForce(
        n,
        devices.map((d) => d.name),
        quota,
        holders,
      ),
      `seed ${seed}`,
    );
    assert.is(
      plan.transfers.reduce((s, t) => s + t.bytes, 0),
      plan.bytesMoved,
    );
  }
});

test('cached: samples stay where a pipeline stage already cached them when shards allow', () => {
  const holders = new Map<number, CacheHolding[]>([
    [0, [{ device: 'a', bytes: 10 }]],
    [1, [{ device: 'b', bytes: 10 }]],
  ]);
  const plan = planCachedPhase(
    [
      { name: 'a', msPerSample: 1 },
      { name: 'b', msPerSample: 1 },
    ],
    [0, 1],
    holders,
  );
  assert.equal(plan.shards, [
    { device: 'a', samples: [0] },
    { device: 'b', samples: [1] },
  ]);
  assert.is(plan.bytesMoved, 0);
});
test.run();
