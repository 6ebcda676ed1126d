/**
 * The native engine: onnxruntime-node (its CPU binaries ship inside the npm package) running
 * frozen forward graphs synchronously. The package's public InferenceSession.run is async (a
 * Promise around a synchronous call), but the backbone API is synchronous, so Charon calls the
 * package's own synchronous binding, which that Promise wraps. That binding is an internal of
 * onnxruntime-node: the version is pinned exactly, and `loadNativeRuntime` checks the entry
 * points it uses, naming any that is missing.
 */
import { createRequire } from 'node:module';
import { isMainThread, workerData } from 'node:worker_threads';
import { encodeModel } from './onnx.ts';

/** onnxruntime-node pinned in package.json; the binding below is an internal of this version. */
export const ORT_PINNED = '1.30.0';

interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
  readonly type: string;
}

interface BindingSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: object): void;
  run(feeds: Record<string, OrtTensor>, fetches: Record<string, null>, options: object): Record<string, OrtTensor>;
  dispose(): void;
}

interface Runtime {
  Session: new () => BindingSession;
  Tensor: new (type: 'float32' | 'int64', data: Float32Array | BigInt64Array, dims: readonly number[]) => OrtTensor;
  version: string;
}

/**
 * onnxruntime's Linux and macOS builds carry Microsoft's 1DS telemetry, on by default: it would
 * upload usage events and write a device id and log files into the temp directory. Charon's
 * promise is that nothing leaves the person's devices, so it is switched off for this process and
 * every process and thread it starts. The variable is read from the process environment when the
 * runtime initialises, so it must be set in the main thread before any worker loads onnxruntime
 * (a worker's `process.env` is its own copy).
 */
export function disableNativeTelemetry(): void {
  process.env.ORT_DISABLE_TELEMETRY = '1';
}

let runtime: Runtime | undefined;
let failure: string | undefined;

/**
 * Loads onnxruntime-node once; returns why it is unusable, or undefined when it loaded.
 * Unusable: not installed, no binary for this platform, or a version whose internals moved.
 */
export function loadNativeRuntime(): string | undefined {
  if (runtime) return undefined;
  if (failure) return failure;
  const require = createRequire(import.meta.url);
  disableNativeTelemetry();
  try {
    const version = (require('onnxruntime-node/package.json') as { version: string }).version;
    const bindingModule = require('onnxruntime-node/dist/binding.js') as {
      binding?: { InferenceSession?: unknown };
      initOrt?: () => void;
    };
    const common = require('onnxruntime-common') as { Tensor?: unknown };
    const missing = [
      typeof bindingModule.initOrt !== 'function' && 'dist/binding.js initOrt',
      typeof bindingModule.binding?.InferenceSession !== 'function' && 'binding.InferenceSession',
      typeof common.Tensor !== 'function' && 'onnxruntime-common Tensor',
    ].filter(Boolean);
    if (missing.length > 0)
      throw new Error(`onnxruntime-node ${version} lacks ${missing.join(', ')} (Charon is built against ${ORT_PINNED})`);
    bindingModule.initOrt!();
    runtime = {
      Session: bindingModule.binding!.InferenceSession as Runtime['Session'],
      Tensor: common.Tensor as Runtime['Tensor'],
      version,
    };
    return undefined;
  } catch (e) {
    failure = `onnxruntime-node failed to load (${(e as Error).message.split('\n')[0]})`;
    return failure;
  }
}

export function nativeRuntimeVersion(): string | undefined {
  return runtime?.version;
}

/**
 * Intra-op threads per session: CHARON_NATIVE_THREADS, default 1. The commands set it from their
 * `--threads` (tools/model-args.ts threadsFrom) before any session or compute thread starts;
 * `charon launch` gives each local device its own (actors/coordinator/device-args.ts).
 */
export function nativeThreads(): number {
  const raw = process.env.CHARON_NATIVE_THREADS;
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`CHARON_NATIVE_THREADS: expected a positive integer, got '${raw}'`);
  return n;
}

/**
 * In a compute thread (src/runtime/compute-worker.ts), flags shared with the thread that started
 * it: [0] a session is running, [1] the thread is about to be terminated. A thread terminated
 * inside an onnxruntime run takes the whole process down (the addon throws into the torn-down
 * environment and the process aborts), so `ComputeWorker.terminate` waits for the run in progress,
 * and none starts once it has asked. Each side stores its own flag before reading the other's:
 * one of the two always sees the other.
 */
