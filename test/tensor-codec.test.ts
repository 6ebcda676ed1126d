import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  DTYPES,
  WireTensor,
  typedArrayCtor,
  encodeEnvelope,
  encodeEnvelopeMessage,
  decodeEnvelope,
  PROTOCOL_VERSION,
  MessageRejected,
  splitChunks,
  segmentChunks,
  parseChunkHeader,
  packValue,
  formatChunkHeader,
  crc32,
  Reassembler,
  codecStats,
  type DType,
  type Envelope,
  type RejectReason,
} from '../src/tensor/index.ts';

let seed = 12345;
function rand(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed >>> 16;
}

function randomTensor(dtype: DType, shape: number[]): WireTensor {
  const Ctor = typedArrayCtor(dtype);
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Ctor(size);
  const bytes = new Uint8Array(data.buffer);
  for (let i = 0; i < bytes.length; i++) bytes[i] = dtype === 'bool' ? 0 : rand() & 0xff;
  if (dtype === 'bool') for (let i = 0; i < size; i++) data[i] = rand() & 1;
  return new WireTensor(dtype, shape, data);
}

function env(body: unknown, over: Partial<Envelope> = {}): Envelope {
  return { v: PROTOCOL_VERSION, run: 'run1', from: 'dev-a', gen: 2, step: 3, mb: 1, id: 'dev-a-1', kind: 'fwd', body, ...over };
}

