import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { BusStageLinks } from '../src/engine/index.ts';
import { PROTOCOL_VERSION, encodeEnvelope } from '../src/tensor/index.ts';
import { serverForFile, until } from './fixtures/bus.ts';

const nats = serverForFile('charon-sec-links-', 'r');
const connect = (name: string, run = 'r') => nats.connect(name, { run });
const widths = { b: 4, a: 2 };

test('wrong place, wrong time: NaN/Inf, an old step, another run and garbage are refused and counted; the next good row arrives', async () => {
  const s0 = await connect('s0'),
    s1 = await connect('s1');
  const a = new BusStageLinks(s0, {
    stage: 0,
    rank: 0,
    group: 'g0',
    peers: { group: ['s0'], prev: [], next: ['s1'] },
    widths,
    generation: 0,
    firstStep: 3,
  });
  const b = new BusStageLinks(s1, {
    stage: 1,
    rank: 0,
    group: 'g1',
    peers: { group: ['s1'], prev: ['s0'], next: [] },
    widths,
    generation: 0,
    firstStep: 3,
  });
  // Both links subscribe in their constructors; the server knows of both before anything is sent.
  await Promise.all([s0.flush(), s1.flush()]);
  const row = (v: number) => ({ ids: [5], b: new Float32Array(4).fill(v), a: new Float32Array(2).fill(v) });

  // A gradient and an activation holding NaN / Infinity: refused by name, never applied.
  b.sendBwd(3, 0, 0, { ids: [5], g: Float32Array.from([0.5, Number.NaN]) });
  a.sendFwd(3, 0, 0, { ids: [5], b: Float32Array.from([1, Number.POSITIVE_INFINITY, 0, 0]), a: new Float32Array(2) });
  await until(() => s0.rejected.nonfinite === 1 && s1.rejected.nonfinite === 1, 'non-finite refusals');
  assert.is(a.dropped.get('nonfinite'), 1);

  // Step 4 under way: a row of step 3 (a replay, a late duplicate) is stale.
  const step4 = b.recvFwd(4, 0, 0);
  a.sendFwd(3, 0, 0, row(3));
  await until(() => s1.rejected.stale === 1, 'the stale refusal');
  assert.is(b.dropped.get('stale'), 1);

  // Another run's envelope on this run's subject, and random bytes: refused, counted.
  const subject = s0.subjects.stageFwd('s1', 1, 0);
  const foreign = encodeEnvelope({ v: PROTOCOL_VERSION, run: 'other', from: 's0', gen: 0, step: 4, mb: 0, id: 'x', kind: 'fwd', body: {} });
  s0.publishBytes(subject, foreign);
  await until(() => s1.rejected.run === 1, "the other run's refusal");
  const garbage = fc.sample(fc.uint8Array({ minLength: 1, maxLength: 256 }), { numRuns: 300, seed: 1 });
  for (const g of garbage) s0.publishBytes(subject, g);
  // Well-formed envelopes with hostile bodies: wrong types, missing tensors, absurd ids.
  const bodies = fc.sample(fc.anything({ maxDepth: 3 }), { numRuns: 300, seed: 2 });
  for (const body of bodies) s0.publish(subject, 'fwd', body, { step: 4 });
  await s0.flush();

  a.sendFwd(4, 0, 0, row(4));
  assert.equal(Array.from((await step4).b), [4, 4, 4, 4], 'the actor still works');
  const r = s1.rejected;
  const refused = Object.values(r).reduce((x, y) => x + y, 0);
  assert.ok(refused >= 300 + 3, `bus refusals: ${JSON.stringify(r)}`);
  const dropped = [...b.dropped.values()].reduce((x, y) => x + y, 0);
  assert.ok(dropped >= 300 + 2, `link drops: ${JSON.stringify([...b.dropped])}`);
  a.close();
  b.close();
});

test.run();
