/**
 * Side-network parameters and AdamW state as a bus message: every array travels as a float32
 * WireTensor with its shape (zero-copy on decode), keyed by canonical parameter name. After the
 * first step of a run the coordinator keeps its copy current from each stage's reduced gradient
 * alone (`packGrads` / `replayStep`: a third of the bytes of the full state).
 */
import { WireTensor } from '../tensor/index.ts';
import type { RankCompute } from './trainable.ts';
import { adamwStep, type AdamW, type AdamWOptions, type AdamWState } from '../train/optim.ts';

export interface PackedState {
  step: number;
  params: Record<string, WireTensor<'float32'>>;
  m: Record<string, WireTensor<'float32'>>;
  v: Record<string, WireTensor<'float32'>>;
}

/** Parameters with shapes, and the optimiser state, as plain data. */
export interface SideState {
  params: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
  optimizer: AdamWState;
}

/** The state of `compute`'s side parameters and `optimizer`. */
export function packState(compute: RankCompute, optimizer: AdamW): PackedState {
  const shapes = new Map([...compute.parameters()].map(([n, p]) => [n, p.shape]));
  const wire = (m: Map<string, Float32Array>) =>
    Object.fromEntries([...m].map(([n, x]) => [n, new WireTensor('float32', shapes.get(n) ?? [x.length], x)]));
  const opt = optimizer.state();
  return { step: opt.step, params: wire(compute.snapshot()), m: wire(opt.m), v: wire(opt.v) };
}

/** Validates and unpacks a PackedState (a message body). @throws Error naming the bad entry. */
export function unpackState(p: PackedState): SideState {
  if (!p || typeof p !== 'object' || !Number.isInteger(p.step)) throw new Error('side state: missing or invalid step');
  const read = (what: string, rec: unknown) => {
    if (!rec || typeof rec !== 'object') throw new Error(`side state: ${what} is missing`);
    const out = new Map<string, Float32Array>();
    for (const [n, t] of Object.entries(rec as Record<string, unknown>)) {
      if (!(t instanceof WireTensor) || t.dtype !== 'float32') throw new Error(`side state: ${what}.${n} is not a float32 tensor`);
      out.set(n, t.data as Float32Array);
    }
    return out;
  };
  const params = read('params', p.params);
  const shapes = new Map(Object.entries(p.params).map(([n, t]) => [n, [...t.shape]]));
  return { params, shapes, optimizer: { step: p.step, m: read('m', p.m), v: read('v', p.v) } };
}

/** Merges the states of every stage (disjoint parameter names) into one. */
export function mergeStates(parts: SideState[]): SideState {
  const out: SideState = {
    params: new Map(),
    shapes: new Map(),
    optimizer: { step: parts[0]?.optimizer.step ?? 0, m: new Map(), v: new Map() },
  };
  for (const s of parts) {
    if (s.optimizer.step !== out.optimizer.step)
      throw new Error(`side state: stages disagree on the optimiser step (${s.optimizer.step} vs ${out.optimizer.step})`);
    for (const [n, x] of s.params) out.params.set(n, x);
    for (const [n, x] of s.shapes) out.shapes.set(n, x);
    for (const [n, x] of s.optimizer.m) out.optimizer.m.set(n, x);
    for (const [n, x] of s.optimizer.v) out.optimizer.v.set(n, x);
  }
  return out;
}

/** The inverse of unpackState (what the coordinator sends to assign / cached-load). */
export function repackState(s: SideState): PackedState {
  const wire = (m: Map<string, Float32Array>) =>
    Object.fromEntries([...m].map(([n, x]) => [n, new WireTensor('float32', s.shapes.get(n) ?? [x.length], x)]));
  return { step: s.optimizer.step, params: wire(s.params), m: wire(s.optimizer.m), v: wire(s.optimizer.v) };
}

/** A stage's reduced gradient of one step, by parameter name (views into the flat vector). */
export type PackedGrads = Record<string, WireTensor<'float32'>>;

/** `flat` (the reduced gradient in `compute.names()` order) split by parameter, for the coordinator. */
export function packGrads(compute: RankCompute, flat: Float32Array): PackedGrads {
  const params = compute.parameters();
  const out: PackedGrads = {};
  let at = 0;
  for (const name of compute.names()) {
    const p = params.get(name)!;
    out[name] = new WireTensor('float32', p.shape, flat.subarray(at, at + p.size));
    at += p.size;
  }
  return out;
}

/**
 * Replays on `state` the AdamW step every stage group applied this step, one entry of `groups`
 * per group; `gradNorm` is the norm the devices clipped by (the global one they agreed on;
 * default: each group's own, right when one group holds every parameter). Runs the devices' code
 * (optim.ts `adamwStep`) on the same float32 inputs in the same order, so the parameters and
 * moments end bit-identical to the devices'. Advances the step count once.
 * @throws Error naming a gradient that matches no parameter of `state` in size.
 */
export function replayStep(state: SideState, options: AdamWOptions, groups: PackedGrads[], gradNorm?: number): void {
  const base = state.optimizer.step;
  // Every gradient is checked before anything changes: a bad reply leaves the state as it was.
  const checked = groups.map((g) => {
    const names = Object.keys(g).sort();
    return {
      names,
      gs: names.map((n) => {
        const t = g[n];
        const x = state.params.get(n);
        if (!(t instanceof WireTensor) || t.dtype !== 'float32') throw new Error(`side state: gradient ${n} is not a float32 tensor`);
        if (!x || x.length !== t.data.length) throw new Error(`side state: gradient ${n} matches no parameter of the same size`);
        return t.data as Float32Array;
      }),
    };
  });
  for (const { names, gs } of checked) {
    const opt: AdamWState = { step: base, m: state.optimizer.m, v: state.optimizer.v };
    const { outs } = adamwStep(
      options,
      opt,
      names,
      names.map((n) => ({ data: state.params.get(n)!, rank: state.shapes.get(n)?.length ?? 1 })),
      gs,
      gradNorm,
      // The committed state is the coordinator's alone, and a copy of it per step is garbage it would collect each step.
      true,
    );
    names.forEach((n, j) => state.params.set(n, outs[j]!));
  }
  state.optimizer.step = base + 1;
}
