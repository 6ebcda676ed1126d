/**
 * The engine choice: an explicit choice (--engine, then CHARON_ENGINE) is honoured or refused,
 * the automatic rule picks native where onnxruntime-node loads (wasm/cpu backends), and results
 * name the engine. Skips the native half, saying why, only where onnxruntime-node cannot load.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../src/model/backend.ts';
import { engineDetail, parseEngine, requestedEngine, resolveEngine, setEngine } from '../src/model/engine.ts';
import { loadBackbone } from '../src/model/load.ts';
import { loadNativeRuntime } from '../src/native/runtime.ts';

const why = loadNativeRuntime();
if (why) console.log(`native engine checks skipped: ${why}`);
delete process.env.CHARON_ENGINE;

test('engine: a bad name is refused, naming where it came from', () => {
  assert.throws(() => parseEngine('gpu', '--engine'), /--engine: engine must be native or tfjs, got 'gpu'/);
  process.env.CHARON_ENGINE = 'fast';
  try {
    assert.throws(() => requestedEngine(), /CHARON_ENGINE: engine must be native or tfjs, got 'fast'/);
  } finally {
    delete process.env.CHARON_ENGINE;
  }
});

test('engine: the flag wins over CHARON_ENGINE; tfjs when asked for', () => {
  process.env.CHARON_ENGINE = 'native';
  setEngine('tfjs');
  try {
    assert.is(requestedEngine(), 'tfjs');
    assert.equal(resolveEngine('wasm'), { engine: 'tfjs', why: 'asked for' });
    assert.match(engineDetail('wasm'), /frozen forward: tfjs \(asked for\)/);
  } finally {
    setEngine(undefined);
    delete process.env.CHARON_ENGINE;
  }
});

if (!why) {
  test('engine: automatic choice is native on wasm and cpu, tfjs on the tensorflow backend', () => {
    assert.is(resolveEngine('wasm').engine, 'native');
    assert.is(resolveEngine('cpu').engine, 'native');
    assert.is(resolveEngine('tensorflow').engine, 'tfjs');
    setEngine('native');
    assert.is(resolveEngine('tensorflow').engine, 'native', 'an explicit native choice is honoured on any backend');
    setEngine(undefined);
  });

  test('engine: backbones and the backend report the engine; Llama layers fall back to tfjs', async () => {
    const info = await initBackend('wasm');
    assert.is(info.engine, 'native');
    assert.match(info.detail, /wasm .*; frozen forward: native onnxruntime-node/);
    const gpt2 = await loadBackbone({ preset: 'tiny' });
    assert.match(gpt2.engine, /^native \(onnxruntime-node 1\.30\.0, 1 thread\)$/);
    const llama = await loadBackbone({ preset: 'tiny-llama' });
    assert.is(llama.engine, 'tfjs');
    assert.ok(llama.frozenHead()?.native, 'the head is native for any family');
    setEngine('tfjs');
    const forced = await loadBackbone({ preset: 'tiny' });
    assert.is(forced.engine, 'tfjs');
    assert.is(forced.frozenHead()?.native, undefined);
    setEngine(undefined);
    for (const bb of [gpt2, llama, forced]) bb.dispose();
  });
}

test.run();
