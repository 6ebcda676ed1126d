/**
 * The disk tier of the activation cache: one file per entry, written atomically (tmp + rename),
 * with a header naming the entry and a CRC-32 over key and payload. Reading a file that is
 * missing, truncated, from another key or whose checksum fails yields a miss, never an exception.
 *
 * File layout (little-endian): "CHAC" | u8 version | u8 dtype (0 f32, 1 f16) | u16 key length |
 * u32 element count | u32 crc32(key bytes + payload) | key bytes (utf8) | payload.
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { privateDir } from '../security/files.ts';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

export type StoredArray = Float32Array | Uint16Array;

const MAGIC = 0x43414843; // "CHAC" read as little-endian u32
const VERSION = 1;
const HEADER = 16;

/** A checked entry's payload bytes, a view into the tier's read buffer: valid until its next read. */
export type DiskView = { status: 'hit'; payload: Uint8Array; f16: boolean } | { status: 'missing' } | { status: 'corrupt'; reason: string };

export class DiskTier {
  /**
   * Files are read into this one buffer, grown as needed: a cached epoch reads every entry once,
   * and a fresh buffer per file (as readFileSync gives) is garbage the collector must chase.
   */
  private scratch = Buffer.alloc(0);

  constructor(readonly dir: string) {
    // Activations derive from private data: the folder and its files are the owner's alone.
    privateDir(dir);
  }

  /** File name of a key: the key made filesystem-safe (keys are fingerprint:sample:layer). */
  path(key: string): string {
    return join(this.dir, `${key.replace(/[^A-Za-z0-9_.-]/g, '_')}.act`);
  }

  /** Writes one entry atomically; returns the file's size in bytes. */
  write(key: string, data: StoredArray): number {
    const keyBytes = Buffer.from(key, 'utf8');
    const payload = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const header = Buffer.alloc(HEADER);
    header.writeUInt32LE(MAGIC, 0);
    header.writeUInt8(VERSION, 4);
    header.writeUInt8(data instanceof Uint16Array ? 1 : 0, 5);
    header.writeUInt16LE(keyBytes.length, 6);
    header.writeUInt32LE(data.length, 8);
    header.writeUInt32LE(crc32(payload, crc32(keyBytes)), 12);
    const file = this.path(key);
    const tmp = `${file}.tmp-${process.pid}`;
    const all = Buffer.concat([header, keyBytes, payload]);
    writeFileSync(tmp, all, { mode: 0o600 });
    renameSync(tmp, file);
    return all.length;
  }

  /** Reads an entry's file and checks it; a hit's payload is left in the read buffer (see DiskView). */
  view(key: string): DiskView {
    let size: number;
    try {
      const fd = openSync(this.path(key), 'r');
      try {
        size = fstatSync(fd).size;
        if (this.scratch.length < size) this.scratch = Buffer.allocUnsafe(size);
        let at = 0;
        while (at < size) {
          const n = readSync(fd, this.scratch, at, size - at, at);
          if (n === 0) break;
          at += n;
        }
        size = at;
      } finally {
        closeSync(fd);
      }
    } catch {
      return { status: 'missing' };
    }
    const buf = this.scratch.subarray(0, size);
    if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || buf.readUInt8(4) !== VERSION)
      return { status: 'corrupt', reason: 'bad header' };
    const dtype = buf.readUInt8(5),
      keyLen = buf.readUInt16LE(6),
      count = buf.readUInt32LE(8),
      crc = buf.readUInt32LE(12);
    const width = dtype === 1 ? 2 : dtype === 0 ? 4 : 0;
    if (!width || buf.length !== HEADER + keyLen + count * width) return { status: 'corrupt', reason: 'bad size' };
    const keyBytes = buf.subarray(HEADER, HEADER + keyLen);
    if (keyBytes.toString('utf8') !== key) return { status: 'corrupt', reason: 'other key' };
    const payload = buf.subarray(HEADER + keyLen);
    if (crc32(payload, crc32(keyBytes)) !== crc) return { status: 'corrupt', reason: 'checksum' };
    return { status: 'hit', payload, f16: width === 2 };
  }

  remove(key: string): void {
    try {
      unlinkSync(this.path(key));
    } catch {
      /* already gone: nothing to remove */
    }
  }

  /** Deletes the whole tier directory. */
  destroy(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
