/**
 * A run survives a SIGKILLed device: `charon launch` on three local device processes, one of
 * them killed (a) during the pipeline epoch, (b) during a cached epoch. The run re-plans over the
 * survivors, replays the step in flight from the committed side network, recomputes the cache
 * entries that died with the device, and ends where an uninterrupted run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pinTwoStageProfile, fromReference, startLaunch, type Ev, writeCiTopology } from './fixtures/launch.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';
import type { StageRank } from '../actors/coordinator/run-machine.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-elastic-'));
const SAMPLES = 24,
  EPOCHS = 3,
  STEPS = SAMPLES / 4;

/** local-2 plus a third device, CI-sized: 24 sequences of 16 tokens, 3 epochs of 6 steps (1 pipeline, 2 cached). */
const file = writeCiTopology(join(tmp, 'local-3.yaml'), { run: 'local-3', samples: SAMPLES, epochs: EPOCHS, third: true });

/**
 * The analytic profile `charon plan` derives, with memory for one of tiny's two layers per
 * device: the plan is dev0 | dev1+dev2 whatever this machine's load does to measured speeds, and
 * any two survivors still fit the model.
 */
const profile = join(tmp, 'local-3.profile.json');
pinTwoStageProfile(file, profile);

/** `charon launch --json`; `onEvent` sees each event as it arrives (with the child, to kill a device). */
const launch = (runDir: string, onEvent: (e: Ev) => void) => startLaunch([file, '--run-dir', runDir, '--profile', profile], onEvent).done;

