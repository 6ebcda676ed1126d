import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/model/backend.ts';
import {
  checkTfjsInternals,
  inspectTfjsInternals,
  missingTfjsInternals,
  TfjsInternalsError,
  TFJS_PINNED,
  type TfjsInternalsView,
} from '../src/model/tfjs-internals.ts';

let real: TfjsInternalsView;

test.before(async () => {
  await initBackend('wasm'); // runs the check itself: it would throw here on a tfjs lacking an internal
  const before = tf.memory().numTensors;
  real = inspectTfjsInternals(tf.backend());
  assert.is(tf.memory().numTensors, before, 'the probes leave no tensor behind');
});

test('tfjs-internals: the pin in package.json is the one the check names', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };
  assert.is(pkg.dependencies['@tensorflow/tfjs'], TFJS_PINNED);
  assert.is(pkg.dependencies['@tensorflow/tfjs-backend-wasm'], TFJS_PINNED);
});

test('tfjs-internals: everything Charon relies on is there in the installed tfjs (engine and wasm backend)', () => {
  assert.equal(missingTfjsInternals(real), []);
  checkTfjsInternals(real);
  assert.ok(real.wasmBackend, 'the wasm backend was inspected too');
  assert.equal(missingTfjsInternals(inspectTfjsInternals()), [], 'engine only');
});

function failure(view: TfjsInternalsView): TfjsInternalsError {
  try {
    checkTfjsInternals(view);
  } catch (e) {
    assert.instance(e, TfjsInternalsError);
    return e as TfjsInternalsError;
  }
  throw new Error('checkTfjsInternals accepted a view lacking an internal');
}

test('tfjs-internals: a missing engine field is named, with the installed and the pinned version', () => {
  const { kernelDepth: _, ...state } = real.engineState as Record<string, unknown>;
  const e = failure({ ...real, engineState: state, version: '4.99.0' });
  assert.match(e.message, /engine\.state\.kernelDepth/);
  assert.match(e.message, /tfjs-core 4\.99\.0/);
  assert.ok(e.message.includes(`pinned to @tensorflow/tfjs ${TFJS_PINNED}`), e.message);
  assert.equal(missingTfjsInternals({ ...real, engineState: state }), ['engine.state.kernelDepth (a number)']);
});

test('tfjs-internals: a tape without nodes of the known shape, or one kernelDepth does not turn off, is reported', () => {
  assert.equal(missingTfjsInternals({ ...real, tape: undefined, tapeNode: undefined, tapeOffInKernel: undefined }), [
    'engine.state.activeTape (an array inside tf.variableGrads)',
  ]);
  assert.equal(missingTfjsInternals({ ...real, tapeNode: { gradient: () => ({}) } }), ['tape node .saved (an array)']);
  assert.equal(missingTfjsInternals({ ...real, tapeNode: { saved: [] } }), ['tape node .gradient (a function)']);
  assert.equal(missingTfjsInternals({ ...real, tapeOffInKernel: false }), ['engine.state.kernelDepth > 0 turning the tape off']);
});

test('tfjs-internals: missing wasm backend members and tf utilities are each named in one message', () => {
  const backend = real.wasmBackend as Record<string, unknown>;
  const fake = Object.assign(Object.create(Object.getPrototypeOf(backend)), backend, { typedArrayFromHeap: undefined }) as object;
  const tfNoSlice = { ...(real.tf as Record<string, unknown>), slice_util: {} };
  const e = failure({ ...real, wasmBackend: fake, tf: tfNoSlice });
  assert.match(e.message, /wasm backend\.typedArrayFromHeap/);
  assert.match(e.message, /tf\.slice_util\.parseSliceParams/);
  assert.is(e.message.split('\n').length, 1, 'one line');
  assert.equal(missingTfjsInternals({ ...real, wasmEntry: { offset: 8, shape: [], dtype: 'float32' } }), [
    'wasm backend.dataIdMap entries { memoryOffset, shape, dtype }',
  ]);
});

test.run();
