/**
 * The redistribution effect: from epoch 1's caches (or, after a re-plan, the survivors' caches)
 * to the cached phase's shards. It refills what no device holds any more through the deployed
 * pipeline, releases the pipeline, asks every cache what it holds, shards by speed keeping
 * entries where they are (src/plan/cached.ts, balanced per step), moves the rest cache-to-cache
 * and loads the whole side network + head on every device under the plan's generation.
 *
 * Only the run's devices take part (the survivors after a loss, joiners with an empty cache), and
 * every entry a device must receive is held by one of them once the refill is done, so no cache
 * waits on a lost device. Leaving devices (`sources`) take no shard: they only send what they hold
 * to its new owners, so that their entries need no recompute. With `training.cache.replicas: 2`
 * every device also keeps a copy of other shards' samples (src/plan/replicas.ts), so that a loss
 * in the cached epochs leaves every entry on a survivor: the refill then recomputes nothing.
 */
import { fromPromise } from 'xstate';
import type { Bus } from '../../src/bus/index.ts';
import type { ModelConfig } from '../../src/model/types.ts';
import { planCachedPhase } from '../../src/plan/cached.ts';
import { balanceShards } from '../../src/plan/balance.ts';
import { assignReplicas, planSends } from '../../src/plan/replicas.ts';
import { epochSteps } from '../../src/train/data.ts';
import { repackState, type StageLayout } from '../../src/engine/index.ts';
import { broadcast, CTL_TIMEOUT_MS } from './control.ts';
import type { CacheEntryCounts, RedistributeInput, Redistributed, ReloadInput } from './run-machine.ts';

export interface RedistributeDeps {
  bus: Bus;
  config: ModelConfig;
  /** A device's measured speed (GFLOP/s): shards are proportional to it, unless `msPerRow` knows better. */
  gflops(device: string): number;
  /**
   * Each device's compute time per sample as the run measured it (epoch 1's steps), when it has
   * one for every device given; null: shards follow `gflops`.
   */
  msPerRow?(devices: string[]): Map<string, number> | null;
  emit(type: string, fields: Record<string, unknown>): void;
}

interface CacheReport {
  holdings: number[][];
}

/** The stage ranks of a plan, by device. */
export const stageDevices = (layout: StageLayout[]): string[] => layout.flatMap((st) => st.devices);

export function redistributeEffect(deps: RedistributeDeps) {
  const { bus, config, gflops, emit } = deps;
  // Entries a refill recomputed for a redistribution that a loss then cut short: the next one reports them.
  let unreported = 0;
  return fromPromise<Redistributed, RedistributeInput>(async ({ input, signal }) => {
    const { spec, fingerprint, devices, sources } = input;
    const t0 = performance.now();
    const refilled = await refillCaches(deps, input, signal);
    unreported += refilled.entries.recomputed;
    await broadcast(bus, stageDevices(input.layout), 'release', () => ({}), { signal });
    // Every cache exists (and listens for puts) before any device starts sending.
    const senders = [...devices, ...sources];
    const reports = await broadcast<CacheReport>(bus, senders, 'cache-report', () => ({ spec, fingerprint }), { signal });
    const heldBy = (d: string, j: number): number[] => reports.get(d)!.holdings[j] ?? [];
    const entryBytes = spec.seqLen * config.dModel * 4;
    const holdings = new Map(
      Array.from({ length: spec.samples }, (_, j) => [
        j,
        devices.map((d) => ({ device: d, bytes: heldBy(d, j).length * entryBytes })).filter((h) => h.bytes > 0),
      ]),
    );
    const measured = deps.msPerRow?.(devices) ?? null;
    const cachedPlan = planCachedPhase(
      devices.map((d) => ({ name: d, msPerSample: measured?.get(d) ?? 1 / Math.max(gflops(d), 1e-6) })),
      [...holdings.keys()],
      holdings,
    );
    const cachedSteps = Array.from({ length: Math.max(0, spec.epochs - 1) }, (_, e) => epochSteps(spec, e + 2)).flat();
    const shards =
      cachedSteps.length === 0
        ? cachedPlan.shards.map((s) => s.samples)
        : balanceShards(
            cachedPlan.shards.map((s) => s.samples.length),
            cachedSteps,
            (k, j) => (holdings.get(j) ?? []).some((h) => h.device === devices[k]),
          );
    const replicas = (spec.cache.replicas ?? 1) > 1 ? assignReplicas(shards, (k, j) => heldBy(devices[k]!, j).length) : null;
    const want = shards.map((s, k) => [...s, ...(replicas?.[k] ?? [])]);
    const sends = planSends(want, senders.length, (s, j) => heldBy(senders[s]!, j), config.nLayers + 1);
    const all = { shards: [...shards, ...sources.map(() => [])], devices: senders };
    const moved = await broadcast<{ bytesOut: number }>(
      bus,
      senders,
      'redistribute',
      (d) => {
        const k = senders.indexOf(d);
        return {
          ...all,
          ...(replicas?.[k] ? { keep: replicas[k] } : {}),
          sends: [...sends[k]!, ...sources.map(() => [])],
        };
      },
      { timeoutMs: 30 * CTL_TIMEOUT_MS, signal },
    );
    const sent = [...moved.values()].reduce((a, r) => a + r.bytesOut, 0);
    await loadCachedWorkers(bus, { cached: { ranks: devices, shards }, ...input }, signal);
    const seconds = (performance.now() - t0) / 1000;
    const sizes = (per: number[][]) => Object.fromEntries(devices.map((d, i) => [d, per[i]!.length]));
    const redistribution = {
      bytes: sent,
      seconds,
      shardSizes: sizes(shards),
      ...(replicas ? { replicaSizes: sizes(replicas) } : {}),
    };
    emit('REDISTRIBUTED', {
      bytes: sent,
      seconds,
      shards: redistribution.shardSizes,
      ...(replicas ? { replicas: redistribution.replicaSizes } : {}),
      recomputed: unreported,
      fromReplica: refilled.entries.fromReplica,
      generation: input.generation,
    });
    const entries = { recomputed: unreported, fromReplica: refilled.entries.fromReplica };
    unreported = 0;
    return {
      cached: { ranks: devices, shards, ...(replicas ? { replicas } : {}) },
      redistribution,
      bytes: refilled.bytes + sent,
      entries,
    };
  });
}

