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

/** Hands over steps `from`..`to`, each with moments filled with its step, then spoiled in place as the next update would. */
async function handSteps(w: CommitWriter, from: number, to: number, m: Float32Array): Promise<void> {
  for (let step = from; step <= to; step++) {
    m.fill(step);
    await w.write(files(step, m));
    m.fill(-1);
  }
}

test('commits land in order, each as it was when handed over', async () => {
  const runDir = join(tmp, 'ordered');
  const latest = join(runDir, 'checkpoints', 'latest');
  const w = new CommitWriter(runDir, latest);
  try {
    const m = new Float32Array(2);
    // The next step's update changes the moments in place while the write may be in flight.
    await handSteps(w, 1, 3, m);
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
    await w.settled().then(
      () => assert.unreachable('settled() must reject after a failed write'),
      (e: Error) => assert.ok(e instanceof Error),
    );
    let failed: unknown = null;
    await w.write(files(2, new Float32Array(2))).catch((e) => (failed = e));
    assert.ok(failed instanceof Error, 'the commit after a failed write is refused');
  } finally {
    await w.close().catch(() => {});
  }
});

test('commits handed over faster than the interval: the newest waiting one replaces the others, and lands in its turn', async () => {
  const runDir = join(tmp, 'coalesced');
  const latest = join(runDir, 'checkpoints', 'latest');
  const w = new CommitWriter(runDir, latest, 400);
  try {
    const m = new Float32Array(2);
    await handSteps(w, 1, 10, m);
    // The first one starts at once; 2..9 were each replaced before their turn; 10 waits for it,
    // and is written when its time comes, without anyone asking.
    const committed = () => {
      try {
        return JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step as number;
      } catch {
        return 0;
      }
    };
    const seen = new Set<number>();
    for (const until = Date.now() + 10_000; committed() !== 10 && Date.now() < until; ) {
      seen.add(committed());
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.is(committed(), 10, 'the waiting commit is written when its time comes');
    assert.ok(
      [...seen].every((k) => k === 0 || k === 1),
      `only step 1 was on disk before: ${[...seen]}`,
    );
    // state.json is the commit; the checkpoint is put in place right after it.
    await w.settled();
    assert.equal([...loadCheckpoint(latest).state.optimizer.m.get('w')!], [10, 10]);
    assert.equal(w.counts, { handed: 10, written: 2 });
    // An epoch's end is written at once, and a waiting commit older than it is dropped.
    await w.write(files(11, m));
    await w.writeNow(files(12, Float32Array.of(12, 12)));
    assert.is(JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step, 12);
    await w.settled();
    assert.is(JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step, 12, 'nothing older lands after it');
    assert.equal(w.counts, { handed: 12, written: 3 });
    // settled() (a run's end) writes what waits without waiting for its turn.
    await w.write(files(13, Float32Array.of(13, 13)));
    await w.settled();
    assert.is(JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')).step, 13);
  } finally {
    await w.close();
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
