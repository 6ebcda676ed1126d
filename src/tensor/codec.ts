/**
 * msgpackr extension for WireTensor. Layout of the extension payload (type TENSOR_EXT):
 *
 *   u8 layout version (1) | u8 dtype code | u8 rank | u8 pad p | rank x u32 LE dims |
 *   p zero bytes | element bytes (little-endian) | 7-p slack bytes
 *
 * The pad puts the element bytes on an 8-byte boundary of the packed message, so a receiver whose
 * message buffer starts aligned (nats.js assembles large messages into a fresh buffer; chunk
 * reassembly allocates one) gets a typed array *view* on the received bytes: no copy.
 * The host must be little-endian (checked at load): element bytes are written as they sit in memory.
 *
 * `encodeMessage` leaves the element bytes of large tensors out of the packed buffer and
 * references them in place (an insertion point where they belong), so a chunked send never copies
 * them and msgpackr's buffer holds only headers: a message of many large tensors (a whole model's
 * parameters and optimiser state) never makes it grow and copy itself. Only a message sent whole
 * is assembled contiguously, once.
 */
import { Packr, Unpackr, addExtension } from 'msgpackr';
import { endianness } from 'node:os';
import { bytesPerElement, dtypeCode, dtypeFromCode, typedArrayCtor, type DType, type TensorData } from './dtype.ts';
import { MessageRejected } from './rejected.ts';
import { MAX_RANK, WireTensor } from './wire-tensor.ts';

if (endianness() !== 'LE') throw new Error('charon tensor codec needs a little-endian host');

/** msgpack extension type number of a tensor. */
export const TENSOR_EXT = 0x54;
const LAYOUT = 1;
const FIXED = 4;
const SLACK = 7;

/** Tensors at least this large are referenced in place by encodeMessage instead of copied. */
const HOLE_MIN_BYTES = 64 * 1024;
/** Tensors at least this large always decode as views when aligned. */
const VIEW_MIN_BYTES = 64 * 1024;
/** After a message this large, msgpackr gets a fresh small buffer so later small messages do not each allocate a huge one. */
const SHRINK_AFTER_BYTES = 1024 * 1024;

interface Hole {
  target: Uint8Array;
  at: number;
  bytes: Uint8Array;
}
/** Non-null only during encodeMessage: where large tensors' bytes are to be inserted. */
let holes: Hole[] | null = null;
/** Bytes inserted so far in the message encodeMessage is packing (they shift later alignment). */
let inserted = 0;

/** How decoded tensors got their typed array: a view on the message, or a copy (misaligned input). */
export const codecStats = { views: 0, copies: 0 };

addExtension({
  Class: WireTensor,
  type: TENSOR_EXT,
  // Writes the ext32 header itself so it knows the absolute position, hence the alignment pad.
  pack(t: WireTensor, allocateForWrite: (size: number) => { target: Uint8Array; position: number }) {
    const rank = t.shape.length;
    const nbytes = t.byteLength;
    const extLen = FIXED + 4 * rank + SLACK + nbytes;
    const hole = holes !== null && nbytes >= HOLE_MIN_BYTES;
    const { target, position } = allocateForWrite(6 + extLen - (hole ? nbytes : 0));
    let p = position;
    target[p++] = 0xc9;
    target[p++] = extLen >>> 24;
    target[p++] = (extLen >>> 16) & 0xff;
    target[p++] = (extLen >>> 8) & 0xff;
    target[p++] = extLen & 0xff;
    target[p++] = TENSOR_EXT;
    const dimsAt = p + FIXED;
    const dataAt0 = dimsAt + 4 * rank;
    const pad = (8 - ((target.byteOffset + dataAt0 + (holes ? inserted : 0)) % 8)) % 8;
    target[p] = LAYOUT;
    target[p + 1] = dtypeCode(t.dtype);
    target[p + 2] = rank;
    target[p + 3] = pad;
    for (let i = 0; i < rank; i++) {
      const d = t.shape[i]!,
        q = dimsAt + 4 * i;
      target[q] = d & 0xff;
      target[q + 1] = (d >>> 8) & 0xff;
      target[q + 2] = (d >>> 16) & 0xff;
      target[q + 3] = d >>> 24;
    }
    target.fill(0, dataAt0, dataAt0 + pad);
    if (hole) {
      holes!.push({ target, at: dataAt0 + pad, bytes: t.bytes() });
      inserted += nbytes;
      target.fill(0, dataAt0 + pad, dataAt0 + SLACK);
      return;
    }
    target.set(t.bytes(), dataAt0 + pad);
    target.fill(0, dataAt0 + pad + nbytes, dataAt0 + SLACK + nbytes);
  },
  unpack(payload: Uint8Array) {
    return readTensor(payload);
  },
} as unknown as Parameters<typeof addExtension>[0]);

