/**
 * Every method through the real `charon launch` (a private nats-server, two device processes):
 * lora and full over a two-stage pipeline (full-width gradient messages and, for tiny's tied
 * embedding and head, the cross-stage exchange over the bus), serial data-parallel, and PAC with
 * and without its cache over a pipeline, all with clipping that binds and warm-up on. The
 * checkpoint equals the standalone trainer's parameters within 1e-5; without a cache every epoch
 * is a pipeline epoch. Plan shapes that cannot fit are refused.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startLaunch } from './fixtures/launch.ts';
import { relDiff } from './fixtures/compare.ts';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone, loadConfig } from '../src/model/load.ts';
import { createMethod } from '../src/model/methods/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { Trainer } from '../src/train/trainer.ts';
import { loadRunData, specFromTopology, type RunSpec } from '../src/train/run-spec.ts';
import { loadTopology } from '../src/topology/load.ts';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-methods-launch-'));
await initBackend('wasm');

function topology(name: string, method: Record<string, unknown>, training: Record<string, unknown>, memoryMb = 2048): string {
  const file = join(tmp, `${name}.yaml`);
  writeFileSync(
    file,
    stringify({
      run: name,
      model: { preset: 'tiny' },
      method,
      data: { markov: { sequences: 16, seqLen: 16, seed: 1 } },
      training: { epochs: 2, batch: 4, microBatches: 2, lr: 0.01, maxGradNorm: 0.05, warmupSteps: 2, weightDecay: 0.01, ...training },
      devices: [
        { name: 'dev0', memoryMb },
        { name: 'dev1', memoryMb },
      ],
    }),
  );
  return file;
}

/** The standalone trainer on the spec's model, data, method and optimiser. */
async function standalone(spec: RunSpec): Promise<{ params: Map<string, Float32Array>; maxNorm: number }> {
  const backbone = await loadBackbone(spec.model);
  const method = createMethod(spec.method!, backbone, { ...spec.methodOptions, reduction: spec.reduction, sideInit: 'random' }, spec.seed);
  let maxNorm = 0;
  const t = new Trainer({
    backbone,
    method,
    data: loadRunData(spec),
    config: { epochs: spec.epochs, batch: spec.batch, seed: spec.seed, seqLen: spec.seqLen, task: 'lm', optimizer: spec.optimizer },
    onStep: (s) => {
      maxNorm = Math.max(maxNorm, s.gradNorm);
    },
  });
  t.run();
  const params = new Map([...t.parameters()].map(([n, v]) => [n, v.dataSync().slice() as Float32Array]));
  t.dispose();
  method.dispose();
  backbone.dispose();
  return { params, maxNorm };
}

const figures: string[] = [];

async function launchEquals(name: string, method: Record<string, unknown>, training: Record<string, unknown>, stages: number) {
  const file = topology(name, method, training);
  const runDir = join(tmp, name);
  const { code, stderr } = await startLaunch([file, '--run-dir', runDir]).done;
  assert.is(code, 0, `launch failed: ${stderr.slice(-3000)}`);
  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.is(summary.plan.stages.length, stages, `plan ${JSON.stringify(summary.plan.stages)}`);
  const spec = specFromTopology(loadTopology(file));
  const cached = spec.method === 'parallel' && spec.cache.use !== false;
  assert.equal(
    summary.epochs.map((e) => e.phase),
    cached ? ['pipeline', 'cached'] : ['pipeline', 'pipeline'],
  );
  const ref = await standalone(spec);
  assert.ok(ref.maxNorm > spec.optimizer.maxGradNorm!, `clipping binds (max norm ${ref.maxNorm})`);
  const got = new Map([...loadCheckpoint(join(runDir, 'checkpoints', 'latest')).state.parameters].map(([n, p]) => [n, p.data]));
  const config = loadConfig(spec.model);
  if (config.tiedHead && got.has('head.weight') && !ref.params.has('head.weight')) {
    const head = got.get('head.weight')!,
      emb = got.get('embed.tokens')!;
    const V = config.vocabSize,
      d = config.dModel;
    for (let v = 0; v < V; v++) for (let j = 0; j < d; j++) assert.is(head[j * V + v], emb[v * d + j], 'the tied copies agree');
    got.delete('head.weight');
  }
  const diff = relDiff(ref.params, got);
  figures.push(`${name}: max relative difference ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-5, `${name}: launched run differs from the standalone trainer by ${diff}`);
}

test('launch: lora over a two-stage pipeline = standalone trainer', async () => {
  await launchEquals('lora-pipe', { kind: 'lora', rank: 4 }, { plan: 'pipeline' }, 2);
});

test('launch: full over a two-stage pipeline (tied embedding and head on two devices) = standalone trainer', async () => {
  await launchEquals('full-pipe', { kind: 'full' }, { plan: 'pipeline', schedule: 'cosine' }, 2);
});

test('launch: serial data-parallel = standalone trainer', async () => {
  await launchEquals('serial-dp', { kind: 'serial', bottleneck: 8 }, { plan: 'data-parallel' }, 1);
});

test('launch: PAC over a pipeline, with and without its cache = standalone trainer', async () => {
  await launchEquals('pac-pipe', { kind: 'parallel', k: 8 }, { plan: 'pipeline' }, 2);
  await launchEquals('pac-nocache', { kind: 'parallel', k: 8 }, { plan: 'pipeline', cache: 'off' }, 2);
});

test('plan shapes that cannot fit are refused, by plan and by launch, naming the device', async () => {
  const file = topology('full-dp-small', { kind: 'full' }, { plan: 'data-parallel' }, 1);
  const why = /data-parallel: .*dev[01] needs .* for all 2 layers but has 1(\.0+)? MiB/;
  const plan = spawnSync(process.execPath, [join(root, 'tools/charon.js'), 'plan', file], { cwd: root, encoding: 'utf8' });
  assert.is.not(plan.status, 0);
  assert.match(plan.stderr, why);
  const launched = await startLaunch([file, '--run-dir', join(tmp, 'full-dp-small')]).done;
  assert.is.not(launched.code, 0);
  assert.match(launched.stderr, why);
});

test('a cache setting for a method without one is refused with file and line', () => {
  const file = join(tmp, 'lora-cache.yaml');
  writeFileSync(
    file,
    'run: x\nmodel: { preset: tiny }\nmethod: { kind: lora }\ndata: { markov: { sequences: 4 } }\ntraining:\n  cache: { budgetMb: 8 }\ndevices:\n  - { name: a, memoryMb: 64 }\n',
  );
  assert.throws(() => loadTopology(file), /lora-cache\.yaml:6: training\.cache: method lora has no activation cache/);
});

test.after(() => {
  for (const f of figures) process.stderr.write(`${f}\n`);
  rmSync(tmp, { recursive: true, force: true });
});

test.run();
