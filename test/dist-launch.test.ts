/**
 * `charon launch` end to end: a private nats-server, separate device processes, the run machine
 * through profile, plan, pipeline epoch, cache redistribution and a cached epoch; the result
 * equals a 1-device in-process run of the same spec.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { committedSamples, fromReference, startLaunch, type Ev, writeCiTopology } from './fixtures/launch.ts';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';
import { alive } from './fixtures/processes.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-dist-launch-'));

/** A CI-sized copy of a ready topology: tiny preset, 16 sequences of 16 tokens, 2 epochs of 4 steps. */
function ciTopology(name: string, sequences = 16): string {
  return writeCiTopology(join(tmp, name), { from: name, samples: sequences, epochs: 2 });
}

/**
 * A profile that pins the plan of a CI topology to a two-stage pipeline whatever this machine's
 * load does to the speeds measured at registration: the analytic profile `charon plan` derives,
 * with per-device memory too small for both of tiny's layers.
 */
function pipelineProfile(file: string): string {
  const out = join(tmp, `${file.split('/').pop()}.profile.json`);
  const r = spawnSync(process.execPath, [join(root, 'tools/charon.js'), 'plan', file, '--write-profile', out, '--json'], {
    cwd: root,
    encoding: 'utf8',
  });
  assert.is(r.status, 0, r.stderr);
  const profile = JSON.parse(readFileSync(out, 'utf8'));
  for (const d of profile.devices) d.memoryBytes = Math.round(0.6 * 2 ** 20);
  writeFileSync(out, JSON.stringify(profile));
  return out;
}

/** Starts `charon launch FILE --json [...extra]`; `onEvent` sees each event as it arrives. */
const start = (file: string, runDir: string, onEvent: (e: Ev) => void = () => {}, extra: string[] = []) =>
  startLaunch([file, '--run-dir', runDir, ...extra], onEvent);

/** Runs `charon launch FILE --json` to the end; returns its exit code and events. */
const launch = (file: string, runDir: string, extra: string[] = []) => start(file, runDir, undefined, extra).done;

