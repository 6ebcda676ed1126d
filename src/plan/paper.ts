/**
 * The paper's comparison on its testbed, costed by this project's model: 2/4/6/8 Jetson Nanos
 * (devicePresets['jetson-nano']), T5-Base, BART-Large and T5-Large (modelPresets), batch 16,
 * sequence 128, MRPC's 3668 training samples, 3 epochs. Every run is planned by the planner (or
 * the plan shape of its baseline, shapes.ts) on analytic profiles and its epoch-1 step replayed by
 * the discrete-event simulator; PAC's epochs after the first are the cached profile's data
 * parallelism over every device, after the redistribution that planCachedPhase plans.
 *
 * A run that does not fit the Nanos' memory is costed as if memory sufficed and marked
 * `fits: false` with the bytes it needs: the paper reports times and memory for such runs too.
 */
import { analyticProfile, devicePresets, modelPresets, type MethodShape, type ModelShape } from './analytic.ts';
import { planCachedPhase, type CacheHolding } from './cached.ts';
import { CostModel } from './cost.ts';
import { methodShape } from './device-profile.ts';
import { InfeasiblePlanError, planPipeline, type StagePlan } from './planner.ts';
import { linkCost, type Profile } from './profile.ts';
import { simulatePlan } from './simulator.ts';

export const paperModels = ['t5-base', 'bart-large', 't5-large'] as const;
export const paperDeviceCounts = [2, 4, 6, 8] as const;
export type PaperModel = (typeof paperModels)[number];

/**
 * Figures the paper publishes (../shared/PAPER.md, "Evaluation"; Ye et al., ICPP 2024, the
 * end-to-end, memory and plan results). Only what it states is here; null where it gives none.
 */
export const published = {
  /** Devices per stage of the plans found on 2/4/6/8 Nanos. */
  groupings: {
    't5-base': ['2', '4', '6', '8'],
    'bart-large': ['1-1', '2-2', '3-3', '4-4'],
    't5-large': ['1-1', '2-1-1', '2-2-2', '3-3-2'],
  } as Record<PaperModel, string[]>,
  /** T5-Base on MRPC, 8 Nanos: Standalone with Adapters 1.21 h, PAC 0.14 h: 8.64x. */
  speedup: { model: 't5-base' as PaperModel, devices: 8, baseline: 'standalone-serial', baselineHours: 1.21, pacHours: 0.14, ratio: 8.64 },
  /** Peak memory reduction with the cache, the best case over the paper's runs. */
  memoryReductionMax: 0.8816,
  /** Per-epoch latency the cache saves, the best case. */
  cacheEpochCutMax: 0.7951,
  /** PAC's throughput over Eco-FL: +39.5% to +84.8%. */
  throughputOverEcoFl: [0.395, 0.848] as [number, number],
  /** T5-Large, batch 16, seq 128, GB (10^9 bytes taken): full fine-tuning, Adapters, LoRA, inference. */
  t5LargeMemoryGb: { full: 10.83, serial: 6.89, lora: 7.13, inference: 2.75 },
};

type Kind = {
  name: string;
  method: 'full' | 'lora' | 'serial' | 'parallel';
  shape: 'alone' | 'data-parallel' | 'pipeline' | 'auto';
  cache: boolean;
};

export const paperRuns: Kind[] = [
  { name: 'standalone-full', method: 'full', shape: 'alone', cache: false },
  { name: 'standalone-lora', method: 'lora', shape: 'alone', cache: false },
  { name: 'standalone-serial', method: 'serial', shape: 'alone', cache: false },
  { name: 'eddl-full', method: 'full', shape: 'data-parallel', cache: false },
  { name: 'eddl-lora', method: 'lora', shape: 'data-parallel', cache: false },
  { name: 'ecofl-full', method: 'full', shape: 'pipeline', cache: false },
  { name: 'ecofl-lora', method: 'lora', shape: 'pipeline', cache: false },
  { name: 'pac-nocache', method: 'parallel', shape: 'auto', cache: false },
  { name: 'pac', method: 'parallel', shape: 'auto', cache: true },
];

export interface PaperRun {
  name: string;
  method: string;
  /** Devices per stage, e.g. "2-2" (one device alone: "1"). */
  groups: string;
  microBatches: number;
  /** Whether the plan fits the Nanos' memory; if not, it is costed with memory unlimited. */
  fits: boolean;
  /** Simulated epoch-1 step (the planner's estimate beside it). */
  stepMs: number;
  plannedStepMs: number;
  /** The plan is the cost model's optimum over every device subset and order (the planner's exact search). */
  exact: boolean;
  epochSeconds: number[];
  /** PAC: moving the cache to every device's shard between epoch 1 and 2. */
  redistributeSeconds?: number;
  totalSeconds: number;
  /** Epoch-1 samples per second. */
  throughput: number;
  /** Max over devices of the predicted peak in epoch 1. */
  peakBytes: number;
  /** PAC: the same in the cached epochs. */
  cachedPeakBytes?: number;
}

