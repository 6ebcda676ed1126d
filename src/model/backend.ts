/**
 * Picks the compute backend of this process, once: `tensorflow` (the optional native packages
 * @tensorflow/tfjs-node-gpu, then @tensorflow/tfjs-node), `wasm` (the default where no native
 * package is installed) and `cpu` (pure JS, far slower, last resort).
 *
 * On wasm this module also registers kernels: `UnsortedSegmentSum` (missing there; the gradient
 * of `gather`, so full fine-tuning of embeddings works), in-place `Slice`/`Unpack` (the stock
 * ones copy the whole input per call, which dominated per-head attention), a sharing
 * `Identity` (the stock one copies every tensor saved for backward) and a `GatherV2` copying
 * whole slices (the stock one moves element by element).
 *
 * Whichever backend is chosen, the tfjs internals Charon relies on are checked once it is ready
 * (./tfjs-internals.ts): a tfjs that lacks one fails here, naming it, not later and silently.
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { countWasmBuffers } from './memory.ts';
import { BackendError } from './errors.ts';
import { engineDetail, resolveEngine, type EngineChoice } from './engine.ts';
import { checkTfjsInternals, inspectTfjsInternals, TfjsInternalsError, TFJS_PINNED, wasmInternals } from './tfjs-internals.ts';

export type BackendChoice = 'tensorflow' | 'wasm' | 'cpu';

/** The backend chosen for this process: `name` as tfjs reports it, `detail` for humans and results. */
export interface BackendInfo {
  name: string;
  detail: string;
  /** The engine of frozen forwards (./engine.ts); `detail` names it too. */
  engine: EngineChoice;
}

/** Raised when a backend was asked for explicitly and cannot be used. Names the missing package. */
export { BackendError } from './errors.ts';

const nativePackages = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

let chosen: BackendInfo | undefined;

/**
 * Imports a native package; returns why it is unusable, or undefined when it loaded. Resolving
 * first tells a package that is not installed from one whose own files are missing (an install
 * that skipped the download of libtensorflow fails its import with MODULE_NOT_FOUND too).
 */
async function tryNative(pkg: string): Promise<string | undefined> {
  try {
    createRequire(import.meta.url).resolve(pkg);
  } catch {
    return `${pkg} is not installed`;
  }
  try {
    // A variable specifier keeps TypeScript from requiring the optional peer at type-check time.
    const specifier: string = pkg;
    await import(specifier);
    return undefined;
  } catch (e) {
    return `${pkg} failed to load (${(e as Error).message.split('\n')[0]})`;
  }
}

async function useWasm(): Promise<Omit<BackendInfo, 'engine'>> {
  registerWasmKernels();
  if (!(await tf.setBackend('wasm'))) throw new BackendError('backend wasm: @tensorflow/tfjs-backend-wasm failed to initialise');
  await tf.ready();
  checkTfjsInternals(inspectTfjsInternals(tf.backend()));
  countWasmBuffers(tf.backend());
  const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'simd' : 'no simd';
  const threads = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT') ? 'multithreaded' : 'single-threaded';
  return { name: 'wasm', detail: `wasm (@tensorflow/tfjs-backend-wasm ${tf.version_core}, ${simd}, ${threads})` };
}

async function useCpu(detail: string): Promise<Omit<BackendInfo, 'engine'>> {
  await tf.setBackend('cpu');
  await tf.ready();
  checkTfjsInternals(inspectTfjsInternals());
  return { name: 'cpu', detail };
}

async function useTensorflow(pkg: string): Promise<Omit<BackendInfo, 'engine'>> {
  if (!(await tf.setBackend('tensorflow'))) throw new BackendError(`backend tensorflow: ${pkg} is installed but failed to initialise`);
  await tf.ready();
  checkTfjsInternals(inspectTfjsInternals());
  return { name: 'tensorflow', detail: `tensorflow (${pkg})` };
}

/**
 * Chooses and initialises the backend for this process; later calls return the first choice.
 * Without `preferred`: tensorflow if a native package is installed, else wasm, else cpu.
 * With `preferred`: that backend or a BackendError naming what is missing. The engine of frozen
 * forwards is resolved here too (./engine.ts) and named in `detail`.
 */
export async function initBackend(preferred?: BackendChoice): Promise<BackendInfo> {
  if (chosen) {
    if (preferred && preferred !== chosen.name) throw new BackendError(`backend ${preferred}: this process already runs on ${chosen.name}`);
    return chosen;
  }
  const info = await chooseBackend(preferred);
  chosen = { ...info, engine: resolveEngine(info.name).engine, detail: `${info.detail}; ${engineDetail(info.name)}` };
  return chosen;
}

