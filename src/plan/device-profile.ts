/**
 * The planner's profile of a live run: per-layer costs of every registered device, derived from
 * the matmul rate it measured at registration (already divided by its simulated slowdown) and
 * the model's FLOP counts (src/plan/analytic.ts), its memory budget, and the links' rates: what
 * the devices measured over the bus, per direction; a link not measured takes the smaller
 * bandwidth cap of its two devices, and between uncapped devices `defaultMbps`.
 *
 * Assumptions, stated so they can be changed: the backbone's wide matmuls reach `efficiency` of
 * the measured large-matmul rate, the side network's narrow ones `sideEfficiency`, and every
 * block pays `fixedMsPerBlock` of dispatch per pass.
 */
import type { ModelConfig } from '../model/types.ts';
import { analyticProfile, type MethodShape, type ModelShape } from './analytic.ts';
import { withDefaults, type MethodName, type MethodOptions } from '../model/methods/method.ts';
import { parseProfile, type Profile } from './profile.ts';
import { fitLinear } from './measured.ts';

export interface MeasuredDevice {
  name: string;
  /** Measured large 2-D matmul rate, GFLOP/s (after the simulated slowdown). */
  matmulGflops: number;
  memoryBytes: number;
  /** Outgoing link cap; null = uncapped. */
  bandwidthMbps: number | null;
}

/** A link's rate as its sender measured it over the bus (actors/coordinator/link-survey.ts). */
export interface MeasuredLink {
  from: string;
  to: string;
  mbps: number;
  latencyMs: number;
}

/** Where the planner's figure for a link came from. */
export type LinkSource = 'measured' | 'topology' | 'default' | 'profile';

export interface ProfileAssumptions {
  efficiency: number;
  sideEfficiency: number;
  fixedMsPerBlock: number;
  defaultMbps: number;
  latencyMs: number;
}

/** Fitted to what the wasm backend measures: a GPT-2 forward runs near its large-matmul rate, the side network's narrow blocks far below it. */
export const wasmAssumptions: ProfileAssumptions = {
  efficiency: 0.65,
  sideEfficiency: 0.15,
  fixedMsPerBlock: 0.4,
  defaultMbps: 4000,
  latencyMs: 0.3,
};

/** The cost model's view of a method and its sizes. */
export function methodShape(method: MethodName = 'parallel', options: MethodOptions = {}): MethodShape {
  const o = withDefaults(options);
  switch (method) {
    case 'parallel':
      return { kind: 'parallel' };
    case 'lora':
      return { kind: 'lora', rank: o.rank, targets: o.targets.length };
    case 'serial':
      return { kind: 'serial', bottleneck: o.bottleneck };
    case 'full':
      return { kind: 'full' };
  }
}

/** The shape the analytic cost model needs, for a decoder-only backbone with side reduction k, trained by `method`. */
export function modelShape(config: ModelConfig, seqLen: number, reduction: number, name = 'model', method?: MethodShape): ModelShape {
  return {
    ...(method ? { method } : {}),
    name,
    encoderLayers: 0,
    decoderLayers: config.nLayers,
    dModel: config.dModel,
    dFF: config.dFF,
    heads: config.nHeads,
    vocab: config.vocabSize,
    seqLen,
    headTokens: seqLen,
    sideReduction: reduction,
    bytesPerValue: 4,
  };
}

