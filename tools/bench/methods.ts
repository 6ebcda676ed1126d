/**
 * `charon bench methods`: the W1 workload with each method in a fresh child process (so each
 * peak is its own), side by side with the backend's own matmul rate measured in the same run.
 * Reduced runs (--epochs, --sequences, --methods) keep the workload's shapes and settings.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { CliError, flag, num, parseCommandArgs, requireStr, str } from '../args.ts';
import { initBackend, measureMatmulGflops } from '../../src/model/backend.ts';
import { parseEngine, setEngine, type EngineChoice } from '../../src/model/engine.ts';
import { measureNativeMatmulGflops } from '../../src/native/runtime.ts';
import { loadBackbone } from '../../src/model/load.ts';
import { isPresetName, presets, type PresetName } from '../../src/model/presets.ts';
import { createMethod, withoutTape, type MethodName, type MethodOptions } from '../../src/model/methods/index.ts';
import { backboneHidden } from '../../src/model/methods/method.ts';
import type { Backbone } from '../../src/model/types.ts';
import { loadJsonl, markovDataset, writeJsonl } from '../../src/train/data.ts';
import { Trainer } from '../../src/train/trainer.ts';
import { ActivationCache } from '../../src/cache/activation-cache.ts';
import { epochFlops, layerForwardFlops } from '../../src/model/flops.ts';
import { ParallelMethod } from '../../src/model/methods/parallel.ts';
import { mean, phaseFigures, type PhaseFigures } from './phases.ts';

export const summary = 'W1 workload per method (full, lora, serial, parallel, parallel+cache): time, peak memory, loss';

const allMethods = ['full', 'lora', 'serial', 'parallel', 'parallel+cache', 'parallel+cache-f16'] as const;
type BenchMethod = (typeof allMethods)[number];
const defaultMethods: BenchMethod[] = ['full', 'lora', 'serial', 'parallel', 'parallel+cache'];

const usage = `usage: charon bench methods [--preset w1] [--epochs 3] [--sequences 256] [--methods a,b] [--engines native,tfjs] [--json]

  --preset NAME        model preset (default w1: GPT-2, 8 layers, d 512, 8 heads, vocab 8192, ctx 128)
  --epochs N           (default 3)
  --sequences N        Markov sequences of context length (default 256); batch 8
  --methods LIST       of ${allMethods.join(', ')} (default: all but parallel+cache-f16)
  --cache-memory-mb N  memory tier of the activation cache; the rest spills to disk (default 16)
  --engines LIST       engines of the frozen forward to run each method on, back to back
                       (native, tfjs; default: this process's engine). \`methods\` and \`ratios\`
                       are the first engine's; \`byEngine\` and \`nativeVsTfjs\` compare them
  --json               one JSON document on stdout`;

interface MethodResult {
  name: BenchMethod;
  /** The engine of the frozen forward (the backbone's own description) and its matmul rate. */
  engine: string;
  engineMatmulGflops: number;
  backboneForwardOverEngineMatmul: number;
  epochSeconds: number[];
  totalSeconds: number;
  peakBytes: { epoch1: number; cached: number };
  rssBytes: number;
  trainableParams: number;
  firstLoss: number;
  lastEpochLoss: number;
  epochLosses: number[];
  backboneForwardGflops: number;
  /** Per phase that ran: its engines, one epoch's seconds and matmul FLOPs, the rate over engineMatmulGflops. */
  phases: PhaseFigures[];
  cache?: unknown;
}

function settings(name: BenchMethod): { method: MethodName; options: MethodOptions; lr: number; cache?: 'f32' | 'f16' } {
  switch (name) {
    case 'full':
      return { method: 'full', options: {}, lr: 1e-4 };
    case 'lora':
      return { method: 'lora', options: { rank: 8, alpha: 16, targets: ['query', 'value'] }, lr: 1e-3 };
    case 'serial':
      return { method: 'serial', options: { bottleneck: 64 }, lr: 1e-3 };
    case 'parallel':
      return { method: 'parallel', options: { reduction: 8 }, lr: 1e-3 };
    case 'parallel+cache':
      return { method: 'parallel', options: { reduction: 8 }, lr: 1e-3, cache: 'f32' };
    case 'parallel+cache-f16':
      return { method: 'parallel', options: { reduction: 8 }, lr: 1e-3, cache: 'f16' };
  }
}

