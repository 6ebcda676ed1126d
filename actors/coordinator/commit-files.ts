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
