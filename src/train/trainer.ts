/**
 * The standalone trainer: one process, one backbone, one fine-tuning method. Each step is one
 * mini-batch fixed by (seed, epoch); order, optimiser and parameters are all the state there is,
 * so `state()` + `load()` continue the exact same trajectory.
 *
 * With the parallel method and an activation cache, b_0..b_L come from the cache whenever it has
 * them: epoch 1 fills it, later epochs never run the backbone (unless an entry was lost) and
 * release its layer weights.
 */
import * as tf from '@tensorflow/tfjs';
import type { ActivationCache } from '../cache/activation-cache.ts';
import type { Backbone } from '../model/types.ts';
import type { FineTuneMethod } from '../model/methods/method.ts';
import { ClassificationHead } from '../model/methods/heads.ts';
import { cachedActivations, isCacheable } from './activations.ts';
import { CacheRows } from '../engine/cache-rows.ts';
import { epochOrder, makeBatch, miniBatches, sequenceLengths, type Batch, type Dataset } from './data.ts';
import { Ledger, type LedgerJson } from './ledger.ts';
import { classificationLoss, correctCount, crossEntropy, frozenHeadCrossEntropy, nextTokenTargets } from './loss.ts';
import { AdamW, forRun, type AdamWOptions, type AdamWState } from './optim.ts';
import { leanVariableGrads } from './grads.ts';
import { resetPeakTensorBytes, sampleTensorBytes, stepMemory, type StepMemory } from '../model/memory.ts';

export interface TrainConfig {
  epochs: number;
  batch: number;
  seed: number;
  /** Fixed sequence length: samples are truncated or padded (padding is masked out of the loss). */
  seqLen: number;
  task: 'lm' | 'classification';
  optimizer: AdamWOptions;
}

export interface StepMetrics {
  epoch: number;
  step: number;
  globalStep: number;
  loss: number;
  tokens: number;
  seconds: number;
  lr: number;
  gradNorm: number;
  backboneSamples: number;
}
export interface EpochMetrics {
  epoch: number;
  loss: number;
  tokens: number;
  seconds: number;
  steps: number;
  peakTensorBytes: number;
  peakCacheBytes: number;
  peakBytes: number;
  backboneSamples: number;
}

/** Everything needed to continue a run (parameters and optimiser moments travel as arrays). */
export interface TrainerState {
  /** Epoch in progress (0-based) and the next step inside it. */
  epoch: number;
  stepInEpoch: number;
  globalStep: number;
  stepLosses: number[];
  epochs: EpochMetrics[];
  ledger: LedgerJson;
  parameters: Map<string, { data: Float32Array; shape: number[] }>;
  optimizer: AdamWState;
}

export interface TrainerInit {
  backbone: Backbone;
  method: FineTuneMethod;
  data: Dataset;
  config: TrainConfig;
  /** Used with the parallel method: activations come from and go to this cache. */
  cache?: ActivationCache;
  onStep?(m: StepMetrics): void;
  onEpoch?(m: EpochMetrics): void;
}

/** Targets of a batch: class or next-token ids, row weights in {0, 1}, and how many rows count. */
interface Target {
  t: Int32Array;
  w: Float32Array;
  count: number;
}

export interface EvalResult {
  loss: number;
  tokens: number;
  accuracy?: number;
  samples: number;
}

export class Trainer {
  readonly optimizer: AdamW;
  ledger: Ledger;
  readonly head: ClassificationHead | undefined;
  private readonly params: Map<string, tf.Variable>;
  private readonly varNames = new Map<string, string>();
  private epoch = 0;
  private stepInEpoch = 0;
  private globalStep = 0;
  private readonly stepLosses: number[] = [];
  private readonly epochs: EpochMetrics[] = [];
  /** The cache's entries, with the parallel method and a cache. */
  private readonly rows: CacheRows | undefined;
  /** Peak tensor bytes of the run (exact on wasm: every allocation counts; see model/memory.ts). */
  peakTensorBytes = 0;
  peakRssBytes = 0;