export interface PaperCase {
  model: PaperModel;
  devices: number;
  runs: PaperRun[];
  ratios: {
    /** Standalone serial (Adapters) total time over PAC's: the paper's 8.64x headline measure. */
    speedupOverStandaloneSerial: number;
    speedupOverEddlLora: number;
    /** PAC's epoch-1 throughput over Eco-FL-style LoRA's, minus one. */
    throughputOverEcoFlLora: number;
    /** 1 - a cached epoch over a PAC epoch without the cache. */
    cacheEpochCut: number;
    /** 1 - PAC's cached-epoch peak over Standalone full's peak. */
    memoryReductionVsStandaloneFull: number;
  };
  publishedGroups: string;
}

export interface PaperOptions {
  models?: readonly PaperModel[];
  deviceCounts?: readonly number[];
  epochs?: number;
  samples?: number;
  batchSize?: number;
}

const nano = devicePresets['jetson-nano']!;

function shapeOf(model: PaperModel, method: Kind['method']): ModelShape {
  const m: MethodShape = methodShape(method);
  return { ...modelPresets[model]!, method: m };
}

/** The same profile with memory no limit: what a run that does not fit would need. */
function unlimited(p: Profile): Profile {
  return { ...p, devices: p.devices.map((d) => ({ ...d, memoryBytes: Number.MAX_SAFE_INTEGER })) };
}

/** Plans `kind` on `profile`; when nothing fits, plans it with memory unlimited (fits: false). */
function planRun(profile: Profile, kind: Kind, batchSize: number): { plan: StagePlan; fits: boolean; profile: Profile } {
  const options = {
    batchSize,
    // The paper's Standalone runs the whole batch at once; the others pick their micro-batches.
    ...(kind.shape === 'alone' ? { microBatchOptions: [1] } : {}),
    ...(kind.shape === 'data-parallel' || kind.shape === 'pipeline' ? { shape: kind.shape } : {}),
  };
  try {
    return { plan: planPipeline(profile, options), fits: true, profile };
  } catch (err) {
    if (!(err instanceof InfeasiblePlanError)) throw err;
    const free = unlimited(profile);
    return { plan: planPipeline(free, options), fits: false, profile: free };
  }
}

/**
 * Which device holds which cache bytes of every sample after epoch 1 of `plan`: a sample's row
 * in its micro-batch picks the member of each stage (rows keep their order), which keeps b of
 * the stage's layers (the first stage also b_0) for it.
 */
function holdings(plan: StagePlan, model: ModelShape, samples: number): Map<number, CacheHolding[]> {
  const perLayer = model.seqLen * model.dModel * model.bytesPerValue;
  const out = new Map<number, CacheHolding[]>();
  for (let j = 0; j < samples; j++) {
    const row = (j % plan.batchSize) % plan.microBatchSize;
    const held: CacheHolding[] = [];
    for (const st of plan.stages) {
      let start = 0;
      for (const d of st.devices) {
        if (row >= start && row < start + d.rows) {
          const layers = st.layers.to - st.layers.from + 1 + (st.layers.from === 1 ? 1 : 0);
          held.push({ device: d.name, bytes: layers * perLayer });
        }
        start += d.rows;
      }
    }
    out.set(j, held);
  }
  return out;
}

/** PAC's cached epochs: redistribution time, cached epoch time, cached peak. */
function cachedPhase(model: PaperModel, count: number, plan: StagePlan, batchSize: number, samples: number) {
  const cachedProfile = analyticProfile(shapeOf(model, 'parallel'), nano, count, { batchSize, samples }, true);
  const cached = planPipeline(cachedProfile, { batchSize, samples, shape: 'data-parallel' });
  const cm = new CostModel(cachedProfile);
  const stage = cm.stage(1, cachedProfile.model.layers, [0], 1, 1);
  if (!stage || !('members' in stage)) throw new Error('the cached side network does not fit one Nano');
  const msPerSample = stage.members[0]!.fwdMs + stage.members[0]!.bwdMs;
  const names = cachedProfile.devices.map((d) => d.name);
  const moved = planCachedPhase(
    names.map((name) => ({ name, msPerSample })),
    Array.from({ length: samples }, (_, j) => j),
    holdings(plan, modelPresets[model]!, samples),
  );
  // Every device sends and receives at once (full duplex): the busiest port decides.
  const port = new Map<string, number>();
  for (const t of moved.transfers) {
    port.set(`out ${t.from}`, (port.get(`out ${t.from}`) ?? 0) + t.bytes);
    port.set(`in ${t.to}`, (port.get(`in ${t.to}`) ?? 0) + t.bytes);
  }
  const msPerByte = linkCost(cachedProfile, names[0]!, names[1] ?? names[0]!).msPerByte;
  const redistributeMs = Math.max(0, ...port.values()) * msPerByte;
  const stepMs = simulatePlan(cached, cachedProfile).stepMs;
  const epochMs = cached.predicted.stepsPerEpoch! * stepMs;
  const peak = Math.max(...cached.stages[0]!.devices.map((d) => d.peakBytes));
  return { redistributeMs, epochMs, peak };
}

