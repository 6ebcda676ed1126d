import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import {
  DTYPES,
  MessageRejected,
  PROTOCOL_VERSION,
  Reassembler,
  WireTensor,
  bytesPerElement,
  decodeEnvelope,
  encodeEnvelope,
  formatChunkHeader,
  parseChunkHeader,
  splitChunks,
  typedArrayCtor,
  type Envelope,
} from '../src/tensor/index.ts';

/** Cases per decoder property (the envelope decoder gets more: random, mutated and malicious inputs). */
const RUNS = 10_000;
const expect = { run: 'run1', maxBytes: 64 * 1024 };

/** Runs `decode`; anything but a MessageRejected escaping it is a failure. */
function refusedOrDecoded<T>(decode: () => T): { ok: true; value: T } | { ok: false; err: MessageRejected } {
  try {
    return { ok: true, value: decode() };
  } catch (err) {
    if (err instanceof MessageRejected) return { ok: false, err };
    throw err;
  }
}

const env = (body: unknown): Envelope => ({
  v: PROTOCOL_VERSION,
  run: 'run1',
  from: 'd',
  gen: 0,
  step: 1,
  mb: 0,
  id: 'd-1',
  kind: 'fwd',
  body,
});
const valid = encodeEnvelope(env({ rank: 0, ids: [1, 2], t: new WireTensor('float32', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6])) }));

test('fuzz envelope: random bytes never crash the decoder', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      refusedOrDecoded(() => decodeEnvelope(bytes, expect));
    }),
    { numRuns: RUNS },
  );
});

test('fuzz envelope: a valid envelope truncated, with bytes flipped or inserted, is refused or decoded whole', () => {
  const mutated = fc.oneof(
    fc.nat(valid.length - 1).map((cut) => valid.subarray(0, cut)),
    fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => {
      const b = Uint8Array.from(valid);
      for (const [at, v] of flips) b[at] = v;
      return b;
    }),
    fc.tuple(fc.nat(valid.length), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, extra]) => {
      const b = new Uint8Array(valid.length + extra.length);
      b.set(valid.subarray(0, at));
      b.set(extra, at);
      b.set(valid.subarray(at), at + extra.length);
      return b;
    }),
  );
  fc.assert(
    fc.property(mutated, (bytes) => {
      const r = refusedOrDecoded(() => decodeEnvelope(bytes, expect));
      if (!r.ok) return;
      // Whatever decodes has every tensor consistent with its shape and dtype.
      const t = (r.value.body as { t?: unknown }).t;
      if (t instanceof WireTensor)
        assert.is(
          t.data.length,
          t.shape.reduce((a, b) => a * b, 1),
        );
    }),
    { numRuns: RUNS },
  );
});

/** msgpack headers that declare far more than the message carries: array32, map32, str32, bin32, ext32. */
const hugeHeaders = fc
  .tuple(fc.constantFrom(0xdd, 0xdf, 0xdb, 0xc6, 0xc9), fc.integer({ min: 1 << 20, max: 0xffffffff }))
  .map(([tag, n]) => {
    const b = new Uint8Array(5 + 8);
    b[0] = tag;
    new DataView(b.buffer).setUint32(1, n);
    return b;
  });

test('fuzz envelope: declared lengths beyond the message and deep nesting are refused before anything is allocated', () => {
  const before = process.memoryUsage().heapUsed;
  fc.assert(
    fc.property(hugeHeaders, fc.boolean(), (header, wrapped) => {
      // Inside the envelope's body, or as the whole message.
      const bytes = wrapped ? Uint8Array.from([0x81, 0xa4, 0x62, 0x6f, 0x64, 0x79, ...header]) : header;
      const r = refusedOrDecoded(() => decodeEnvelope(bytes, expect));
      assert.ok(!r.ok && r.err.reason === 'truncated', r.ok ? 'decoded' : r.err.message);
    }),
    { numRuns: 2000 },
  );
  assert.ok(process.memoryUsage().heapUsed - before < 256 * 1024 * 1024, 'the refusals allocated hundreds of MB');
  fc.assert(
    fc.property(fc.integer({ min: 65, max: 20_000 }), fc.constantFrom(0x91, 0x81), (depth, open) => {
      // [[[[...]]]] or {a: {a: ...}} nested `depth` times.
      const bytes = new Uint8Array(open === 0x91 ? depth + 1 : 3 * depth + 1);
      for (let i = 0; i < depth; i++) open === 0x91 ? (bytes[i] = 0x91) : bytes.set([0x81, 0xa1, 0x61], 3 * i);
      const r = refusedOrDecoded(() => decodeEnvelope(bytes, expect));
      assert.ok(!r.ok && /nesting deeper/.test(r.err.message), r.ok ? 'decoded' : r.err.message);
    }),
    { numRuns: 200 },
  );
});

