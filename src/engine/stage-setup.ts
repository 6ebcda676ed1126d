/**
 * The set-up of one rank's compute: its slice of the frozen backbone, the side network over the
 * same span, a StageCompute over both and its AdamW, optionally continued from a saved state.
 * Pipeline stages and the cached-phase workers (frozen head + whole side network, no backbone
 * layer) are built here and nowhere else, so every place a run trains starts from the same values.
 */
import { loadBackbone, type ModelSource } from '../model/load.ts';
import type { Backbone } from '../model/types.ts';
import { SideNetwork } from '../model/methods/side-network.ts';
import { AdamW, type AdamWOptions, type AdamWState } from '../train/optim.ts';
import { StageCompute } from './stage-compute.ts';

/** What every rank of a run shares. */
export interface StageSpec {
  /** Seeds the side network's initial values. */
  seed: number;
  /** k: side width r = dModel / k (default 8). */
  reduction?: number;
  /** How a side network without `state` starts: 'prune' needs the stage's backbone layers. */
  sideInit: 'prune' | 'random';
  seqLen: number;
  optimizer: AdamWOptions;
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
  side: SideNetwork;
  compute: StageCompute;
  optimizer: AdamW;
  /** Frees the side network, the backbone slice, in-flight tensors and the optimiser state. */
  dispose(): void;
}

export async function openStageCompute(o: StageSetup): Promise<OpenStage> {
  const { spec, part } = o;
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
  const compute = new StageCompute(backbone, side, spec.seqLen);
  const optimizer = new AdamW(spec.optimizer);
  if (o.state) {
    const params = side.parameters();
    compute.load(o.state.params);
    const mine = <T>(m: Map<string, T>) => new Map([...m].filter(([n]) => params.has(n)));
    optimizer.load({ step: o.state.optimizer.step, m: mine(o.state.optimizer.m), v: mine(o.state.optimizer.v) }, params);
  }
  return {
    backbone,
    side,
    compute,
    optimizer,
    dispose: () => {
      compute.clear();
      optimizer.dispose();
      side.dispose();
      backbone.dispose();
    },
  };
}
