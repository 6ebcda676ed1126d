/** Tensor codec: wire tensors, envelopes, chunking. The only module importing msgpackr. */
export { DTYPES, bytesPerElement, isDType, typedArrayCtor, type DType, type TensorData, type TypedArrayOf } from './dtype.ts';
export { WireTensor, MAX_RANK, shapeSize } from './wire-tensor.ts';
export { MessageRejected, REJECT_REASONS, type RejectReason } from './rejected.ts';
export { TENSOR_EXT, codecStats, packValue, unpackValue, encodeMessage, EncodedMessage } from './codec.ts';
export {
  PROTOCOL_VERSION,
  MAX_MESSAGE_BYTES,
  MAX_NAME_CHARS,
  encodeEnvelope,
  encodeEnvelopeMessage,
  decodeEnvelope,
  type Envelope,
  type EnvelopeExpectation,
} from './envelope.ts';
export {
  crc32,
  newTransferId,
  splitChunks,
  segmentChunks,
  formatChunkHeader,
  parseChunkHeader,
  type Chunk,
  type ChunkHeader,
} from './chunk.ts';
export { Reassembler, type ReassemblyOptions } from './reassembly.ts';
