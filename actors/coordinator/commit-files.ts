/**
 * The files that commit a step of a run: the side network's checkpoint (staged as
 * checkpoints/latest.next), then state.json (the commit itself), then the checkpoint put in
 * place. Written by the coordinator's commit writer thread (commit-writer.ts) for ordinary steps,
 * and on the coordinator's own thread where the order of events needs it (an epoch's last step).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fsyncPath, promoteCheckpoint } from '../../src/train/durable.ts';
import { saveCheckpoint } from '../../src/train/checkpoint.ts';
import type { RunSpec } from '../../src/train/run-spec.ts';
import type { CommitInput } from './run-io.ts';

/** What a commit writes: the run's position (state.json) and the side network at it. */
export type CommitFiles = Pick<CommitInput, 'state' | 'side' | 'spec' | 'fingerprint'>;

/** CommitFiles with the side network's arrays copied into one buffer (handed to a thread without a second copy). */
export interface PackedCommit extends Omit<CommitFiles, 'side'> {
  data: Float32Array;
  /** Per array: which map, its name, offset and length in `data`; shapes of the parameters. */
  index: { map: 'params' | 'm' | 'v'; name: string; at: number; length: number }[];
  shapes: [string, number[]][];
  step: number;
}

/** Values of the side network and both AdamW moments: the size of a packed commit. */
export function commitValues(side: CommitFiles['side']): number {
  let n = 0;
  for (const m of [side.params, side.optimizer.m, side.optimizer.v]) for (const a of m.values()) n += a.length;
  return n;
}

/** Copies `side` into `into`, a buffer reused step after step of at least `commitValues(side)` values. */
export function packCommit({ side, ...rest }: CommitFiles, into: Float32Array): PackedCommit {
  const maps = { params: side.params, m: side.optimizer.m, v: side.optimizer.v } as const;
  const index: PackedCommit['index'] = [];
  let total = 0;
  for (const map of ['params', 'm', 'v'] as const)
    for (const [name, a] of maps[map]) {
      index.push({ map, name, at: total, length: a.length });
      total += a.length;
    }
  if (into.length < total) throw new RangeError(`packCommit: ${total} values do not fit a buffer of ${into.length}`);
  const data = into.subarray(0, total);
  for (const e of index) data.set(maps[e.map].get(e.name)!, e.at);
  return { ...rest, data, index, shapes: [...side.shapes], step: side.optimizer.step };
}

export function unpackCommit({ data, index, shapes, step, ...rest }: PackedCommit): CommitFiles {
  const maps = { params: new Map<string, Float32Array>(), m: new Map<string, Float32Array>(), v: new Map<string, Float32Array>() };
  for (const e of index) maps[e.map].set(e.name, data.subarray(e.at, e.at + e.length));
  return { ...rest, side: { params: maps.params, shapes: new Map(shapes), optimizer: { step, m: maps.m, v: maps.v } } };
}

export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 1) + '\n');
  // On disk before it replaces the old file: a successor resumes from whichever is in place.
  fsyncPath(tmp);
  renameSync(tmp, file);
  fsyncPath(dirname(file));
}

/** What a side-network checkpoint of `spec`'s run says about the run (resume checks it). */
export function sideCheckpointIdentity(spec: RunSpec) {
  return {
    method: spec.method ?? 'parallel',
    options:
      (spec.method ?? 'parallel') === 'parallel' ? { reduction: spec.reduction, sideInit: 'random' as const } : (spec.methodOptions ?? {}),
    config: {
      epochs: spec.epochs,
      batch: spec.batch,
      seed: spec.seed,
      seqLen: spec.seqLen,
      task: spec.labelNames ? ('classification' as const) : ('lm' as const),
      optimizer: spec.optimizer,
    },
    ...(spec.labelNames ? { labelNames: spec.labelNames } : {}),
    samples: spec.samples,
  };
}

/** The trainer-compatible checkpoint of the side network as of the position `commit` persists. */
export function saveSide(dir: string, { state: p, side, spec, fingerprint }: CommitFiles): void {
  saveCheckpoint(dir, {
    ...sideCheckpointIdentity(spec),
    modelFingerprint: fingerprint,
    state: {
      epoch: p.epoch - 1,
      stepInEpoch: p.stepInEpoch,
      globalStep: p.step,
      stepLosses: [],
      epochs: [],
      ledger: p.ledger,
      parameters: new Map([...side.params].map(([n, x]) => [n, { data: x, shape: side.shapes.get(n)! }])),
      optimizer: side.optimizer,
    },
  });
}

/** A step's commit: the checkpoint staged whole, state.json (the commit), the checkpoint put in place. */
export function writeCommit(runDir: string, checkpointDir: string, input: CommitFiles): void {
  saveSide(`${checkpointDir}.next`, input);
  writeJsonAtomic(join(runDir, 'state.json'), input.state);
  promoteCheckpoint(checkpointDir);
}
