/**
 * The set-up of one rank's compute: its slice of the backbone and, for PAC, the side network over
 * the same span (StageCompute), for the other methods their parameters over its layers
 * (BackpropCompute); its AdamW, optionally continued from a saved state.
 * Pipeline stages and the cached-phase workers (frozen head + whole side network, no backbone
 * layer) are built here and nowhere else, so every place a run trains starts from the same values.
 */
import { loadBackbone, type ModelSource } from '../model/load.ts';
import type { Backbone } from '../model/types.ts';
import { SideNetwork } from '../model/methods/side-network.ts';
import { ClassificationHead } from '../model/methods/heads.ts';
import type { MethodName, MethodOptions } from '../model/methods/method.ts';
import { stageMethod } from '../model/methods/stage-method.ts';
import { AdamW, type AdamWOptions, type AdamWState } from '../train/optim.ts';
import { StageCompute } from './stage-compute.ts';
import { BackpropCompute } from './backprop-compute.ts';
import type { RankCompute } from './trainable.ts';

/** What every rank of a run shares. */
export interface StageSpec {
  /** The fine-tuning method (default parallel, PAC) and its sizes (LoRA rank, bottleneck, ...). */
  method?: MethodName;
  methodOptions?: MethodOptions;
  /** Seeds the trainable parameters' initial values. */
  seed: number;
  /** k: side width r = dModel / k (default 8). */
  reduction?: number;
  /** How a side network without `state` starts: 'prune' needs the stage's backbone layers. */
  sideInit: 'prune' | 'random';
  seqLen: number;
  optimizer: AdamWOptions;
  /**
   * Classes of labelled data: the last stage (and every cached-phase worker) trains a
   * classification head seeded by `seed`, as the standalone trainer does. Absent: language modelling.
   */
  classes?: number;
}

/**
 * A pipeline stage: backbone layers from..to, the embedding and down_0 when `first`, the final
 * norm, head and `up` when `last`. Or 'cached': the frozen final norm and head with the whole
 * side network, fed from the activation cache.
 */
export type StagePart = { from: number; to: number; first: boolean; last: boolean } | 'cached';

export interface StageSetup {
  model: ModelSource;
  part: StagePart;
  spec: StageSpec;
  /**
   * Continue from here: side parameters by name (at least the part's own) and the optimiser state
   * (restricted to the part's parameters here, so a whole-network state fits every stage).
   */
  state?: { params: Map<string, Float32Array>; optimizer: AdamWState };
}

export interface OpenStage {
  backbone: Backbone;
  compute: RankCompute;
  optimizer: AdamW;
  /** Frees the side network, the backbone slice, in-flight tensors and the optimiser state. */
  dispose(): void;
}

export async function openStageCompute(o: StageSetup): Promise<OpenStage> {
  const { spec, part } = o;
  const method = spec.method ?? 'parallel';
  if (method !== 'parallel') {
    if (part === 'cached') throw new Error(`stage set-up: method ${method} has no cached phase (only parallel keeps an activation cache)`);
    const backbone = await loadBackbone(o.model, { from: part.from, to: part.to, embed: part.first, head: part.last });
    const m = stageMethod(method, backbone, spec.methodOptions ?? {}, spec.seed);
    const head = headOf(spec, backbone, part.last);
    return withOptimizer(new BackpropCompute(backbone, m, spec.seqLen, head), backbone, spec, o.state, () => {
      m.dispose();
      head?.dispose();
    });
  }
  const backbone =
    part === 'cached'
      ? await loadBackbone(o.model, { from: 1, to: 0, embed: false, head: true })
      : await loadBackbone(o.model, { from: part.from, to: part.to, embed: part.first, head: part.last });
  const L = backbone.config.nLayers;
  const span =
    part === 'cached'
      ? { from: 1, to: L, hasDown0: true, hasUp: true }
      : { from: part.from, to: part.to, hasDown0: part.first, hasUp: part.last };
  // A saved state overwrites every value, so pruning (a pass over the layer weights) would be wasted.
  const sideInit = o.state ? 'random' : spec.sideInit;
  const side = new SideNetwork(backbone.config, span, { seed: spec.seed, reduction: spec.reduction, sideInit, backbone });
  const head = headOf(spec, backbone, span.hasUp);
  return withOptimizer(new StageCompute(backbone, side, spec.seqLen, head), backbone, spec, o.state, () => {
    side.dispose();
    head?.dispose();
  });
}

/** The classification head of a stage that computes the loss, when the run classifies. */
function headOf(spec: StageSpec, backbone: Backbone, last: boolean): ClassificationHead | null {
  return last && spec.classes !== undefined ? new ClassificationHead(backbone.config.dModel, spec.classes, spec.seed) : null;
}

/** The stage with its AdamW, both continued from `state` when given. */
function withOptimizer(
  compute: RankCompute,
  backbone: Backbone,
  spec: StageSpec,
  state: StageSetup['state'],
  disposeMethod: () => void,
): OpenStage {
  const optimizer = new AdamW(spec.optimizer);
  if (state) restoreState(compute, optimizer, state);
  return {
    backbone,
    compute,
    optimizer,
    dispose: () => {
      compute.clear();
      optimizer.dispose();
      disposeMethod();
      backbone.dispose();
    },
  };
}

/**
 * Overwrites the trainable parameters and the optimiser state with `state` (its entries for
 * `compute`'s parameters): a stage kept across a re-plan is set back to the committed state this
 * way, whatever it applied of an aborted step.
 */
export function restoreState(compute: RankCompute, optimizer: AdamW, state: NonNullable<StageSetup['state']>): void {
  const params = compute.parameters();
  compute.load(state.params);
  const mine = <T>(m: Map<string, T>) => new Map([...m].filter(([n]) => params.has(n)));
  optimizer.load({ step: state.optimizer.step, m: mine(state.optimizer.m), v: mine(state.optimizer.v) }, params);
}
