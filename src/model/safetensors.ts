/**
 * safetensors I/O: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {string: string}}`, then the
 * raw little-endian data. Reads F32, F16 and BF16 (returned as f32), one tensor at a time from
 * disk so a process reads only the tensors it holds; single files and sharded
 * `model.safetensors.index.json` directories. Writes F32 or F16 with string metadata.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ModelLoadError } from './errors.ts';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

const bytesPer: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

/** One tensor's header entry. `offset` is absolute in the file. */
export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  offset: number;
  byteLength: number;
  file: string;
}

/** A readable set of tensors: one file or the shards of an index. */
export interface TensorSource {
  /** Every tensor name, in header order. */
  readonly names: string[];
  readonly metadata: Record<string, string>;
  has(name: string): boolean;
  entry(name: string): TensorEntry;
  /** Reads one tensor from disk, converted to f32. */
  read(name: string): Float32Array;
  /** A short stable description of the headers and file sizes (for fingerprints). */
  readonly signature: string;
}

const halfTable = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1,
      e = (h >> 10) & 0x1f,
      m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** f32 -> IEEE half bits, round to nearest even; overflow goes to infinity. */
export function f32ToF16Bits(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1),
      halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is still correct
  return sign | h;
}

function decode(bytes: Uint8Array, dtype: SafetensorsDtype, count: number): Float32Array {
  // bytes is a fresh, 0-offset buffer: views read it directly (the platform is little-endian).
  if (dtype === 'F32') return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  const out = new Float32Array(count);
  if (dtype === 'F16') {
    for (let i = 0; i < count; i++) out[i] = halfTable[halves[i]!]!; // the table has every 16-bit pattern
  } else {
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) u[i] = halves[i]! << 16;
  }
  return out;
}