  constructor(private readonly init: TrainerInit) {
    const { method, data, config, backbone } = init;
    if (config.task === 'classification') {
      const n = data.labelNames?.length ?? 0;
      if (n < 2) throw new Error('classification needs labelled data with at least 2 distinct labels');
      this.head = new ClassificationHead(backbone.config.dModel, n, config.seed);
    }
    if (init.cache && !isCacheable(method)) throw new Error(`the activation cache works with the parallel method only, not ${method.name}`);
    this.params = new Map([...method.parameters(), ...(this.head?.parameters() ?? [])]);
    for (const [name, v] of this.params) this.varNames.set(v.name, name);
    this.optimizer = new AdamW(forRun(config.optimizer, this.stepsPerEpoch(), config.epochs));
    this.ledger = new Ledger(data.samples.length);
    if (init.cache)
      this.rows = new CacheRows(init.cache, {
        fingerprint: `${backbone.fingerprint}-t${config.seqLen}`,
        layers: backbone.config.nLayers,
        width: config.seqLen * backbone.config.dModel,
      });
  }

  stepsPerEpoch(): number {
    return Math.ceil(this.init.data.samples.length / this.init.config.batch);
  }
  get currentEpoch(): number {
    return this.epoch;
  }
  get finished(): boolean {
    return this.epoch >= this.init.config.epochs;
  }
  parameters(): Map<string, tf.Variable> {
    return this.params;
  }
  losses(): number[] {
    return [...this.stepLosses];
  }
  epochMetrics(): EpochMetrics[] {
    return [...this.epochs];
  }

  /** Trains the remaining epochs (or up to `untilEpoch`, exclusive) and returns all epoch metrics. */
  run(untilEpoch = this.init.config.epochs): EpochMetrics[] {
    while (this.epoch < Math.min(untilEpoch, this.init.config.epochs)) this.trainEpoch();
    return this.epochMetrics();
  }

  /** Trains the rest of the current epoch. */
  trainEpoch(): EpochMetrics {
    const { data, config, cache } = this.init;
    const batches = miniBatches(epochOrder(data.samples.length, config.seed, this.epoch), config.batch);
    // Cached epochs need only the final norm and the head of the backbone (a lost entry reloads
    // the layers, which then stay for the rest of the epoch).
    if (cache && this.epoch > 0 && isCacheable(this.init.method)) this.init.backbone.releaseLayers();
    const partial = this.epochs.length > this.epoch ? this.epochs.pop()! : undefined;
    const m: EpochMetrics = partial ?? {
      epoch: this.epoch,
      loss: 0,
      tokens: 0,
      seconds: 0,
      steps: 0,
      peakTensorBytes: 0,
      peakCacheBytes: 0,
      peakBytes: 0,
      backboneSamples: 0,
    };
    let lossSum = m.loss * m.steps;
    for (; this.stepInEpoch < batches.length; this.stepInEpoch++) {
      const ids = batches[this.stepInEpoch]!;
      const s = this.step(
        makeBatch(
          ids.map((i) => data.samples[i]!),
          config.seqLen,
        ),
      );
      lossSum += s.loss;
      m.steps += 1;
      m.loss = lossSum / m.steps;
      m.tokens += s.tokens;
      m.seconds += s.seconds;
      m.backboneSamples += s.backboneSamples;
      m.peakCacheBytes = Math.max(m.peakCacheBytes, cache?.stats().memoryBytes ?? 0);
      m.peakTensorBytes = Math.max(m.peakTensorBytes, this.lastStep.tensorBytes);
      m.peakBytes = Math.max(m.peakBytes, this.lastStep.bytes);
      this.epochs[this.epoch] = m;
    }
    this.ledger.finish(this.epoch);
    this.epochs[this.epoch] = m;
    this.epoch += 1;
    this.stepInEpoch = 0;
    this.init.onEpoch?.(m);
    return m;
  }

