/**
 * `charon launch --resume RUN_DIR`: a run stopped with Ctrl-C continues from its last committed
 * step (side network, optimiser, ledger, position) in fresh device processes, recomputes the
 * activation caches that died with the old ones, and ends where an uninterrupted run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { committedSamples, fromReference, startLaunch, type Ev, writeCiTopology } from './fixtures/launch.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-dist-resume-'));

/** local-2, CI-sized: 16 sequences of 16 tokens, 3 epochs of 4 steps (1 pipeline, 2 cached). */
const file = writeCiTopology(join(tmp, 'local-2.yaml'), { samples: 16, epochs: 3 });

/** `charon launch FILE ...args --json`; SIGINT once `interruptWhen` matches an event. */
function launch(args: string[], interruptWhen?: (e: Ev) => boolean) {
  let sent = false;
  return startLaunch([file, ...args], (e, child) => {
    if (!sent && interruptWhen?.(e)) {
      sent = true;
      child.kill('SIGINT');
    }
  }).done;
}

/** Interrupts after step `k` is done, resumes, and checks the result against an uninterrupted run. */
async function interruptAndResume(name: string, k: number): Promise<void> {
  const runDir = join(tmp, name);
  const first = await launch(['--run-dir', runDir], (e) => e.type === 'STEP_DONE' && e.step === k);
  assert.is(first.code, 0, first.stderr.slice(-2000));
  assert.is(first.events.at(-1)!.reason, 'SIGINT');
  assert.not.ok(
    first.events.some((e) => e.type === 'RUN_FINISHED'),
    'the run was interrupted before it finished',
  );
  const committed = (JSON.parse(readFileSync(join(runDir, 'state.json'), 'utf8')) as { step: number }).step;
  assert.ok(committed >= k - 1 && committed < 12, `committed ${committed}`);

  const second = await launch(['--resume', runDir]);
  assert.is(second.code, 0, second.stderr.slice(-2000));
  assert.is(second.events.at(-1)!.reason, 'trained');
  const resumed = second.events.find((e) => e.type === 'RUN_RESUMED')!;
  assert.is(resumed.step, committed);
  // Steps before the interruption are not run again.
  const steps = second.events.filter((e) => e.type === 'STEP_DONE').map((e) => e.step as number);
  assert.equal(
    steps,
    Array.from({ length: 12 - committed }, (_, i) => committed + 1 + i),
  );
  // Caches of the old processes are gone: what redistribution needs was recomputed through the backbone.
  const refill = second.events.find((e) => e.type === 'CACHE_REFILLED');
  assert.ok(refill && (refill.samples as number) > 0, 'caches refilled');

  const state = committedSamples(runDir);
  assert.is(state.step, 12);
  assert.is(state.epochs.length, 3);
  for (const e of state.epochs) {
    assert.equal(
      e.ids,
      Array.from({ length: 16 }, (_, i) => i),
      `epoch ${e.epoch}: every sample exactly once`,
    );
  }
  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.is(summary.resumedFromStep, committed);
  assert.equal(
    summary.epochs.map((e) => e.steps),
    [4, 4, 4],
  );
  assert.equal(summary.ledger.problems, []);

  const { ref, diff } = await fromReference(file, runDir);
  // Measured ~4e-8 (summation order only); the claim is 1e-4.
  assert.ok(diff <= 1e-5, `${name}: resumed run differs from an uninterrupted one by ${diff}`);
  for (let e = 0; e < 3; e++)
    assert.ok(
      Math.abs(ref.epochLoss[e]! - summary.epochs[e]!.loss) <= 1e-4 * ref.epochLoss[e]!,
      `epoch ${e + 1} loss ${summary.epochs[e]!.loss} vs ${ref.epochLoss[e]}`,
    );
}

test('dist resume: interrupted in the pipeline epoch, resumed, ends as an uninterrupted run', async () => {
  await interruptAndResume('pipeline', 1);
});

test('dist resume: interrupted in the cached epochs, resumed (caches recomputed), ends as an uninterrupted run', async () => {
  await interruptAndResume('cached', 6);
});

test('dist resume: a finished run is refused; one whose summary was never written (its coordinator died after the last commit) only finishes', async () => {
  const runDir = join(tmp, 'pipeline');
  const refused = await launch(['--resume', runDir]);
  assert.is(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /already trained all 3 epochs \(summary\.json is written\)/);

  // What a kill between the last commit and the summary leaves: every step committed, no summary.
  const before = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  rmSync(join(runDir, 'summary.json'));
  const finished = await launch(['--resume', runDir]);
  assert.is(finished.code, 0, finished.stderr.slice(-2000));
  assert.is(finished.events.at(-1)!.reason, 'trained');
  assert.equal(
    finished.events.filter((e) => e.type === 'STEP_DONE' || e.type === 'REDISTRIBUTED'),
    [],
    'nothing trained or redistributed again',
  );
  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.equal(summary.epochs, before.epochs);
  assert.equal(summary.ledger.problems, []);
  assert.is(summary.resumedFromStep, 12);
});

test('dist resume: a directory without committed state is refused with one clear line', async () => {
  const r = await launch(['--resume', join(tmp, 'nothing-here')]);
  assert.is(r.code, 2);
  assert.match(r.stderr, /nothing-here\/state\.json: missing/);
  assert.is(r.events.length, 0, 'nothing started');
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
