/**
 * A whole distributed run inside one process: every (stage, rank) of a plan gets its own
 * backbone range, trainable parameters, optimiser and (PAC) activation cache, talking through in-process
 * mailboxes. The math is exactly that of the multi-process run (same runner, same routing, same
 * all-reduce), so tests use it to check that placement never changes the result, and that one
 * device trains exactly as the standalone Trainer does.
 */
import { loadConfig, type ModelSource } from '../model/load.ts';
import { ActivationCache } from '../cache/activation-cache.ts';
import { forRun, type AdamWOptions } from '../train/optim.ts';
import { epochSteps, makeBatch, type Dataset } from '../train/data.ts';
import { nextTokenTargets } from '../train/loss.ts';
import { crossPlace, type StageLayout } from './routing.ts';
import type { MethodName, MethodOptions } from '../model/methods/method.ts';
import { MemoryHub } from './links.ts';
import { StageRunner, cachedStep, type RowSource } from './runner.ts';
import { openStageCompute, type StageSpec } from './stage-setup.ts';
import { CacheRows } from './cache-rows.ts';
import { planCachedPhase } from '../plan/cached.ts';

export interface LocalRunOptions {
  model: ModelSource;
  data: Dataset;
  seqLen: number;
  stages: StageLayout[];
  epochs: number;
  batch: number;
  microBatches: number;
  seed: number;
  optimizer: AdamWOptions;
  reduction?: number;
  /** Default 'random', as distributed runs start. */
  sideInit?: 'prune' | 'random';
  /** Default parallel (PAC). */
  method?: MethodName;
  methodOptions?: MethodOptions;
  /** PAC only: epochs >= 2 train from the activation cache (default true); off, every epoch runs the pipeline. */
  cache?: boolean;
  /** Row shares of every stage for pipeline step n (as a coordinator tuning them sends); undefined: the plan's. */
  stepShares?: (step: number) => number[][] | undefined;
}

export interface LocalRunResult {
  /** Final trainable parameters by name (union over stages). */
  params: Map<string, Float32Array>;
  /** Mean loss per epoch. */
  epochLoss: number[];
  /** Labelled data: the share of each epoch's samples the head classified right at their step. */
  epochAccuracy?: number[];
  /** The mini-batch mean loss of every step, in order. */
  stepLoss: number[];
  /** Backbone layer calls per epoch (cached epochs must be 0). */
  layerCalls: number[];
  /** Cache bytes moved by redistribution. */
  redistributedBytes: number;
  /** Backbone weight names each (stage, rank) held: `${stage}.${rank}` -> names. */
  heldWeights: Map<string, string[]>;
}

/** Rows and loss-target counts of a data set: labelled data trains the classification head, on a sample per target. */
export function rowSource(data: Dataset, seqLen: number): RowSource {
  const classify = data.labelNames !== undefined;
  const batch = (ids: readonly number[]) =>
    makeBatch(
      ids.map((i) => data.samples[i]!),
      seqLen,
    );
  return {
    rows: (ids) => {
      const b = batch(ids);
      return { ids: b.ids, mask: b.mask, ...(classify ? { labels: b.labels! } : {}) };
    },
    tokens: (ids) => {
      if (classify) return ids.length;
      const b = batch(ids);
      return nextTokenTargets(b.ids, b.mask, b.batch, seqLen).count;
    },
  };
}

