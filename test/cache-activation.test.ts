import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActivationCache } from '../src/cache/activation-cache.ts';
import { f16ToF32, f32ToF16 } from '../src/cache/half.ts';

function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 8;
  }
  return out;
}

const fp = 'model-abc';
const tmp = () => mkdtempSync(join(tmpdir(), 'charon-cache-'));

test('cache: eviction spills to disk and reloads bit-exact (f32)', () => {
  const dir = tmp();
  const cache = new ActivationCache({ memoryBytes: 3 * 4096, dir, dtype: 'f32' });
  const put = new Map<number, Float32Array>();
  for (let s = 0; s < 10; s++) {
    put.set(s, values(1024, s + 1));
    cache.put({ fingerprint: fp, sample: s, layer: 2 }, put.get(s)!);
  }
  const st = cache.stats();
  assert.ok(st.spills >= 7, `spills ${st.spills}`);
  assert.ok(st.memoryBytes <= 3 * 4096);
  assert.is(st.diskEntries + st.memoryEntries, 10);
  for (let s = 0; s < 10; s++) {
    const got = cache.get({ fingerprint: fp, sample: s, layer: 2 });
    assert.ok(got, `sample ${s}`);
    assert.equal(Buffer.from(got!.buffer, got!.byteOffset, got!.byteLength), Buffer.from(put.get(s)!.buffer));
  }
  assert.ok(cache.stats().diskHits >= 7);
  assert.is(cache.stats().misses, 0);
  cache.destroy();
  assert.not.ok(existsSync(dir));
});

test('cache: memory tier byte bound respected, peak tracked', () => {
  const bound = 10_000;
  const cache = new ActivationCache({ memoryBytes: bound, dtype: 'f32' });
  for (let s = 0; s < 50; s++) {
    cache.put({ fingerprint: fp, sample: s, layer: 0 }, values(300 + s * 7, s));
    assert.ok(cache.stats().memoryBytes <= bound, `memory ${cache.stats().memoryBytes}`);
  }
  assert.ok(cache.stats().peakMemoryBytes <= bound && cache.stats().peakMemoryBytes > bound / 2);
  // without a disk tier, evicted entries are simply misses
  assert.is(cache.get({ fingerprint: fp, sample: 0, layer: 0 }), undefined);
  assert.is(cache.stats().misses, 1);
});

test('cache: f16 storage round-trips within half precision and halves the bytes', () => {
  const dir = tmp();
  const cache = new ActivationCache({ memoryBytes: 4096, dir, dtype: 'f16' });
  const v = values(4096, 7);
  cache.put({ fingerprint: fp, sample: 1, layer: 1 }, v); // larger than the memory tier: straight to disk
  cache.put({ fingerprint: fp, sample: 2, layer: 1 }, v.subarray(0, 512));
  assert.is(cache.stats().memoryBytes, 1024);
  const a = cache.get({ fingerprint: fp, sample: 1, layer: 1 })!;
  const b = cache.get({ fingerprint: fp, sample: 2, layer: 1 })!;
  for (let i = 0; i < v.length; i++) assert.ok(Math.abs(a[i]! - v[i]!) <= Math.abs(v[i]!) * 2 ** -11 + 1e-7, `i ${i}: ${a[i]} vs ${v[i]}`);
  for (let i = 0; i < 512; i++) assert.is(b[i], a[i]);
  const special = new Float32Array([0, -0, 1, -2.5, 65504, 1e6, -1e6, 6e-8, 1e-9, Infinity]);
  const back = f16ToF32(f32ToF16(special));
  assert.equal(Array.from(back), [0, -0, 1, -2.5, 65504, Infinity, -Infinity, 2 ** -24, 0, Infinity]);
  cache.destroy();
  rmSync(dir, { recursive: true, force: true });
});

test('cache: a corrupt or missing disk entry is a counted miss, and a re-put heals it', () => {
  const dir = tmp();
  const cache = new ActivationCache({ memoryBytes: 0, dir, dtype: 'f32' });
  const keyA = { fingerprint: fp, sample: 3, layer: 4 },
    keyB = { fingerprint: fp, sample: 4, layer: 4 };
  const v = values(256, 3);
  cache.put(keyA, v);
  cache.put(keyB, v);
  const file = cache.diskPath(keyA)!;
  const bytes = readFileSync(file);
  bytes[bytes.length - 5]! ^= 0xff;
  writeFileSync(file, bytes);
  rmSync(cache.diskPath(keyB)!);
  assert.is(cache.get(keyA), undefined);
  assert.is(cache.get(keyB), undefined);
  assert.is(cache.stats().corrupt, 1);
  assert.is(cache.stats().misses, 2);
  assert.not.ok(existsSync(file), 'corrupt file deleted');
  // the caller recomputes and puts it back
  cache.put(keyA, v);
  assert.equal(Array.from(cache.get(keyA)!), Array.from(v));
  assert.is(cache.stats().diskEntries, 1);
  cache.destroy();
});

test('cache: copyTo writes each entry in place from either tier, as get reads it', () => {
  for (const dtype of ['f32', 'f16'] as const) {
    const dir = tmp();
    // Room for one entry: the others live on disk, read through the tier's one reused buffer.
    const cache = new ActivationCache({ memoryBytes: dtype === 'f32' ? 1024 : 512, dir, dtype });
    const key = (s: number) => ({ fingerprint: `${fp}-${s % 2}`, sample: s, layer: 0 });
    for (let s = 0; s < 5; s++) cache.put(key(s), values(256, s + 1));
    const dest = new Float32Array(5 * 256 + 3).fill(-7);
    // An odd offset: disk payloads follow a key of any length, so nothing is aligned for free.
    for (let s = 0; s < 5; s++) assert.ok(cache.copyTo(key(s), dest, 3 + s * 256, 256), `${dtype} sample ${s}`);
    assert.equal(Array.from(dest.subarray(0, 3)), [-7, -7, -7]);
    for (let s = 0; s < 5; s++)
      assert.equal(Array.from(dest.subarray(3 + s * 256, 3 + (s + 1) * 256)), Array.from(cache.get(key(s))!), `${dtype} sample ${s}`);
    const st = cache.stats();
    assert.ok(st.diskHits >= 8 && st.memoryHits >= 2, JSON.stringify(st));
    assert.is(st.misses, 0);
    cache.destroy();
  }
});

test('cache: copyTo counts a miss, and drops an entry of another length as corrupt', () => {
  const dir = tmp();
  const cache = new ActivationCache({ memoryBytes: 1024, dir, dtype: 'f32' });
  const dest = new Float32Array(256);
  assert.not.ok(cache.copyTo({ fingerprint: fp, sample: 9, layer: 0 }, dest, 0, 256));
  cache.put({ fingerprint: fp, sample: 1, layer: 0 }, values(128, 1)); // in memory
  cache.put({ fingerprint: fp, sample: 2, layer: 0 }, values(512, 2)); // larger than the tier: on disk
  assert.not.ok(cache.copyTo({ fingerprint: fp, sample: 1, layer: 0 }, dest, 0, 256));
  assert.not.ok(cache.copyTo({ fingerprint: fp, sample: 2, layer: 0 }, dest, 0, 256));
  assert.equal(Array.from(dest), new Array(256).fill(0), 'nothing written');
  const st = cache.stats();
  assert.is(st.misses, 3);
  assert.is(st.corrupt, 2);
  assert.is(st.memoryEntries + st.diskEntries, 0, 'both dropped');
  cache.destroy();
});

test.run();
