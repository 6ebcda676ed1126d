/**
 * One stage rank's work for a step of the pipeline epoch: 1F1B over the step's micro-batches in
 * the order of `oneFOneB`, rows routed between groups by the plan's shares (rows keep their
 * sample ids), side gradients all-reduced inside the group, AdamW applied identically on every
 * rank. Transport-agnostic: `StageLinks` is the bus in production and a mailbox in tests.
 */
import { oneFOneB } from '../plan/schedule.ts';
import { ringAllReduce, type RingTransport } from './allreduce.ts';
import { assembleRows, crossPlace, expectedSenders, microBatches, rankRows, routeRows, selectRows, type StageLayout } from './routing.ts';
import type { LossRows, RankCompute, StageForwardOutput, StageInput } from './trainable.ts';
import { clips, squaredNorm, type AdamW, type StepReport } from '../train/optim.ts';
import { crossStageReduce } from './cross-stage.ts';
import { traced, type StepTimeline } from './timeline.ts';

/** Forward message: rows (by sample id) of b_to and a_to. */
export interface FwdMsg {
  ids: number[];
  b: Float32Array;
  a: Float32Array;
}
/** Backward message: rows (by sample id) of dL/da at the receiver's output boundary. */
export interface BwdMsg {
  ids: number[];
  g: Float32Array;
}

/** What a stage rank needs from the network for one step. */
export interface StageLinks {
  sendFwd(step: number, mb: number, toRank: number, msg: FwdMsg): void;
  recvFwd(step: number, mb: number, fromRank: number): Promise<FwdMsg>;
  sendBwd(step: number, mb: number, toRank: number, msg: BwdMsg): void;
  recvBwd(step: number, mb: number, fromRank: number): Promise<BwdMsg>;
  /** The group's all-reduce ring for this step. */
  ring(step: number): RingTransport;
  /**
   * The ring over every rank of every stage (global rank order) for this step: the global
   * gradient norm and a tied weight's gradient cross stages through it. Needed with more than one stage.
   */
  crossRing?(step: number): RingTransport;
}

/** Rows of the data set (tokens, and labels of labelled data), as every device holds it. */
export interface RowSource {
  rows(sampleIds: readonly number[]): LossRows;
  /** Loss targets of these samples: predicted tokens, or samples when classifying. */
  tokens(sampleIds: readonly number[]): number;
}

export interface StageRunnerOptions {
  stages: StageLayout[];
  stage: number;
  rank: number;
  microBatches: number;
  compute: RankCompute;
  optimizer: AdamW;
  links: StageLinks;
  data: RowSource;
  /** Called with the activations this rank computed (layer -> rows*T*d) for its device's cache. */
  onComputed?(sampleIds: number[], computed: Map<number, Float32Array>): void;
  /** Runs each compute operation (a device's simulated slowdown, timing, memory samples, abort); default: directly. */
  pace?: Pace;
  /** The timeline of the step being run (forward, backward, all-reduce and update spans), when one is recorded. */
  timeline?: () => StepTimeline | undefined;
}

/**
 * Wraps one compute operation (a forward, a loss backward, a backward, an update): calls `op` once
 * and returns its result, or throws instead of calling it (how an aborted step stops between two
 * operations).
 */
export type Pace = <T>(op: () => T) => Promise<T>;

const direct: Pace = async (op) => op();

