/**
 * A whole distributed PAC run inside one process: every (stage, rank) of a plan gets its own
 * backbone range, side span, optimiser and activation cache, talking through in-process
 * mailboxes. The math is exactly that of the multi-process run (same runner, same routing, same
 * all-reduce), so tests use it to check that placement never changes the result.
 */
import { loadBackbone, type ModelSource } from '../model/load.ts';
import { SideNetwork } from '../model/methods/side-network.ts';
import { ActivationCache } from '../cache/activation-cache.ts';
import { StageCompute } from './stage-compute.ts';
import { AdamW, type AdamWOptions } from '../train/optim.ts';
import { epochSteps, makeBatch, type Dataset } from '../train/data.ts';
import { nextTokenTargets } from '../train/loss.ts';
import type { StageLayout } from './routing.ts';
import { MemoryHub } from './links.ts';
import { StageRunner, cachedStep, type RowSource } from './runner.ts';
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
}

export interface LocalRunResult {
  /** Final side-network parameters by name (union over stages). */
  params: Map<string, Float32Array>;
  /** Mean loss per epoch. */
  epochLoss: number[];
  /** Backbone layer calls per epoch (cached epochs must be 0). */
  layerCalls: number[];
  /** Cache bytes moved by redistribution. */
  redistributedBytes: number;
  /** Backbone weight names each (stage, rank) held: `${stage}.${rank}` -> names. */
  heldWeights: Map<string, string[]>;
}

/** Token rows and target counts of a data set. */
export function rowSource(data: Dataset, seqLen: number): RowSource {
  return {
    rows: (ids) => { const b = makeBatch(ids.map((i) => data.samples[i]!), seqLen); return { ids: b.ids, mask: b.mask }; },
    tokens: (ids) => { const b = makeBatch(ids.map((i) => data.samples[i]!), seqLen); return nextTokenTargets(b.ids, b.mask, b.batch, seqLen).count; },
  };
}

