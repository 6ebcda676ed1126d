/**
 * What a connection accepts: received NATS messages become validated envelopes here, chunked ones
 * (NATS header `Charon-Chunk`) after reassembly, within the connection's message limits.
 */
import type { Msg } from 'nats';
import { decodeEnvelope, MAX_MESSAGE_BYTES, MessageRejected, parseChunkHeader, Reassembler, type Envelope } from '../tensor/index.ts';
import { DEFAULT_MESSAGE_LIMITS, type BusOptions, type MessageLimits } from './types.ts';

export const CHUNK_HEADER = 'Charon-Chunk';

export class Intake {
  private readonly reassembler: Reassembler;
  private maxBytes: number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly run: string,
    opts: BusOptions['reassembly'] = {},
  ) {
    this.maxBytes = opts.maxMessageBytes ?? MAX_MESSAGE_BYTES;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    this.reassembler = new Reassembler({
      maxBytes: opts.maxBytes ?? DEFAULT_MESSAGE_LIMITS.reassemblyBytes,
      timeoutMs,
      maxMessageBytes: this.maxBytes,
    });
    this.sweeper = setInterval(() => this.reassembler.sweep(), Math.max(100, timeoutMs / 2));
    this.sweeper.unref();
  }

  /** The largest whole message accepted, and sent. */
  get maxMessageBytes(): number {
    return this.maxBytes;
  }

  /** Partial chunked transfers held now, and those dropped (timeout / memory cap). */
  get stats() {
    return {
      pendingBytes: this.reassembler.pendingBytes,
      pendingTransfers: this.reassembler.pendingTransfers,
      dropped: { ...this.reassembler.dropped },
      ...this.reassembler.limits,
    };
  }

  /** See `Bus.limitMessages`. */
  limit(limits: MessageLimits): void {
    if (!(limits.maxMessageBytes > 0) || !(limits.reassemblyBytes > 0))
      throw new RangeError(`message limits: both must be positive, got ${JSON.stringify(limits)}`);
    this.maxBytes = limits.maxMessageBytes;
    this.reassembler.setLimits({ maxBytes: limits.reassemblyBytes, maxMessageBytes: limits.maxMessageBytes });
  }

  /**
   * The envelope `m` carries, or null while it is a chunk of a message not yet whole. `key` keeps
   * the transfers of one subscription apart from those of another.
   * @throws MessageRejected for anything malformed, oversized or of a kind not in `kinds`.
   */
  decode(key: string, m: Msg, kinds: readonly string[] | undefined): Envelope | null {
    try {
      let bytes: Uint8Array | null = m.data;
      const chunkHeader = m.headers?.get(CHUNK_HEADER);
      if (chunkHeader) {
        const h = parseChunkHeader(chunkHeader);
        bytes = this.reassembler.add(`${key}/${h.transfer}`, h, m.data);
        if (!bytes) return null;
      }
      return decodeEnvelope(bytes, { run: this.run, kinds, maxBytes: this.maxBytes });
    } catch (err) {
      if (err instanceof MessageRejected) throw err;
      throw new MessageRejected('malformed', String((err as Error).message), { cause: err });
    }
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}
