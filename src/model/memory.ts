/**
 * Tensor memory as allocated, for honest peaks. tf.memory().numBytes adds the bytes of every
 * tensor object, so views and clones sharing one buffer are counted again and again, and a peak
 * sampled between kernels misses what a kernel allocates and frees inside a step.
 *
 * On wasm, counting is exact: every buffer the backend maps (malloc'd tensor data) is added when
 * it appears and removed when it is freed, and the peak moves with each allocation. Elsewhere the
 * count falls back to tf.memory().numBytes and the peak to the samples taken by `sampleTensorBytes`.
 * Not counted on wasm: XNNPACK's packed copies of matmul weights and malloc fragmentation.
 * The native engine's weights (src/native) count as live bytes while its sessions hold them;
 * its transient buffers inside a session run do not.
 * The wasm backend's data map is an internal, checked at start-up by ./tfjs-internals.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { nativeWeightBytes } from '../native/runtime.ts';
import { wasmInternals, type WasmDataEntry } from './tfjs-internals.ts';

let exact: object | undefined;
let live = 0;
let peak = 0;

function entryBytes(e: WasmDataEntry | undefined): number {
  if (!e || e.memoryOffset === null || e.dtype === 'string') return 0;
  return tf.util.sizeFromShape(e.shape) * tf.util.bytesPerElement(e.dtype);
}

/**
 * Counts the buffers of a wasm backend instance from now on (those it already holds are taken from
 * tf.memory() once). Idempotent per backend.
 */
export function countWasmBuffers(backend: tf.KernelBackend): void {
  if (exact === backend) return;
  const map = wasmInternals(backend).dataIdMap;
  const set = map.set.bind(map),
    del = map.delete.bind(map);
  // DataStorage.get moves data of an unknown id between backends: look only at ids it has.
  const current = (id: object) => (map.has(id) ? map.get(id) : undefined);
  map.set = (id, v) => {
    const before = entryBytes(current(id));
    set(id, v);
    live += entryBytes(v) - before;
    if (live + nativeWeightBytes() > peak) peak = live + nativeWeightBytes();
  };
  map.delete = (id) => {
    live -= entryBytes(current(id));
    return del(id);
  };
  exact = backend;
  live = tf.memory().numBytes;
  peak = live + nativeWeightBytes();
}

function counting(): boolean {
  return exact !== undefined && exact === tf.backend();
}

/** Bytes of tensor buffers alive now, the native engine's weights included. */
export function liveTensorBytes(): number {
  return (counting() ? live : tf.memory().numBytes) + nativeWeightBytes();
}

/** Folds the current count into the peak (needed only where counting is not exact; harmless elsewhere). */
export function sampleTensorBytes(): void {
  peak = Math.max(peak, liveTensorBytes());
}

/** Highest tensor bytes since the last `resetPeakTensorBytes`. */
export function peakTensorBytes(): number {
  sampleTensorBytes();
  return peak;
}

/** Starts a new peak window at the current count (e.g. at the start of an epoch). */
export function resetPeakTensorBytes(): void {
  peak = liveTensorBytes();
}

/** The memory of one training step, as every path reports it. */
export interface StepMemory {
  /** Highest tensor bytes since the step began (`resetPeakTensorBytes` at its start). */
  tensorBytes: number;
  /** The step's figure: the tensor peak, the optimiser's state and the activation cache's memory tier. */
  bytes: number;
}

/**
 * At the end of a step (after its update): its memory. The optimiser's state counts apart from the
 * tensor peak because AdamW keeps its moments outside the tensor heap; the cache's memory tier
 * (`cacheBytes`, its bytes now) because cached activations are held as plain arrays too.
 */
export function stepMemory(optimizer: { stateBytes(): number }, cacheBytes: number): StepMemory {
  const tensorBytes = peakTensorBytes();
  return { tensorBytes, bytes: tensorBytes + optimizer.stateBytes() + cacheBytes };
}
