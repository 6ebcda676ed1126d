/**
 * The cache actor's binding on one device: an ActivationCache filled in epoch 1 with what this
 * device's stage computed, the redistribution after epoch 1 (this device sends the entries of
 * other devices' shards it holds over cache.<device>.put and receives the entries of its own
 * shard, and of the samples it keeps a copy of, that it lacks), and the reads of the cached
 * epochs. It drives `cacheMachine` (empty -> filling -> sealed -> redistributing -> serving ->
 * dropped) and accounts its bytes.
 *
 * The coordinator, which knows what every cache holds, says which samples each device sends
 * where (a sample held whole by two devices comes from one of them); without that list a device
 * sends what it holds of every other shard. A receiver only waits until it holds every layer of
 * what it wants, whoever sent it. The put subscription exists from construction, so entries sent
 * before this device is told to redistribute are never lost.
 */
import { z } from 'zod';
import { fromPromise, waitFor } from 'xstate';
import type { Bus } from '../../src/bus/index.ts';
import { ActivationCache } from '../../src/cache/activation-cache.ts';
import type { DeviceCache, DeviceCacheOptions, RedistributionMoves, RedistributionReport } from '../../src/cache/device-cache.ts';
import { ask, Inbox, route } from '../../src/runtime/inbox.ts';
import { okReply } from '../../src/runtime/messages.ts';
import { startActor, type BoundActor } from '../../src/runtime/actor.ts';
import { WireTensor } from '../../src/tensor/index.ts';
import { CacheRows } from '../../src/engine/index.ts';
import { cacheMachine } from './machine.ts';

const putBody = z.strictObject({
  sample: z.number().int().nonnegative(),
  layers: z.array(z.number().int().nonnegative()).min(1),
  data: z.instanceof(WireTensor),
});

export interface CacheActorOptions extends DeviceCacheOptions {
  bus: Bus;
  device: string;
  /** Sends `bytes` through the device's simulated link. */
  throttle?: (bytes: number, send: () => Promise<unknown>) => Promise<unknown>;
  /** Concurrent put requests per destination. */
  window?: number;
  requestTimeoutMs?: number;
}

export class CacheActor implements DeviceCache {
  readonly cache: ActivationCache;
  private readonly rows: CacheRows;
  private readonly held = new Map<number, Set<number>>();
  private readonly inbox: Inbox;
  private readonly machine: BoundActor<typeof cacheMachine>;
  private arrived = 0;
  private bytesIn = 0;
  private onArrival: (() => void) | null = null;
  private lastEntriesOut = 0;

  constructor(private readonly o: CacheActorOptions) {
    this.cache = new ActivationCache({ memoryBytes: o.memoryBytes, dir: o.dir, dtype: o.dtype });
    this.rows = new CacheRows(this.cache, { fingerprint: o.fingerprint, layers: o.layers, width: o.width });
    this.inbox = new Inbox(o.bus);
    this.inbox.serve(o.bus.subjects.cachePutIn(), {
      put: route(putBody, (b) => {
        if (b.data.dtype !== 'float32' || b.data.size !== b.layers.length * o.width || b.layers.some((l) => l > o.layers)) {
          return {
            ok: false,
            reason: `put of sample ${b.sample}: ${b.layers.length} layers need ${b.layers.length * o.width} float32 values, got ${b.data.size} ${b.data.dtype}`,
          };
        }
        const values = b.data.data as Float32Array;
        b.layers.forEach((layer, i) => this.put(b.sample, layer, values.subarray(i * o.width, (i + 1) * o.width)));
        this.arrived += b.layers.length;
        this.bytesIn += values.byteLength;
        this.onArrival?.();
        return { ok: true };
      }),
    });
    const logic = cacheMachine.provide({
      actors: {
        redistribute: fromPromise(({ input, signal }) => this.redistribution(input.shards, input.devices, input.moves ?? {}, signal)),
      },
      actions: { release: () => this.cache.destroy() },
    });
    this.machine = startActor(logic, { input: undefined as never });
    this.machine.actor.send({ type: 'FILL' });
  }

  private put(sample: number, layer: number, values: Float32Array): void {
    this.rows.put(sample, layer, values);
    this.hold(sample, layer);
  }

  private hold(sample: number, layer: number): void {
    let s = this.held.get(sample);
    if (!s) this.held.set(sample, (s = new Set()));
    s.add(layer);
  }

  /** Stores what this device's stage computed for `sampleIds` (layer -> rows * width, rows in id order). */
  fill(sampleIds: readonly number[], computed: Map<number, Float32Array>): void {
    this.rows.fill(sampleIds, computed);
    sampleIds.forEach((id) => {
      for (const layer of computed.keys()) this.hold(id, layer);
    });
  }

  /** Layers held per sample, ascending (index = sample id, `samples` entries). */
  holdings(samples: number): number[][] {
    return Array.from({ length: samples }, (_, j) => [...(this.held.get(j) ?? [])].sort((a, b) => a - b));
  }

  /** The machine's state name. */
  state(): string {
    return String(this.machine.actor.getSnapshot().value);
  }

