/**
 * `charon bench backbone`: the backbone forward rate against the engine's own large-matmul rate
 * (target >= 60%), the native engine (onnxruntime-node) against tfjs on the same weights — plain
 * and prepacked matmul rates, one layer and the whole forward — and the fast linear backward
 * against tfjs' default matMul gradient, side by side in one process.
 */
import * as tf from '@tensorflow/tfjs';
import { fullRange, TransformerBackbone } from '../../src/model/backbone.ts';
import { initBackend, measureMatmulGflops, type BackendChoice } from '../../src/model/backend.ts';
import { requestedEngine } from '../../src/model/engine.ts';
import { measureForwardGflops } from '../../src/model/flops.ts';
import { linear } from '../../src/model/ops.ts';
import { isPresetName, presets, presetWeights } from '../../src/model/presets.ts';
import type { ModelConfig } from '../../src/model/types.ts';
import { NativeLayers, nativeFamilySupported } from '../../src/native/layers.ts';
import { loadNativeRuntime, measureNativeMatmulGflops, nativeThreads, nativeWeightBytes } from '../../src/native/runtime.ts';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';
import { engineFrom, engineOptionUsage, threadsFrom } from '../model-args.ts';

export const summary = 'backbone forward GFLOP/s vs the engine matmul GFLOP/s, native vs tfjs; fast vs default linear backward';

const usage = `usage: charon bench backbone [--preset w1] [--batch 8] [--seq 128] [--backend wasm|tensorflow|cpu] [--engine native|tfjs] [--threads N] [--json]
${engineOptionUsage}
  --threads N          intra-op threads of the native engine (default 1, or CHARON_NATIVE_THREADS)`;

interface EngineRates {
  matmulGflops: number;
  /** Native only: the matmul with its right operand a prepacked constant. */
  matmulInitializerGflops?: number;
  layerGflops: number;
  layerMs: number;
  forwardGflops: number;
  forwardSeconds: number;
  forwardVsMatmul: number;
}

/** A backbone of `config` on the preset's weights, its layers on the native engine or on tfjs. */
function backboneOn(config: ModelConfig, seed: number, native: boolean): TransformerBackbone {
  const range = fullRange(config);
  const weights = () => presetWeights(config, range, seed);
  return new TransformerBackbone(
    config,
    range,
    weights(),
    `bench:${seed}`,
    weights,
    native ? (w) => new NativeLayers(config, range, w) : undefined,
  );
}

