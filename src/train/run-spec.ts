/**
 * What a distributed run trains, as one plain, serialisable value: the coordinator derives it
 * from the topology and sends it with every stage assignment, so a device (local or remote)
 * rebuilds the same model slice, data set and optimiser without reading the topology itself.
 */
import type { ModelSource } from '../model/load.ts';
import { loadConfig } from '../model/load.ts';
import { DataError, loadJsonl, markovDataset, sequenceLength, type Dataset } from './data.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { forRun, type AdamWOptions } from './optim.ts';
import type { Topology } from '../topology/schema.ts';
import type { MethodName, MethodOptions } from '../model/methods/method.ts';
import type { MessageLimits } from '../bus/index.ts';
import { methodShape, modelShape } from '../plan/device-profile.ts';
import { runMessageLimits } from '../plan/message-limits.ts';
import type { StageSpec } from '../engine/stage-setup.ts';
import type { ProbeRequest } from '../engine/probe.ts';

export interface RunSpec {
  model: ModelSource;
  /** The fine-tuning method and its sizes; absent in specs written before every method ran distributed (parallel). */
  method?: MethodName;
  methodOptions?: MethodOptions;
  /** The seeded Markov chain (vocabulary = the model's) or a JSONL file readable by every device. */
  data: { markov: { sequences: number; seqLen: number; seed: number } } | { file: string };
  /** Labelled data: the class names in index order; the run trains a classification head on them. */
  labelNames?: string[];
  seqLen: number;
  samples: number;
  epochs: number;
  batch: number;
  /**
   * Micro-batches per step when the topology pins it; otherwise the coordinator plans it and
   * sends devices the spec with the plan's count filled in.
   */
  microBatches?: number;
  /** Seeds the side network's initial values and the epoch order. */
  seed: number;
  /**
   * AdamW as the standalone trainer takes it: clipping by the global norm over every stage (the
   * stages agree on it by an all-reduce), warm-up, weight decay, and `totalSteps` of the whole run
   * (a cosine schedule decays to 0 at its last step).
   */
  optimizer: AdamWOptions;
  /** k: side width r = dModel / k (PAC). */
  reduction: number;
  /** `use`: PAC keeps its activation cache and trains epochs >= 2 from it; otherwise every epoch is a pipeline epoch. */
  cache: {
    budgetMb: number;
    dtype: 'f32' | 'f16';
    use?: boolean /** Copies of every entry in the cached epochs (absent: 1). */;
    replicas?: number;
  };
  /** The plan's shape: the planner's choice, one stage over every device, or one device per stage. */
  plan?: 'auto' | 'data-parallel' | 'pipeline';
}

/** Whether a run trains its epochs >= 2 from PAC's activation cache (specs without the field: PAC, cached). */
export function usesCache(spec: RunSpec): boolean {
  return (spec.method ?? 'parallel') === 'parallel' && spec.cache.use !== false;
}

/** The method options of a topology's method section. */
function methodOptionsOf(m: Topology['method']): MethodOptions {
  switch (m.kind) {
    case 'parallel':
      return { reduction: m.k };
    case 'lora':
      return { rank: m.rank, alpha: m.alpha, targets: m.targets };
    case 'serial':
      return { bottleneck: m.bottleneck };
    case 'full':
      return {};
  }
}

