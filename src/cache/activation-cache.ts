/**
 * ActivationCache: the backbone's per-sample activations b_0..b_L, keyed by (model fingerprint,
 * sample id, layer). A memory tier bounded in bytes (lru-cache) spills what it evicts to a disk
 * tier (one checksummed file per entry). The cache is an optimisation, never a source of truth:
 * `get` returns undefined for a missing or corrupt entry (counted) and the caller recomputes it.
 *
 * Values are plain Float32Arrays; storage is f32 (bit-exact) or f16 (converted on put and get).
 */
import { LRUCache } from 'lru-cache';
import { DiskTier, type StoredArray } from './disk.ts';
import { f16ToF32, f32ToF16 } from './half.ts';

export type CacheDtype = 'f32' | 'f16';

export interface CacheKey {
  fingerprint: string;
  sample: number;
  layer: number;
}

export interface ActivationCacheOptions {
  /** Bound of the memory tier in bytes of stored data; 0 keeps everything on disk. */
  memoryBytes: number;
  /** Directory of the disk tier; without it, evicted entries are dropped (and later recomputed). */
  dir?: string;
  dtype?: CacheDtype;
}

/** Counters for reports. Bytes are of stored data (f16 halves them). */
export interface CacheStats {
  dtype: CacheDtype;
  memoryBytes: number;
  memoryEntries: number;
  /** Highest memoryBytes seen. */
  peakMemoryBytes: number;
  diskBytes: number;
  diskEntries: number;
  memoryHits: number;
  diskHits: number;
  misses: number;
  corrupt: number;
  spills: number;
}

export function cacheKeyString(k: CacheKey): string {
  return `${k.fingerprint}:${k.sample}:${k.layer}`;
}

export class ActivationCache {
  readonly dtype: CacheDtype;
  private readonly memory: LRUCache<string, StoredArray> | undefined;
  private readonly disk: DiskTier | undefined;
  /** Entries on disk and their file sizes. */
  private readonly onDisk = new Map<string, number>();
  private readonly counts = { memoryHits: 0, diskHits: 0, misses: 0, corrupt: 0, spills: 0, peakMemoryBytes: 0, diskBytes: 0 };

  constructor(readonly options: ActivationCacheOptions) {
    this.dtype = options.dtype ?? 'f32';
    this.disk = options.dir ? new DiskTier(options.dir) : undefined;
    if (options.memoryBytes > 0) {
      this.memory = new LRUCache<string, StoredArray>({
        maxSize: options.memoryBytes,
        sizeCalculation: (v) => Math.max(1, v.byteLength),
        dispose: (value, key, reason) => {
          if (reason === 'evict') this.spill(key, value);
        },
      });
    }
  }

  /** Stores a copy of `values` under `key` (replacing any previous entry). */
  put(key: CacheKey, values: Float32Array): void {
    const k = cacheKeyString(key);
    const stored: StoredArray = this.dtype === 'f16' ? f32ToF16(values) : values.slice();
    this.dropFromDisk(k);
    if (this.memory && stored.byteLength <= this.options.memoryBytes) {
      this.memory.set(k, stored);
      this.counts.peakMemoryBytes = Math.max(this.counts.peakMemoryBytes, this.memory.calculatedSize);
    } else {
      this.spill(k, stored);
    }
  }

  /**
   * The entry's values, or undefined on a miss (never stored, dropped, missing file or failed
   * checksum — a corrupt file is deleted and counted). The returned array must not be mutated.
   */
  get(key: CacheKey): Float32Array | undefined {
    const f = this.find(cacheKeyString(key));
    if (!f) return undefined;
    if ('stored' in f) return this.decode(f.stored);
    // Copied out of the tier's read buffer into an aligned array of its own.
    const bytes = new Uint8Array(f.payload.length);
    bytes.set(f.payload);
    return this.decode(this.dtype === 'f16' ? new Uint16Array(bytes.buffer) : new Float32Array(bytes.buffer));
  }

  /**
   * Copies the entry's `count` values into `dest` from element `at`: `get` without an array of
   * its own (a disk hit is copied straight out of the tier's read buffer). False on a miss, counted
   * as `get` counts it; an entry of another length is corrupt (dropped and counted).
   */
  copyTo(key: CacheKey, dest: Float32Array, at: number, count: number): boolean {
    const f = this.find(cacheKeyString(key), count);
    if (!f) return false;
    if ('stored' in f) dest.set(this.decode(f.stored), at);
    else if (this.dtype === 'f32') new Uint8Array(dest.buffer, dest.byteOffset + at * 4, f.payload.length).set(f.payload);
    else {
      const half = new Uint16Array(count);
      new Uint8Array(half.buffer).set(f.payload);
      dest.set(f16ToF32(half), at);
    }
    return true;
  }

  /**
   * Where entry `k` is, counted as a memory hit, a disk hit or a miss: its stored array, or its
   * payload in the disk tier's read buffer (valid until the next read). A disk file that fails its
   * checks, or (with `count`) an entry of another length, is dropped and counted as corrupt.
   */
  private find(k: string, count?: number): { stored: StoredArray } | { payload: Uint8Array } | undefined {
    const inMemory = this.memory?.get(k);
    if (inMemory && (count === undefined || inMemory.length === count)) {
      this.counts.memoryHits++;
      return { stored: inMemory };
    }
    if (inMemory) {
      this.counts.corrupt++;
      this.memory!.delete(k);
    } else if (this.disk && this.onDisk.has(k)) {
      const r = this.disk.view(k);
      const f16 = this.dtype === 'f16';
      if (r.status === 'hit' && r.f16 === f16 && (count === undefined || r.payload.length === count * (f16 ? 2 : 4))) {
        this.counts.diskHits++;
        return { payload: r.payload };
      }
      if (r.status !== 'missing') this.counts.corrupt++;
      this.dropFromDisk(k);
    }
    this.counts.misses++;
    return undefined;
  }

  stats(): CacheStats {
    return {
      dtype: this.dtype,
      memoryBytes: this.memory?.calculatedSize ?? 0,
      memoryEntries: this.memory?.size ?? 0,
      peakMemoryBytes: this.counts.peakMemoryBytes,
      diskBytes: this.counts.diskBytes,
      diskEntries: this.onDisk.size,
      memoryHits: this.counts.memoryHits,
      diskHits: this.counts.diskHits,
      misses: this.counts.misses,
      corrupt: this.counts.corrupt,
      spills: this.counts.spills,
    };
  }

  /** Path of an entry's disk file (for tests and tools that inspect the tier). */
  diskPath(key: CacheKey): string | undefined {
    return this.disk?.path(cacheKeyString(key));
  }

  /** Empties both tiers and removes the disk directory. */
  destroy(): void {
    this.memory?.clear();
    this.disk?.destroy();
    this.onDisk.clear();
    this.counts.diskBytes = 0;
  }

  private decode(s: StoredArray): Float32Array {
    return s instanceof Uint16Array ? f16ToF32(s) : s;
  }

  private spill(k: string, value: StoredArray): void {
    if (!this.disk) return;
    const size = this.disk.write(k, value);
    this.onDisk.set(k, size);
    this.counts.diskBytes += size;
    this.counts.spills++;
  }

  private dropFromDisk(k: string): void {
    const size = this.onDisk.get(k);
    if (size === undefined || !this.disk) return;
    this.disk.remove(k);
    this.onDisk.delete(k);
    this.counts.diskBytes -= size;
  }
}