async function endToEnd(name: string, multiDevicePipeline: boolean): Promise<void> {
  const file = ciTopology(name);
  const runDir = join(tmp, name.replace('.yaml', ''));
  const { code, events, stderr } = await launch(file, runDir, multiDevicePipeline ? ['--profile', pipelineProfile(file)] : []);
  assert.is(code, 0, `launch failed: ${stderr.slice(-3000)}`);
  const stopped = events.at(-1)!;
  assert.is(stopped.type, 'STOPPED');
  assert.is(stopped.reason, 'trained');
  assert.is(stopped.runDir, runDir);
  // Without --profile every device is planned by its own timings of the run's work; with it, by the file.
  const timed = events.find((e) => e.type === 'RUN_PLANNED')!.timed as string[];
  const spawned = [...new Set(events.filter((e) => e.type === 'DEVICE_SPAWNED').map((e) => e.device as string))];
  assert.equal(timed.sort(), multiDevicePipeline ? [] : spawned.sort());
  // Nothing is left behind: no device process, no nats-server.
  const pids = events.filter((e) => e.type === 'DEVICE_SPAWNED').map((e) => e.pid as number);
  const natsPid = events.find((e) => e.type === 'LAUNCHED')!.natsPid as number;
  assert.ok(pids.length >= 2);
  for (const pid of [...pids, natsPid]) assert.not.ok(alive(pid), `process ${pid} still alive`);

  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.equal(
    summary.epochs.map((e) => e.phase),
    ['pipeline', 'cached'],
  );
  for (const e of summary.epochs) {
    assert.is(e.steps, 4);
    assert.ok(Number.isFinite(e.loss) && e.loss > 0, `epoch ${e.epoch} loss ${e.loss}`);
  }
  assert.ok(summary.epochs[1]!.loss < summary.epochs[0]!.loss, 'the loss falls from epoch 1 to epoch 2');
  assert.equal(summary.ledger.problems, []);
  const stepsWithLoss = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((m) => m.type === 'step');
  assert.is(stepsWithLoss.length, 8);
  // Ledger: every sample exactly once per epoch, in committed steps.
  const state = committedSamples(runDir);
  assert.is(state.step, 8);
  for (const e of state.epochs) {
    assert.equal(
      e.ids,
      Array.from({ length: 16 }, (_, i) => i),
      `epoch ${e.epoch}`,
    );
  }
  // Bytes per phase: stages exchanged activations, caches moved, the cached phase all-reduced.
  const multi = summary.plan.stages.length > 1 || summary.plan.stages.some((s) => s.devices.length > 1);
  if (multiDevicePipeline)
    assert.ok(summary.plan.stages.length > 1, `the pinned plan is a pipeline: ${JSON.stringify(summary.plan.stages)}`);
  assert.is(summary.bytesPerPhase.pipeline > 0, multi);
  const planned = summary.plan.bytesPerStep.total,
    measured = summary.pipelineBytesPerStep.measured;
  assert.ok(Math.abs(measured - planned) <= 0.1 * planned, `pipeline bytes per step ${measured}, planned ${planned}`);
  assert.ok(summary.bytesPerPhase.redistribution > 0);
  assert.ok(summary.bytesPerPhase.cached > 0);
  assert.is(summary.pipelineBytesPerStep.measured * 4, summary.epochs[0]!.bytes);
  for (const d of summary.devices) assert.ok(summary.peakBytesPerDevice[d.name]! > 0, `peak bytes of ${d.name}`);
  // Every stage rank loaded its own backbone layers and no other.
  for (const st of summary.plan.stages) {
    for (const d of st.devices) {
      const layers = new Set(
        summary.heldWeights[d]!.map((n) => /^layers\.(\d+)\./.exec(n))
          .filter((m) => m)
          .map((m) => Number(m![1])),
      );
      assert.equal(
        [...layers].sort((a, b) => a - b),
        Array.from({ length: st.to - st.from + 1 }, (_, i) => st.from + i),
        `layers held by ${d}`,
      );
    }
  }

  // The final side network equals a 1-device in-process run of the same spec.
  const { ref: local, diff } = await fromReference(file, runDir);
  // Placements differ only in summation order: measured <= 1.2e-7 over seven plans (the claim is 1e-4).
  assert.ok(diff <= 1e-5, `${name}: distributed run differs from the 1-device run by ${diff}`);
  for (let e = 0; e < 2; e++)
    assert.ok(Math.abs(local.epochLoss[e]! - summary.epochs[e]!.loss) <= 1e-4 * local.epochLoss[e]!, `epoch ${e + 1} loss`);
}

test('dist launch: local-2 trains end to end over NATS and equals a 1-device run', async () => {
  await endToEnd('local-2.yaml', true);
});

test('dist launch: lab-4 (heterogeneous, simulated) trains end to end and equals a 1-device run', async () => {
  // The planner may leave slow devices out of epoch 1 for a model this small; the cached epoch uses all four.
  await endToEnd('lab-4.yaml', false);
});

test('dist launch: Ctrl-C in the middle of training stops the run and leaves no process behind', async () => {
  const file = ciTopology('local-2.yaml', 4000);
  let stepped!: () => void;
  const firstStep = new Promise<void>((res) => {
    stepped = res;
  });
  const run = start(file, join(tmp, 'interrupted'), (e) => {
    if (e.type === 'STEP_DONE') stepped();
  });
  await firstStep;
  run.child.kill('SIGINT');
  const { code, events } = await run.done;
  assert.is(code, 0);
  const stopped = events.at(-1)!;
  assert.is(stopped.type, 'STOPPED');
  assert.is(stopped.reason, 'SIGINT');
  assert.not.ok(events.some((e) => e.type === 'RUN_FINISHED'));
  const pids = [
    ...events.filter((e) => e.type === 'DEVICE_SPAWNED').map((e) => e.pid as number),
    events.find((e) => e.type === 'LAUNCHED')!.natsPid as number,
  ];
  for (const pid of pids) assert.not.ok(alive(pid), `process ${pid} still alive`);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