function readTensor(payload: Uint8Array): WireTensor {
  if (payload.length < FIXED + SLACK)
    throw new MessageRejected('malformed', `tensor extension of ${payload.length} bytes is shorter than its header`);
  const [layout, code, rank, pad] = [payload[0]!, payload[1]!, payload[2]!, payload[3]!];
  if (layout !== LAYOUT) throw new MessageRejected('malformed', `tensor layout ${layout} is not ${LAYOUT}`);
  const dtype = dtypeFromCode(code);
  if (!dtype) throw new MessageRejected('malformed', `tensor dtype code ${code} is unknown`);
  if (rank > MAX_RANK) throw new MessageRejected('shape', `tensor rank ${rank} exceeds ${MAX_RANK}`);
  if (pad > SLACK) throw new MessageRejected('malformed', `tensor pad ${pad} exceeds ${SLACK}`);
  const dataLen = payload.length - FIXED - 4 * rank - SLACK;
  if (dataLen < 0) throw new MessageRejected('malformed', `tensor extension too short for rank ${rank}`);
  const shape: number[] = [];
  let size = 1;
  for (let i = 0; i < rank; i++) {
    const q = FIXED + 4 * i;
    const d = (payload[q]! | (payload[q + 1]! << 8) | (payload[q + 2]! << 16)) + payload[q + 3]! * 0x1000000;
    shape.push(d);
    size *= d;
  }
  const bpe = bytesPerElement(dtype);
  if (size * bpe !== dataLen) {
    throw new MessageRejected('shape', `tensor ${dtype}[${shape.join(', ')}] needs ${size * bpe} bytes, message carries ${dataLen}`);
  }
  return new WireTensor(dtype, shape, elements(dtype, payload, FIXED + 4 * rank + pad, size));
}

function elements(dtype: DType, payload: Uint8Array, at: number, size: number): TensorData {
  const Ctor = typedArrayCtor(dtype);
  const offset = payload.byteOffset + at;
  const nbytes = size * Ctor.BYTES_PER_ELEMENT;
  // A view pins its whole underlying buffer (for a small message, the client's socket read), so
  // small tensors are viewed only when they are most of that buffer.
  const worthAView = nbytes >= VIEW_MIN_BYTES || nbytes * 4 >= payload.buffer.byteLength;
  if (offset % Ctor.BYTES_PER_ELEMENT === 0 && worthAView) {
    codecStats.views++;
    return new Ctor(payload.buffer, offset, size);
  }
  // A typed array view needs an element-aligned offset; this message buffer does not give one
  // (e.g. a small message sliced out of a socket read), or the tensor is small: copied once.
  codecStats.copies++;
  const out = new Ctor(size);
  new Uint8Array(out.buffer).set(payload.subarray(at, at + size * Ctor.BYTES_PER_ELEMENT));
  return out;
}

// Records/structures would make decoding depend on earlier messages; every message stands alone.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/** msgpack bytes of `value`, WireTensors included. The result stays valid (never reused). */
export function packValue(value: unknown): Uint8Array {
  const out = packr.pack(value);
  if (out.length > SHRINK_AFTER_BYTES) packr.useBuffer(Buffer.allocUnsafeSlow(64 * 1024));
  return out;
}

/**
 * An encoded message whose large tensors' bytes are referenced, not copied: `buf` holds the rest,
 * and each insertion's bytes belong at its offset of `buf`. `segments()` gives the message as
 * ordered views (no copy); `bytes()` gives it contiguous (copies everything once).
 * The referenced tensors must not change until the message has been sent.
 */
export class EncodedMessage {
  private whole: Uint8Array | null;
  readonly length: number;
  constructor(
    private readonly buf: Uint8Array,
    private readonly inserts: ReadonlyArray<{ offset: number; bytes: Uint8Array }>,
  ) {
    this.whole = inserts.length === 0 ? buf : null;
    this.length = inserts.reduce((n, h) => n + h.bytes.length, buf.length);
  }

  bytes(): Uint8Array {
    if (!this.whole) {
      // A fresh buffer starts 8-aligned, as the tensors' alignment pads assume.
      const out = new Uint8Array(this.length);
      let at = 0;
      for (const s of this.segments()) {
        out.set(s, at);
        at += s.length;
      }
      this.whole = out;
    }
    return this.whole;
  }

  segments(): Uint8Array[] {
    if (this.whole) return [this.whole];
    const out: Uint8Array[] = [];
    let at = 0;
    for (const h of this.inserts) {
      if (h.offset > at) out.push(this.buf.subarray(at, h.offset));
      if (h.bytes.length) out.push(h.bytes);
      at = h.offset;
    }
    if (at < this.buf.length) out.push(this.buf.subarray(at));
    return out;
  }
}

/** Encodes `value` like packValue, but references large tensors' bytes instead of copying them. */
export function encodeMessage(value: unknown): EncodedMessage {
  const first = packWithInserts(value);
  if (first.message) return first.message;
  // msgpackr moved its buffer while packing (it grew): insertion points recorded before the move
  // are not where we recorded them. Packed again into a buffer that holds the whole (the inserts
  // take no room in it), nothing moves.
  packr.useBuffer(Buffer.allocUnsafeSlow(first.packedBytes + 64 * 1024));
  return packWithInserts(value).message ?? new EncodedMessage(packValue(value), []);
}

function packWithInserts(value: unknown): { message: EncodedMessage | null; packedBytes: number } {
  holes = [];
  inserted = 0;
  let out: Uint8Array;
  let found: Hole[];
  try {
    out = packr.pack(value);
  } finally {
    found = holes;
    holes = null;
  }
  if (out.length > SHRINK_AFTER_BYTES) packr.useBuffer(Buffer.allocUnsafeSlow(64 * 1024));
  const placed: { offset: number; bytes: Uint8Array }[] = [];
  for (const h of found) {
    const offset = h.target.byteOffset + h.at - out.byteOffset;
    if (h.target.buffer !== out.buffer || offset < 0 || offset > out.length) return { message: null, packedBytes: out.length };
    placed.push({ offset, bytes: h.bytes });
  }
  return { message: new EncodedMessage(out, placed), packedBytes: out.length };
}

/** Decodes msgpack bytes; tensors become WireTensors viewing `bytes` when aligned. Throws msgpackr errors as-is. */
export function unpackValue(bytes: Uint8Array): unknown {
  return unpackr.unpack(bytes);
}