/** The spec of a topology. */
export function specFromTopology(t: Topology): RunSpec {
  const model: ModelSource = t.model.preset ? { preset: t.model.preset } : { dir: t.model.dir! };
  const tr = t.training;
  const base = {
    model,
    method: t.method.kind,
    methodOptions: methodOptionsOf(t.method),
    epochs: tr.epochs,
    batch: tr.batch,
    ...(tr.microBatches !== undefined ? { microBatches: tr.microBatches } : {}),
    seed: tr.seed,
    optimizer: {
      lr: tr.lr,
      weightDecay: tr.weightDecay,
      maxGradNorm: tr.maxGradNorm,
      warmupSteps: tr.warmupSteps,
      schedule: tr.schedule,
    } satisfies AdamWOptions,
    reduction: t.method.kind === 'parallel' ? t.method.k : 8,
    cache: { budgetMb: tr.cache.budgetMb, dtype: tr.cache.dtype, use: tr.cache.use, replicas: tr.cache.replicas },
    plan: tr.plan,
  };
  const spec: RunSpec = t.data.markov
    ? {
        ...base,
        data: { markov: { sequences: t.data.markov.sequences, seqLen: t.data.markov.seqLen, seed: t.data.markov.seed } },
        seqLen: t.data.markov.seqLen,
        samples: t.data.markov.sequences,
      }
    : (() => {
        const raw: RunSpec = { ...base, data: { file: t.data.file! }, seqLen: 0, samples: 0 };
        const data = loadRunData(raw);
        return {
          ...raw,
          ...(data.labelNames ? { labelNames: data.labelNames } : {}),
          seqLen: sequenceLength(data, loadConfig(model).maxPositions),
          samples: data.samples.length,
        };
      })();
  return { ...spec, optimizer: forRun(spec.optimizer, Math.ceil(spec.samples / spec.batch), spec.epochs) };
}

/** The run's data set, identical on every device (labelled data: the classification task). @throws DataError when this device's copy differs from the run's. */
export function loadRunData(spec: RunSpec): Dataset {
  const config = loadConfig(spec.model);
  if ('markov' in spec.data) {
    const m = spec.data.markov;
    return markovDataset({ vocab: config.vocabSize, sequences: m.sequences, length: m.seqLen, seed: m.seed });
  }
  const tokenizer = loadTokenizer('dir' in spec.model ? spec.model.dir : undefined);
  const data = loadJsonl(spec.data.file, {
    vocabSize: config.vocabSize,
    ...(tokenizer.available ? { encode: (t: string) => tokenizer.encode(t) } : {}),
  });
  // Every device reads its own copy of the file: one that differs from the coordinator's would train other classes.
  const same = (a?: string[], b?: string[]) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  if (spec.samples > 0 && (data.samples.length !== spec.samples || !same(data.labelNames, spec.labelNames)))
    throw new DataError(
      `${spec.data.file}: this copy has ${data.samples.length} samples${data.labelNames ? ` labelled ${data.labelNames.join(', ')}` : ''}, the run's has ${spec.samples} samples${spec.labelNames ? ` labelled ${spec.labelNames.join(', ')}` : ''}`,
    );
  return data;
}

/** The micro-batch count of a deployed spec. @throws Error when nobody planned it (a coordinator bug). */
export function plannedMicroBatches(spec: RunSpec): number {
  if (spec.microBatches === undefined)
    throw new Error('run spec has no micro-batch count: the coordinator fills it in from the plan before deploying');
  return spec.microBatches;
}

/** The engine's stage settings of a run (distributed runs start the side network at random). */
export const stageSpec = (s: RunSpec): StageSpec => ({
  method: s.method ?? 'parallel',
  methodOptions: s.methodOptions ?? {},
  seed: s.seed,
  reduction: s.reduction,
  sideInit: 'random' as const,
  seqLen: s.seqLen,
  optimizer: s.optimizer,
  ...(s.labelNames ? { classes: s.labelNames.length } : {}),
});

/**
 * What the coordinator of a launched run of `t` tells every device that joins, derived from the
 * run's `spec` (of `t`): the largest message any plan of the run can send, for the devices the
 * topology lists (src/plan/message-limits.ts), which every connection of the run accepts; and the
 * work each device times while profiling (src/engine/probe.ts): its stages at the run's shapes,
 * one row and half a batch (the planner fits fixed + per-row time).
 */
export function runJoinTerms(t: Topology, spec: RunSpec): { limits: MessageLimits; probe: ProbeRequest } {
  const config = loadConfig(spec.model);
  const shape = modelShape(config, spec.seqLen, spec.reduction, 'model', methodShape(spec.method, spec.methodOptions));
  const half = Math.max(2, Math.min(8, Math.ceil(spec.batch / 2)));
  return {
    limits: runMessageLimits(shape, spec.batch, t.devices.length),
    probe: { model: spec.model, spec: stageSpec(spec), layers: config.nLayers, microBatches: [1, half] },
  };
}