/** Kills `device`'s process with SIGKILL at the first event `when` matches; checks the run against an uninterrupted one. */
async function killAndRecover(name: string, device: string, when: (e: Ev) => boolean): Promise<void> {
  const runDir = join(tmp, name);
  const pids = new Map<string, number>();
  let killedAt = 0;
  const run = await launch(runDir, (e) => {
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!killedAt && when(e)) {
      killedAt = Date.now();
      process.kill(pids.get(device)!, 'SIGKILL');
    }
  });
  assert.is(run.code, 0, run.stderr.slice(-3000));
  assert.is(run.events.at(-1)!.reason, 'trained', run.stderr.slice(-3000));
  assert.ok(killedAt > 0, `${device} was killed`);

  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.equal(
    summary.epochs.map((e) => e.steps),
    [STEPS, STEPS, STEPS],
  );
  assert.equal(summary.ledger.problems, [], 'every sample exactly once per epoch');
  assert.is(summary.faults.length, 1, JSON.stringify(summary.faults));
  const fault = summary.faults[0]!;
  assert.is(fault.device, device);
  assert.ok(fault.lostAt! >= killedAt && fault.recoveredAt! > fault.lostAt!, JSON.stringify(fault));
  // The supervisor restarts the killed process; on a fast machine it joins again before the run
  // ends (elastic-rejoin.test.ts checks that path): any later re-plan only takes it back in.
  const rejoined = summary.joins.some((j) => j.device === device);
  assert.equal(
    summary.replans.slice(1).map((r) => [r.lost, r.joined]),
    rejoined ? [[[], [device]]] : [],
  );
  const replan = summary.replans[0]!;
  assert.equal(
    [replan.generation, replan.lost, [...replan.devices].sort()],
    [1, [device], ['dev0', 'dev1', 'dev2'].filter((d) => d !== device)],
  );
  assert.ok(
    replan.from.stages.some((s) => s.devices.includes(device)) || replan.from.cachedRanks?.includes(device),
    'the old plan used the device',
  );
  assert.not.ok(
    replan.to.stages.some((s) => s.devices.includes(device)),
    'the new plan does not',
  );
  // In the pipeline epoch a survivor the new plan leaves on the same layers keeps them (its side
  // state is set back to the last commit); in a cached epoch the survivors' workers were released
  // and the pipeline that refills the lost entries is loaded anew.
  const ranks = replan.to.stages.flatMap((s, stage) => s.devices.map((d, rank) => ({ device: d, stage, rank, from: s.from, to: s.to })));
  const stayed = (p: StageRank) => replan.from.stages.some((s) => s.from === p.from && s.to === p.to && s.devices.includes(p.device));
  const pipeline = fault.epoch === 1;
  assert.equal(replan.kept, pipeline ? ranks.filter(stayed) : []);
  assert.equal(replan.redeployed, pipeline ? ranks.filter((p) => !stayed(p)) : ranks);
  if (pipeline) assert.ok(replan.kept!.length > 0, `a survivor kept its stage: ${JSON.stringify(replan)}`);
  assert.ok(
    rejoined || !summary.redistribution || !(device in summary.redistribution.shardSizes),
    'the cached phase runs on the survivors',
  );

  // The step in flight was replayed (a step done before the kill was not run again).
  const done = run.events.filter((e) => e.type === 'STEP_DONE').map((e) => e.step as number);
  assert.equal(
    [...new Set(done)],
    Array.from({ length: EPOCHS * STEPS }, (_, i) => i + 1),
  );
  const lost = run.events.find((e) => e.type === 'DEVICE_LOST' && e.device === device)!;
  const next = run.events.find((e) => e.type === 'STEP_DONE' && (e.at as number) > (lost.at as number))!;
  assert.ok(run.events.some((e) => e.type === 'RECOVERING'));
  const { ref, diff } = await fromReference(file, runDir);
  // Recovery time for the report: kill -> loss reported -> next step done -> committed.
  // Entries only the lost device held (its rows of committed steps) were recomputed through the backbone.
  const refill = run.events.find((e) => e.type === 'CACHE_REFILLED' && (e.at as number) > killedAt);
  assert.ok(refill && (refill.samples as number) > 0, 'caches refilled');
  // One copy of the cache (the default): summary.json counts what went through the backbone again.
  assert.is(summary.cache.replicas, 1);
  assert.is(
    summary.cache.recomputed,
    run.events.filter((e) => e.type === 'CACHE_REFILLED').reduce((a, e) => a + (e.entries as number), 0),
  );
  assert.ok(summary.cache.recomputed >= (refill.samples as number) * 3);
  console.log(
    `  ${name}: killed ${device} (${fault.during}, epoch ${fault.epoch} step ${fault.step}); lost after ${(lost.at as number) - killedAt} ms; ` +
      `step ${next.step} done ${(next.at as number) - killedAt} ms and committed ${fault.recoveredAt! - killedAt} ms after the kill; ` +
      `plan ${replan.from.stages.map((s) => s.devices.join('+')).join(' | ')} -> ${replan.to.stages.map((s) => s.devices.join('+')).join(' | ')}; ` +
      `kept [${replan.kept!.map((p) => `${p.device}:${p.from}-${p.to}`).join(', ')}]; ${refill.samples} samples refilled; relative difference ${diff.toExponential(1)}; joined late: [${summary.joinedLate.join(', ')}]`,
  );
  // Placement changes only the summation order (1/2/4-device placements agree to ~1e-7).
  assert.ok(diff <= 1e-5, `${name}: the recovered run differs from an uninterrupted one by ${diff}`);
  for (let e = 0; e < EPOCHS; e++)
    assert.ok(
      Math.abs(ref.epochLoss[e]! - summary.epochs[e]!.loss) <= 1e-4 * ref.epochLoss[e]!,
      `epoch ${e + 1} loss ${summary.epochs[e]!.loss} vs ${ref.epochLoss[e]}`,
    );
}

test('elastic recovery: a device SIGKILLed in the pipeline epoch; the run re-plans, replays, refills and ends as an uninterrupted run', async () => {
  await killAndRecover('pipeline', 'dev2', (e) => e.type === 'STEP_DONE' && e.phase === 'pipeline');
});

test('elastic recovery: a device SIGKILLed in a cached epoch; its shard is recomputed and redistributed, and the run ends as an uninterrupted run', async () => {
  await killAndRecover('cached', 'dev1', (e) => e.type === 'STEP_DONE' && e.phase === 'cached');
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
