/**
 * What a distributed run trains, as one plain, serialisable value: the coordinator derives it
 * from the topology and sends it with every stage assignment, so a device (local or remote)
 * rebuilds the same model slice, data set and optimiser without reading the topology itself.
 */
import type { ModelSource } from '../model/load.ts';
import { loadConfig } from '../model/load.ts';
import { DataError, loadJsonl, markovDataset, sequenceLength, type Dataset } from './data.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import type { AdamWOptions } from './optim.ts';
import type { Topology } from '../topology/schema.ts';

export interface RunSpec {
  model: ModelSource;
  /** The seeded Markov chain (vocabulary = the model's) or a JSONL file readable by every device. */
  data: { markov: { sequences: number; seqLen: number; seed: number } } | { file: string };
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
   * No gradient clipping: a clip needs the global norm over every stage, and applying a per-stage
   * norm would make the result depend on placement.
   */
  optimizer: AdamWOptions;
  /** k: side width r = dModel / k. */
  reduction: number;
  cache: { budgetMb: number; dtype: 'f32' | 'f16' };
}

/** The spec of a topology. @throws Error when the method is not `parallel` (PAC is what runs distributed). */
export function specFromTopology(t: Topology): RunSpec {
  if (t.method.kind !== 'parallel')
    throw new Error(`topology ${t.run}: method.kind '${t.method.kind}' cannot run distributed; only 'parallel' (PAC) can`);
  const model: ModelSource = t.model.preset ? { preset: t.model.preset } : { dir: t.model.dir! };
  const tr = t.training;
  const base = {
    model,
    epochs: tr.epochs,
    batch: tr.batch,
    ...(tr.microBatches !== undefined ? { microBatches: tr.microBatches } : {}),
    seed: tr.seed,
    optimizer: { lr: tr.lr },
    reduction: t.method.k,
    cache: { budgetMb: tr.cache.budgetMb, dtype: tr.cache.dtype },
  };
  if (t.data.markov) {
    const m = t.data.markov;
    return {
      ...base,
      data: { markov: { sequences: m.sequences, seqLen: m.seqLen, seed: m.seed } },
      seqLen: m.seqLen,
      samples: m.sequences,
    };
  }
  const spec: RunSpec = { ...base, data: { file: t.data.file! }, seqLen: 0, samples: 0 };
  const data = loadRunData(spec);
  return { ...spec, seqLen: sequenceLength(data, loadConfig(model).maxPositions), samples: data.samples.length };
}

/** The run's data set, identical on every device. */
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
  if (data.labelNames) {
    throw new DataError(
      `${spec.data.file}: labelled data ("label") trains a classification head, which distributed runs do not train yet; use charon train, or drop the labels to fine-tune the language model`,
    );
  }
  return data;
}

/** The micro-batch count of a deployed spec. @throws Error when nobody planned it (a coordinator bug). */
export function plannedMicroBatches(spec: RunSpec): number {
  if (spec.microBatches === undefined)
    throw new Error('run spec has no micro-batch count: the coordinator fills it in from the plan before deploying');
  return spec.microBatches;
}