async function chooseBackend(preferred?: BackendChoice): Promise<Omit<BackendInfo, 'engine'>> {
  if (preferred === 'tensorflow') {
    const reasons: string[] = [];
    for (const pkg of nativePackages) {
      const why = await tryNative(pkg);
      if (why === undefined) return await useTensorflow(pkg);
      reasons.push(why);
    }
    throw new BackendError(`backend tensorflow: ${reasons.join('; ')} (npm install @tensorflow/tfjs-node@${TFJS_PINNED})`);
  }
  if (preferred === 'wasm') return await useWasm();
  if (preferred === 'cpu') return await useCpu('cpu (pure JS, slow)');
  for (const pkg of nativePackages) if ((await tryNative(pkg)) === undefined) return await useTensorflow(pkg);
  try {
    return await useWasm();
  } catch (e) {
    if (e instanceof TfjsInternalsError) throw e; // cpu runs on the same engine: falling back would hide the cause
    return await useCpu('cpu (pure JS, slow; wasm failed to initialise)');
  }
}

/** Name of the backend in use ('wasm', 'tensorflow', 'cpu'), or tfjs' current one before initBackend. */
export function backendName(): string {
  return chosen?.name ?? tf.getBackend();
}

/** The initialised backend's description, if initBackend ran. */
export function backendInfo(): BackendInfo | undefined {
  return chosen;
}

let wasmKernelsRegistered = false;

type KernelArgs = Parameters<tf.KernelFunc>[0];

/**
 * Slice reading the input in place. tfjs-backend-wasm's Slice copies the WHOLE input out of the
 * heap (readSync) for every slice, so unstacking (B*H) attention heads cost O(heads^2) copying.
 */
function sliceInPlace({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const x = inputs.x as tf.TensorInfo;
  const a = attrs as unknown as { begin: number | number[]; size: number | number[] };
  // One begin and one size per axis of x, already checked against x's shape by the slice op.
  const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, a.begin, a.size) as [number[], number[]];
  const b = wasmInternals(backend);
  const out = b.makeOutput(size, x.dtype);
  const total = size.reduce((p, q) => p * q, 1);
  if (total === 0) return out;
  // Views are taken after makeOutput: a malloc may grow (and so detach) the heap.
  const xs = b.typedArrayFromHeap(x),
    os = b.typedArrayFromHeap(out);
  // Copy runs as long as the layout allows: trailing axes taken whole extend one contiguous run
  // (a block of rows is a single copy).
  const strides = [...tf.util.computeStrides(x.shape), 1];
  let outer = Math.max(0, x.shape.length - 1);
  while (outer > 0 && size[outer] === x.shape[outer]) outer--;
  const inner = size.slice(outer).reduce((p, q) => p * q, 1);
  const idx = new Array(outer).fill(0);
  for (let o = 0; o < total; o += inner) {
    let src = 0;
    for (let k = outer; k < size.length; k++) src += begin[k]! * strides[k]!;
    for (let k = 0; k < outer; k++) src += (begin[k]! + idx[k]) * strides[k]!;
    os.set(xs.subarray(src, src + inner), o);
    for (let k = outer - 1; k >= 0; k--) {
      if (++idx[k] < size[k]!) break;
      idx[k] = 0;
    }
  }
  return out;
}

