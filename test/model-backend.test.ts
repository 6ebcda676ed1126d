import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BackendError, backendInfo, backendName, initBackend, measureMatmulGflops } from '../src/model/backend.ts';

test('model-backend: asking for tensorflow without the native package names the package', async () => {
  try {
    await initBackend('tensorflow');
    assert.unreachable('tensorflow backend is not installed here');
  } catch (e) {
    assert.instance(e, BackendError);
    assert.match((e as Error).message, /@tensorflow\/tfjs-node/);
  }
  assert.is(backendInfo(), undefined, 'a failed choice chooses nothing');
});

test('model-backend: the default is wasm, chosen once per process', async () => {
  const info = await initBackend();
  assert.is(info.name, 'wasm');
  assert.match(info.detail, /tfjs-backend-wasm/);
  assert.is(backendName(), 'wasm');
  assert.is(await initBackend('wasm'), info);
  try {
    await initBackend('cpu');
    assert.unreachable('switching backends mid-process');
  } catch (e) {
    assert.match((e as Error).message, /already runs on wasm/);
  }
});

test('model-backend: matmul rate is a positive finite number', () => {
  const g = measureMatmulGflops(128, 1);
  assert.ok(Number.isFinite(g) && g > 0, String(g));
});

test.run();