/**
 * Which engine did each part's heavy work in this child: layers with hooks or a tape (LoRA,
 * serial, full) run on tfjs whatever the process's engine; PAC's side network says its own.
 */
function phaseEngine(name: BenchMethod, backbone: Backbone, frozenEngine: string, method: unknown, cached: boolean): string {
  const native = (yes: boolean) => (yes ? 'native' : 'tfjs');
  const head = `head ${native(Boolean(backbone.frozenHead()?.native))}`;
  if (method instanceof ParallelMethod) {
    // `up`, one (r, d) matmul, stays on tfjs beside a native side network.
    const side = `side ${method.side.engine}${method.side.engine === 'native' ? ' (up tfjs)' : ''}`;
    return cached ? `${side}, ${head}` : `backbone ${native(frozenEngine.startsWith('native'))}, ${side}, ${head}`;
  }
  if (name === 'full') return 'backbone tfjs, head tfjs (both trained)';
  return `backbone tfjs, adapters tfjs, ${head}`;
}

/** GFLOP/s of the frozen backbone's forward pass (embedding + L layers + final norm) on one batch. */
function backboneForwardGflops(backbone: Backbone, ids: Int32Array, batch: number, seqLen: number): number {
  const flops = backbone.config.nLayers * layerForwardFlops(backbone.config, batch, seqLen);
  const once = () => {
    const t0 = performance.now();
    withoutTape(() =>
      tf.tidy(() => {
        backboneHidden(backbone, tf.tensor2d(ids, [batch, seqLen], 'int32')).dataSync();
      }),
    );
    return (performance.now() - t0) / 1000;
  };
  once();
  return flops / Math.min(once(), once()) / 1e9;
}

async function child(
  name: BenchMethod,
  preset: PresetName,
  dataFile: string,
  epochs: number,
  cacheMemoryMb: number,
): Promise<MethodResult> {
  const info = await initBackend();
  const s = settings(name);
  const backbone = await loadBackbone({ preset });
  const engine = backbone.engine; // read now: the cached epochs release the layers
  // The engine's own rate, timed before and after the run and the faster kept: a single short
  // timing on a shared machine can catch a neighbour's burst and halve it, flattering every ratio.
  const engineMatmul = () => (info.engine === 'native' ? measureNativeMatmulGflops(1024, 8, true) : measureMatmulGflops());
  let engineMatmulGflops = engineMatmul();
  const data = loadJsonl(dataFile, { vocabSize: backbone.config.vocabSize });
  const seqLen = backbone.config.maxPositions,
    batch = 8;
  const gflops = backboneForwardGflops(
    backbone,
    Int32Array.from(data.samples.slice(0, batch).flatMap((x) => Array.from(x.ids))),
    batch,
    seqLen,
  );
  const method = createMethod(s.method, backbone, s.options, 0);
  const cacheDir = s.cache ? mkdtempSync(join(tmpdir(), 'charon-bench-cache-')) : undefined;
  const cache = cacheDir
    ? new ActivationCache({ memoryBytes: Math.floor(cacheMemoryMb * 2 ** 20), dir: cacheDir, dtype: s.cache })
    : undefined;
  const trainer = new Trainer({
    backbone,
    method,
    data,
    cache,
    config: { epochs, batch, seed: 0, seqLen, task: 'lm', optimizer: { lr: s.lr, maxGradNorm: 1 } },
    onEpoch: (m) => process.stderr.write(`${name}: epoch ${m.epoch + 1} loss ${m.loss.toFixed(4)} ${m.seconds.toFixed(1)} s\n`),
  });
  const e = trainer.run();
  engineMatmulGflops = Math.max(engineMatmulGflops, engineMatmul());
  const later = e.slice(1);
  const samples = data.samples.length;
  const phase = (p: PhaseFigures['phase'], seconds: number) =>
    phaseFigures(
      p,
      phaseEngine(name, backbone, engine, method, p === 'cached'),
      seconds,
      epochFlops(backbone.config, s.method, s.options, { samples, seqLen, cached: p === 'cached' }).total,
      engineMatmulGflops,
    );
  const phases = cache
    ? [phase('epoch1', e[0]!.seconds), ...(later.length ? [phase('cached', mean(later.map((x) => x.seconds)))] : [])]
    : [phase('epoch', mean(e.map((x) => x.seconds)))];
  const result: MethodResult = {
    name,
    engine,
    engineMatmulGflops,
    backboneForwardOverEngineMatmul: gflops / engineMatmulGflops,
    epochSeconds: e.map((x) => x.seconds),
    totalSeconds: e.reduce((a, x) => a + x.seconds, 0),
    peakBytes: { epoch1: e[0]!.peakBytes, cached: later.length ? Math.max(...later.map((x) => x.peakBytes)) : 0 },
    rssBytes: trainer.peakRssBytes,
    trainableParams: [...trainer.parameters().values()].reduce((a, v) => a + v.size, 0),
    firstLoss: trainer.losses()[0]!,
    lastEpochLoss: e[e.length - 1]!.loss,
    epochLosses: e.map((x) => x.loss),
    backboneForwardGflops: gflops,
    phases,
    cache: cache?.stats(),
  };
  if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  return result;
}