  /**
   * Seals the epoch-1 cache and redistributes: `shards[k]` is the shard of `devices[k]`.
   * Resolves once this device holds every layer of its shard and its sends were acknowledged.
   * Serving caches redistribute again when a re-plan changes the devices.
   */
  async redistribute(shards: number[][], devices: string[], moves: RedistributionMoves = {}): Promise<RedistributionReport> {
    const t0 = performance.now();
    const before = { bytesIn: this.bytesIn, arrived: this.arrived };
    this.machine.actor.send({ type: 'SEAL' });
    this.machine.actor.send({ type: 'REDISTRIBUTE', shards, devices, moves });
    const s = await waitFor(this.machine.actor, (x) => x.value === 'serving' || (x.value === 'sealed' && x.context.error !== null), {
      timeout: Infinity,
    });
    if (s.value !== 'serving') throw new Error(`cache ${this.o.device}: redistribution failed: ${s.context.error}`);
    return {
      bytesIn: this.bytesIn - before.bytesIn,
      bytesOut: s.context.bytesOut,
      entriesIn: this.arrived - before.arrived,
      entriesOut: this.lastEntriesOut,
      seconds: (performance.now() - t0) / 1000,
    };
  }

  /** Ends a redistribution in flight (it rejects); what the cache holds stays. */
  abort(): void {
    this.machine.actor.send({ type: 'ABORT' });
  }

  private async redistribution(
    shards: number[][],
    devices: string[],
    moves: RedistributionMoves,
    signal: AbortSignal,
  ): Promise<{ bytesIn: number; bytesOut: number }> {
    const me = devices.indexOf(this.o.device);
    if (me < 0) throw new Error(`cache ${this.o.device}: not among the redistribution's devices (${devices.join(', ')})`);
    if (shards.length !== devices.length)
      throw new Error(`cache ${this.o.device}: the redistribution gives ${shards.length} shards for ${devices.length} devices`);
    if (moves.sends && moves.sends.length !== devices.length)
      throw new Error(`cache ${this.o.device}: the redistribution gives sends for ${moves.sends.length} of ${devices.length} devices`);
    const want = [...shards[me]!, ...(moves.keep ?? [])];
    const complete = () => want.every((j) => (this.held.get(j)?.size ?? 0) === this.o.layers + 1);
    const received = complete()
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => {
          this.onArrival = () => {
            if (complete()) {
              this.onArrival = null;
              resolve();
            }
          };
          signal.addEventListener(
            'abort',
            () => {
              this.onArrival = null;
              reject(new Error('redistribution aborted'));
            },
            { once: true },
          );
        });
    let bytesOut = 0,
      entriesOut = 0;
    const sends = devices.map(async (dest, k) => {
      if (k === me) return;
      const queue = (moves.sends?.[k] ?? shards[k]!).filter((j) => this.held.has(j));
      const worker = async () => {
        for (let j = queue.shift(); j !== undefined && !signal.aborted; j = queue.shift()) {
          const layers = [...this.held.get(j)!].sort((a, b) => a - b);
          const data = new Float32Array(layers.length * this.o.width);
          layers.forEach((l, i) => data.set(this.read(j, l), i * this.o.width));
          const send = () =>
            ask(
              this.o.bus,
              this.o.bus.subjects.cachePut(dest),
              'put',
              { sample: j, layers, data: new WireTensor('float32', [data.length], data) },
              okReply,
              this.o.requestTimeoutMs ?? 60_000,
            );
          const reply = (await (this.o.throttle ? this.o.throttle(data.byteLength, send) : send())) as { ok: boolean; reason?: string };
          if (!reply.ok) throw new Error(`cache ${dest} refused sample ${j}: ${reply.reason}`);
          bytesOut += data.byteLength;
          entriesOut += layers.length;
        }
      };
      await Promise.all(Array.from({ length: this.o.window ?? 4 }, worker));
    });
    await Promise.all([...sends, received]);
    this.lastEntriesOut = entriesOut;
    return { bytesIn: this.bytesIn, bytesOut };
  }

  private read(sample: number, layer: number): Float32Array {
    const v = this.rows.get(sample, layer);
    if (!v)
      throw new Error(
        `cache ${this.o.device}: layer ${layer} of sample ${sample} is missing (evicted without a disk tier, or its file is corrupt)`,
      );
    return v;
  }

  /** Every layer b_0..b_L of `sampleIds`, each as rows * width values (cached epochs). */
  activations(sampleIds: readonly number[]): Float32Array[] {
    return this.rows.activations(sampleIds);
  }

  /** Memory-tier bytes now and at peak. */
  memory(): { bytes: number; peakBytes: number; diskBytes: number } {
    const s = this.cache.stats();
    return { bytes: s.memoryBytes, peakBytes: s.peakMemoryBytes, diskBytes: s.diskBytes };
  }

  /** Drops everything (memory and disk tier) and stops serving puts. */
  drop(): void {
    this.inbox.close();
    this.onArrival = null;
    this.machine.actor.send({ type: 'DROP' });
  }
}
