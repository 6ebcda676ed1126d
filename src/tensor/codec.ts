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
    const { target, position } = allocateForWrite(6 + extLen);
    let p = position;
    target[p++] = 0xc9;
    target[p++] = extLen >>> 24; target[p++] = (extLen >>> 16) & 0xff; target[p++] = (extLen >>> 8) & 0xff; target[p++] = extLen & 0xff;
    target[p++] = TENSOR_EXT;
    const dimsAt = p + FIXED;
    const dataAt0 = dimsAt + 4 * rank;
    const pad = (8 - ((target.byteOffset + dataAt0) % 8)) % 8;
    target[p] = LAYOUT; target[p + 1] = dtypeCode(t.dtype); target[p + 2] = rank; target[p + 3] = pad;
    for (let i = 0; i < rank; i++) {
      const d = t.shape[i]!, q = dimsAt + 4 * i;
      target[q] = d & 0xff; target[q + 1] = (d >>> 8) & 0xff; target[q + 2] = (d >>> 16) & 0xff; target[q + 3] = d >>> 24;
    }
    target.fill(0, dataAt0, dataAt0 + pad);
    target.set(t.bytes(), dataAt0 + pad);
    target.fill(0, dataAt0 + pad + nbytes, dataAt0 + extLen - FIXED - 4 * rank);
  },
  unpack(payload: Uint8Array) {
    return readTensor(payload);
  },
} as unknown as Parameters<typeof addExtension>[0]);

function readTensor(payload: Uint8Array): WireTensor {
  if (payload.length < FIXED + SLACK) throw new MessageRejected('malformed', `tensor extension of ${payload.length} bytes is shorter than its header`);
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
  if (offset % Ctor.BYTES_PER_ELEMENT === 0) {
    codecStats.views++;
    return new Ctor(payload.buffer, offset, size);
  }
  // A typed array view needs an element-aligned offset; this message buffer does not give one
  // (e.g. a small message sliced out of a socket read), so the elements are copied once.
  codecStats.copies++;
  const out = new Ctor(size);
  new Uint8Array(out.buffer).set(payload.subarray(at, at + size * Ctor.BYTES_PER_ELEMENT));
  return out;
}

// Records/structures would make decoding depend on earlier messages; every message stands alone.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/** msgpack bytes of `value`, WireTensors included. The result stays valid (never reused). */
export function packValue(value: unknown): Uint8Array { return packr.pack(value); }

/** Decodes msgpack bytes; tensors become WireTensors viewing `bytes` when aligned. Throws msgpackr errors as-is. */
export function unpackValue(bytes: Uint8Array): unknown { return unpackr.unpack(bytes); }