export class StageRunner {
  /** @throws when `stage` and `rank` (from the assignment) are not a rank of the plan's stages. */
  constructor(private readonly o: StageRunnerOptions) {
    const me = o.stages[o.stage];
    if (!me) throw new Error(`stage runner: stage ${o.stage} is not one of the plan's ${o.stages.length} stages`);
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= me.devices.length)
      throw new Error(`stage runner: rank ${o.rank} is not in stage ${o.stage}'s group of ${me.devices.length}`);
    o.stages.forEach((st, s) => {
      if (st.shares.length !== st.devices.length)
        throw new Error(`stage runner: stage ${s} has ${st.shares.length} shares for ${st.devices.length} devices`);
    });
  }

  /**
   * One 1F1B step over `sampleIds`. `shares` (one weight per rank of every stage) replaces the
   * plan's row shares for this step; every rank of the step must be given the same.
   */
  async runStep(step: number, sampleIds: number[], shares?: number[][]): Promise<RankOutcome> {
    const { stage, rank, compute, links, data } = this.o;
    const stages = shares ? this.withShares(shares) : this.o.stages;
    const pace = this.o.pace ?? direct;
    const tl = this.o.timeline?.();
    const me = stages[stage]!,
      prev = stages[stage - 1],
      next = stages[stage + 1];
    const T = compute.seqLen,
      { d, r } = compute.width;
    const mbs = microBatches(sampleIds, this.o.microBatches);
    const stepTokens = data.tokens(sampleIds);
    let loss = 0,
      rows = 0,
      bytesSent = 0,
      correct: number | undefined;
    for (const { op, mb } of oneFOneB(stage, stages.length, mbs.length)) {
      const mine = rankRows(mbs[mb]!, me.shares, rank);
      if (mine.length === 0) continue;
      if (op === 'F') {
        let out: StageForwardOutput;
        if (!prev) {
          out = await traced(tl, 'forward', mb, () =>
            pace(() => compute.forward(mb, mine.length, { kind: 'ids', ids: data.rows(mine).ids })),
          );
        } else {
          const from = expectedSenders(mbs[mb]!, prev.shares, me.shares, rank);
          const parts = await Promise.all(from.map((f) => links.recvFwd(step, mb, f)));
          const b = assembleRows(
            mine,
            parts.map((p) => ({ ids: p.ids, data: p.b })),
            T * d,
          );
          const a = assembleRows(
            mine,
            parts.map((p) => ({ ids: p.ids, data: p.a })),
            T * r,
          );
          out = await traced(tl, 'forward', mb, () => pace(() => compute.forward(mb, mine.length, { kind: 'hidden', b, a })));
        }
        rows += mine.length;
        this.o.onComputed?.(mine, out.computed);
        if (next) {
          for (const [to, ids] of routeRows(mbs[mb]!, me.shares, rank, next.shares)) {
            const msg = { ids, b: selectRows(mine, out.b, ids, T * d), a: selectRows(mine, out.a, ids, T * r) };
            bytesSent += msg.b.byteLength + msg.a.byteLength;
            links.sendFwd(step, mb, to, msg);
          }
        }
      } else {
        let gradIn: Float32Array | null;
        if (!next) {
          const lossRows = data.rows(mine);
          const res = await traced(tl, 'backward', mb, () => pace(() => compute.lossBackward(mb, lossRows, stepTokens)));
          loss += res.loss;
          if (res.correct !== undefined) correct = (correct ?? 0) + res.correct;
          gradIn = res.gradIn;
        } else {
          const from = expectedSenders(mbs[mb]!, next.shares, me.shares, rank);
          const parts = await Promise.all(from.map((f) => links.recvBwd(step, mb, f)));
          const g = assembleRows(
            mine,
            parts.map((p) => ({ ids: p.ids, data: p.g })),
            T * compute.width.g,
          );
          gradIn = await traced(tl, 'backward', mb, () => pace(() => compute.backwardFrom(mb, g)));
        }
        if (prev && gradIn) {
          for (const [to, ids] of routeRows(mbs[mb]!, me.shares, rank, prev.shares)) {
            const msg = { ids, g: selectRows(mine, gradIn, ids, T * compute.width.g) };
            bytesSent += msg.g.byteLength;
            links.sendBwd(step, mb, to, msg);
          }
        }
      }
    }
    const grads = compute.flatGradients();
    const size = me.devices.length;
    const ringBytes = size > 1 ? (2 * (size - 1) * grads.byteLength) / size : 0;
    const reduced = await traced(tl, 'allreduce', undefined, () => ringAllReduce(grads, rank, size, links.ring(step)), ringBytes);
    bytesSent += ringBytes;
    let gradNorm: number | undefined;
    // One stage holds every parameter: its norm is the global one. Otherwise the stages' norms (and
    // a tied weight's gradient) meet in one all-reduce over every rank.
    if (stages.length > 1 && (clips(this.o.optimizer.options) || compute.tied)) {
      if (!links.crossRing) throw new Error('stage runner: a plan of several stages needs the cross-stage ring');
      const place = crossPlace(stages, stage, rank);
      const ring = links.crossRing(step);
      const x = await traced(tl, 'allreduce', undefined, () =>
        crossStageReduce(compute, reduced, rank === 0, place.rank, place.members.length, ring),
      );
      gradNorm = x.gradNorm;
      bytesSent += x.bytesSent;
    }
    const report: StepReport = await traced(tl, 'update', undefined, () => pace(() => compute.apply(reduced, this.o.optimizer, gradNorm)));
    return { loss, rows, bytesSent, gradNorm: report.gradNorm, reduced, ...(correct !== undefined ? { correct } : {}) };
  }
  private withShares(shares: number[][]): StageLayout[] {
    const { stages } = this.o;
    if (shares.length !== stages.length) throw new Error(`stage runner: ${shares.length} stages of shares for a plan of ${stages.length}`);
    return stages.map((st, s) => {
      const w = shares[s]!;
      if (w.length !== st.devices.length || w.some((x) => !(x > 0) || !Number.isFinite(x)))
        throw new Error(`stage runner: stage ${s} needs ${st.devices.length} positive shares, got [${w.join(', ')}]`);
      return { ...st, shares: w };
    });
  }

  /**
   * Forward only, no loss, no update: runs `sampleIds` through the stages in micro-batches of the
   * step's size so that every rank's device caches the activations it computes (a resumed run
   * refilling caches that died with the processes). Uses step number 0, which no training step has.
   */
  async fill(sampleIds: number[], batch: number): Promise<{ rows: number; bytesSent: number }> {
    const { stages, stage, rank, compute, links, data } = this.o;
    const pace = this.o.pace ?? direct;
    const me = stages[stage]!,
      prev = stages[stage - 1],
      next = stages[stage + 1];
    const T = compute.seqLen,
      { d, r } = compute.width;
    const rowsPerMb = Math.ceil(batch / this.o.microBatches);
    const mbs = microBatches(sampleIds, Math.ceil(sampleIds.length / rowsPerMb));
    let rows = 0,
      bytesSent = 0;
    try {
      for (const [mb, ids] of mbs.entries()) {
        const mine = rankRows(ids, me.shares, rank);
        if (mine.length === 0) continue;
        const parts = prev ? await Promise.all(expectedSenders(ids, prev.shares, me.shares, rank).map((f) => links.recvFwd(0, mb, f))) : [];
        const input: StageInput = prev
          ? {
              kind: 'hidden',
              b: assembleRows(
                mine,
                parts.map((p) => ({ ids: p.ids, data: p.b })),
                T * d,
              ),
              a: assembleRows(
                mine,
                parts.map((p) => ({ ids: p.ids, data: p.a })),
                T * r,
              ),
            }
          : { kind: 'ids', ids: data.rows(mine).ids };
        const out = await pace(() => compute.forward(mb, mine.length, input));
        rows += mine.length;
        this.o.onComputed?.(mine, out.computed);
        compute.clear();
        if (next) {
          for (const [to, sel] of routeRows(ids, me.shares, rank, next.shares)) {
            const msg = { ids: sel, b: selectRows(mine, out.b, sel, T * d), a: selectRows(mine, out.a, sel, T * r) };
            bytesSent += msg.b.byteLength + msg.a.byteLength;
            links.sendFwd(0, mb, to, msg);
          }
        }
      }
    } finally {
      compute.clear();
    }
    return { rows, bytesSent };
  }
}