function unpackInPlace({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const value = inputs.value as tf.TensorInfo;
  const rank = value.shape.length;
  let axis = (attrs as unknown as { axis: number }).axis;
  if (axis < 0) axis += rank;
  const outShape = value.shape.filter((_, k) => k !== axis);
  const begin = new Array(rank).fill(0);
  const size = value.shape.slice();
  size[axis] = 1;
  const outs: tf.TensorInfo[] = [];
  for (let i = 0; i < value.shape[axis]!; i++) {
    begin[axis] = i;
    const o = sliceInPlace({ inputs: { x: value }, attrs: { begin: [...begin], size }, backend } as unknown as KernelArgs);
    outs.push({ dataId: o.dataId, dtype: o.dtype, shape: outShape });
  }
  return outs;
}

/**
 * Gather copying whole slices from the heap. tfjs-backend-wasm's Gather moves element by element,
 * and the frozen head gathers its target rows out of the (V, d) table for every loss chunk.
 */
function gatherInPlace({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { x, indices } = inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
  const a = attrs as unknown as { axis: number; batchDims: number };
  const b = wasmInternals(backend);
  const axis = tf.util.parseAxisParam(a.axis, x.shape)[0]!;
  const ids = b.readSync(indices.dataId);
  const dim = x.shape[axis]!;
  for (let i = 0; i < ids.length; i++)
    if (!(ids[i]! >= 0 && ids[i]! < dim)) throw new Error(`GatherV2: the index value ${ids[i]} is not in [0, ${dim - 1}]`);
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x as tf.Tensor, indices as tf.Tensor, axis, a.batchDims);
  const out = b.makeOutput(info.outputShape, x.dtype);
  if (tf.util.sizeFromShape(info.outputShape) === 0) return out;
  // x is (batch, outer, dim, slice) and out (batch, outer, indices per batch, slice), row-major.
  const xs = b.typedArrayFromHeap(x),
    os = b.typedArrayFromHeap(out);
  const per = ids.length / info.batchSize,
    S = info.sliceSize;
  let o = 0;
  for (let bi = 0; bi < info.batchSize; bi++) {
    for (let outer = 0; outer < info.outerSize; outer++) {
      const base = (bi * info.outerSize + outer) * info.dimSize;
      for (let j = 0; j < per; j++, o += S) {
        const src = (base + ids[bi * per + j]!) * S;
        os.set(xs.subarray(src, src + S), o);
      }
    }
  }
  return out;
}

function unsortedSegmentSum({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
  const b = wasmInternals(backend);
  // readSync copies out of the heap, so these stay valid when makeOutput grows the heap.
  const xs = b.readSync(x.dataId);
  const ids = b.readSync(segmentIds.dataId);
  const inner = ids.length === 0 ? 0 : xs.length / ids.length;
  const out = b.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype);
  const o = b.typedArrayFromHeap(out);
  o.fill(0);
  for (let r = 0; r < ids.length; r++) {
    const s = ids[r]!;
    if (s < 0 || s >= numSegments) continue; // TF drops out-of-range segment ids
    const src = r * inner,
      dst = s * inner;
    for (let j = 0; j < inner; j++) o[dst + j]! += xs[src + j]!;
  }
  return out;
}

/**
 * Identity sharing the input's buffer (as the cpu backend does). The stock wasm Identity copies,
 * and tfjs clones every tensor it saves for backward: on wasm each saved activation existed twice,
 * which doubled the peak of a training step (full fine-tuning of W1 ran out of the 4 GB heap).
 * Kernels never write their inputs in place, so sharing is safe.
 */
function identityShared({ inputs, backend }: KernelArgs): tf.TensorInfo {
  const x = inputs.x as tf.TensorInfo;
  wasmInternals(backend).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

function replaceWasmKernel(kernelName: string, kernelFunc: (args: KernelArgs) => tf.TensorInfo | tf.TensorInfo[]): void {
  if (tf.getKernel(kernelName, 'wasm')) tf.unregisterKernel(kernelName, 'wasm');
  tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: kernelFunc as tf.KernelFunc });
}

/**
 * Registers the wasm kernels Charon needs: UnsortedSegmentSum (missing: gather's gradient),
 * in-place Slice/Unpack (the stock ones copy the whole input per call), a sharing Identity
 * (the stock one copies every tensor saved for backward) and a GatherV2 copying whole slices.
 * Idempotent.
 */
export function registerWasmKernels(): void {
  if (wasmKernelsRegistered) return;
  wasmKernelsRegistered = true;
  replaceWasmKernel('UnsortedSegmentSum', unsortedSegmentSum);
  replaceWasmKernel('Slice', sliceInPlace);
  replaceWasmKernel('Unpack', unpackInPlace);
  replaceWasmKernel('Identity', identityShared);
  replaceWasmKernel('GatherV2', gatherInPlace);
}

/**
 * The backend's large plain 2-D f32 matmul rate, GFLOP/s: (n x n) @ (n x n), best of `reps`
 * after a warm-up. Benches compare every other figure against this one.
 */
export function measureMatmulGflops(n = 1024, reps = 3): number {
  const a = tf.randomNormal([n, n], 0, 1, 'float32', 1) as tf.Tensor2D;
  const b = tf.randomNormal([n, n], 0, 1, 'float32', 2) as tf.Tensor2D;
  try {
    // The block bodies matter: tidy walks a returned TypedArray element by element.
    tf.tidy(() => {
      tf.matMul(a, b).dataSync();
    });
    let best = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      tf.tidy(() => {
        tf.matMul(a, b).dataSync();
      });
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return (2 * n * n * n) / best / 1e9;
  } finally {
    a.dispose();
    b.dispose();
  }
}
