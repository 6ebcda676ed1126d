/** Seeded random profiles for the planner's tests (not a test file itself). */
import type { BlockCost, Profile } from '../src/plan/profile.ts';
import { createRng } from '../src/train/rng.ts';

/** Deterministic uniforms in [0, 1) (the trainer's seeded generator). */
export function rng(seed: number): () => number {
  const r = createRng(seed);
  return () => r.next();
}

/**
 * A random heterogeneous profile: `devices` devices, `layers` layers, small models in bytes. Each
 * layer's costs are drawn per device, so devices differ in which layers they are fast at.
 * `copies` appends that many devices identical to d0 (costs, memory and links).
 */
export function randomProfile(
  seed: number,
  devices: number,
  layers: number,
  opts: { memoryScale?: number; copies?: number } = {},
): Profile {
  const r = rng(seed);
  const u = (lo: number, hi: number) => lo + (hi - lo) * r();
  const block = (speed: number): BlockCost => ({
    fwd: { fixedMs: u(0, 2), perSampleMs: u(1, 20) * speed },
    bwd: { fixedMs: u(0, 1), perSampleMs: u(0.2, 5) * speed },
    backboneBytes: Math.round(u(1, 10) * 1e6),
    sideBytes: Math.round(u(0.1, 1) * 1e6),
    sideGradBytes: Math.round(u(0.02, 0.3) * 1e6),
    activationBytesPerSample: Math.round(u(0.05, 0.5) * 1e6),
    workBytesPerSample: Math.round(u(0.05, 0.5) * 1e6),
  });
  const names = Array.from({ length: devices }, (_, i) => `d${i}`);
  const pairs = [];
  for (let i = 0; i < devices; i++)
    for (let j = i + 1; j < devices; j++)
      if (r() < 0.4) pairs.push({ from: names[i]!, to: names[j]!, mbps: u(50, 2000), latencyMs: u(0, 2) });
  const scale = opts.memoryScale ?? 1;
  const profile: Profile = {
    version: 1,
    model: {
      layers,
      encoderLayers: layers >= 4 && r() < 0.5 ? Math.floor(layers / 2) : 0,
      dModel: 32,
      sideWidth: 4,
      seqLen: 16,
      bytesPerActivation: 4,
    },
    training: { batchSize: 8, samples: 100 },
    devices: names.map((name) => {
      const speed = u(0.3, 3);
      return {
        name,
        memoryBytes: Math.round(u(10, 60) * 1e6 * scale),
        embed: block(speed),
        head: block(speed),
        layers: Array.from({ length: layers }, () => block(speed)),
      };
    }),
    links: { defaultMbps: u(100, 1000), latencyMs: u(0, 1), pairs },
  };
  for (let c = 0; c < (opts.copies ?? 0); c++) {
    const name = `d${devices + c}`;
    profile.devices.push({ ...profile.devices[0]!, name });
    for (const l of pairs.filter((l) => l.from === 'd0' || l.to === 'd0'))
      pairs.push({ ...l, from: name, to: l.from === 'd0' ? l.to : l.from });
  }
  return profile;
}
