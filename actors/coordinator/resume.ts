/**
 * Reading an interrupted run back: the committed state the run machine persisted (state.json)
 * and the side-network checkpoint written with it, checked against each other and against the
 * run spec before anything starts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkResumable, readCheckpointMeta, type CheckpointMeta } from '../../src/train/checkpoint.ts';
import type { RunSpec } from '../../src/train/run-spec.ts';
import { settleCheckpoint } from '../../src/train/durable.ts';
import type { PersistedRun } from './run-machine.ts';
import { sideCheckpointIdentity } from './commit-files.ts';

export class ResumeError extends Error {
  override name = 'ResumeError';
}

/**
 * The committed state of the run in `runDir`, to continue with `spec`'s settings (more epochs
 * allowed). @throws ResumeError naming the file and what is wrong: no state, a state and
 * checkpoint from different steps, other training settings, or a run already finished.
 */
export function readResumeState(runDir: string, spec: RunSpec): PersistedRun {
  const file = join(runDir, 'state.json');
  if (!existsSync(file)) throw new ResumeError(`${file}: missing (no step of this run was committed; nothing to resume)`);
  let state: PersistedRun;
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as PersistedRun;
  } catch (err) {
    throw new ResumeError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  const ints = ['epoch', 'stepInEpoch', 'step'] as const;
  for (const k of ints)
    if (!Number.isInteger(state[k]) || state[k] < 0) throw new ResumeError(`${file}: field '${k}' must be a non-negative integer`);
  if (!state.ledger || !Array.isArray(state.epochs)) throw new ResumeError(`${file}: fields 'ledger' and 'epochs' are required`);
  const checkpointRef = join(runDir, 'checkpoints', 'latest');
  let meta: CheckpointMeta;
  try {
    // A coordinator killed while it committed a step left its checkpoint staged or half-replaced.
    settleCheckpoint(checkpointRef, state.step, (dir) => readCheckpointMeta(dir).globalStep);
    meta = readCheckpointMeta(checkpointRef);
    checkResumable(meta, { ...sideCheckpointIdentity(spec), modelFingerprint: meta.modelFingerprint });
  } catch (err) {
    throw new ResumeError(`${checkpointRef}: ${(err as Error).message}`);
  }
  if (meta.globalStep !== state.step) throw new ResumeError(`${checkpointRef}: holds step ${meta.globalStep}, ${file} step ${state.step}`);
  // Every epoch committed but no summary: the coordinator died between the last commit and the
  // summary. Resuming only finishes the run (the machine goes from deployment to finishing).
  if (state.epoch > spec.epochs && existsSync(join(runDir, 'summary.json')))
    throw new ResumeError(`${runDir}: the run already trained all ${spec.epochs} epochs (summary.json is written)`);
  return { ...state, checkpointRef };
}
