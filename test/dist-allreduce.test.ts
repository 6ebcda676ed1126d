import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chunkBounds, memoryRing, ringAllReduce } from '../src/engine/index.ts';
import { createRng } from '../src/train/rng.ts';

function vectors(size: number, length: number, seed: number): Float32Array[] {
  const rng = createRng(seed);
  return Array.from({ length: size }, () => Float32Array.from({ length }, () => rng.next() * 2 - 1));
}

test('allreduce: chunk bounds cover the vector exactly once', () => {
  for (const [len, parts] of [
    [10, 3],
    [2, 4],
    [0, 2],
    [17, 17],
  ] as const) {
    let covered = 0;
    for (let c = 0; c < parts; c++) {
      const [s, e] = chunkBounds(len, parts, c);
      assert.is(s, covered);
      covered = e;
    }
    assert.is(covered, len);
  }
});

test('allreduce: every rank ends with the element-wise sum (1..5 ranks, short and uneven vectors)', async () => {
  for (const size of [1, 2, 3, 4, 5]) {
    for (const length of [1, 3, 1000]) {
      const inputs = vectors(size, length, size * 100 + length);
      const ring = memoryRing(size);
      const outs = await Promise.all(inputs.map((v, r) => ringAllReduce(v, r, size, ring[r]!)));
      for (let i = 0; i < length; i++) {
        let want = 0;
        for (const v of inputs) want += v[i]!;
        for (const o of outs) assert.ok(Math.abs(o[i]! - want) < 1e-5, `size ${size} len ${length} elem ${i}: ${o[i]} vs ${want}`);
      }
      // all ranks hold bit-identical results: AdamW then moves every replica the same way
      for (const o of outs) assert.equal(Array.from(o), Array.from(outs[0]!));
    }
  }
});

test('allreduce: the same placement gives bit-identical sums run after run, whatever the delivery order', async () => {
  const inputs = vectors(4, 257, 7);
  const once = async (delayed: boolean) => {
    const ring = memoryRing(4).map((t, r) => ({
      send: async (to: number, tag: Parameters<typeof t.send>[1], d: Float32Array) => {
        if (delayed && r % 2 === 0) await new Promise<void>((res) => setImmediate(res));
        return t.send(to, tag, d);
      },
      receive: t.receive,
    }));
    return Promise.all(inputs.map((v, r) => ringAllReduce(v, r, 4, ring[r]!)));
  };
  const a = await once(false),
    b = await once(true);
  assert.equal(Array.from(a[2]!), Array.from(b[2]!));
});

test('allreduce: a rank outside the ring is rejected', async () => {
  let message = '';
  try {
    await ringAllReduce(new Float32Array(2), 3, 2, memoryRing(2)[0]!);
  } catch (err) {
    message = (err as Error).message;
  }
  assert.match(message, /rank 3 outside 0..1/);
});

test.run();
