/**
 * A real `charon device` process doing W1-sized work (loading a whole W1 stage, running a step of
 * 8 sequences of 128 tokens) keeps heartbeating: compute runs in its worker thread, so no gap
 * between two heartbeats reaches the lost-device deadline, and `charon status` shows the device
 * working on the step meanwhile. A correctness property (a busy device is not a lost one), not a
 * speed target.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, startNatsServer, type NatsServer } from '../src/bus/index.ts';
import { startCoordinator, type Coordinator } from '../actors/coordinator/actor.ts';
import { control } from '../actors/coordinator/control.ts';
import { loadTopology } from '../src/topology/load.ts';
import { specFromTopology } from '../src/train/run-spec.ts';
import { LOST_AFTER_MS } from '../src/runtime/heartbeat.ts';
import { heartbeat } from '../src/runtime/messages.ts';

const root = new URL('..', import.meta.url).pathname;
let server: NatsServer, dir: string, bus: Bus, coordinator: Coordinator, child: ChildProcess;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'charon-hb-'));
  server = await startNatsServer({ runDir: dir, jetstream: false });
  bus = await Bus.connect({ servers: server.url, name: 'coordinator', run: 'hb' });
  coordinator = startCoordinator({ bus, expected: ['d0'] });
});
test.after(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  coordinator.stop();
  await bus.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('device heartbeats: W1 stage load and step never stall heartbeats past the lost deadline; status shows the work', async () => {
  const file = join(dir, 'w1.yaml');
  writeFileSync(
    file,
    [
      'run: hb',
      'model: { preset: w1 }',
      'method: { kind: parallel, k: 8 }',
      'data: { markov: { sequences: 8, seqLen: 128, seed: 1 } }',
      'training: { epochs: 1, batch: 8, microBatches: 1, lr: 0.001, seed: 1, cache: { budgetMb: 64, dir: cache, dtype: f32 } }',
      'devices: [ { name: d0, local: true, backend: wasm, memoryMb: 4096 } ]',
      '',
    ].join('\n'),
  );
  const spec = specFromTopology(loadTopology(file));
  const gaps: number[] = [];
  let last = 0,
    counting = false;
  bus.subscribe(
    bus.subjects.devHbAll(),
    (env) => {
      const hb = heartbeat.parse(env.body);
      const now = performance.now();
      if (counting && last) gaps.push(now - last);
      last = now;
      void hb;
    },
    { kinds: ['hb'] },
  );
  child = spawn(
    process.execPath,
    [join(root, 'tools/charon.js'), 'device', '--nats', server.url, '--run', 'hb', '--name', 'd0', '--memory-mb', '4096'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d) => {
    log += d;
  });
  await coordinator.whenAssembled();
  counting = true;
  const stages = [{ from: 1, to: 8, devices: ['d0'], shares: [1] }];
  const assigned = await control<{ weights: string[] }>(
    bus,
    'd0',
    'assign',
    { spec, stages, stage: 0, rank: 0, generation: 0, firstStep: 1 },
    { timeoutMs: 120_000 },
  );
  assert.ok(assigned.weights.length > 8, 'the whole W1 backbone was loaded');
  const step = control<{ loss: number }>(
    bus,
    'd0',
    'step',
    { step: 1, sampleIds: [0, 1, 2, 3, 4, 5, 6, 7], withState: true },
    { timeoutMs: 120_000 },
  );
  // `charon status` (its own process) while the step runs: the device is working on step 1.
  let seen: { state: string; step: number; phase: string | null; role: string | null } | undefined;
  for (let i = 0; i < 50 && !seen; i++) {
    // Asynchronously: the coordinator answering it runs in this process.
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(root, 'tools/charon.js'), 'status', '--nats', server.url, '--run', 'hb', '--json'],
      { encoding: 'utf8' },
    );
    const out = JSON.parse(stdout);
    const d = out.devices.find((x: { name: string }) => x.name === 'd0');
    if (d.state === 'working') seen = d;
  }
  const reply = await step;
  counting = false;
  assert.ok(Number.isFinite(reply.loss) && reply.loss > 0, `step loss ${reply.loss}`);
  assert.ok(seen, 'charon status saw the device working');
  assert.equal(
    { state: seen!.state, step: seen!.step, phase: seen!.phase, role: seen!.role },
    { state: 'working', step: 1, phase: 'pipeline', role: 'stage 0 rank 0' },
  );
  assert.ok(gaps.length >= 4, `heartbeats during the work: ${gaps.length}`);
  const worst = Math.max(...gaps);
  process.stdout.write(`heartbeats during W1 work: ${gaps.length}, largest gap ${worst.toFixed(0)} ms\n`);
  assert.ok(worst < LOST_AFTER_MS, `largest heartbeat gap ${worst.toFixed(0)} ms >= ${LOST_AFTER_MS} ms\n${log}`);
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
});

test.run();
