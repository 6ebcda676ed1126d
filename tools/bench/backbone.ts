/**
 * `charon bench backbone`: the backbone forward rate against the backend's own large-matmul
 * rate (target >= 60%), and the fast linear backward against tfjs' default matMul gradient,
 * side by side in one process.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, measureMatmulGflops, type BackendChoice } from '../../src/model/backend.ts';
import { measureForwardGflops } from '../../src/model/flops.ts';
import { loadBackbone } from '../../src/model/load.ts';
import { linear } from '../../src/model/ops.ts';
import { isPresetName } from '../../src/model/presets.ts';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';

export const summary = 'backbone forward GFLOP/s vs the backend matmul GFLOP/s; fast vs default linear backward';

const usage = `usage: charon bench backbone [--preset w1] [--batch 8] [--seq 128] [--backend wasm|tensorflow|cpu] [--json]`;

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
  const backend = await initBackend(backendArg as BackendChoice | undefined);
  const bb = await loadBackbone({ preset });
  const batch = num(args, 'batch', 8, { integer: true, min: 1 });
  const seq = num(args, 'seq', bb.config.maxPositions, { integer: true, min: 1 });
  // Interleaved rounds, best of each: other processes sharing the cores slow one phase or another.
  let matmulGflops = 0;
  let forward = { gflops: 0, seconds: Infinity, flops: 0 };
  for (let round = 0; round < 2; round++) {
    matmulGflops = Math.max(matmulGflops, measureMatmulGflops());
    const f = measureForwardGflops(bb, batch, seq, 2);
    if (f.gflops > forward.gflops) forward = f;
  }
  matmulGflops = Math.max(matmulGflops, measureMatmulGflops());
  const d = bb.config.dModel;
  const backward = linearBackward(batch * seq, d, bb.config.dFF);
  const result = {
    bench: 'backbone',
    backend: backend.detail,
    preset,
    batch,
    seq,
    matmulGflops,
    forwardGflops: forward.gflops,
    forwardSeconds: forward.seconds,
    forwardVsMatmul: forward.gflops / matmulGflops,
    linearBackward: { shape: [batch * seq, d, bb.config.dFF], ...backward },
  };
  bb.dispose();
  if (flag(args, 'json')) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    process.stdout.write(
      `backend ${result.backend}\nmatmul ${result.matmulGflops.toFixed(1)} GFLOP/s; ${preset} forward (${batch}x${seq}) ${forward.gflops.toFixed(1)} GFLOP/s = ${(100 * result.forwardVsMatmul).toFixed(0)}% of matmul (${(forward.seconds * 1000).toFixed(0)} ms)\n`,
    );
    process.stdout.write(
      `linear backward ${result.linearBackward.shape.join('x')}: fast ${backward.fastMs.toFixed(0)} ms vs tfjs default ${backward.defaultMs.toFixed(0)} ms (${backward.speedup.toFixed(1)}x)\n`,
    );
  }
  return 0;
}
