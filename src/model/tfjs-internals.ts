/**
 * The one place where Charon reaches past TensorFlow.js' public API. tfjs has no public way to
 * drop tensors saved for backward early (src/train/grads.ts), to run ops with the tape off
 * (src/model/methods/inference.ts), to count wasm heap buffers (src/model/memory.ts) or to read
 * and write the wasm heap in a kernel (src/model/backend.ts), so those modules get the engine's
 * and the wasm backend's internals from here, typed as far as Charon uses them.
 *
 * Internals can move in any release, and a moved one fails silently (a renamed tape field just
 * stops releasing memory), which is why tfjs is pinned exactly and `checkTfjsInternals` runs when
 * the backend is initialised: it fails with one message naming every internal that is missing and
 * the pinned version. The check inspects a `TfjsInternalsView`, which `inspectTfjsInternals` takes
 * from the live library (with tiny probes inside a gradient scope), so that any object can be
 * checked the same way.
 */
import * as tf from '@tensorflow/tfjs';

/** The exact @tensorflow/tfjs version (package.json) these internals were written against. */
export const TFJS_PINNED = '4.22.0';

/** Raised when an internal Charon relies on is missing from the installed tfjs. */
export class TfjsInternalsError extends Error {
  override name = 'TfjsInternalsError';
}

