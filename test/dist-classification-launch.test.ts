/**
 * Labelled data through the real `charon launch` (a private nats-server, two device processes):
 * PAC over a two-stage pipeline in epoch 1 (the head on the last stage) and from the activation
 * cache on both devices after, with clipping that binds. Its checkpoint holds the same head and
 * side weights as `charon train` on the same data and seed, names the classes, and `charon eval`
 * reports the same accuracy for both; summary.json says the task and each epoch's accuracy.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLaunch } from './fixtures/launch.ts';
import { relDiff } from './fixtures/compare.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { writeClassifyTopology, writeLabelledData } from './fixtures/classification.ts';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-classify-launch-'));
const charon = (args: string[]) => spawnSync(process.execPath, [join(root, 'tools/charon.js'), ...args], { cwd: root, encoding: 'utf8' });

// Mail-like data: sequences of different lengths (the head pools over real tokens only), two classes by name.
const dataFile = join(tmp, 'mail.jsonl');
writeLabelledData(dataFile, { sequences: 16, seed: 2, length: (i) => 6 + (i % 5) * 2, label: (t) => (t % 2 ? 'spam' : 'ham') });
const training = { epochs: 2, batch: 4, microBatches: 2, lr: 0.02, maxGradNorm: 0.05, warmupSteps: 2, weightDecay: 0.01, seed: 7 };

const params = (dir: string) => new Map([...loadCheckpoint(dir).state.parameters].map(([n, p]) => [n, p.data]));

function evalJson(adapter: string): { loss: number; accuracy: number; samples: number } {
  const r = charon(['eval', '--preset', 'tiny', '--adapter', adapter, '--data', dataFile, '--json']);
  assert.is(r.status, 0, r.stderr.slice(-2000));
  return JSON.parse(r.stdout);
}

test('launch: PAC classification (pipeline, then cached on both devices) = charon train; eval reports its accuracy', async () => {
  const file = join(tmp, 'classify.yaml');
  writeClassifyTopology(file, {
    run: 'classify',
    dataFile,
    training: { ...training, plan: 'pipeline', schedule: 'constant' },
    devices: ['dev0', 'dev1'],
  });
  const runDir = join(tmp, 'run');
  const launched = startLaunch([file, '--run-dir', runDir]).done;
  const refDir = join(tmp, 'train');
  // charon train meanwhile: same data, seed and optimiser, the side network started at random as distributed runs do.
  const train = charon([
    'train',
    '--preset',
    'tiny',
    '--method',
    'parallel',
    '--side-init',
    'random',
    '--side-k',
    '8',
    '--data',
    dataFile,
    '--epochs',
    String(training.epochs),
    '--batch',
    String(training.batch),
    '--lr',
    String(training.lr),
    '--seed',
    String(training.seed),
    '--max-grad-norm',
    String(training.maxGradNorm),
    '--warmup',
    String(training.warmupSteps),
    '--weight-decay',
    String(training.weightDecay),
    '--cache-dir',
    join(tmp, 'train-cache'),
    '--out',
    refDir,
    '--json',
  ]);
  assert.is(train.status, 0, train.stderr.slice(-2000));
  const { code, stderr } = await launched;
  assert.is(code, 0, `launch failed: ${stderr.slice(-3000)}`);

  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  assert.is(summary.plan.stages.length, 2, JSON.stringify(summary.plan.stages));
  assert.is(summary.task, 'classification');
  assert.equal(
    summary.epochs.map((e) => e.phase),
    ['pipeline', 'cached'],
  );
  for (const e of summary.epochs) assert.ok(typeof e.accuracy === 'number' && e.accuracy >= 0 && e.accuracy <= 1, JSON.stringify(e));
  assert.is(summary.finalAccuracy, summary.epochs.at(-1)!.accuracy);

  const ckpt = join(runDir, 'checkpoints', 'latest');
  const meta = loadCheckpoint(ckpt).meta;
  assert.equal(meta.labelNames, ['ham', 'spam']);
  assert.is(meta.config.task, 'classification');
  const got = params(ckpt),
    ref = params(refDir);
  assert.ok(got.has('head.classifier.weight') && got.has('head.classifier.bias'), [...got.keys()].join(' '));
  const trained = JSON.parse(train.stdout) as { epochs?: unknown };
  assert.ok(trained, 'charon train printed its result');
  const diff = relDiff(ref, got);
  process.stderr.write(`classification launch vs charon train: max relative difference ${diff.toExponential(2)}\n`);
  assert.ok(diff <= 1e-5, `launched run differs from charon train by ${diff}`);
  // The head alone, so a small head cannot hide behind the side network's norm.
  const head = (m: Map<string, Float32Array>) => new Map([...m].filter(([n]) => n.startsWith('head.')));
  assert.ok(relDiff(head(ref), head(got)) <= 1e-5, 'head weights');

  const a = evalJson(ckpt),
    b = evalJson(refDir);
  assert.is(a.samples, 16);
  assert.is(a.accuracy, b.accuracy, 'same accuracy');
  assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(b.loss), `eval loss ${a.loss} vs ${b.loss}`);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));

test.run();
