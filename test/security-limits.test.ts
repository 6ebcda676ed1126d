import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_MESSAGE_LIMITS, PayloadTooLarge } from '../src/bus/index.ts';
import { createMethod, methodNames } from '../src/model/methods/index.ts';
import { modelShape, methodShape } from '../src/plan/device-profile.ts';
import { messageSizes, runMessageLimits } from '../src/plan/message-limits.ts';
import { encodeEnvelope, PROTOCOL_VERSION, WireTensor } from '../src/tensor/index.ts';
import { DeviceRegistry } from '../actors/coordinator/registry.ts';
import { systemClock } from '../src/runtime/clock.ts';
import { tinyBackbone } from './methods-fixture.ts';
import { serverForFile, until } from './fixtures/bus.ts';

const { connect } = serverForFile('charon-sec-limits-', 'r');

test("limits: every method's real trainable state, as the bus carries it, fits the run's derived limit", async () => {
  const backbone = await tinyBackbone();
  const seqLen = 16,
    batch = 8;
  for (const name of methodNames) {
    const method = createMethod(name, backbone, {}, 0);
    const wire = (scale: number) =>
      Object.fromEntries(
        [...method.parameters()].map(([n, v]) => [n, new WireTensor('float32', v.shape, new Float32Array(v.size).fill(scale))]),
      );
    // A restore or a commit: parameters and both Adam moments.
    const state = encodeEnvelope({
      v: PROTOCOL_VERSION,
      run: 'r',
      from: 'coordinator',
      gen: 0,
      step: 3,
      mb: 0,
      id: 'x',
      kind: 'ctl',
      body: { kind: 'load', args: { state: { step: 3, params: wire(1), m: wire(2), v: wire(3) } } },
    });
    const shape = modelShape(backbone.config, seqLen, 8, 'tiny', methodShape(name));
    const limits = runMessageLimits(shape, batch, 2);
    const sizes = messageSizes(shape, batch);
    assert.ok(state.length <= limits.maxMessageBytes, `${name}: state ${state.length} B over the limit ${limits.maxMessageBytes}`);
    // Derived, not a blanket gigabyte: within a small factor of what the run really sends.
    assert.ok(limits.maxMessageBytes < 4 * Math.max(state.length, sizes.boundary, sizes.cacheEntry) + (2 << 20), `${name}: limit tight`);
    assert.ok(limits.reassemblyBytes >= limits.maxMessageBytes && limits.reassemblyBytes < DEFAULT_MESSAGE_LIMITS.reassemblyBytes);
    // The whole batch's activations across a boundary: b (dModel) and a (side width) per token.
    const r = backbone.config.dModel / 8;
    assert.ok(sizes.boundary >= batch * seqLen * (backbone.config.dModel + (name === 'parallel' ? r : 0)) * 4, `${name}: boundary`);
    if (name !== 'full') method.dispose();
  }
});

test('limits: a connection bounded at run time refuses a larger message before holding any of it, and counts it; smaller ones pass', async () => {
  const rx = await connect('rx'),
    tx = await connect('tx');
  const got: number[] = [];
  rx.subscribe(
    'charon.r.t',
    (env) => {
      got.push((env.body as { n: number }).n);
    },
    { kinds: ['x'] },
  );
  await rx.flush();
  const big = (n: number, bytes: number) => ({ n, t: new WireTensor('uint8', [bytes], new Uint8Array(bytes).fill(7)) });
  // Over max_payload (8 MB here): travels in chunks.
  tx.publish('charon.r.t', 'x', big(1, 12 << 20));
  await until(() => got.includes(1), 'the first large message under the default limits');

  rx.limitMessages({ maxMessageBytes: 10 << 20, reassemblyBytes: 20 << 20 });
  tx.publish('charon.r.t', 'x', big(2, 12 << 20)); // chunked, declares more than 10 MB
  tx.publish('charon.r.t', 'x', big(3, 11 << 20)); // chunked, also over
  tx.publish('charon.r.t', 'x', big(4, 1 << 20)); // whole, within
  await until(() => got.includes(4), 'the message within the limit');
  await until(() => rx.rejected.oversized === 2, 'two oversized refusals');
  assert.equal(got, [1, 4]);
  assert.is(rx.reassembly.pendingBytes, 0, 'nothing of a refused transfer is held');
  assert.is(rx.reassembly.maxMessageBytes, 10 << 20);

  tx.limitMessages({ maxMessageBytes: 2 << 20, reassemblyBytes: 2 << 20 });
  assert.throws(
    () => tx.publish('charon.r.t', 'x', big(5, 3 << 20)),
    (e: Error) => e instanceof PayloadTooLarge,
  );
  assert.throws(() => rx.limitMessages({ maxMessageBytes: 4, reassemblyBytes: 0 }), /both must be positive/);
});

test("limits: the coordinator tells every joining device the run's limits in its join reply", () => {
  const limits = { maxMessageBytes: 3 << 20, reassemblyBytes: 9 << 20 };
  const reg = new DeviceRegistry(systemClock, 6000, { limits });
  const reply = reg.join({ device: 'd0', backend: 'wasm', memoryMb: 512, pid: 1, host: 'h', slowdown: 1, bandwidthMbps: null });
  assert.equal(reply, { ok: true, role: 'worker', heartbeatMs: reply.ok ? reply.heartbeatMs : 0, lostAfterMs: 6000, limits });
  reg.close();
});

test.run();