/** A validated profile of `devices` (in topology order) for `shape`. */
export function measuredProfile(
  shape: ModelShape,
  devices: MeasuredDevice[],
  training: { batchSize: number; samples: number },
  links: readonly MeasuredLink[] = [],
  a: ProfileAssumptions = wasmAssumptions,
): Profile {
  if (devices.length === 0) throw new Error('profile: no devices');
  const per = devices.map((d) => {
    if (!(d.matmulGflops > 0)) throw new Error(`profile: device ${d.name} reported no matmul rate`);
    const p = analyticProfile(
      shape,
      {
        name: d.name,
        tflops: d.matmulGflops / 1000,
        memoryBytes: d.memoryBytes,
        reserveBytes: 0,
        mbps: a.defaultMbps,
        latencyMs: a.latencyMs,
        efficiency: a.efficiency,
        sideEfficiency: a.sideEfficiency,
        fixedMsPerBlock: a.fixedMsPerBlock,
      },
      1,
      training,
    );
    return { ...p.devices[0]!, name: d.name };
  });
  const base = analyticProfile(
    shape,
    {
      name: 'x',
      tflops: 1,
      memoryBytes: 1,
      reserveBytes: 0,
      mbps: a.defaultMbps,
      latencyMs: a.latencyMs,
      efficiency: 1,
      sideEfficiency: 1,
      fixedMsPerBlock: 0,
    },
    1,
    training,
  );
  return parseProfile(
    { ...base, devices: per, links: { defaultMbps: a.defaultMbps, latencyMs: a.latencyMs, pairs: linkPairs(devices, links) } },
    'measured profile',
  );
}

/**
 * Each directed link among `devices` with the rate the planner takes and where it came from:
 * measured over the bus where it was, else the smaller bandwidth cap of its two ends (the
 * topology's or the device's own `--bandwidth-mbps`), else `defaultMbps`.
 */
export function linkReport(
  devices: readonly Pick<MeasuredDevice, 'name' | 'bandwidthMbps'>[],
  links: readonly MeasuredLink[],
  defaultMbps = wasmAssumptions.defaultMbps,
): { from: string; to: string; mbps: number; latencyMs?: number; source: LinkSource }[] {
  return devices.flatMap((d) =>
    devices
      .filter((o) => o.name !== d.name)
      .map((o) => {
        const m = links.find((l) => l.from === d.name && l.to === o.name);
        if (m) return { from: d.name, to: o.name, mbps: m.mbps, latencyMs: m.latencyMs, source: 'measured' as const };
        const cap = Math.min(d.bandwidthMbps ?? Infinity, o.bandwidthMbps ?? Infinity);
        return Number.isFinite(cap)
          ? { from: d.name, to: o.name, mbps: cap, source: 'topology' as const }
          : { from: d.name, to: o.name, mbps: defaultMbps, source: 'default' as const };
      }),
  );
}

/** The profile's pairs: every link of `linkReport` but those left at the default. */
function linkPairs(devices: readonly MeasuredDevice[], links: readonly MeasuredLink[]) {
  return linkReport(devices, links)
    .filter((l) => l.source !== 'default')
    .map(({ source: _, ...pair }) => pair);
}

/** What a device timed of the run's own work (src/engine/probe.ts), per micro-batch size. */
type Timed = { fwdMs: number; bwdMs: number; updateMs?: number };
export type WorkTimings = { microBatch: number; layer: Timed; embed: Timed; head: Timed }[];

/**
 * `profile` with the times of each device that timed the run's work replaced by lines fitted to
 * its timings (fixed + per-row); the bytes stay the model's. Devices without timings keep the
 * estimate from their matmul rate.
 */
export function withTimings(profile: Profile, timings: ReadonlyMap<string, WorkTimings>): Profile {
  // The update does not depend on the rows: its fastest timing over the sizes stands for all.
  const fit = (t: WorkTimings, pick: (r: WorkTimings[number]) => Timed) => {
    const updates = t.flatMap((r) => (pick(r).updateMs === undefined ? [] : [pick(r).updateMs!]));
    return {
      fwd: fitLinear(t.map((r) => ({ rows: r.microBatch, ms: pick(r).fwdMs }))),
      bwd: fitLinear(t.map((r) => ({ rows: r.microBatch, ms: pick(r).bwdMs }))),
      ...(updates.length ? { updateMs: Math.min(...updates) } : {}),
    };
  };
  const devices = profile.devices.map((d) => {
    const t = timings.get(d.name);
    if (!t || t.length === 0) return d;
    const layer = fit(t, (r) => r.layer);
    return {
      ...d,
      embed: { ...d.embed, ...fit(t, (r) => r.embed) },
      head: { ...d.head, ...fit(t, (r) => r.head) },
      layers: d.layers.map((l) => ({ ...l, ...layer })),
    };
  });
  return parseProfile({ ...profile, devices }, 'timed profile');
}