function runChild(args: string[]): Promise<MethodResult> {
  const cli = fileURLToPath(new URL('../charon.js', import.meta.url));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cli, 'bench', 'methods', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.on('close', (code) => {
      if (code !== 0) reject(new Error(`bench child ${args.join(' ')} exited with ${code}`));
      else resolve(JSON.parse(out) as MethodResult);
    });
  });
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      preset: { type: 'string' },
      epochs: { type: 'string' },
      sequences: { type: 'string' },
      methods: { type: 'string' },
      'cache-memory-mb': { type: 'string' },
      json: { type: 'boolean' },
      child: { type: 'string' },
      data: { type: 'string' },
      engine: { type: 'string' },
      engines: { type: 'string' },
    },
    usage,
  );
  if (!args) return 0;
  const preset = str(args, 'preset') ?? 'w1';
  if (!isPresetName(preset)) throw new CliError(`unknown preset '${preset}' (known: ${Object.keys(presets).join(', ')})`);
  const epochs = num(args, 'epochs', 3, { integer: true, min: 1 });
  const cacheMemoryMb = num(args, 'cache-memory-mb', 16, { min: 0 });
  const childName = str(args, 'child');
  const engineArg = str(args, 'engine');
  try {
    if (engineArg !== undefined) setEngine(parseEngine(engineArg, '--engine'));
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  if (childName) {
    if (!(allMethods as readonly string[]).includes(childName)) throw new CliError(`unknown bench method '${childName}'`);
    process.stdout.write(
      JSON.stringify(await child(childName as BenchMethod, preset, requireStr(args, 'data'), epochs, cacheMemoryMb)) + '\n',
    );
    return 0;
  }
  const methods = (str(args, 'methods')?.split(',') ?? defaultMethods) as BenchMethod[];
  for (const m of methods)
    if (!(allMethods as readonly string[]).includes(m))
      throw new CliError(`--methods: unknown method '${m}' (known: ${allMethods.join(', ')})`);
  const sequences = num(args, 'sequences', 256, { integer: true, min: 1 });
  const backend = await initBackend();
  let engines: EngineChoice[];
  try {
    engines = (str(args, 'engines')?.split(',') ?? [backend.engine]).map((e) => parseEngine(e, '--engines'));
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const matmulGflops = measureMatmulGflops();
  const c = presets[preset];
  const dir = mkdtempSync(join(tmpdir(), 'charon-bench-'));
  const dataFile = join(dir, 'markov.jsonl');
  writeJsonl(dataFile, markovDataset({ vocab: c.vocabSize, sequences, length: c.maxPositions, seed: 0 }));
  const byEngine = new Map<EngineChoice, MethodResult[]>(engines.map((e) => [e, []]));
  try {
    // Each method on every engine back to back, so a change in the machine's load hits both.
    for (const m of methods)
      for (const e of engines)
        byEngine
          .get(e)!
          .push(
            await runChild([
              '--engine',
              e,
              '--child',
              m,
              '--preset',
              preset,
              '--data',
              dataFile,
              '--epochs',
              String(epochs),
              '--cache-memory-mb',
              String(cacheMemoryMb),
            ]),
          );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const results = byEngine.get(engines[0]!)!;
  const by = (n: BenchMethod) => results.find((r) => r.name === n);
  const native = byEngine.get('native'),
    tfjs = byEngine.get('tfjs');
  const cachedMean = (r: MethodResult) =>
    r.epochSeconds.length > 1 ? r.epochSeconds.slice(1).reduce((a, b) => a + b, 0) / (r.epochSeconds.length - 1) : undefined;
  const nativeVsTfjs =
    native && tfjs
      ? Object.fromEntries(
          native.map((n, i) => {
            const t = tfjs[i]!,
              nc = cachedMean(n),
              tc = cachedMean(t);
            return [
              n.name,
              {
                epoch1Speedup: t.epochSeconds[0]! / n.epochSeconds[0]!,
                laterEpochSpeedup: nc && tc ? tc / nc : undefined,
                totalSpeedup: t.totalSeconds / n.totalSeconds,
                nativeCachedOverEpoch1: nc ? nc / n.epochSeconds[0]! : undefined,
                tfjsCachedOverEpoch1: tc ? tc / t.epochSeconds[0]! : undefined,
              },
            ];
          }),
        )
      : undefined;
  const pc = by('parallel+cache'),
    f16 = by('parallel+cache-f16');
  const ratio = (a?: number, b?: number) => (a !== undefined && b ? a / b : undefined);
  const cachedEpochs =
    pc && pc.epochSeconds.length > 1 ? pc.epochSeconds.slice(1).reduce((a, b) => a + b, 0) / (pc.epochSeconds.length - 1) : undefined;
  const report = {
    workload: {
      preset,
      model: c,
      sequences,
      seqLen: c.maxPositions,
      batch: 8,
      epochs,
      data: 'markov seed 0 (4 successors per token)',
      lr: { full: 1e-4, others: 1e-3 },
      lora: 'r8 a16 q,v',
      serial: 'bottleneck 64',
      parallel: 'side width d/8',
      cacheMemoryMb,
    },
    backend: backend.detail,
    matmulGflops,
    engines,
    methods: results,
    byEngine: Object.fromEntries(byEngine),
    nativeVsTfjs,
    ratios: {
      cachedEpochOverEpoch1: ratio(cachedEpochs, pc?.epochSeconds[0]),
      parallelCacheTotalOverLora: ratio(pc?.totalSeconds, by('lora')?.totalSeconds),
      parallelCacheTotalOverSerial: ratio(pc?.totalSeconds, by('serial')?.totalSeconds),
      cachedPeakOverFullPeak: ratio(
        pc?.peakBytes.cached,
        by('full') ? Math.max(by('full')!.peakBytes.epoch1, by('full')!.peakBytes.cached) : undefined,
      ),
      // Against the engine that ran the forward (with the native engine, the wasm rate above is not its own).
      backboneForwardOverMatmul: (by('parallel') ?? results[0])?.backboneForwardOverEngineMatmul,
      f16MinusF32LastEpochLoss: pc && f16 ? f16.lastEpochLoss - pc.lastEpochLoss : undefined,
    },
  };
  if (flag(args, 'json')) process.stdout.write(JSON.stringify(report) + '\n');
  else process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  return 0;
}
