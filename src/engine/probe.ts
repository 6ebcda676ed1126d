/**
 * A device's own timings of the run's work, for the planner: one backbone layer with its
 * trainable part (side block, adapters or the layer itself, by method), the embedding and the
 * head, forward and backward, at the run's sequence length and a few micro-batch sizes, on the
 * engine and backend the device's stages will really use. A matmul rate scaled by constants
 * fitted on one backend misjudges another (a native frozen forward, a GPU, a slow transposed
 * kernel); the work itself, timed, does not.
 *
 * Decoder layers are alike, so one layer is timed and stands for all of them. Three stages are
 * opened, each of one layer: the first (embedding + layer), a middle one (layer alone) and the
 * last (layer + head and loss); the embedding and the head are the first's and the last's excess
 * over the middle one. The fastest of a few repeats is kept: on a shared machine the slower ones
 * measure the neighbours.
 */
import type { ModelSource } from '../model/load.ts';
import { openStageCompute, type OpenStage, type StagePart, type StageSpec } from './stage-setup.ts';

export interface ProbeRequest {
  model: ModelSource;
  spec: StageSpec;
  layers: number;
  /** Micro-batch sizes (rows) to time; at least two for a fixed + per-row fit. */
  microBatches: number[];
  /** Timed repeats per size after one warm-up (default 2). */
  repeats?: number;
}

export interface BlockTiming {
  fwdMs: number;
  bwdMs: number;
  /** The optimiser update of the block's trainable part (once per step, whatever the rows). */
  updateMs: number;
}

/** Timings per micro-batch size: one representative layer, the embedding and the head. */
export interface ProbeResult {
  runs: { microBatch: number; layer: BlockTiming; embed: BlockTiming; head: BlockTiming }[];
  /** Wall time the probe took, for the device's log. */
  tookMs: number;
}

type Where = 'first' | 'middle' | 'last';

export async function probeWork(req: ProbeRequest): Promise<ProbeResult> {
  const started = performance.now();
  const L = req.layers;
  if (L < 1) throw new RangeError('probe: the model has no layers');
  const repeats = Math.max(1, req.repeats ?? 2);
  // The middle stage holds a layer as a stage after the first does: never the embedding or head.
  const parts: Record<Where, StagePart> = {
    first: { from: 1, to: 1, first: true, last: L === 1 },
    middle: { from: 1, to: 1, first: false, last: false },
    last: { from: L, to: L, first: L === 1, last: true },
  };
  const times = new Map<Where, Map<number, BlockTiming>>();
  for (const where of ['first', 'middle', 'last'] as const) {
    const stage = await openStageCompute({ model: req.model, part: parts[where], spec: { ...req.spec, sideInit: 'random' } });
    try {
      const byRows = new Map<number, BlockTiming>();
      for (const rows of req.microBatches) {
        const classify = req.spec.classes !== undefined;
        timeOnce(stage, rows, classify); // warm-up: kernels compiled, buffers sized
        let best: BlockTiming = { fwdMs: Infinity, bwdMs: Infinity, updateMs: Infinity };
        for (let k = 0; k < repeats; k++) {
          const t = timeOnce(stage, rows, classify);
          best = {
            fwdMs: Math.min(best.fwdMs, t.fwdMs),
            bwdMs: Math.min(best.bwdMs, t.bwdMs),
            updateMs: Math.min(best.updateMs, t.updateMs),
          };
        }
        byRows.set(rows, best);
      }
      times.set(where, byRows);
    } finally {
      stage.dispose();
    }
  }
  const excess = (a: BlockTiming, b: BlockTiming): BlockTiming => ({
    fwdMs: Math.max(0, a.fwdMs - b.fwdMs),
    bwdMs: Math.max(0, a.bwdMs - b.bwdMs),
    updateMs: Math.max(0, a.updateMs - b.updateMs),
  });
  const runs = req.microBatches.map((rows) => {
    const layer = times.get('middle')!.get(rows)!;
    return {
      microBatch: rows,
      layer,
      embed: excess(times.get('first')!.get(rows)!, layer),
      head: excess(times.get('last')!.get(rows)!, layer),
    };
  });
  return { runs, tookMs: performance.now() - started };
}

/**
 * One forward, backward and optimiser update of `rows` rows through the stage, with made-up
 * inputs of the right shapes. The update is timed too: it is paid once per step after the
 * all-reduce, and on a small side network it is a sizeable share of the step.
 */
function timeOnce(stage: OpenStage, rows: number, classify: boolean): BlockTiming {
  const c = stage.compute;
  const T = c.seqLen,
    { d, r, g } = c.width;
  const ids = new Int32Array(rows * T).map((_, i) => 1 + (i % 7));
  const t0 = performance.now();
  c.forward(
    0,
    rows,
    c.first ? { kind: 'ids', ids } : { kind: 'hidden', b: new Float32Array(rows * T * d).fill(0.01), a: new Float32Array(rows * T * r) },
  );
  const t1 = performance.now();
  const mask = new Float32Array(rows * T).fill(1);
  // A classification run's last stage scores one label per row, a language model's every token.
  if (c.last) c.lossBackward(0, classify ? { ids, mask, labels: new Int32Array(rows) } : { ids, mask }, classify ? rows : rows * T);
  else c.backwardFrom(0, new Float32Array(rows * T * g).fill(1e-3));
  const t2 = performance.now();
  const grads = c.flatGradients();
  const t3 = performance.now();
  c.apply(grads, stage.optimizer);
  const t4 = performance.now();
  c.clear();
  return { fwdMs: t1 - t0, bwdMs: t2 - t1, updateMs: t4 - t3 };
}
