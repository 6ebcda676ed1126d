/**
 * Profiles from measurements: the device actor times each layer (backbone layer + side block
 * forward, side block backward) at a few micro-batch sizes; this fits the profile's linear time
 * model `fixedMs + rows * perSampleMs` to them by least squares and builds the same schema
 * the analytic path builds.
 */
import { parseProfile, type BlockCost, type LinkProfile, type ModelInfo, type Profile, type TimeCost } from './profile.ts';

/** Times of one block (layer, embedding or head) measured at one micro-batch size. */
export interface BlockTiming {
  fwdMs: number;
  bwdMs: number;
}

/** What a device measured: per micro-batch size, one timing per layer, plus embedding and head. */
export interface DeviceMeasurements {
  name: string;
  memoryBytes: number;
  runs: { microBatch: number; layers: BlockTiming[]; embed: BlockTiming; head: BlockTiming }[];
  /** Bytes per block, known from the model's shapes (not timed): one per layer, plus embed and head. */
  layerBytes: Omit<BlockCost, 'fwd' | 'bwd'>[];
  embedBytes: Omit<BlockCost, 'fwd' | 'bwd'>;
  headBytes: Omit<BlockCost, 'fwd' | 'bwd'>;
}

/**
 * Least-squares line through (rows, ms). Negative intercepts (noise) are clamped to 0 with the
 * slope refitted through the origin; a single size gives a line through the origin.
 */
export function fitLinear(points: readonly { rows: number; ms: number }[]): TimeCost {
  if (points.length === 0) throw new RangeError('fitLinear needs at least one measurement');
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.rows, 0) / n;
  const my = points.reduce((s, p) => s + p.ms, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.rows - mx) ** 2, 0);
  const through0 = () => ({
    fixedMs: 0,
    perSampleMs: Math.max(0, points.reduce((s, p) => s + p.rows * p.ms, 0) / points.reduce((s, p) => s + p.rows * p.rows, 0)),
  });
  if (sxx === 0) return through0();
  const slope = points.reduce((s, p) => s + (p.rows - mx) * (p.ms - my), 0) / sxx;
  const intercept = my - slope * mx;
  if (intercept < 0 || slope < 0) return through0();
  return { fixedMs: intercept, perSampleMs: slope };
}

/**
 * Builds a profile from measured per-layer timings. Validates the result like a profile file
 * (errors name `source`); every device must have measured every layer in every run.
 */
export function profileFromMeasurements(
  model: ModelInfo,
  devices: readonly DeviceMeasurements[],
  links: { defaultMbps: number; latencyMs: number; pairs: LinkProfile[] },
  training?: { batchSize: number; samples: number },
  source = 'measurements',
): Profile {
  const fit = (d: DeviceMeasurements, pick: (run: DeviceMeasurements['runs'][number]) => BlockTiming | undefined, what: string) => {
    const pts = d.runs.map((r) => {
      const t = pick(r);
      if (!t) throw new RangeError(`${source}: device '${d.name}' has no ${what} timing at micro-batch ${r.microBatch}`);
      return t;
    });
    return {
      fwd: fitLinear(d.runs.map((r, i) => ({ rows: r.microBatch, ms: pts[i]!.fwdMs }))),
      bwd: fitLinear(d.runs.map((r, i) => ({ rows: r.microBatch, ms: pts[i]!.bwdMs }))),
    };
  };
  const profile = {
    version: 1 as const,
    model,
    ...(training ? { training } : {}),
    devices: devices.map((d) => ({
      name: d.name,
      memoryBytes: d.memoryBytes,
      embed: { ...fit(d, (r) => r.embed, 'embedding'), ...d.embedBytes },
      head: { ...fit(d, (r) => r.head, 'head'), ...d.headBytes },
      layers: d.layerBytes.map((bytes, l) => ({ ...fit(d, (r) => r.layers[l], `layer ${l + 1}`), ...bytes })),
    })),
    links,
  };
  return parseProfile(profile, source);
}