/** f32 -> bfloat16 bits, round to nearest even. */
export function f32ToBf16Bits(v: number): number {
  const x = new Uint32Array(new Float32Array([v]).buffer)[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return 0x7fc0; // NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Parses and validates one file's header; every problem names the file and the tensor. */
function readHeader(file: string): { entries: TensorEntry[]; metadata: Record<string, string>; size: number; headerText: string } {
  if (!existsSync(file)) throw new ModelLoadError(file, 'file not found');
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size < 8) throw new ModelLoadError(file, `not a safetensors file (${size} bytes, shorter than the 8-byte header length)`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 0 || 8 + headerLen > size)
      throw new ModelLoadError(file, `corrupt safetensors header: header length ${headerLen} does not fit a ${size}-byte file`);
    const hb = Buffer.alloc(headerLen);
    readSync(fd, hb, 0, headerLen, 8);
    const headerText = hb.toString('utf8');
    let header: unknown;
    try {
      header = JSON.parse(headerText);
    } catch (e) {
      throw new ModelLoadError(file, `corrupt safetensors header: not valid JSON (${(e as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header))
      throw new ModelLoadError(file, 'corrupt safetensors header: not a JSON object');
    const dataStart = 8 + headerLen,
      dataLen = size - dataStart;
    const entries: TensorEntry[] = [];
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = raw as Record<string, string>;
        continue;
      }
      const r = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof r !== 'object' || r === null) throw new ModelLoadError(file, 'corrupt safetensors header: entry is not an object', name);
      if (r.dtype !== 'F32' && r.dtype !== 'F16' && r.dtype !== 'BF16')
        throw new ModelLoadError(file, `unsupported dtype ${JSON.stringify(r.dtype)} (supported: F32, F16, BF16)`, name);
      if (!Array.isArray(r.shape) || !r.shape.every((d) => Number.isInteger(d) && d >= 0))
        throw new ModelLoadError(file, `corrupt safetensors header: bad shape ${JSON.stringify(r.shape)}`, name);
      const off = r.data_offsets;
      if (
        !Array.isArray(off) ||
        off.length !== 2 ||
        !off.every((o) => Number.isInteger(o) && o >= 0) ||
        off[1] < off[0] ||
        off[1] > dataLen
      ) {
        throw new ModelLoadError(
          file,
          `corrupt safetensors header: data_offsets ${JSON.stringify(off)} outside the ${dataLen}-byte data section`,
          name,
        );
      }
      const count = (r.shape as number[]).reduce((a, b) => a * b, 1);
      const byteLength = off[1] - off[0];
      if (byteLength !== count * bytesPer[r.dtype])
        throw new ModelLoadError(
          file,
          `corrupt safetensors header: shape [${r.shape}] of ${r.dtype} needs ${count * bytesPer[r.dtype]} bytes, data_offsets give ${byteLength}`,
          name,
        );
      entries.push({ name, dtype: r.dtype, shape: r.shape as number[], offset: dataStart + off[0], byteLength, file });
    }
    return { entries, metadata, size, headerText };
  } finally {
    closeSync(fd);
  }
}

function sourceOf(entries: TensorEntry[], metadata: Record<string, string>, signature: string): TensorSource {
  const byName = new Map(entries.map((e) => [e.name, e]));
  return {
    names: entries.map((e) => e.name),
    metadata,
    signature,
    has: (name) => byName.has(name),
    entry(name) {
      const e = byName.get(name);
      if (!e) throw new ModelLoadError(entries[0]?.file ?? 'safetensors', 'tensor not found', name);
      return e;
    },
    read(name) {
      const e = this.entry(name);
      const buf = new Uint8Array(new ArrayBuffer(e.byteLength));
      const fd = openSync(e.file, 'r');
      try {
        readSync(fd, buf, 0, e.byteLength, e.offset);
      } finally {
        closeSync(fd);
      }
      return decode(buf, e.dtype, e.byteLength / bytesPer[e.dtype]);
    },
  };
}

/** Opens one .safetensors file (header only; tensors are read on demand). */
export function openSafetensors(file: string): TensorSource {
  const h = readHeader(file);
  return sourceOf(h.entries, h.metadata, `${basename(file)}:${h.size}:${h.headerText}`);
}

/**
 * Opens a sharded checkpoint from its `model.safetensors.index.json` (`{"weight_map": {tensor: shard}}`).
 * Every shard's header is validated; a tensor the index maps to a shard that lacks it is an error.
 */
export function openSafetensorsIndex(indexFile: string): TensorSource {
  if (!existsSync(indexFile)) throw new ModelLoadError(indexFile, 'file not found');
  let index: { weight_map?: unknown; metadata?: unknown };
  try {
    index = JSON.parse(readFileSync(indexFile, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(indexFile, `not valid JSON (${(e as Error).message})`);
  }
  const map = index.weight_map;
  if (typeof map !== 'object' || map === null) throw new ModelLoadError(indexFile, 'missing object field', 'weight_map');
  const dir = dirname(indexFile);
  const shards = new Map<string, ReturnType<typeof readHeader>>();
  const entries: TensorEntry[] = [];
  const signature: string[] = [];
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string') throw new ModelLoadError(indexFile, 'shard file name is not a string', `weight_map.${name}`);
    let h = shards.get(shard);
    if (!h) {
      h = readHeader(join(dir, shard));
      shards.set(shard, h);
      signature.push(`${shard}:${h.size}:${h.headerText}`);
    }
    const e = h.entries.find((x) => x.name === name);
    if (!e) throw new ModelLoadError(join(dir, shard), `tensor listed in ${basename(indexFile)} is missing from the shard`, name);
    entries.push(e);
  }
  return sourceOf(entries, {}, signature.join('\n'));
}

/** A tensor to write: f32 values and their shape. */
export interface TensorToWrite {
  data: Float32Array;
  shape: number[];
}

/**
 * Writes tensors to one .safetensors file, stored as F32, F16 or BF16, with string metadata. Names are
 * written in the order given; the file is written at once (a partial file is never left behind
 * by this function itself).
 */
export function writeSafetensors(
  file: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  options: { dtype?: SafetensorsDtype; metadata?: Record<string, string> } = {},
): void {
  writeFileSync(file, encodeSafetensors(tensors, options, file));
}

/** The bytes of a .safetensors file of `tensors` (see writeSafetensors); `file` only names it in errors. */
export function encodeSafetensors(
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  options: { dtype?: SafetensorsDtype; metadata?: Record<string, string> } = {},
  file = 'safetensors',
): Buffer {
  const dtype = options.dtype ?? 'F32';
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  let offset = 0;
  for (const [name, t] of list) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length)
      throw new Error(`writeSafetensors ${file}: tensor ${name} has ${t.data.length} values for shape [${t.shape}]`);
    const bytes = count * bytesPer[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const hb = Buffer.concat([json, Buffer.from(' '.repeat((8 - (json.length % 8)) % 8))]); // 8-byte aligned data

  const out = Buffer.alloc(8 + hb.length + offset);
  out.writeBigUInt64LE(BigInt(hb.length), 0);
  hb.copy(out, 8);
  let pos = 8 + hb.length;
  for (const [, t] of list) {
    if (dtype === 'F32') {
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, pos);
      pos += t.data.byteLength;
    } else {
      const bits = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = 0; i < t.data.length; i++, pos += 2) out.writeUInt16LE(bits(t.data[i]!), pos);
    }
  }
  return out;
}
