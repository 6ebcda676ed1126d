import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32ToBf16Bits, f32ToF16Bits, openSafetensors, writeSafetensors } from '../src/model/safetensors.ts';
import { tempDir } from './fixtures/hf-model.ts';

const values = Float32Array.from([0, -0, 1, -2.5, 65504, 1e-8, 6.1e-5, 3.25, -1e5, 0.1]);

test('model-safetensors: F32 round-trips bit-exactly with metadata and an aligned header', () => {
  const file = join(tempDir(), 'a.safetensors');
  writeSafetensors(
    file,
    { 'x.w': { data: values, shape: [2, 5] }, empty: { data: new Float32Array(0), shape: [0, 3] } },
    { metadata: { step: '7', format: 'pt' } },
  );
  const src = openSafetensors(file);
  assert.equal(src.names, ['x.w', 'empty']);
  assert.equal(src.metadata, { step: '7', format: 'pt' });
  assert.equal(src.entry('x.w').shape, [2, 5]);
  assert.equal(Array.from(src.read('x.w')), Array.from(values));
  assert.is(src.read('empty').length, 0);
  assert.is(Number(readFileSync(file).readBigUInt64LE(0)) % 8, 0);
});

test('model-safetensors: F16 and BF16 store rounded values and read back as f32', () => {
  const dir = tempDir();
  writeSafetensors(join(dir, 'h.safetensors'), { v: { data: values, shape: [10] } }, { dtype: 'F16' });
  writeSafetensors(join(dir, 'b.safetensors'), { v: { data: values, shape: [10] } }, { dtype: 'BF16' });
  const h = openSafetensors(join(dir, 'h.safetensors')),
    b = openSafetensors(join(dir, 'b.safetensors'));
  assert.is(h.entry('v').dtype, 'F16');
  assert.is(h.entry('v').byteLength, 20);
  const hv = h.read('v'),
    bv = b.read('v');
  assert.equal(Array.from(hv.subarray(0, 5)), [0, -0, 1, -2.5, 65504]);
  assert.is(hv[8], -Infinity, 'beyond the f16 range');
  values.forEach((v, i) => {
    if (i !== 8) assert.ok(Math.abs(hv[i]! - v) <= Math.abs(v) * 2 ** -11 + 2 ** -25, `f16 ${v} -> ${hv[i]}`);
    assert.ok(Math.abs(bv[i]! - v) <= Math.abs(v) * 2 ** -8, `bf16 ${v} -> ${bv[i]}`);
  });
});

test('model-safetensors: half-precision bit patterns', () => {
  assert.is(f32ToF16Bits(1), 0x3c00);
  assert.is(f32ToF16Bits(-2), 0xc000);
  assert.is(f32ToF16Bits(65504), 0x7bff);
  assert.is(f32ToF16Bits(1e6), 0x7c00);
  assert.is(f32ToF16Bits(2 ** -24), 0x0001);
  assert.is(f32ToF16Bits(1 + 2 ** -11), 0x3c00, 'ties round to even');
  assert.is(f32ToF16Bits(NaN) & 0x7e00, 0x7e00);
  assert.is(f32ToBf16Bits(1), 0x3f80);
  assert.is(f32ToBf16Bits(-0.5), 0xbf00);
});

test.run();