/** A node of the engine's gradient tape: the fields src/train/grads.ts wraps and releases. */
export interface TapeNode {
  gradient?: (dys: tf.Tensor[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

/** The engine state fields Charon reads and writes. */
export interface EngineInternals {
  /** The tape inside tf.variableGrads (null or undefined outside any gradient scope). */
  activeTape: TapeNode[] | null | undefined;
  /** Nested kernel calls; the engine records nothing on the tape while it is above 0. */
  kernelDepth: number;
}

/** One wasm tensor buffer as the backend records it. */
export interface WasmDataEntry {
  memoryOffset: number | null;
  shape: number[];
  dtype: tf.DataType;
}

export interface WasmDataMap {
  has(id: object): boolean;
  get(id: object): WasmDataEntry | undefined;
  set(id: object, v: WasmDataEntry): void;
  delete(id: object): boolean;
}

/** The wasm backend's members used by Charon's kernels and memory count. */
export interface WasmBackendInternals {
  dataIdMap: WasmDataMap;
  readSync(dataId: unknown): ArrayLike<number>;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  incRef(dataId: unknown): void;
}

/** The engine's state (tf.engine().state). */
export function engineInternals(): EngineInternals {
  return (tf.engine() as unknown as { state: EngineInternals }).state;
}

/** A wasm backend instance (tf.backend() on wasm, or a kernel's `backend` argument) as its internals. */
export function wasmInternals(backend: unknown): WasmBackendInternals {
  return backend as WasmBackendInternals;
}

/**
 * What the check looks at. `inspectTfjsInternals` fills it from the live library; probe results
 * are undefined where a probe could not run (the internal it needed is then reported itself).
 */
export interface TfjsInternalsView {
  /** Installed @tensorflow/tfjs-core version, for the message. */
  version: string;
  /** tf.engine().state */
  engineState: unknown;
  /** engine.state.activeTape as read inside tf.variableGrads. */
  tape: unknown;
  /** A node the tape recorded inside that scope. */
  tapeNode: unknown;
  /** Whether an op run there with kernelDepth raised stayed off the tape. */
  tapeOffInKernel: boolean | undefined;
  /** The tf namespace (kernel registry and the shape utilities the wasm kernels call). */
  tf: unknown;
  /** The wasm backend, when it is the one in use (its internals are checked only then). */
  wasmBackend?: unknown;
  /** The wasm backend's record of a live tensor's buffer. */
  wasmEntry?: unknown;
}

function at(x: unknown, path: string): unknown {
  let v = x;
  for (const key of path.split('.')) {
    if ((typeof v !== 'object' && typeof v !== 'function') || v === null) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

const isFn = (x: unknown, path: string) => typeof at(x, path) === 'function';

type Check = readonly [internal: string, ok: (v: TfjsInternalsView) => boolean];

const ENGINE: Check[] = [
  ['engine.state.kernelDepth (a number)', (v) => typeof at(v.engineState, 'kernelDepth') === 'number'],
  ['engine.state.activeTape (an array inside tf.variableGrads)', (v) => Array.isArray(v.tape)],
  // The node checks need a tape; without one only the tape itself is reported.
  ['tape node .gradient (a function)', (v) => !Array.isArray(v.tape) || isFn(v.tapeNode, 'gradient')],
  ['tape node .saved (an array)', (v) => !Array.isArray(v.tape) || Array.isArray(at(v.tapeNode, 'saved'))],
  ['engine.state.kernelDepth > 0 turning the tape off', (v) => v.tapeOffInKernel !== false],
  ...[
    'getKernel',
    'registerKernel',
    'unregisterKernel',
    'slice_util.parseSliceParams',
    'backend_util.segment_util.collectGatherOpShapeInfo',
    'util.computeStrides',
    'util.parseAxisParam',
  ].map((path): Check => [`tf.${path}`, (v) => isFn(v.tf, path)]),
];

const WASM: Check[] = [
  ...['readSync', 'makeOutput', 'typedArrayFromHeap', 'incRef', 'dataIdMap.has', 'dataIdMap.get', 'dataIdMap.set', 'dataIdMap.delete'].map(
    (path): Check => [`wasm backend.${path}`, (v) => isFn(v.wasmBackend, path)],
  ),
  [
    'wasm backend.dataIdMap entries { memoryOffset, shape, dtype }',
    (v) =>
      !isFn(v.wasmBackend, 'dataIdMap.get') ||
      (typeof at(v.wasmEntry, 'memoryOffset') === 'number' &&
        Array.isArray(at(v.wasmEntry, 'shape')) &&
        typeof at(v.wasmEntry, 'dtype') === 'string'),
  ],
];

/** The internals `view` lacks, each named as Charon uses it; empty when all are there. */
export function missingTfjsInternals(view: TfjsInternalsView): string[] {
  const checks = view.wasmBackend === undefined ? ENGINE : [...ENGINE, ...WASM];
  return checks.filter(([, ok]) => !ok(view)).map(([name]) => name);
}

/** Throws one TfjsInternalsError naming every missing internal and the pinned version. */
export function checkTfjsInternals(view: TfjsInternalsView): void {
  const missing = missingTfjsInternals(view);
  if (missing.length === 0) return;
  throw new TfjsInternalsError(
    `TensorFlow.js internals Charon relies on are missing from the installed @tensorflow/tfjs-core ${view.version}: ${missing.join('; ')}. ` +
      `Charon is pinned to @tensorflow/tfjs ${TFJS_PINNED}: install exactly that version (npm ci).`,
  );
}

let probes = 0;

/**
 * Reads the live library into a view: the engine state, and inside one tiny tf.variableGrads
 * the tape, a node on it and whether raising kernelDepth keeps an op off it. With `wasmBackend`
 * (the wasm backend in use) also that backend and its record of a tensor. Leaves no tensor behind.
 */
export function inspectTfjsInternals(wasmBackend?: tf.KernelBackend): TfjsInternalsView {
  const state = (tf.engine() as unknown as { state?: Record<string, unknown> }).state;
  let tape: unknown, tapeNode: unknown, tapeOffInKernel: boolean | undefined;
  const v = tf.tidy(() => tf.variable(tf.scalar(2), true, `charon-tfjs-internals-probe-${probes++}`));
  try {
    const { value, grads } = tf.variableGrads(() => {
      const y = tf.mul(v, v) as tf.Scalar;
      tape = state?.activeTape;
      if (!Array.isArray(tape)) return y;
      tapeNode = tape[tape.length - 1];
      if (typeof state?.kernelDepth === 'number') {
        const before = tape.length;
        (state.kernelDepth as number)++;
        try {
          tf.add(v, 1).dispose();
        } finally {
          (state.kernelDepth as number)--;
        }
        tapeOffInKernel = tape.length === before;
      }
      return y;
    }, [v]);
    value.dispose();
    tf.dispose(Object.values(grads));
  } finally {
    v.dispose();
  }
  const view: TfjsInternalsView = { version: tf.version_core, engineState: state, tape, tapeNode, tapeOffInKernel, tf };
  if (wasmBackend) {
    view.wasmBackend = wasmBackend;
    const t = tf.scalar(1);
    const map = at(wasmBackend, 'dataIdMap') as { get?: (id: object) => unknown } | undefined;
    // A snapshot: the record itself goes when t is disposed.
    view.wasmEntry = typeof map?.get === 'function' ? { ...(map.get(t.dataId) as object) } : undefined;
    t.dispose();
  }
  return view;
}
