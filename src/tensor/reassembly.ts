/**
 * Reassembles chunked transfers. Memory for partial transfers is bounded: when a new transfer
 * would exceed `maxBytes`, the oldest partials are dropped (and counted). Partials older than
 * `timeoutMs` are dropped by `sweep()`. Every chunk is checked (crc, bounds, agreement with the
 * transfer's first chunk); a bad chunk drops its whole transfer, and the transfer's later chunks
 * are then ignored (one rejection per transfer, not one per chunk).
 */
import { crc32, type ChunkHeader } from './chunk.ts';
import { MessageRejected } from './rejected.ts';

export interface ReassemblyOptions {
  /** cap on bytes held by partial transfers */ maxBytes: number;
  /** a partial transfer older than this is dropped */ timeoutMs: number;
  /** largest whole message accepted */ maxMessageBytes: number;
  now?: () => number;
}

/** How many refused transfer keys are remembered (oldest forgotten first). */
const REFUSED_MEMORY = 4096;

interface Partial {
  buf: Uint8Array;
  count: number;
  seen: Uint8Array;
  received: number;
  bytes: number;
  started: number;
}

export class Reassembler {
  /** Partial transfers dropped, by cause. */
  readonly dropped = { timeout: 0, memory: 0 };
  private partials = new Map<string, Partial>();
  private held = 0;
  private readonly refused = new Set<string>();
  private readonly now: () => number;

  private readonly opts: ReassemblyOptions;

  constructor(opts: ReassemblyOptions) {
    this.opts = { ...opts };
    this.now = opts.now ?? Date.now;
  }

  /**
   * Moves the limits (a run tells its devices the largest message its plan can send once they
   * join). Partials that no longer fit the budget are dropped, oldest first, and counted.
   */
  setLimits(limits: { maxBytes: number; maxMessageBytes: number }): void {
    this.opts.maxBytes = limits.maxBytes;
    this.opts.maxMessageBytes = limits.maxMessageBytes;
    while (this.held > this.opts.maxBytes && this.partials.size) this.dropOldest();
  }

  get limits(): { maxBytes: number; maxMessageBytes: number } {
    return { maxBytes: this.opts.maxBytes, maxMessageBytes: this.opts.maxMessageBytes };
  }

  /** Bytes currently held by partial transfers. */
  get pendingBytes(): number {
    return this.held;
  }
  get pendingTransfers(): number {
    return this.partials.size;
  }

  /**
   * Adds one chunk of transfer `key`; returns the whole message when this chunk completes it,
   * else null. @throws MessageRejected ('oversized' | 'chunk' | 'checksum'); the transfer is dropped.
   */
  add(key: string, h: ChunkHeader, bytes: Uint8Array): Uint8Array | null {
    this.sweep();
    if (this.refused.has(key)) return null;
    let p = this.partials.get(key);
    try {
      if (h.total > this.opts.maxMessageBytes)
        throw new MessageRejected('oversized', `chunked message of ${h.total} bytes exceeds ${this.opts.maxMessageBytes}`);
      if (h.total > this.opts.maxBytes)
        throw new MessageRejected('oversized', `chunked message of ${h.total} bytes exceeds the reassembly budget ${this.opts.maxBytes}`);
      // Every chunk but the only one of an empty message carries a byte: a larger count is a lie
      // that would only make the bookkeeping below allocate.
      if (h.count > Math.max(1, h.total))
        throw new MessageRejected('chunk', `transfer ${h.transfer} declares ${h.count} chunks for ${h.total} bytes`);
      if (h.offset + bytes.length > h.total)
        throw new MessageRejected('chunk', `chunk ${h.index} ends at ${h.offset + bytes.length}, beyond total ${h.total}`);
      if (!p) {
        while (this.held + h.total > this.opts.maxBytes && this.partials.size) this.dropOldest();
        p = { buf: new Uint8Array(h.total), count: h.count, seen: new Uint8Array(h.count), received: 0, bytes: 0, started: this.now() };
        this.partials.set(key, p);
        this.held += h.total;
      }
      if (p.count !== h.count || p.buf.length !== h.total)
        throw new MessageRejected('chunk', `chunk ${h.index} disagrees with its transfer's count or total`);
      if (p.seen[h.index]) return null; // a duplicate delivery changes nothing
      // Checked after the copy, from the destination while it is still in cache: one pass less over cold memory.
      p.buf.set(bytes, h.offset);
      if (crc32(p.buf.subarray(h.offset, h.offset + bytes.length)) !== h.crc)
        throw new MessageRejected('checksum', `chunk ${h.index} of transfer ${h.transfer} fails its crc32`);
      p.seen[h.index] = 1;
      p.received++;
      p.bytes += bytes.length;
    } catch (err) {
      if (p) this.forget(key, p);
      this.refuse(key);
      throw err;
    }
    if (p.received < p.count) return null;
    this.forget(key, p);
    if (p.bytes !== h.total) throw new MessageRejected('chunk', `transfer ${h.transfer} chunks cover ${p.bytes} of ${h.total} bytes`);
    return p.buf;
  }

  /** Drops partial transfers older than the timeout; returns how many. */
  sweep(): number {
    const limit = this.now() - this.opts.timeoutMs;
    let n = 0;
    for (const [key, p] of this.partials) {
      if (p.started > limit) break; // insertion order = start order
      this.forget(key, p);
      this.refuse(key);
      this.dropped.timeout++;
      n++;
    }
    return n;
  }

  private dropOldest(): void {
    const [key, p] = this.partials.entries().next().value as [string, Partial];
    this.forget(key, p);
    this.refuse(key);
    this.dropped.memory++;
  }

  private refuse(key: string): void {
    this.refused.add(key);
    if (this.refused.size > REFUSED_MEMORY) this.refused.delete(this.refused.values().next().value as string);
  }

  private forget(key: string, p: Partial): void {
    if (this.partials.delete(key)) this.held -= p.buf.length;
  }
}
