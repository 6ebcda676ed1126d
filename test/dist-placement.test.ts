import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { relDiff } from './fixtures/compare.ts';
import { initBackend } from '../src/model/backend.ts';
import { markovDataset } from '../src/train/data.ts';
import { rankRows, runLocal, StageRunner, type LocalRunOptions, type StageRunnerOptions } from '../src/engine/index.ts';
import type { StageLayout } from '../src/engine/index.ts';

const data = markovDataset({ vocab: 256, sequences: 12, length: 16, seed: 3 });
const base: Omit<LocalRunOptions, 'stages'> = {
  model: { preset: 'tiny', seed: 5 },
  data,
  seqLen: 16,
  epochs: 2,
  batch: 6,
  microBatches: 3,
  seed: 11,
  optimizer: { lr: 1e-2 },
};

const one: StageLayout[] = [{ from: 1, to: 2, devices: ['a'], shares: [1] }];
const two: StageLayout[] = [
  { from: 1, to: 1, devices: ['a'], shares: [1] },
  { from: 2, to: 2, devices: ['b'], shares: [1] },
];
// pipeline + data parallel with an uneven (speed-proportional) split in the first group
const four: StageLayout[] = [
  { from: 1, to: 1, devices: ['a', 'b'], shares: [2, 1] },
  { from: 2, to: 2, devices: ['c', 'd'], shares: [1, 1] },
];

test('placement: 1, 2 and 4 devices (pipeline + data parallel) end with the same side network', async () => {
  await initBackend('wasm');
  const r1 = await runLocal({ ...base, stages: one });
  const r2 = await runLocal({ ...base, stages: two });
  const r4 = await runLocal({ ...base, stages: four });
  // the run trained: side weights moved from their start and the loss is finite
  const start = await runLocal({ ...base, epochs: 1, optimizer: { lr: 0 }, stages: one });
  assert.ok(relDiff(r1.params, start.params) > 1e-3, 'training moved the side network');
  for (const r of [r1, r2, r4]) assert.ok(r.epochLoss.every(Number.isFinite));
  const d2 = relDiff(r1.params, r2.params),
    d4 = relDiff(r1.params, r4.params);
  // Only summation order differs (measured ~1e-7); a parameter whose true gradient is zero (such
  // as a GPT-2 key bias) would random-walk under AdamW and show up here at ~1e-4.
  assert.ok(d2 <= 1e-5, `2-device run differs by ${d2}`);
  assert.ok(d4 <= 1e-5, `4-device run differs by ${d4}`);
  assert.ok(Math.abs(r1.epochLoss[1]! - r4.epochLoss[1]!) < 1e-4 * Math.abs(r1.epochLoss[1]!));
  // cached epochs never ran a backbone layer, and the 4-device run moved cache entries
  for (const r of [r1, r2, r4]) assert.is(r.layerCalls[1], 0);
  assert.is(r1.redistributedBytes, 0);
  assert.ok(r4.redistributedBytes > 0);
});

test('placement: shares changed from step to step (tuned by measurement) train the same side network', async () => {
  // Every rank of a step splits its rows by the step's shares: rows move between the ranks of a
  // group from one step to the next, one rank of a group even gets none, and the loss still
  // counts each row once.
  const tuned = await runLocal({
    ...base,
    stages: four,
    stepShares: (step) =>
      step % 2 === 0
        ? [
            [1, 3],
            [5, 1],
          ]
        : step % 3 === 0
          ? [
              [1, 0.01],
              [1, 1],
            ]
          : undefined,
  });
  const r1 = await runLocal({ ...base, stages: one });
  const d = relDiff(r1.params, tuned.params);
  assert.ok(d <= 1e-5, `tuned 4-device run differs by ${d}`);
  assert.ok(Math.abs(r1.epochLoss[0]! - tuned.epochLoss[0]!) < 1e-5 * Math.abs(r1.epochLoss[0]!));
  const bad = runLocal({ ...base, epochs: 1, stages: four, stepShares: () => [[1, 1]] });
  await bad.then(
    () => assert.unreachable('a step with shares for one stage of two ran'),
    (e: Error) => assert.match(e.message, /1 stages of shares for a plan of 2/),
  );
});

test('placement: a stage rank holds only its own backbone layers', async () => {
  const r = await runLocal({ ...base, epochs: 1, stages: two });
  const first = r.heldWeights.get('0.0')!,
    last = r.heldWeights.get('1.0')!;
  assert.ok(
    first.some((n) => /1/.test(n)),
    `first stage holds layer 1: ${first.join(', ')}`,
  );
  const layerOf = (n: string) => {
    const m = /(?:^|\.)(?:h|layers)\.(\d+)\./.exec(n);
    return m ? Number(m[1]) : null;
  };
  const firstLayers = new Set(first.map(layerOf).filter((x) => x !== null));
  const lastLayers = new Set(last.map(layerOf).filter((x) => x !== null));
  assert.is(firstLayers.size, 1);
  assert.is(lastLayers.size, 1);
  assert.not.equal([...firstLayers], [...lastLayers]);
});

test('placement: a stage or rank outside the plan is refused, not given an empty share of the rows', () => {
  assert.throws(() => rankRows([1, 2, 3], [1, 1], 2), /rank 2 is not in a group of 2/);
  const opts = { stages: four, stage: 2, rank: 0 } as unknown as StageRunnerOptions;
  assert.throws(() => new StageRunner(opts), /stage 2 is not one of the plan's 2 stages/);
  assert.throws(() => new StageRunner({ ...opts, stage: 1, rank: 2 }), /rank 2 is not in stage 1's group of 2/);
  assert.throws(
    () => new StageRunner({ ...opts, stage: 0, stages: [four[0]!, { ...four[1]!, shares: [1] }] }),
    /stage 1 has 1 shares for 2 devices/,
  );
});

test.run();
