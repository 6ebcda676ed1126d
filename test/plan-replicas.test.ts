import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assignReplicas, planSends } from '../src/plan/replicas.ts';

const LAYERS = 3;
const all = [0, 1, 2];

/** Each device's copies: never its own samples, every sample exactly once, about one shard's worth each. */
test('replicas: every sample gets one copy on another device, quotas follow shard sizes', () => {
  const shards = [
    [0, 1, 2, 3, 4, 5],
    [6, 7, 8],
    [9, 10, 11],
  ];
  const replicas = assignReplicas(shards, () => 0);
  assert.equal(
    replicas.flat().sort((a, b) => a - b),
    Array.from({ length: 12 }, (_, j) => j),
  );
  replicas.forEach((r, k) =>
    assert.ok(
      r.every((j) => !shards[k]!.includes(j)),
      `device ${k} copies its own shard`,
    ),
  );
  assert.equal(
    replicas.map((r) => r.length),
    [6, 3, 3],
  );
});

test('replicas: a copy stays where the sample is already held', () => {
  const shards = [
    [0, 1],
    [2, 3],
    [4, 5],
  ];
  // Device 2 holds every layer of samples 0 and 2; device 0 holds sample 4 and device 1 sample 5.
  const held = new Map([
    ['2:0', 3],
    ['2:2', 3],
    ['0:4', 3],
    ['1:5', 3],
  ]);
  const replicas = assignReplicas(shards, (k, j) => held.get(`${k}:${j}`) ?? 0);
  assert.ok(replicas[2]!.includes(0) && replicas[2]!.includes(2), JSON.stringify(replicas));
  assert.ok(replicas[0]!.includes(4) && replicas[1]!.includes(5), JSON.stringify(replicas));
});

test('replicas: two devices left each hold the other shard; one device keeps no copy', () => {
  assert.equal(
    assignReplicas(
      [
        [0, 2],
        [1, 3],
      ],
      () => 0,
    ),
    [
      [1, 3],
      [0, 2],
    ],
  );
  assert.equal(
    assignReplicas([[0, 1, 2]], () => 0),
    [[]],
  );
});

test('sends: a sample held whole by two devices is sent once; split layers come from every holder', () => {
  // Receivers 0 and 1; sender 2 is leaving. Sample 0 is whole on 1 and 2; sample 1 is split over 1 (layer 0) and 2 (layers 1, 2).
  const held = (s: number, j: number): number[] => {
    if (j === 0) return s === 0 ? [] : all;
    if (j === 1) return s === 1 ? [0] : s === 2 ? [1, 2] : [];
    return s === 1 ? all : [];
  };
  const sends = planSends([[0, 1, 2], [2]], 3, held, LAYERS);
  const to0 = sends.map((perDest) => perDest[0]!);
  assert.is(to0.filter((s) => s.includes(0)).length, 1, 'sample 0 comes from one holder');
  assert.ok(to0[1]!.includes(1) && to0[2]!.includes(1), 'sample 1 comes from both halves');
  assert.ok(to0[1]!.includes(2), 'sample 2 from its only holder');
  assert.equal(
    sends.map((perDest) => perDest[1]),
    [[], [], []],
    'device 1 already holds sample 2',
  );
});

test('sends: whole copies are spread over their holders', () => {
  // Receiver 0 wants 4 samples that devices 1 and 2 both hold whole.
  const held = (s: number): number[] => (s === 0 ? [] : all);
  const sends = planSends([[0, 1, 2, 3], [], []], 3, held, LAYERS);
  assert.equal(
    sends.map((perDest) => perDest[0]!.length),
    [0, 2, 2],
  );
});

test.run();