/** A rank's step outcome plus the reduced gradient it applied (rank 0 ships it to the coordinator). */
/** What one rank's step produced. */
export interface StepOutcome {
  /** This rank's share of the mini-batch mean loss (0 off the last stage). */
  loss: number;
  rows: number;
  /** Bytes of activations and gradients this rank sent to other stages, and into the all-reduce. */
  bytesSent: number;
  gradNorm: number;
  /** Classification runs, last stage: this rank's rows whose predicted class was right (before the update). */
  correct?: number;
}

export type RankOutcome = StepOutcome & { reduced: Float32Array };

/** A cached step's outcome; with `deferUpdate`, `update` applies the step's AdamW update. */
export type CachedOutcome = RankOutcome & { update?: () => StepReport };

/**
 * A cached-epoch step on one device: its rows of the mini-batch (those in its shard) forward and
 * backward from cached activations through the whole side network, then a ring all-reduce over
 * every device and the same AdamW update everywhere. No backbone layer runs.
 */
export async function cachedStep(o: {
  step: number;
  sampleIds: number[];
  shard: ReadonlySet<number>;
  rank: number;
  size: number;
  microBatches: number;
  compute: RankCompute;
  optimizer: AdamW;
  ring: RingTransport;
  data: RowSource;
  activations(sampleIds: readonly number[]): Float32Array[];
  pace?: Pace;
  timeline?: StepTimeline;
  /**
   * Leave the update to the caller (`update` in the outcome): a device replies with the reduced
   * gradient first and updates while the reply travels and the coordinator replays it. The caller
   * must run it before anything else reads or changes the side network.
   */
  deferUpdate?: boolean;
}): Promise<CachedOutcome> {
  const pace = o.pace ?? direct;
  const tl = o.timeline;
  const mineAll = o.sampleIds.filter((id) => o.shard.has(id));
  const stepTokens = o.data.tokens(o.sampleIds);
  let loss = 0,
    correct: number | undefined;
  for (const [mb, mine] of microBatches(mineAll, Math.min(o.microBatches, Math.max(1, mineAll.length))).entries()) {
    if (mine.length === 0) continue;
    const lossRows = o.data.rows(mine);
    await traced(tl, 'forward', mb, () => pace(() => o.compute.forward(mb, mine.length, { kind: 'cached', acts: o.activations(mine) })));
    const res = await traced(tl, 'backward', mb, () => pace(() => o.compute.lossBackward(mb, lossRows, stepTokens)));
    loss += res.loss;
    if (res.correct !== undefined) correct = (correct ?? 0) + res.correct;
  }
  const grads = o.compute.flatGradients();
  const ringBytes = o.size > 1 ? (2 * (o.size - 1) * grads.byteLength) / o.size : 0;
  const reduced = await traced(tl, 'allreduce', undefined, () => ringAllReduce(grads, o.rank, o.size, o.ring), ringBytes);
  // Taken here so that a deferred update clips by exactly what the reply reports; one sum over the
  // flat vector adds in the same order as the update's own over its per-parameter views.
  const gradNorm = Math.sqrt(squaredNorm([reduced]));
  const out = { loss, rows: mineAll.length, bytesSent: ringBytes, gradNorm, reduced, ...(correct !== undefined ? { correct } : {}) };
  if (o.deferUpdate) return { ...out, update: () => o.compute.apply(reduced, o.optimizer, gradNorm) };
  await traced(tl, 'update', undefined, () => pace(() => o.compute.apply(reduced, o.optimizer, gradNorm)));
  return out;
}