/** Every run of one model on `count` Nanos. */
export function paperCase(model: PaperModel, count: number, o: Required<Omit<PaperOptions, 'models' | 'deviceCounts'>>): PaperCase {
  const { epochs, samples, batchSize } = o;
  const runs: PaperRun[] = paperRuns.map((kind) => {
    const n = kind.shape === 'alone' ? 1 : count;
    const base = analyticProfile(shapeOf(model, kind.method), nano, n, { batchSize, samples });
    const { plan, fits, profile } = planRun(base, kind, batchSize);
    const stepMs = simulatePlan(plan, profile).stepMs;
    const epochMs = plan.predicted.stepsPerEpoch! * stepMs;
    const epochSeconds = [epochMs / 1000];
    const peakBytes = Math.max(...Object.values(plan.peakBytesPerDevice));
    let redistributeSeconds: number | undefined;
    let cachedPeakBytes: number | undefined;
    if (kind.cache && epochs > 1) {
      const c = cachedPhase(model, count, plan, batchSize, samples);
      redistributeSeconds = c.redistributeMs / 1000;
      cachedPeakBytes = c.peak;
      for (let e = 1; e < epochs; e++) epochSeconds.push(c.epochMs / 1000);
    } else for (let e = 1; e < epochs; e++) epochSeconds.push(epochMs / 1000);
    const totalSeconds = epochSeconds.reduce((a, b) => a + b, 0) + (redistributeSeconds ?? 0);
    return {
      name: kind.name,
      method: kind.method,
      groups: plan.stages.map((s) => s.devices.length).join('-'),
      microBatches: plan.microBatches,
      fits,
      stepMs,
      plannedStepMs: plan.predicted.stepMs,
      exact: plan.search.exact,
      epochSeconds,
      ...(redistributeSeconds !== undefined ? { redistributeSeconds } : {}),
      totalSeconds,
      throughput: (plan.predicted.stepsPerEpoch! * batchSize) / epochSeconds[0]!,
      peakBytes,
      ...(cachedPeakBytes !== undefined ? { cachedPeakBytes } : {}),
    };
  });
  const get = (name: string) => runs.find((r) => r.name === name)!;
  const pac = get('pac');
  const nocache = get('pac-nocache');
  return {
    model,
    devices: count,
    runs,
    ratios: {
      speedupOverStandaloneSerial: get('standalone-serial').totalSeconds / pac.totalSeconds,
      speedupOverEddlLora: get('eddl-lora').totalSeconds / pac.totalSeconds,
      throughputOverEcoFlLora: pac.throughput / get('ecofl-lora').throughput - 1,
      cacheEpochCut: pac.epochSeconds.length > 1 ? 1 - pac.epochSeconds[1]! / nocache.epochSeconds[1]! : 0,
      memoryReductionVsStandaloneFull: 1 - (pac.cachedPeakBytes ?? pac.peakBytes) / get('standalone-full').peakBytes,
    },
    publishedGroups: published.groupings[model][paperDeviceCounts.indexOf(count as 2)] ?? '',
  };
}

/** The whole comparison: every model on every device count. */
export function paperBench(options: PaperOptions = {}): { testbed: Record<string, unknown>; cases: PaperCase[] } {
  const o = { epochs: options.epochs ?? 3, samples: options.samples ?? 3668, batchSize: options.batchSize ?? 16 };
  const cases: PaperCase[] = [];
  for (const model of options.models ?? paperModels)
    for (const count of options.deviceCounts ?? paperDeviceCounts) cases.push(paperCase(model, count, o));
  return {
    testbed: {
      device: 'jetson-nano',
      tflops: nano.tflops,
      memoryBytes: nano.memoryBytes,
      usableBytes: nano.memoryBytes - nano.reserveBytes,
      mbps: nano.mbps,
      ...o,
      seqLen: modelPresets['t5-base']!.seqLen,
    },
    cases,
  };
}