function timeBest(reps: number, f: () => tf.Tensor[]): number {
  const once = () => {
    const outs = f();
    for (const t of outs) t.dataSync();
    tf.dispose(outs);
  };
  once();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    once();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

/** Backward of x (N,din) @ W (din,dout) + b: our explicit-transpose gradient vs tfjs' matMul gradient. */
function linearBackward(n: number, din: number, dout: number): { fastMs: number; defaultMs: number; speedup: number } {
  const x = tf.randomNormal([n, din], 0, 1, 'float32', 1) as tf.Tensor2D;
  const w = tf.randomNormal([din, dout], 0, 0.02, 'float32', 2) as tf.Tensor2D;
  const b = tf.zeros([dout]) as tf.Tensor1D;
  const fast = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) =>
    tf.sum(linear(xi as tf.Tensor2D, wi as tf.Tensor2D, bi as tf.Tensor1D)),
  );
  const slow = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) =>
    tf.sum(tf.add(tf.matMul(xi as tf.Tensor2D, wi as tf.Tensor2D), bi)),
  );
  const fastMs = timeBest(2, () => fast([x, w, b]));
  const defaultMs = timeBest(2, () => slow([x, w, b]));
  tf.dispose([x, w, b]);
  return { fastMs, defaultMs, speedup: defaultMs / fastMs };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      preset: { type: 'string', default: 'w1' },
      batch: { type: 'string' },
      seq: { type: 'string' },
      backend: { type: 'string' },
      engine: { type: 'string' },
      threads: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const preset = str(args, 'preset')!;
  if (!isPresetName(preset)) throw new CliError(`--preset: unknown preset '${preset}'`);
  const backendArg = str(args, 'backend');
  if (backendArg !== undefined && !['wasm', 'tensorflow', 'cpu'].includes(backendArg))
    throw new CliError(`--backend must be wasm, tensorflow or cpu, got '${backendArg}'`);
  // One thread unless told: rates comparable with the benches' other figures.
  threadsFrom(args, 1);
  engineFrom(args);
  const backend = await initBackend(backendArg as BackendChoice | undefined);
  const config: ModelConfig = { ...presets[preset] };
  const batch = num(args, 'batch', 8, { integer: true, min: 1 });
  const seq = num(args, 'seq', config.maxPositions, { integer: true, min: 1 });
  const nativeMissing = loadNativeRuntime();
  const withNative = backend.engine === 'native' || (requestedEngine() === undefined && !nativeMissing);
  const threads = nativeThreads();
  const engines: ('tfjs' | 'native')[] = ['tfjs'];
  if (withNative && nativeFamilySupported(config)) engines.push('native');
  const one = { ...config, nLayers: 1 };
  const rates: Partial<Record<'tfjs' | 'native', EngineRates>> = {};
  const weightBytesBefore = nativeWeightBytes();
  let nativeWeightMb = 0;
  // Interleaved rounds, best of each: other processes sharing the cores slow one phase or another.
  for (let round = 0; round < 2; round++) {
    for (const e of engines) {
      const native = e === 'native';
      const matmul = native ? measureNativeMatmulGflops(1024, 3, false, threads) : measureMatmulGflops();
      const matmulInit = native ? measureNativeMatmulGflops(1024, 3, true, threads) : undefined;
      const layerBb = backboneOn(one, 1, native);
      const layer = measureForwardGflops(layerBb, batch, seq, 3);
      layerBb.dispose();
      const bb = backboneOn(config, 1, native);
      if (native) nativeWeightMb = (nativeWeightBytes() - weightBytesBefore) / 2 ** 20;
      const forward = measureForwardGflops(bb, batch, seq, 2);
      bb.dispose();
      const prev = rates[e];
      const best = (a: number | undefined, b: number | undefined) => Math.max(a ?? 0, b ?? 0);
      rates[e] = {
        matmulGflops: best(prev?.matmulGflops, matmul),
        ...(native ? { matmulInitializerGflops: best(prev?.matmulInitializerGflops, matmulInit) } : {}),
        layerGflops: best(prev?.layerGflops, layer.gflops),
        layerMs: Math.min(prev?.layerMs ?? Infinity, layer.seconds * 1000),
        forwardGflops: best(prev?.forwardGflops, forward.gflops),
        forwardSeconds: Math.min(prev?.forwardSeconds ?? Infinity, forward.seconds),
        forwardVsMatmul: 0,
      };
    }
  }
  for (const r of Object.values(rates)) r.forwardVsMatmul = r.forwardGflops / Math.max(r.matmulGflops, r.matmulInitializerGflops ?? 0);
  const d = config.dModel;
  const backward = linearBackward(batch * seq, d, config.dFF);
  const t = rates.tfjs!,
    n = rates.native;
  const result = {
    bench: 'backbone',
    backend: backend.detail,
    engine: n ? 'native' : 'tfjs',
    preset,
    batch,
    seq,
    nativeThreads: threads,
    ...(nativeMissing ? { nativeUnavailable: nativeMissing } : {}),
    matmulGflops: n ? Math.max(n.matmulGflops, n.matmulInitializerGflops ?? 0) : t.matmulGflops,
    forwardGflops: (n ?? t).forwardGflops,
    forwardSeconds: (n ?? t).forwardSeconds,
    forwardVsMatmul: (n ?? t).forwardVsMatmul,
    engines: rates,
    ...(n
      ? {
          nativeVsTfjs: {
            matmul: n.matmulGflops / t.matmulGflops,
            matmulInitializer: (n.matmulInitializerGflops ?? 0) / t.matmulGflops,
            layer: t.layerMs / n.layerMs,
            forward: t.forwardSeconds / n.forwardSeconds,
          },
          nativeWeightMb,
        }
      : {}),
    linearBackward: { shape: [batch * seq, d, config.dFF], ...backward },
  };
  if (flag(args, 'json')) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    process.stdout.write(`backend ${result.backend}\n`);
    for (const [e, r] of Object.entries(rates))
      process.stdout.write(
        `${e.padEnd(6)} matmul ${r.matmulGflops.toFixed(1)} GFLOP/s${r.matmulInitializerGflops ? ` (prepacked weight ${r.matmulInitializerGflops.toFixed(1)})` : ''}; one layer (${batch}x${seq}) ${r.layerMs.toFixed(1)} ms = ${r.layerGflops.toFixed(1)} GFLOP/s; ${preset} forward ${(r.forwardSeconds * 1000).toFixed(0)} ms = ${r.forwardGflops.toFixed(1)} GFLOP/s = ${(100 * r.forwardVsMatmul).toFixed(0)}% of its matmul\n`,
      );
    if (result.nativeVsTfjs)
      process.stdout.write(
        `native / tfjs: matmul ${result.nativeVsTfjs.matmul.toFixed(2)}x (prepacked ${result.nativeVsTfjs.matmulInitializer.toFixed(2)}x), layer ${result.nativeVsTfjs.layer.toFixed(2)}x, forward ${result.nativeVsTfjs.forward.toFixed(2)}x faster; native weights ${result.nativeWeightMb?.toFixed(1)} MiB\n`,
      );
    process.stdout.write(
      `linear backward ${result.linearBackward.shape.join('x')}: fast ${backward.fastMs.toFixed(0)} ms vs tfjs default ${backward.defaultMs.toFixed(0)} ms (${backward.speedup.toFixed(1)}x)\n`,
    );
  }
  return 0;
}