/** Decodes a copy that starts at byte 0 of its own buffer, as a received message does. */
function received(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function sameBits(a: WireTensor, b: WireTensor): void {
  assert.is(b.dtype, a.dtype);
  assert.equal([...b.shape], [...a.shape]);
  assert.ok(Buffer.from(a.bytes()).equals(Buffer.from(b.bytes())), `${a.dtype}[${a.shape}] bytes differ`);
}

function rejects(fn: () => unknown, reason: RejectReason): void {
  try {
    fn();
  } catch (err) {
    assert.instance(err, MessageRejected);
    assert.is((err as MessageRejected).reason, reason, String(err));
    assert.is((err as MessageRejected).retryable, false);
    return;
  }
  assert.unreachable(`expected rejection '${reason}'`);
}

const SHAPES = [[], [0], [1], [7], [3, 5], [2, 0, 4], [2, 3, 4, 5], [1, 1, 1, 1, 1, 1, 1, 2]];

test('tensor codec: every dtype and shape round-trips bit-exactly', () => {
  for (const dtype of DTYPES) {
    for (const shape of SHAPES) {
      const t = randomTensor(dtype, shape);
      const out = decodeEnvelope<{ t: WireTensor }>(received(encodeEnvelope(env({ t }))), { run: 'run1' });
      sameBits(t, out.body.t);
      assert.instance(out.body.t.data, typedArrayCtor(dtype));
      assert.equal([out.gen, out.step, out.mb], [2, 3, 1]);
    }
  }
});

test('tensor codec: NaN payloads, infinities and negative zero keep their bits', () => {
  const f32 = new Uint32Array([0x7fc00001, 0xffc12345, 0x7f800001, 0x7f800000, 0x80000000]);
  const f64 = new Uint32Array([0x00000001, 0x7ff80000, 0xdeadbeef, 0xfff00000, 0, 0x80000000]);
  const a = new WireTensor('float32', [5], new Float32Array(f32.buffer));
  const b = new WireTensor('float64', [3], new Float64Array(f64.buffer));
  const h = new WireTensor('float16', [2], new Uint16Array([0x7e01, 0xfc00]));
  const out = decodeEnvelope<{ a: WireTensor; b: WireTensor; h: WireTensor }>(received(encodeEnvelope(env({ a, b, h }))), { run: 'run1' });
  sameBits(a, out.body.a);
  sameBits(b, out.body.b);
  sameBits(h, out.body.h);
});

test('tensor codec: decoding an aligned message makes views, not copies; a misaligned one or a small tensor copies', () => {
  const t = randomTensor('float64', [1000]);
  const bytes = encodeEnvelope(env({ t }));
  const before = { ...codecStats };
  const view = decodeEnvelope<{ t: WireTensor }>(received(bytes), { run: 'run1' }).body.t;
  assert.is(codecStats.views, before.views + 1);
  assert.is(codecStats.copies, before.copies);
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const copy = decodeEnvelope<{ t: WireTensor }>(shifted.subarray(1), { run: 'run1' }).body.t;
  assert.is(codecStats.copies, before.copies + 1);
  sameBits(t, view);
  sameBits(t, copy);
  // a small tensor in a much larger received buffer is copied, so it does not pin that buffer
  const small = randomTensor('float32', [4]);
  const one = encodeEnvelope(env({ small }));
  const socketRead = new Uint8Array(64 * 1024);
  socketRead.set(one);
  const copies = codecStats.copies;
  const got = decodeEnvelope<{ small: WireTensor }>(socketRead.subarray(0, one.length), { run: 'run1' }).body.small;
  assert.is(codecStats.copies, copies + 1);
  assert.is.not(got.data.buffer, socketRead.buffer);
  sameBits(small, got);
});

test('tensor codec: large tensors are referenced in place, and segments equal the contiguous bytes', () => {
  const big = randomTensor('float32', [100_000]);
  const body = { a: big, small: randomTensor('int8', [5]), b: randomTensor('uint16', [40_000]), tail: 'after' };
  const msg = encodeEnvelopeMessage(env(body));
  const segs = msg.segments();
  assert.ok(
    segs.some((s) => s.buffer === big.data.buffer),
    'the big tensor is a segment of its own, not a copy',
  );
  const joined = Buffer.concat(segs);
  assert.is(joined.length, msg.length);
  assert.ok(joined.equals(Buffer.from(encodeEnvelope(env(body)))));
  const out = decodeEnvelope<typeof body>(received(msg.bytes()), { run: 'run1' });
  sameBits(big, out.body.a);
  sameBits(body.b, out.body.b);
  assert.is(out.body.tail, 'after');
  // a message that outgrows msgpackr's buffer after a large tensor is still encoded correctly
  const grown = { a: big, text: 'x'.repeat(3_000_000) };
  const g = decodeEnvelope<typeof grown>(received(Buffer.concat(encodeEnvelopeMessage(env(grown)).segments())), { run: 'run1' });
  sameBits(big, g.body.a);
  assert.is(g.body.text.length, 3_000_000);
});

test('tensor codec: nested bodies keep plain values and tensors', () => {
  const t = randomTensor('int32', [2, 2]);
  const out = decodeEnvelope<{ list: unknown[]; name: string }>(received(encodeEnvelope(env({ list: [1, 'x', { t }], name: 'n' }))), {
    run: 'run1',
  });
  assert.is(out.body.name, 'n');
  sameBits(t, (out.body.list[2] as { t: WireTensor }).t);
  assert.equal(out.body.list.slice(0, 2), [1, 'x']);
});

test('tensor codec: wrong version, run and kind are rejected with their reasons', () => {
  rejects(() => decodeEnvelope(encodeEnvelope(env({}, { v: 99 })), { run: 'run1' }), 'version');
  rejects(() => decodeEnvelope(encodeEnvelope(env({})), { run: 'other' }), 'run');
  rejects(() => decodeEnvelope(encodeEnvelope(env({})), { run: 'run1', kinds: ['bwd'] }), 'kind');
});

test('tensor codec: truncated, malformed and oversized messages are rejected', () => {
  const bytes = encodeEnvelope(env({ t: randomTensor('float32', [64]) }));
  for (const cut of [1, 10, 40, bytes.length - 1]) rejects(() => decodeEnvelope(bytes.subarray(0, cut), { run: 'run1' }), 'truncated');
  rejects(() => decodeEnvelope(new Uint8Array(0), { run: 'run1' }), 'truncated');
  rejects(() => decodeEnvelope(new Uint8Array([0xa1, 0x41]), { run: 'run1' }), 'malformed'); // a string, not a map
  rejects(() => decodeEnvelope(new Uint8Array([0x93, 1, 2, 3]), { run: 'run1' }), 'malformed'); // an array, not a map
  rejects(() => decodeEnvelope(bytes, { run: 'run1', maxBytes: 100 }), 'oversized');
});

test('tensor codec: field types and unknown fields are checked on both sides', () => {
  const base = env({}) as unknown as Record<string, unknown>;
  for (const patch of [
    { step: 'x' },
    { gen: -1 },
    { gen: 'two' },
    { mb: -2 },
    { step: 1.5 },
    { from: 7 },
    { id: '' },
    { kind: 'k'.repeat(300) },
    { extra: 1 },
  ]) {
    rejects(() => decodeEnvelope(packValue({ ...base, ...patch }), { run: 'run1' }), 'malformed');
  }
  const { body: _omitted, ...noBody } = base;
  rejects(() => decodeEnvelope(packValue(noBody), { run: 'run1' }), 'malformed');
  assert.throws(() => encodeEnvelope(env({}, { step: -1 })), /step/);
  assert.throws(() => encodeEnvelope(env({}, { run: '' })), /run/);
  assert.throws(() => encodeEnvelope({ ...env({}), extra: 1 } as unknown as Envelope), /extra/);
});

test('tensor codec: a shape that disagrees with the byte length is rejected as shape', () => {
  const t = new WireTensor('float32', [4], new Float32Array(4));
  const bytes = received(encodeEnvelope(env({ t })));
  // find the rank-1 dim (4, little-endian u32) right after the tensor header and claim 5 elements
  const at = findTensorHeader(bytes);
  bytes[at + 4] = 5;
  rejects(() => decodeEnvelope(bytes, { run: 'run1' }), 'shape');
  bytes[at + 4] = 4;
  bytes[at + 1] = 200; // unknown dtype code
  rejects(() => decodeEnvelope(bytes, { run: 'run1' }), 'malformed');
  bytes[at + 1] = 0;
  bytes[at + 2] = 9; // rank above the maximum
  rejects(() => decodeEnvelope(bytes, { run: 'run1' }), 'shape');
});

/** Offset of the tensor extension payload: after 0xc9, u32 length, type 0x54. */
function findTensorHeader(bytes: Uint8Array): number {
  for (let i = 0; i + 6 < bytes.length; i++) if (bytes[i] === 0xc9 && bytes[i + 5] === 0x54) return i + 6;
  throw new Error('no tensor extension found');
}

test('tensor codec: WireTensor refuses inconsistent shape and data', () => {
  assert.throws(() => new WireTensor('float32', [3], new Float32Array(2)), /needs 3 elements/);
  assert.throws(() => new WireTensor('float32', [-1], new Float32Array(0)), /non-negative/);
  assert.throws(() => new WireTensor('int32', [2], new Float32Array(2) as unknown as Int32Array), /cannot hold/);
});

test('chunking: split and reassemble in any order, checked by crc32', () => {
  const bytes = new Uint8Array(100_003).map((_, i) => (i * 31) & 0xff);
  const chunks = splitChunks(bytes, 10_000);
  assert.is(chunks.length, 11);
  assert.is(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  const r = new Reassembler({ maxBytes: 1 << 20, timeoutMs: 1000, maxMessageBytes: 1 << 20 });
  let whole: Uint8Array | null = null;
  for (const c of [...chunks].reverse()) whole = r.add('k', parseChunkHeader(formatChunkHeader(c.header)), c.bytes) ?? whole;
  assert.ok(whole && Buffer.from(whole).equals(Buffer.from(bytes)));
  assert.is(r.pendingBytes, 0);
});

test('chunking: a message of many pieces takes as few chunks as its size allows; a chunk inside one piece is a view', () => {
  // A model's state: many small tensors and headers between large ones.
  const body: Record<string, WireTensor> = {};
  for (let i = 0; i < 150; i++) body[`p${i}`] = randomTensor('float32', [i % 3 === 0 ? 40_000 : i % 3 === 1 ? 4096 : 64]);
  const msg = encodeEnvelopeMessage(env(body));
  const segs = msg.segments();
  assert.ok(segs.length > 100, `${segs.length} pieces`);
  const chunkBytes = 1 << 20;
  const chunks = [...segmentChunks(segs, chunkBytes)];
  assert.is(chunks.length, Math.ceil(msg.length / chunkBytes));
  assert.ok(chunks.slice(0, -1).every((c) => c.bytes.length === chunkBytes));
  const r = new Reassembler({ maxBytes: 64 << 20, timeoutMs: 1000, maxMessageBytes: 64 << 20 });
  let whole: Uint8Array | null = null;
  for (const c of chunks) whole = r.add('k', parseChunkHeader(formatChunkHeader(c.header)), c.bytes) ?? whole;
  assert.ok(whole && Buffer.from(whole).equals(Buffer.from(msg.bytes())));
  // one large tensor: its whole chunks are views of its own bytes
  const big = randomTensor('float32', [1_000_000]);
  const one = [...segmentChunks(encodeEnvelopeMessage(env({ big })).segments(), chunkBytes)];
  assert.ok(one.filter((c) => c.bytes.buffer === big.data.buffer).length >= 2, 'whole chunks of the tensor are not copied');
});

test('chunking: corrupt chunks and bad headers are rejected; the transfer is dropped', () => {
  const chunks = splitChunks(new Uint8Array(3000).fill(7), 1000);
  const r = new Reassembler({ maxBytes: 1 << 20, timeoutMs: 1000, maxMessageBytes: 1 << 20 });
  assert.is(r.add('k', chunks[0]!.header, chunks[0]!.bytes), null);
  const corrupt = new Uint8Array(chunks[1]!.bytes);
  corrupt[5]! ^= 1;
  rejects(() => r.add('k', chunks[1]!.header, corrupt), 'checksum');
  assert.is(r.pendingTransfers, 0);
  assert.is(r.add('k', chunks[2]!.header, chunks[2]!.bytes), null, 'later chunks of a dropped transfer are ignored');
  assert.is(r.pendingTransfers, 0);
  rejects(() => parseChunkHeader('abc 3 2 10 0 1'), 'chunk');
  rejects(() => parseChunkHeader('abc 0 1 10 0'), 'chunk');
  rejects(() => parseChunkHeader('a.b 0 1 10 0 1'), 'chunk');
  rejects(() => r.add('k2', { ...chunks[0]!.header, total: 1 << 21 }, chunks[0]!.bytes), 'oversized');
});

test('chunking: partial transfers are bounded in bytes (oldest dropped) and time out', () => {
  let now = 0;
  const r = new Reassembler({ maxBytes: 5000, timeoutMs: 100, maxMessageBytes: 1 << 20, now: () => now });
  const a = splitChunks(new Uint8Array(3000), 1000);
  const b = splitChunks(new Uint8Array(3000), 1000);
  r.add('a', a[0]!.header, a[0]!.bytes);
  r.add('b', b[0]!.header, b[0]!.bytes);
  assert.is(r.dropped.memory, 1);
  assert.is(r.pendingBytes, 3000);
  now = 200;
  assert.is(r.sweep(), 1);
  assert.is(r.dropped.timeout, 1);
  assert.is(r.pendingBytes, 0);
});

test.run();
