/**
 * Checkpoints of a training run: a directory holding `weights.safetensors` (the trainable
 * parameters under their canonical names, and the optimiser moments as `optim.m.<name>` /
 * `optim.v.<name>`, all f32) and `checkpoint.json` (method, options, fingerprints, position,
 * loss history, ledger, and the sha256 of the weights file, checked on load). Written to a
 * private (0700) temporary directory and renamed into place, so a crash never leaves a half
 * checkpoint under the final name; files are 0600, since they are derived from private data.
 */
import { createHash } from 'node:crypto';
import { fsyncPath, fsyncTree } from './durable.ts';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { privateDir, writePrivateFile } from '../security/files.ts';
import { dirname, join } from 'node:path';
import { encodeSafetensors, openSafetensors, type TensorToWrite } from '../model/safetensors.ts';
import type { MethodName, MethodOptions } from '../model/methods/method.ts';
import type { LedgerJson } from './ledger.ts';
import type { EpochMetrics, TrainConfig, TrainerState } from './trainer.ts';

export const CHECKPOINT_FORMAT = 'charon-checkpoint/1';

/** What a checkpoint says about the run it belongs to. */
export interface CheckpointMeta {
  format: string;
  method: MethodName;
  options: MethodOptions;
  /** Backbone fingerprint the parameters were trained on. */
  modelFingerprint: string;
  /** Hash of everything that must match for `resume` to continue the same trajectory. */
  configFingerprint: string;
  config: TrainConfig;
  /** Class names when the run is a classification run. */
  labelNames?: string[];
  samples: number;
  epoch: number;
  stepInEpoch: number;
  globalStep: number;
  seed: number;
  stepLosses: number[];
  epochs: EpochMetrics[];
  ledger: LedgerJson;
  optimizerStep: number;
  parameterNames: string[];
  /** sha256 (hex) of weights.safetensors: a corrupt or altered file is refused on load. */
  weightsSha256: string;
}

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** The run identity resume checks: model, method and its options, data size and training config (epochs excluded, so a run can be extended). */
export function configFingerprint(
  modelFingerprint: string,
  method: MethodName,
  options: MethodOptions,
  config: TrainConfig,
  samples: number,
): string {
  const { epochs: _epochs, ...rest } = config;
  const canonical = JSON.stringify({ modelFingerprint, method, options: sortKeys(options), config: sortKeys(rest), samples });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 32);
}

/** JSON of `v` with object keys sorted (undefined fields left out): equal settings built in another key order compare equal. */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(v && typeof v === 'object' && !Array.isArray(v) ? sortKeys(v) : v) ?? 'undefined';
}

function sortKeys(o: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(o)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => [k, v && typeof v === 'object' && !Array.isArray(v) ? sortKeys(v) : v]),
  );
}

export interface SaveInput {
  method: MethodName;
  options: MethodOptions;
  modelFingerprint: string;
  config: TrainConfig;
  labelNames?: string[];
  samples: number;
  state: TrainerState;
}

/** Writes a checkpoint directory atomically (replacing an older checkpoint at `dir`). */
export function saveCheckpoint(dir: string, input: SaveInput): CheckpointMeta {
  const { state } = input;
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, p] of state.parameters) tensors.set(name, { data: p.data, shape: p.shape });
  for (const name of [...state.optimizer.m.keys()].sort()) {
    const shape = state.parameters.get(name)?.shape ?? [state.optimizer.m.get(name)!.length];
    tensors.set(`optim.m.${name}`, { data: state.optimizer.m.get(name)!, shape });
    tensors.set(`optim.v.${name}`, { data: state.optimizer.v.get(name)!, shape });
  }
  mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  privateDir(tmp);
  const weights = join(tmp, 'weights.safetensors');
  // Hashed as written: reading the file back to hash it would cost the coordinator a second pass over it every step.
  const bytes = encodeSafetensors(tensors, { metadata: { format: CHECKPOINT_FORMAT, method: input.method } }, weights);
  writeFileSync(weights, bytes);
  chmodSync(weights, 0o600);
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    method: input.method,
    options: input.options,
    modelFingerprint: input.modelFingerprint,
    configFingerprint: configFingerprint(input.modelFingerprint, input.method, input.options, input.config, input.samples),
    config: input.config,
    labelNames: input.labelNames,
    samples: input.samples,
    epoch: state.epoch,
    stepInEpoch: state.stepInEpoch,
    globalStep: state.globalStep,
    seed: input.config.seed,
    stepLosses: state.stepLosses,
    epochs: state.epochs,
    ledger: state.ledger,
    optimizerStep: state.optimizer.step,
    parameterNames: [...state.parameters.keys()],
    weightsSha256: createHash('sha256').update(bytes).digest('hex'),
  };
  writePrivateFile(join(tmp, 'checkpoint.json'), JSON.stringify(meta, null, 1) + '\n');
  // On disk before it replaces the old one: the rename is the commit.
  fsyncTree(tmp);
  if (existsSync(dir)) {
    const old = `${dir}.old-${process.pid}`;
    renameSync(dir, old);
    renameSync(tmp, dir);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, dir);
  }
  fsyncPath(dirname(dir));
  return meta;
}