  /** Memory of the last step, from its start to the end of its optimiser update. */
  private lastStep: StepMemory = { tensorBytes: 0, bytes: 0 };

  private step(batch: Batch): StepMetrics {
    const started = performance.now();
    const step = this.stepInEpoch;
    this.ledger.begin(this.epoch, step, batch.sampleIds);
    resetPeakTensorBytes();
    let backboneSamples = 0;
    const { value, grads, tokens } = tf.tidy(() => {
      const { acts, computed } = this.activations(batch);
      backboneSamples = computed;
      const target = this.targets(batch);
      const vg = leanVariableGrads(() => {
        const loss = this.loss(batch, acts, target);
        sampleTensorBytes(); // end of forward (the peak is exact on wasm; elsewhere these samples are it)
        return loss;
      }, [...this.params.values()]);
      return { value: vg.value, grads: vg.grads, tokens: target.count };
    });
    sampleTensorBytes(); // end of backward
    const named = new Map<string, tf.Tensor>();
    for (const [vn, g] of Object.entries(grads)) named.set(this.varNames.get(vn) ?? vn, g);
    const loss = value.dataSync()[0]!;
    const { lr, gradNorm } = this.optimizer.apply(this.params, named);
    value.dispose();
    for (const g of named.values()) g.dispose();
    this.lastStep = stepMemory(this.optimizer, this.init.cache?.stats().memoryBytes ?? 0);
    this.peakTensorBytes = Math.max(this.peakTensorBytes, this.lastStep.tensorBytes);
    this.ledger.commit(this.epoch, step);
    this.globalStep += 1;
    this.stepLosses.push(loss);
    this.peakRssBytes = Math.max(this.peakRssBytes, process.memoryUsage.rss());
    const m: StepMetrics = {
      epoch: this.epoch,
      step,
      globalStep: this.globalStep,
      loss,
      tokens,
      seconds: (performance.now() - started) / 1000,
      lr,
      gradNorm,
      backboneSamples,
    };
    this.init.onStep?.(m);
    return m;
  }

  /** Cached activations (parallel + cache) or nothing (the method runs its own backbone). */
  private activations(batch: Batch): { acts?: tf.Tensor2D[]; computed: number } {
    const { method } = this.init;
    if (!this.rows || !isCacheable(method)) return { computed: batch.batch };
    const { acts, report } = cachedActivations(method, this.rows, batch);
    return { acts, computed: report.computed };
  }

  private targets(batch: Batch): Target {
    if (this.init.config.task === 'classification')
      return { t: new Int32Array(batch.labels!), w: new Float32Array(batch.batch).fill(1), count: batch.batch };
    const { targets, weights, count } = nextTokenTargets(batch.ids, batch.mask, batch.batch, batch.seqLen);
    return { t: targets, w: weights, count };
  }

  /** Final hidden (B*T, d) -> head -> loss; a frozen LM head is fused with the loss (see frozenHeadCrossEntropy). */
  private loss(batch: Batch, acts: tf.Tensor2D[] | undefined, target: Target): tf.Scalar {
    const { method, backbone } = this.init;
    const hidden =
      acts && isCacheable(method)
        ? method.hiddenFromActivations(acts, batch.seqLen)
        : method.hidden(tf.tensor2d(batch.ids, [batch.batch, batch.seqLen], 'int32')); // (B*T, d)
    if (this.head)
      return crossEntropy(this.head.logits(hidden, batch.seqLen, lengths(batch)), tf.tensor1d(target.t, 'int32'), tf.tensor1d(target.w)); // (B, C)
    const frozen = backbone.frozenHead();
    if (frozen) return frozenHeadCrossEntropy(hidden, frozen, target.t, target.w);
    return crossEntropy(backbone.head(hidden), tf.tensor1d(target.t, 'int32'), tf.tensor1d(target.w)); // (B*T, V)
  }