/** Loads the whole side network + head on every rank of the cached phase, each over its shard, under `generation`. */
export async function loadCachedWorkers(
  bus: Bus,
  { cached, generation, firstStep, side }: ReloadInput,
  signal: AbortSignal,
): Promise<void> {
  const packed = repackState(side);
  const { ranks: devices, shards } = cached;
  await broadcast(
    bus,
    devices,
    'cached-load',
    (d) => {
      const rank = devices.indexOf(d);
      return { rank, devices, shard: shards[rank]!, generation, firstStep, state: packed };
    },
    { signal },
  );
}

/**
 * The cache is an optimisation, never a source of truth: samples of which some layer is held by
 * no device (it died with a lost device, or with the processes of an interrupted run) go forward
 * through the deployed stages again, each rank caching its layers. Resolves with the bytes the
 * devices sent for it, the entries recomputed, and the entries of lost owners' shards that a
 * surviving copy holds (served from it, not recomputed).
 */
async function refillCaches(
  { bus, config, emit }: RedistributeDeps,
  { spec, layout, devices, sources, fingerprint, previous }: RedistributeInput,
  signal: AbortSignal,
): Promise<{ bytes: number; entries: CacheEntryCounts }> {
  const t0 = performance.now();
  // What a leaving device holds is handed over, not recomputed.
  const holders = [...devices, ...sources];
  const reports = await broadcast<CacheReport>(bus, holders, 'cache-report', () => ({ spec, fingerprint }), { signal });
  const layers = config.nLayers + 1;
  // A union, not a count: after a re-plan two devices may hold the same layer of a sample.
  const missing = Array.from({ length: spec.samples }, (_, j) => j).filter(
    (j) => new Set(holders.flatMap((d) => reports.get(d)!.holdings[j] ?? [])).size < layers,
  );
  const gone = new Set(missing);
  // Samples whose cached-phase owner lost them (it is gone, or came back with an empty cache).
  const owned = (d: string, j: number) => (reports.get(d)?.holdings[j]?.length ?? 0) >= layers;
  const orphaned = (previous?.shards ?? []).flatMap((shard, k) => shard.filter((j) => !owned(previous!.ranks[k]!, j)));
  const entries = { recomputed: missing.length * layers, fromReplica: orphaned.filter((j) => !gone.has(j)).length * layers };
  if (missing.length === 0) return { bytes: 0, entries };
  const filled = await broadcast<{ bytesSent: number }>(bus, stageDevices(layout), 'fill', () => ({ sampleIds: missing }), {
    timeoutMs: 30 * CTL_TIMEOUT_MS,
    signal,
  });
  const sent = [...filled.values()].reduce((a, r) => a + r.bytesSent, 0);
  emit('CACHE_REFILLED', { samples: missing.length, entries: entries.recomputed, bytes: sent, seconds: (performance.now() - t0) / 1000 });
  return { bytes: sent, entries };
}