/** Reads only a checkpoint's metadata (method and options are needed before building the method). */
export function readCheckpointMeta(dir: string): CheckpointMeta {
  const file = join(dir, 'checkpoint.json');
  if (!existsSync(file)) throw new CheckpointError(`${dir}: not a checkpoint (no checkpoint.json)`);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CheckpointError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (meta.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${file}: format '${meta.format}' is not ${CHECKPOINT_FORMAT}`);
  if (!existsSync(join(dir, 'weights.safetensors'))) throw new CheckpointError(`${dir}: weights.safetensors is missing`);
  if (typeof meta.weightsSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(meta.weightsSha256))
    throw new CheckpointError(`${file}: weightsSha256: missing or not a sha256 (a checkpoint without a checksum is not loaded)`);
  return meta;
}

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Reads a whole checkpoint back into a TrainerState. */
export function loadCheckpoint(dir: string): { meta: CheckpointMeta; state: TrainerState } {
  const meta = readCheckpointMeta(dir);
  const weights = join(dir, 'weights.safetensors');
  const actual = sha256File(weights);
  if (actual !== meta.weightsSha256)
    throw new CheckpointError(
      `${weights}: corrupt: sha256 ${actual.slice(0, 16)}... differs from ${meta.weightsSha256.slice(0, 16)}... in checkpoint.json`,
    );
  const src = openSafetensors(weights);
  const parameters = new Map<string, { data: Float32Array; shape: number[] }>();
  const m = new Map<string, Float32Array>(),
    v = new Map<string, Float32Array>();
  for (const name of meta.parameterNames) {
    if (!src.has(name)) throw new CheckpointError(`${dir}: weights.safetensors lacks parameter '${name}'`);
    parameters.set(name, { data: src.read(name), shape: src.entry(name).shape });
    if (src.has(`optim.m.${name}`)) {
      m.set(name, src.read(`optim.m.${name}`));
      v.set(name, src.read(`optim.v.${name}`));
    }
  }
  const state: TrainerState = {
    epoch: meta.epoch,
    stepInEpoch: meta.stepInEpoch,
    globalStep: meta.globalStep,
    stepLosses: meta.stepLosses,
    epochs: meta.epochs,
    ledger: meta.ledger,
    parameters,
    optimizer: { step: meta.optimizerStep, m, v },
  };
  return { meta, state };
}

/** Checks that a checkpoint belongs to this run; throws one line naming what differs. */
export function checkResumable(
  meta: CheckpointMeta,
  expected: {
    modelFingerprint: string;
    method: MethodName;
    options: MethodOptions;
    config: TrainConfig;
    samples: number;
    labelNames?: string[];
  },
): void {
  if (meta.method !== expected.method) throw new CheckpointError(`checkpoint is for method ${meta.method}, not ${expected.method}`);
  const classes = (names?: string[]) => (names ? names.join(', ') : 'none (language modelling)');
  if (classes(meta.labelNames) !== classes(expected.labelNames))
    throw new CheckpointError(`checkpoint's classes are ${classes(meta.labelNames)}, the data's ${classes(expected.labelNames)}`);
  if (meta.modelFingerprint !== expected.modelFingerprint)
    throw new CheckpointError(
      `checkpoint was trained on another model (fingerprint ${meta.modelFingerprint.slice(0, 12)}, this model ${expected.modelFingerprint.slice(0, 12)})`,
    );
  if (meta.samples !== expected.samples)
    throw new CheckpointError(`checkpoint was trained on ${meta.samples} samples, the data has ${expected.samples}`);
  const fp = configFingerprint(expected.modelFingerprint, expected.method, expected.options, expected.config, expected.samples);
  if (fp !== meta.configFingerprint)
    throw new CheckpointError(
      `checkpoint's method options or training settings differ from this run's (batch, lr, seed, sequence length, ...): resume needs the same ones`,
    );
}