const runFlags: Int32Array | null =
  !isMainThread && (workerData as { nativeRunFlags?: unknown } | null)?.nativeRunFlags instanceof Int32Array
    ? (workerData as { nativeRunFlags: Int32Array }).nativeRunFlags
    : null;

/** Bytes of weights held by live native sessions in this process (counted in memory figures). */
let heldBytes = 0;

export function nativeWeightBytes(): number {
  return heldBytes;
}

/** A graph loaded into onnxruntime; `run` is synchronous and returns f32 outputs by name. */
export class NativeSession {
  private session: BindingSession | undefined;

  /**
   * `weightBytes`: the initializer bytes of `model`, counted while the session lives.
   * `prepack: false` keeps each weight once, as given, instead of a repacked copy per product
   * that reads it (a weight used as B of two products in two orientations is held twice).
   */
  constructor(
    model: Uint8Array,
    private readonly weightBytes: number,
    threads = nativeThreads(),
    o: { prepack?: boolean } = {},
  ) {
    const why = loadNativeRuntime();
    if (why) throw new Error(`native engine: ${why}`);
    const s = new runtime!.Session();
    s.loadModel(model.buffer as ArrayBuffer, model.byteOffset, model.byteLength, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      // A process holds a session per frozen layer, the head and each side span, each with a pool
      // of its own; idle pools that spin take the cores from the one session that is running.
      extra: {
        session: {
          ...(threads > 1 ? { 'intra_op.allow_spinning': '0' } : {}),
          ...(o.prepack === false ? { disable_prepacking: '1' } : {}),
        },
      },
    });
    this.session = s;
    heldBytes += weightBytes;
  }

  run(feeds: Record<string, { data: Float32Array | BigInt64Array; dims: number[] }>, outputs: string[]): Record<string, Float32Array> {
    if (!this.session) throw new Error('native engine: session used after dispose');
    const tensors: Record<string, OrtTensor> = {};
    for (const [name, f] of Object.entries(feeds))
      tensors[name] = new runtime!.Tensor(f.data instanceof Float32Array ? 'float32' : 'int64', f.data, f.dims);
    const fetches: Record<string, null> = {};
    for (const o of outputs) fetches[o] = null;
    if (runFlags) {
      Atomics.store(runFlags, 0, 1);
      if (Atomics.load(runFlags, 1) === 1) {
        Atomics.store(runFlags, 0, 0);
        throw new Error('native engine: the compute thread is stopping');
      }
    }
    let res: Record<string, OrtTensor>;
    try {
      res = this.session.run(tensors, fetches, {});
    } finally {
      if (runFlags) Atomics.store(runFlags, 0, 0);
    }
    const out: Record<string, Float32Array> = {};
    for (const o of outputs) out[o] = res[o]!.data as Float32Array;
    return out;
  }

  dispose(): void {
    if (!this.session) return;
    this.session.dispose();
    this.session = undefined;
    heldBytes -= this.weightBytes;
  }
}

/**
 * The native engine's large plain f32 matmul rate, GFLOP/s: (n x n) @ (n x n), best of `reps`
 * after a warm-up, with both operands fed per run, or (`weightAsInitializer`) with the right one
 * a constant of the graph, prepacked once as the backbone's weights are.
 */
export function measureNativeMatmulGflops(n = 1024, reps = 3, weightAsInitializer = false, threads = nativeThreads()): number {
  const rand = (seed: number) => {
    const a = new Float32Array(n * n);
    let s = seed;
    for (let i = 0; i < a.length; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      a[i] = s / 2 ** 32 - 0.5;
    }
    return a;
  };
  const a = rand(1),
    b = rand(2);
  const model = encodeModel({
    name: 'matmul',
    nodes: [{ op: 'MatMul', inputs: ['a', 'b'], outputs: ['c'] }],
    initializers: weightAsInitializer ? [{ name: 'b', dims: [n, n], data: b }] : [],
    inputs: [
      { name: 'a', type: 'float', dims: [n, n] },
      ...(weightAsInitializer ? [] : [{ name: 'b', type: 'float' as const, dims: [n, n] }]),
    ],
    outputs: [{ name: 'c', type: 'float', dims: [n, n] }],
    opset: 18,
  });
  const s = new NativeSession(model, 0, threads);
  try {
    const feeds: Record<string, { data: Float32Array; dims: number[] }> = { a: { data: a, dims: [n, n] } };
    if (!weightAsInitializer) feeds.b = { data: b, dims: [n, n] };
    s.run(feeds, ['c']);
    let best = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      s.run(feeds, ['c']);
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return (2 * n * n * n) / best / 1e9;
  } finally {
    s.dispose();
  }
}
