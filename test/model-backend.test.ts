import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import {
  BackendError,
  backendInfo,
  backendName,
  initBackend,
  measureMatmulGflops,
  type BackendChoice,
  type BackendInfo,
} from '../src/model/backend.ts';
import { TFJS_PINNED } from '../src/model/tfjs-internals.ts';

/**
 * The optional native packages this machine really has, in the order initBackend tries them.
 * Installed is not the same as usable (a missing libtensorflow fails the import), so the tests
 * accept either outcome for an installed package and check that it is reported as such.
 */
const nativeInstalled = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].filter((pkg) => {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
});

/** Whether asking for tensorflow worked here, which decides what the default is afterwards. */
let nativeUsable = false;

test('model-backend: asking for tensorflow loads an installed native package, or names each package and why not', async () => {
  let info: BackendInfo | undefined;
  let err: unknown;
  try {
    info = await initBackend('tensorflow');
  } catch (e) {
    err = e;
  }
  if (info) {
    assert.ok(nativeInstalled.length > 0, `tensorflow came up with no native package installed: ${info.detail}`);
    assert.is(info.name, 'tensorflow');
    assert.ok(
      nativeInstalled.some((pkg) => info.detail.includes(pkg)),
      info.detail,
    );
    assert.is(backendInfo(), info);
    nativeUsable = true;
    return;
  }
  assert.instance(err, BackendError);
  const message = (err as Error).message;
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    const why = nativeInstalled.includes(pkg) ? 'failed to load' : 'is not installed';
    assert.ok(message.includes(`${pkg} ${why}`), `expected "${pkg} ${why}" in: ${message}`);
  }
  assert.ok(message.includes(`npm install @tensorflow/tfjs-node@${TFJS_PINNED}`), message);
  assert.is(backendInfo(), undefined, 'a failed choice chooses nothing');
});

test('model-backend: the default is tensorflow where it loads, else wasm, chosen once per process', async () => {
  const info = await initBackend();
  if (nativeUsable) {
    assert.is(info.name, 'tensorflow');
  } else {
    assert.is(info.name, 'wasm');
    assert.match(info.detail, /tfjs-backend-wasm/);
  }
  assert.is(backendName(), info.name);
  assert.is(await initBackend(info.name as BackendChoice), info);
  try {
    await initBackend('cpu');
    assert.unreachable('switching backends mid-process');
  } catch (e) {
    assert.match((e as Error).message, new RegExp(`already runs on ${info.name}`));
  }
});

test('model-backend: matmul rate is a positive finite number', () => {
  const g = measureMatmulGflops(128, 1);
  assert.ok(Number.isFinite(g) && g > 0, String(g));
});

test.run();