export async function runLocal(o: LocalRunOptions): Promise<LocalRunResult> {
  const L = (await loadBackbone(o.model, { from: 1, to: 0, embed: false, head: false })).config.nLayers;
  const S = o.stages.length;
  const hub = new MemoryHub();
  const data = rowSource(o.data, o.seqLen);
  const devices = [...new Set(o.stages.flatMap((s) => s.devices))];
  const caches = new Map(devices.map((d) => [d, new ActivationCache({ memoryBytes: 1 << 30 })]));
  const heldWeights = new Map<string, string[]>();
  let fingerprint = '';
  const ranks = await Promise.all(o.stages.flatMap((st, s) => st.devices.map(async (device, rank) => {
    const backbone = await loadBackbone(o.model, { from: st.from, to: st.to, embed: s === 0, head: s === S - 1 });
    fingerprint = backbone.fingerprint;
    heldWeights.set(`${s}.${rank}`, [...backbone.weights().keys()]);
    const side = new SideNetwork(backbone.config, { from: st.from, to: st.to, hasDown0: s === 0, hasUp: s === S - 1 }, { seed: o.seed, reduction: o.reduction, sideInit: 'random' });
    const compute = new StageCompute(backbone, side, o.seqLen);
    const optimizer = new AdamW(o.optimizer);
    const cache = caches.get(device)!;
    const runner = new StageRunner({
      stages: o.stages, stage: s, rank, microBatches: o.microBatches, compute, optimizer, links: hub.links(s, rank, `s${s}`), data,
      onComputed: (ids, computed) => {
        const w = o.seqLen * backbone.config.dModel;
        ids.forEach((id, j) => { for (const [layer, v] of computed) cache.put({ fingerprint: backbone.fingerprint, sample: id, layer }, v.subarray(j * w, (j + 1) * w)); });
      },
    });
    return { s, rank, device, backbone, side, compute, optimizer, runner };
  })));

  const epochLoss: number[] = [], layerCalls: number[] = [];
  const input = { samples: o.data.samples.length, seed: o.seed, batch: o.batch };
  // Epoch 1: hybrid pipeline + data parallelism.
  let loss = 0;
  const steps1 = epochSteps(input, 1);
  for (const [k, ids] of steps1.entries()) {
    const out = await Promise.all(ranks.map((r) => r.runner.runStep(k + 1, ids)));
    loss += out.reduce((a, x) => a + x.loss, 0);
  }
  epochLoss.push(loss / steps1.length);
  layerCalls.push(ranks.reduce((a, r) => a + r.compute.layerCalls, 0));

  const params = new Map<string, Float32Array>();
  const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
  for (const r of ranks.filter((x) => x.rank === 0)) {
    for (const [n, p] of r.compute.snapshot()) params.set(n, p);
    const st = r.optimizer.state();
    for (const [n, x] of st.m) m.set(n, x);
    for (const [n, x] of st.v) v.set(n, x);
  }
  const optimizerStep = ranks[0]!.optimizer.step;
  for (const r of ranks) { r.compute.clear(); r.side.dispose(); r.backbone.dispose(); }
  if (o.epochs === 1) return { params, epochLoss, layerCalls, redistributedBytes: 0, heldWeights };

  // Redistribution: every device gets every layer of its shard.
  const holdings = new Map(o.data.samples.map((_, j) => [j, devices.map((d) => {
    let bytes = 0;
    for (let l = 0; l <= L; l++) bytes += caches.get(d)!.get({ fingerprint, sample: j, layer: l })?.byteLength ?? 0;
    return { device: d, bytes };
  }).filter((h) => h.bytes > 0)]));
  const shards = planCachedPhase(devices.map((d) => ({ name: d, msPerSample: 1 })), [...holdings.keys()], holdings).shards.map((s) => s.samples);
  let redistributedBytes = 0;
  shards.forEach((shard, d) => {
    const dest = caches.get(devices[d]!)!;
    for (const j of shard) for (let l = 0; l <= L; l++) {
      const key = { fingerprint, sample: j, layer: l };
      if (dest.get(key)) continue;
      const src = devices.map((x) => caches.get(x)!.get(key)).find((x) => x);
      if (!src) throw new Error(`redistribution: no device holds layer ${l} of sample ${j}`);
      dest.put(key, src);
      redistributedBytes += src.byteLength;
    }
  });

  // Cached epochs: pure data parallelism over every device, no backbone layer.
  const workers = await Promise.all(devices.map(async (device, rank) => {
    const head = await loadBackbone(o.model, { from: 1, to: 0, embed: false, head: true });
    const side = new SideNetwork(head.config, { from: 1, to: L, hasDown0: true, hasUp: true }, { seed: o.seed, reduction: o.reduction, sideInit: 'random' });
    const compute = new StageCompute(head, side, o.seqLen);
    compute.load(params);
    const optimizer = new AdamW(o.optimizer);
    optimizer.load({ step: optimizerStep, m, v }, side.parameters());
    const cache = caches.get(device)!;
    const activations = (ids: readonly number[]) => Array.from({ length: L + 1 }, (_, l) => {
      const w = o.seqLen * head.config.dModel, out = new Float32Array(ids.length * w);
      ids.forEach((id, j) => out.set(cache.get({ fingerprint, sample: id, layer: l })!, j * w));
      return out;
    });
    return { rank, compute, optimizer, shard: new Set(shards[rank]), activations, side, head };
  }));
  for (let e = 2; e <= o.epochs; e++) {
    let eloss = 0;
    const steps = epochSteps(input, e);
    for (const [k, ids] of steps.entries()) {
      const step = steps1.length + (e - 2) * steps.length + k + 1;
      const out = await Promise.all(workers.map((w) => cachedStep({ step, sampleIds: ids, shard: w.shard, rank: w.rank, size: workers.length, microBatches: o.microBatches, compute: w.compute, optimizer: w.optimizer, ring: hub.ring('all', w.rank, step), data, activations: w.activations })));
      eloss += out.reduce((a, x) => a + x.loss, 0);
    }
    epochLoss.push(eloss / steps.length);
    layerCalls.push(workers.reduce((a, w) => a + w.compute.layerCalls, 0));
  }
  const final = workers[0]!.compute.snapshot();
  for (const w of workers) { w.side.dispose(); w.head.dispose(); w.optimizer.dispose(); }
  return { params: final, epochLoss, layerCalls, redistributedBytes, heldWeights };
}