  /** Mean next-token cross-entropy (or classification loss and accuracy) over `data`, no update. */
  evaluate(data: Dataset, batchSize = this.init.config.batch): EvalResult {
    return evaluate(this.init.backbone, this.init.method, data, this.init.config.seqLen, batchSize, this.head);
  }

  state(): TrainerState {
    const parameters = new Map<string, { data: Float32Array; shape: number[] }>();
    for (const name of [...this.params.keys()].sort()) {
      const v = this.params.get(name)!;
      parameters.set(name, { data: v.dataSync() as Float32Array, shape: [...v.shape] });
    }
    return {
      epoch: this.epoch,
      stepInEpoch: this.stepInEpoch,
      globalStep: this.globalStep,
      stepLosses: [...this.stepLosses],
      epochs: this.epochMetrics(),
      ledger: this.ledger.toJSON(),
      parameters,
      optimizer: this.optimizer.state(),
    };
  }

  /** Restores a state from `state()` of a trainer with the same method, options, data and config. */
  load(s: TrainerState): void {
    for (const [name, v] of this.params) {
      const p = s.parameters.get(name);
      if (!p) throw new Error(`checkpoint lacks parameter '${name}'`);
      if (p.data.length !== v.size)
        throw new Error(`checkpoint parameter '${name}' has ${p.data.length} values, expected shape [${v.shape}]`);
      v.assign(tf.tensor(p.data, v.shape));
    }
    for (const name of s.parameters.keys())
      if (!this.params.has(name)) throw new Error(`checkpoint parameter '${name}' does not belong to method ${this.init.method.name}`);
    this.optimizer.load(s.optimizer, this.params);
    this.epoch = s.epoch;
    this.stepInEpoch = s.stepInEpoch;
    this.globalStep = s.globalStep;
    this.stepLosses.splice(0, this.stepLosses.length, ...s.stepLosses);
    this.epochs.splice(0, this.epochs.length, ...s.epochs);
    this.ledger = Ledger.fromJSON(s.ledger);
  }

  dispose(): void {
    this.optimizer.dispose();
    this.head?.dispose();
  }
}

const lengths = (batch: Batch): number[] => sequenceLengths(batch.mask, batch.batch, batch.seqLen);

/**
 * Evaluation without updates: LM data -> mean next-token cross-entropy over every predicted token;
 * labelled data with a head -> mean classification loss and accuracy. Samples in file order.
 */
export function evaluate(
  backbone: Backbone,
  method: FineTuneMethod,
  data: Dataset,
  seqLen: number,
  batchSize: number,
  head?: ClassificationHead,
): EvalResult {
  let lossSum = 0,
    tokens = 0,
    correct = 0;
  for (let i = 0; i < data.samples.length; i += batchSize) {
    const batch = makeBatch(data.samples.slice(i, i + batchSize), seqLen);
    tf.tidy(() => {
      const hidden = method.hidden(tf.tensor2d(batch.ids, [batch.batch, seqLen], 'int32')); // (B*T, d)
      if (head && batch.labels) {
        const logits = head.logits(hidden, seqLen, lengths(batch)); // (B, C)
        lossSum += classificationLoss(logits, batch.labels).dataSync()[0]! * batch.batch;
        correct += correctCount(logits, batch.labels);
        tokens += batch.batch;
      } else {
        const { targets, weights, count } = nextTokenTargets(batch.ids, batch.mask, batch.batch, seqLen);
        if (count === 0) return;
        const loss = crossEntropy(backbone.head(hidden), tf.tensor1d(targets, 'int32'), tf.tensor1d(weights));
        lossSum += loss.dataSync()[0]! * count;
        tokens += count;
      }
    });
  }
  const result: EvalResult = { loss: tokens ? lossSum / tokens : NaN, tokens, samples: data.samples.length };
  if (head && data.labelNames) result.accuracy = correct / data.samples.length;
  return result;
}