export async function runLocal(o: LocalRunOptions): Promise<LocalRunResult> {
  const config = loadConfig(o.model),
    L = config.nLayers;
  const S = o.stages.length;
  const hub = new MemoryHub();
  const data = rowSource(o.data, o.seqLen);
  const input = { samples: o.data.samples.length, seed: o.seed, batch: o.batch };
  const method = o.method ?? 'parallel';
  const cached = method === 'parallel' && o.cache !== false;
  const spec: StageSpec = {
    method,
    methodOptions: o.methodOptions ?? {},
    seed: o.seed,
    reduction: o.reduction,
    sideInit: o.sideInit ?? 'random',
    seqLen: o.seqLen,
    optimizer: forRun(o.optimizer, epochSteps(input, 1).length, o.epochs),
    ...(o.data.labelNames ? { classes: o.data.labelNames.length } : {}),
  };
  const devices = [...new Set(o.stages.flatMap((s) => s.devices))];
  const opened = await Promise.all(
    o.stages.flatMap((st, s) =>
      st.devices.map(async (device, rank) => ({
        s,
        rank,
        device,
        open: await openStageCompute({ model: o.model, part: { from: st.from, to: st.to, first: s === 0, last: s === S - 1 }, spec }),
      })),
    ),
  );
  const keys = { fingerprint: `${opened[0]!.open.backbone.fingerprint}-t${o.seqLen}`, layers: L, width: o.seqLen * config.dModel };
  const caches = new Map(devices.map((d) => [d, new CacheRows(new ActivationCache({ memoryBytes: 1 << 30 }), keys)]));
  const heldWeights = new Map(opened.map((r) => [`${r.s}.${r.rank}`, [...r.open.backbone.weights().keys()]]));
  const ranks = opened.map(({ s, rank, device, open }) => ({
    rank,
    open,
    runner: new StageRunner({
      stages: o.stages,
      stage: s,
      rank,
      microBatches: o.microBatches,
      compute: open.compute,
      optimizer: open.optimizer,
      links: hub.links(s, rank, `s${s}`, crossPlace(o.stages, s, rank).rank),
      data,
      ...(cached ? { onComputed: (ids: number[], computed: Map<number, Float32Array>) => caches.get(device)!.fill(ids, computed) } : {}),
    }),
  }));

  const epochLoss: number[] = [],
    stepLoss: number[] = [],
    layerCalls: number[] = [],
    epochCorrect: number[] = [];
  // Epoch 1 (every epoch without the cache): hybrid pipeline + data parallelism.
  const steps1 = epochSteps(input, 1);
  for (let e = 1; e <= (cached ? 1 : o.epochs); e++) {
    const losses: number[] = [];
    const calls = ranks.reduce((a, r) => a + r.open.compute.layerCalls, 0);
    for (const [k, ids] of epochSteps(input, e).entries()) {
      const step = (e - 1) * steps1.length + k + 1;
      const shares = o.stepShares?.(step);
      const out = await Promise.all(ranks.map((r) => r.runner.runStep(step, ids, shares)));
      losses.push(out.reduce((a, x) => a + x.loss, 0));
      epochCorrect[e - 1] = (epochCorrect[e - 1] ?? 0) + out.reduce((a, x) => a + (x.correct ?? 0), 0);
    }
    stepLoss.push(...losses);
    epochLoss.push(mean(losses));
    layerCalls.push(ranks.reduce((a, r) => a + r.open.compute.layerCalls, 0) - calls);
  }

  const params = new Map<string, Float32Array>();
  const optimizer = { step: ranks[0]!.open.optimizer.step, m: new Map<string, Float32Array>(), v: new Map<string, Float32Array>() };
  for (const r of ranks.filter((x) => x.rank === 0)) {
    for (const [n, p] of r.open.compute.snapshot()) params.set(n, p);
    const st = r.open.optimizer.state();
    for (const [n, x] of st.m) optimizer.m.set(n, x);
    for (const [n, x] of st.v) optimizer.v.set(n, x);
  }
  for (const r of ranks) r.open.dispose();
  const accuracy = () => (o.data.labelNames ? { epochAccuracy: epochCorrect.map((c) => c / o.data.samples.length) } : {});
  if (o.epochs === 1 || !cached) return { params, epochLoss, stepLoss, layerCalls, redistributedBytes: 0, heldWeights, ...accuracy() };

  // Redistribution: every device gets every layer of its shard.
  const holdings = new Map(
    o.data.samples.map((_, j) => [
      j,
      devices
        .map((d) => {
          let bytes = 0;
          for (let l = 0; l <= L; l++) bytes += caches.get(d)!.get(j, l)?.byteLength ?? 0;
          return { device: d, bytes };
        })
        .filter((h) => h.bytes > 0),
    ]),
  );
  const shards = planCachedPhase(
    devices.map((d) => ({ name: d, msPerSample: 1 })),
    [...holdings.keys()],
    holdings,
  ).shards.map((s) => s.samples);
  let redistributedBytes = 0;
  shards.forEach((shard, d) => {
    const dest = caches.get(devices[d]!)!;
    for (const j of shard)
      for (let l = 0; l <= L; l++) {
        if (dest.get(j, l)) continue;
        const src = devices.map((x) => caches.get(x)!.get(j, l)).find((x) => x);
        if (!src) throw new Error(`redistribution: no device holds layer ${l} of sample ${j}`);
        dest.put(j, l, src);
        redistributedBytes += src.byteLength;
      }
  });

  // Cached epochs: pure data parallelism over every device, no backbone layer.
  const workers = await Promise.all(
    devices.map(async (device, rank) => {
      const open = await openStageCompute({ model: o.model, part: 'cached', spec, state: { params, optimizer } });
      const cache = caches.get(device)!;
      return { rank, open, shard: new Set(shards[rank]), activations: (ids: readonly number[]) => cache.activations(ids) };
    }),
  );
  for (let e = 2; e <= o.epochs; e++) {
    const steps = epochSteps(input, e);
    const losses: number[] = [];
    for (const [k, ids] of steps.entries()) {
      const step = steps1.length + (e - 2) * steps.length + k + 1;
      const out = await Promise.all(
        workers.map((w) =>
          cachedStep({
            step,
            sampleIds: ids,
            shard: w.shard,
            rank: w.rank,
            size: workers.length,
            microBatches: o.microBatches,
            compute: w.open.compute,
            optimizer: w.open.optimizer,
            ring: hub.ring('all', w.rank, step),
            data,
            activations: w.activations,
          }),
        ),
      );
      losses.push(out.reduce((a, x) => a + x.loss, 0));
      epochCorrect[e - 1] = (epochCorrect[e - 1] ?? 0) + out.reduce((a, x) => a + (x.correct ?? 0), 0);
    }
    stepLoss.push(...losses);
    epochLoss.push(mean(losses));
    layerCalls.push(workers.reduce((a, w) => a + w.open.compute.layerCalls, 0));
  }
  const final = workers[0]!.open.compute.snapshot();
  for (const w of workers) w.open.dispose();
  return { params: final, epochLoss, stepLoss, layerCalls, redistributedBytes, heldWeights, ...accuracy() };
}

const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