test('fuzz tensors: shape x dtype disagreeing with the byte length is refused by reason, never read out of bounds', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...DTYPES),
      fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 4 }),
      fc.nat(64),
      (dtype, shape, count) => {
        // A well-formed tensor of `count` elements whose declared dims are then overwritten.
        const t = new WireTensor(dtype, [count], new (typedArrayCtor(dtype))(count));
        const bytes = encodeEnvelope(env({ t }));
        const at = bytes.indexOf(0x54, 8) + 1; // tensor extension payload: layout, dtype, rank, pad, dims
        if (at <= 0 || bytes[at] !== 1) return;
        const forged = new Uint8Array(bytes.length + 4 * shape.length);
        forged.set(bytes.subarray(0, at + 2));
        forged[at + 2] = shape.length;
        forged[at + 3] = bytes[at + 3]!;
        shape.forEach((d, i) => new DataView(forged.buffer).setUint32(at + 4 + 4 * i, d, true));
        forged.set(bytes.subarray(at + 8), at + 4 + 4 * shape.length);
        const r = refusedOrDecoded(() => decodeEnvelope(forged, expect));
        if (r.ok) {
          const got = (r.value.body as { t: WireTensor }).t;
          assert.is(got.data.byteLength, got.shape.reduce((a, b) => a * b, 1) * bytesPerElement(got.dtype));
        }
      },
    ),
    { numRuns: RUNS },
  );
});

test('fuzz chunks: random headers never crash the parser; reassembly never holds more than its budget', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (text) => {
      refusedOrDecoded(() => parseChunkHeader(text));
    }),
    { numRuns: RUNS },
  );
  const budget = 1 << 20;
  const numbers = fc.oneof(fc.nat(64), fc.nat(budget * 2), fc.constant(999_999_999_999_999));
  const chunk = fc.record({
    transfer: fc.constantFrom('a', 'b', 'c'),
    index: numbers,
    count: numbers,
    total: numbers,
    offset: numbers,
    crc: fc.nat(),
    bytes: fc.uint8Array({ maxLength: 64 }),
  });
  fc.assert(
    fc.property(fc.array(chunk, { minLength: 1, maxLength: 10 }), (chunks) => {
      const r = new Reassembler({ maxBytes: budget, timeoutMs: 60_000, maxMessageBytes: budget });
      for (const c of chunks) {
        const header = refusedOrDecoded(() => parseChunkHeader(formatChunkHeader(c)));
        if (!header.ok) continue;
        const whole = refusedOrDecoded(() => r.add(c.transfer, header.value, c.bytes));
        if (whole.ok && whole.value) assert.is(whole.value.length, header.value.total);
        assert.ok(r.pendingBytes <= budget, `${r.pendingBytes} bytes held`);
      }
    }),
    { numRuns: RUNS },
  );
  // And real chunks still reassemble, whatever their order.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 4096 }), fc.integer({ min: 1, max: 512 }), (bytes, size) => {
      const r = new Reassembler({ maxBytes: budget, timeoutMs: 60_000, maxMessageBytes: budget });
      const parts = splitChunks(bytes, size).reverse();
      let out: Uint8Array | null = null;
      for (const p of parts) out = r.add('t', parseChunkHeader(formatChunkHeader(p.header)), p.bytes) ?? out;
      assert.equal(out, bytes);
    }),
    { numRuns: 500 },
  );
});

test.run();
