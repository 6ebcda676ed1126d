/**
 * The coordinator's commit writer: step commits written on a thread of their own, in order, from
 * a copy taken when each is handed over, with a failed write failing what comes after it.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommitWriter } from '../actors/coordinator/commit-writer.ts';
import type { CommitFiles } from '../actors/coordinator/commit-files.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { loadTopology } from '../src/topology/load.ts';
import { specFromTopology } from '../src/train/run-spec.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-commit-writer-'));
const spec = specFromTopology(loadTopology(new URL('../topologies/local-2.yaml', import.meta.url).pathname));

function files(step: number, m: Float32Array): CommitFiles {
  return {
    state: { epoch: 1, stepInEpoch: step, step, ledger: { samples: spec.samples, epochs: [] } } as unknown as CommitFiles['state'],
    side: {
      params: new Map([['w', Float32Array.of(step, step + 0.5)]]),
      shapes: new Map([['w', [2]]]),
      optimizer: { step, m: new Map([['w', m]]), v: new Map([['w', new Float32Array(2)]]) },
    },
    spec,
    fingerprint: 'test',
  };
}

test('commits land in order, each as it was when handed over', async () => {
  const runDir = join(tmp, 'ordered');
  const latest = join(runDir, 'checkpoints', 'latest');
  const w = new CommitWriter(runDir, latest);
  try {
    const m = new Float32Array(2);
    for (let step = 1; step <= 3; step++) {
      m.fill(step);
      await w.write(files(step, m));
      // The next step's update changes the moments in place while the write may be in flight.
      m.fill(-1);
    }
    await w.settled();
    assert.is(JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step, 3);
    const { meta, state } = loadCheckpoint(latest);
    assert.is(meta.globalStep, 3);
    assert.equal([...state.parameters.get('w')!.data], [3, 3.5]);
    assert.equal([...state.optimizer.m.get('w')!], [3, 3]);
  } finally {
    await w.close();
  }
});

test('a failed write fails the next commit and settled()', async () => {
  const runDir = join(tmp, 'failing');
  // A file where the checkpoints folder should be: the write cannot make its directory.
  writeFileSync(join(tmp, 'not-a-dir'), 'x');
  const w = new CommitWriter(runDir, join(tmp, 'not-a-dir', 'latest'));
  try {
    await w.write(files(1, new Float32Array(2)));
    let failed: unknown = null;
    await w.write(files(2, new Float32Array(2))).catch((e) => (failed = e));
    assert.ok(failed instanceof Error, 'the commit after a failed write is refused');
    await w.settled().then(
      () => assert.unreachable('settled() must reject after a failed write'),
      (e: Error) => assert.ok(e instanceof Error),
    );
  } finally {
    await w.close().catch(() => {});
  }
});

test('close() during a hand-over still commits that step, without starting a thread again', async () => {
  const runDir = join(tmp, 'closing');
  const latest = join(runDir, 'checkpoints', 'latest');
  const w = new CommitWriter(runDir, latest);
  await w.write(files(1, new Float32Array(2)));
  // An interrupt right after a step's result: its write is still waiting for the one before it.
  const second = w.write(files(2, Float32Array.of(2, 2)));
  await w.close();
  await second;
  assert.is(JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step, 2);
  assert.is(loadCheckpoint(latest).meta.globalStep, 2);
  // A write after close is written on the caller's thread.
  await w.write(files(3, Float32Array.of(3, 3)));
  assert.is(JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step, 3);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
