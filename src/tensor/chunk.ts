/**
 * Splitting a large encoded message into chunks and describing each chunk. A chunk header names
 * the transfer, the chunk's index among `count`, the transfer's total length, the chunk's byte
 * offset and a crc32 of the chunk's bytes; together they cover every byte of the whole message.
 */
import * as zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { MessageRejected } from './rejected.ts';

export interface ChunkHeader {
  /** transfer id, unique per sender and message */ transfer: string;
  index: number;
  count: number;
  /** byte length of the whole message */ total: number;
  /** byte offset of this chunk in the whole message */ offset: number;
  /** crc32 of this chunk's bytes */ crc: number;
}

export interface Chunk {
  header: ChunkHeader;
  bytes: Uint8Array;
}

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE), as zlib computes it; native zlib.crc32 where Node has it (>= 20.15). */
export function crc32(bytes: Uint8Array): number {
  const native = (zlib as { crc32?: (b: Uint8Array) => number }).crc32;
  if (native) return native(bytes) >>> 0;
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

let transferCounter = 0;
const transferPrefix = randomBytes(6).toString('hex');

/** A transfer id unique across processes (random prefix) and within this one (counter). */
export function newTransferId(): string {
  return `${transferPrefix}${(transferCounter++).toString(36)}`;
}

/** Splits `bytes` into views of at most `chunkBytes` (no copy). An empty input gives one empty chunk. */
export function splitChunks(bytes: Uint8Array, chunkBytes: number, transfer = newTransferId()): Chunk[] {
  return [...segmentChunks([bytes], chunkBytes, transfer)];
}

/**
 * Splits a message given as ordered segments (e.g. EncodedMessage.segments()) into chunks of
 * `chunkBytes` (the last one shorter), one at a time, each made and checksummed only when asked
 * for: a sender can let other work run between the chunks of a large message. A chunk that lies
 * inside one segment is a view of it (no copy); one that spans several (small headers and tensors
 * between large ones) is copied together. So a message takes as few chunks as its size allows however many pieces it is made of: a reply
 * may take only so many messages (the server's allow_responses), and each costs a publish.
 */
export function* segmentChunks(segments: readonly Uint8Array[], chunkBytes: number, transfer = newTransferId()): Generator<Chunk> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) throw new RangeError(`chunk size ${chunkBytes} must be a positive integer`);
  const total = segments.reduce((n, s) => n + s.length, 0);
  // Every chunk but the last is full, so the count is known before the first one is made.
  const count = Math.max(1, Math.ceil(total / chunkBytes));
  let index = 0,
    offset = 0;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const take = (): Chunk => {
    let bytes: Uint8Array;
    if (pending.length === 1) bytes = pending[0]!;
    else {
      bytes = new Uint8Array(pendingBytes);
      let at = 0;
      for (const p of pending) {
        bytes.set(p, at);
        at += p.length;
      }
    }
    const chunk = { header: { transfer, index: index++, count, total, offset, crc: crc32(bytes) }, bytes };
    offset += pendingBytes;
    pending = [];
    pendingBytes = 0;
    return chunk;
  };
  for (const seg of segments) {
    let at = 0;
    while (at < seg.length) {
      const n = Math.min(chunkBytes - pendingBytes, seg.length - at);
      pending.push(seg.subarray(at, at + n));
      pendingBytes += n;
      at += n;
      if (pendingBytes === chunkBytes) yield take();
    }
  }
  if (pendingBytes > 0 || index === 0) yield take();
}

/** One-line text form, used as a message header value: "transfer index count total offset crc". */
export function formatChunkHeader(h: ChunkHeader): string {
  return `${h.transfer} ${h.index} ${h.count} ${h.total} ${h.offset} ${h.crc}`;
}

/** Parses and checks a chunk header. @throws MessageRejected('chunk') naming the bad field. */
export function parseChunkHeader(text: string): ChunkHeader {
  const parts = text.split(' ');
  if (parts.length !== 6) throw new MessageRejected('chunk', `chunk header has ${parts.length} fields, expected 6`);
  const [transfer, ...nums] = parts as [string, ...string[]];
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(transfer)) throw new MessageRejected('chunk', 'chunk transfer id is malformed');
  const names = ['index', 'count', 'total', 'offset', 'crc'] as const;
  const v: Record<string, number> = {};
  names.forEach((name, i) => {
    const s = nums[i]!;
    const n = /^\d{1,15}$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(n)) throw new MessageRejected('chunk', `chunk field '${name}' is not a non-negative integer`);
    v[name] = n;
  });
  const h = { transfer, index: v.index!, count: v.count!, total: v.total!, offset: v.offset!, crc: v.crc! };
  if (h.count < 1 || h.index >= h.count) throw new MessageRejected('chunk', `chunk index ${h.index} outside count ${h.count}`);
  if (h.offset > h.total) throw new MessageRejected('chunk', `chunk offset ${h.offset} beyond total ${h.total}`);
  if (h.crc > 0xffffffff) throw new MessageRejected('chunk', 'chunk crc exceeds 32 bits');
  return h;
}
