/**
 * Ring all-reduce (reduce-scatter, then all-gather) of one flat Float32Array over an injected
 * transport. With n ranks every rank sends 2(n-1)/n of the vector, whatever n is.
 *
 * The ring is ordered by rank and chunk c is always accumulated starting at rank c and walking
 * the ring, so a given placement sums every element in the same order run after run: the result
 * is bit-reproducible for a placement, and equal within float tolerance across placements.
 */

/** Which message of the ring protocol a chunk is. */
export interface RingTag {
  phase: 'reduce' | 'gather';
  /** 0 .. size-2 */
  round: number;
  /** Index of the chunk of the vector this message carries. */
  chunk: number;
}

/**
 * What the ring needs from the network. `send` may resolve before delivery; `receive` resolves
 * with the chunk `from` sent under `tag` (messages may arrive in any order; the transport keeps
 * them until asked).
 */
export interface RingTransport {
  send(to: number, tag: RingTag, data: Float32Array): Promise<void> | void;
  receive(from: number, tag: RingTag): Promise<Float32Array>;
}

/** Bounds [start, end) of chunk c when `length` elements are split into `parts` near-equal chunks. */
export function chunkBounds(length: number, parts: number, c: number): [number, number] {
  const base = Math.floor(length / parts),
    extra = length % parts;
  const start = c * base + Math.min(c, extra);
  return [start, start + base + (c < extra ? 1 : 0)];
}

const mod = (a: number, n: number): number => ((a % n) + n) % n;

/**
 * Sums `data` element-wise over the `size` ranks of a ring and returns the sum (a new array;
 * `data` is left untouched). Every rank must call it with a vector of the same length.
 */
export async function ringAllReduce(data: Float32Array, rank: number, size: number, transport: RingTransport): Promise<Float32Array> {
  if (!Number.isInteger(size) || size < 1) throw new Error(`ringAllReduce: size must be a positive integer, got ${size}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new Error(`ringAllReduce: rank ${rank} outside 0..${size - 1}`);
  const out = Float32Array.from(data);
  if (size === 1) return out;
  const next = mod(rank + 1, size),
    prev = mod(rank - 1, size);
  const view = (c: number): Float32Array => {
    const [s, e] = chunkBounds(out.length, size, c);
    return out.subarray(s, e);
  };
  // Reduce-scatter: after round t, the chunk this rank just received holds the sum of t+2 ranks.
  for (let round = 0; round < size - 1; round++) {
    const sendChunk = mod(rank - round, size),
      recvChunk = mod(rank - round - 1, size);
    await transport.send(next, { phase: 'reduce', round, chunk: sendChunk }, view(sendChunk).slice());
    const incoming = await transport.receive(prev, { phase: 'reduce', round, chunk: recvChunk });
    const target = view(recvChunk);
    if (incoming.length !== target.length)
      throw new Error(`ringAllReduce: chunk ${recvChunk} from rank ${prev} has ${incoming.length} elements, expected ${target.length}`);
    // incoming already holds ranks recvChunk..prev in ring order; this rank comes last.
    for (let i = 0; i < target.length; i++) target[i] = incoming[i]! + target[i]!;
  }
  // All-gather: circulate the fully reduced chunks (rank r owns chunk r+1 at this point).
  for (let round = 0; round < size - 1; round++) {
    const sendChunk = mod(rank + 1 - round, size),
      recvChunk = mod(rank - round, size);
    await transport.send(next, { phase: 'gather', round, chunk: sendChunk }, view(sendChunk).slice());
    const incoming = await transport.receive(prev, { phase: 'gather', round, chunk: recvChunk });
    const target = view(recvChunk);
    if (incoming.length !== target.length)
      throw new Error(`ringAllReduce: chunk ${recvChunk} from rank ${prev} has ${incoming.length} elements, expected ${target.length}`);
    target.set(incoming);
  }
  return out;
}

/**
 * A keyed rendezvous: values put under a key wait for the one `take` of that key, or a `take`
 * waits for its value. Transports use it to buffer messages that arrive before they are asked for.
 */
export class Mailbox<T> {
  private readonly ready = new Map<string, T>();
  private readonly waiting = new Map<string, { resolve: (v: T) => void; reject: (e: Error) => void }>();

  put(key: string, value: T): void {
    const w = this.waiting.get(key);
    if (w) {
      this.waiting.delete(key);
      w.resolve(value);
      return;
    }
    this.ready.set(key, value);
  }

  take(key: string): Promise<T> {
    const v = this.ready.get(key);
    if (v !== undefined) {
      this.ready.delete(key);
      return Promise.resolve(v);
    }
    if (this.waiting.has(key)) return Promise.reject(new Error(`mailbox: key '${key}' is already awaited`));
    return new Promise((resolve, reject) => this.waiting.set(key, { resolve, reject }));
  }

  /** Rejects every pending take (an aborted step) and drops buffered values. */
  close(reason: Error): void {
    for (const w of this.waiting.values()) w.reject(reason);
    this.waiting.clear();
    this.ready.clear();
  }

  get pending(): number {
    return this.waiting.size + this.ready.size;
  }
}

/** Key of a ring message at its receiver. */
export function ringKey(from: number, tag: RingTag): string {
  return `${from}/${tag.phase}/${tag.round}/${tag.chunk}`;
}

/** An in-process ring of `size` ranks (tests, and single-process multi-rank runs). */
export function memoryRing(size: number): RingTransport[] {
  const boxes = Array.from({ length: size }, () => new Mailbox<Float32Array>());
  return boxes.map((_, rank) => ({
    send(to: number, tag: RingTag, data: Float32Array) {
      boxes[to]!.put(ringKey(rank, tag), data);
    },
    receive(from: number, tag: RingTag) {
      return boxes[rank]!.take(ringKey(from, tag));
    },
  }));
}
