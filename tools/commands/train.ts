/**
 * `charon train`: fine-tune a model on one device with one method, write a checkpoint after
 * every epoch (atomically), optionally resume from one.
 */
import { join } from 'node:path';
import { CliError, flag, num, parseCommandArgs, requireStr, str } from '../args.ts';
import { backendFrom, log, modelOptions, modelSource, modelUsage } from '../model-args.ts';
import { openModel, parseMethodName } from '../../src/train/session.ts';
import { createMethod, type MethodOptions } from '../../src/model/methods/index.ts';
import type { ProjectionName } from '../../src/model/types.ts';
import { loadJsonl, sequenceLength } from '../../src/train/data.ts';
import { Trainer, type TrainConfig } from '../../src/train/trainer.ts';
import { checkResumable, loadCheckpoint, readCheckpointMeta, saveCheckpoint } from '../../src/train/checkpoint.ts';
import { ActivationCache, type CacheDtype } from '../../src/cache/activation-cache.ts';

export const summary = 'fine-tune a model with full, lora, serial or parallel (PAC, with activation cache)';

const usage = `usage: charon train (--model DIR | --preset NAME) --method M --data FILE [options]

${modelUsage}
  --method M           full | lora | serial | parallel
  --data FILE          JSONL: {"text": ...} or {"ids": [...]}, optional "label" (classification)
  --epochs N           (default 3)        --batch N     (default 8)
  --lr X               (default 1e-3; 1e-4 for full)
  --seed N             data order and adapter init (default 0)
  --seq-len N          fixed sequence length (default: longest sample, capped by the context)
  --weight-decay X     decoupled AdamW decay on matrices (default 0)
  --warmup N           linear warm-up steps (default 0)
  --schedule S         constant | cosine (default constant)
  --max-grad-norm X    global gradient-norm clip, 0 = off (default 1)
  --lora-rank N        (default 8)   --lora-alpha X (default 16)   --lora-targets query,value
  --bottleneck N       serial adapter width (default 64)
  --side-k N           parallel side width = d / k (default 8)   --side-init prune|random (default prune)
  --cache-dir DIR      parallel only: activation cache (epoch 1 fills it, later epochs skip the backbone)
  --cache-dtype T      f32 | f16 (default f32)   --cache-memory-mb N  memory tier bound (default 256)
  --out DIR            checkpoint directory (default checkpoints/<method>)
  --resume CKPT        continue the run saved in checkpoint directory CKPT
  --json               one JSON document on stdout (progress goes to stderr)`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      ...modelOptions,
      method: { type: 'string' },
      data: { type: 'string' },
      epochs: { type: 'string' },
      batch: { type: 'string' },
      lr: { type: 'string' },
      seed: { type: 'string' },
      'seq-len': { type: 'string' },
      'weight-decay': { type: 'string' },
      warmup: { type: 'string' },
      schedule: { type: 'string' },
      'max-grad-norm': { type: 'string' },
      'lora-rank': { type: 'string' },
      'lora-alpha': { type: 'string' },
      'lora-targets': { type: 'string' },
      bottleneck: { type: 'string' },
      'side-k': { type: 'string' },
      'side-init': { type: 'string' },
      'cache-dir': { type: 'string' },
      'cache-dtype': { type: 'string' },
      'cache-memory-mb': { type: 'string' },
      out: { type: 'string' },
      resume: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const json = flag(args, 'json');
  const source = modelSource(args);
  const methodName = parseMethodName(requireStr(args, 'method'));
  const dataFile = requireStr(args, 'data');
  const schedule = str(args, 'schedule') ?? 'constant';
  if (schedule !== 'constant' && schedule !== 'cosine') throw new CliError(`--schedule must be constant or cosine, got '${schedule}'`);
  const cacheDtype = str(args, 'cache-dtype') ?? 'f32';
  if (cacheDtype !== 'f32' && cacheDtype !== 'f16') throw new CliError(`--cache-dtype must be f32 or f16, got '${cacheDtype}'`);
  const cacheDir = str(args, 'cache-dir');
  if (cacheDir && methodName !== 'parallel')
    throw new CliError(
      `--cache-dir works with --method parallel only (the backbone of ${methodName} is not frozen in front of the trained part)`,
    );
  const sideInit = str(args, 'side-init') ?? 'prune';
  if (sideInit !== 'prune' && sideInit !== 'random') throw new CliError(`--side-init must be prune or random, got '${sideInit}'`);
  const options: MethodOptions = {};
  if (methodName === 'lora') {
    options.rank = num(args, 'lora-rank', 8, { integer: true, min: 1 });
    options.alpha = num(args, 'lora-alpha', 16, { min: 0 });
    options.targets = (str(args, 'lora-targets') ?? 'query,value').split(',') as ProjectionName[];
  }
  if (methodName === 'serial') options.bottleneck = num(args, 'bottleneck', 64, { integer: true, min: 1 });
  if (methodName === 'parallel') {
    options.reduction = num(args, 'side-k', 8, { integer: true, min: 1 });
    options.sideInit = sideInit;
  }
  const epochs = num(args, 'epochs', 3, { integer: true, min: 1 });
  const batch = num(args, 'batch', 8, { integer: true, min: 1 });
  const seed = num(args, 'seed', 0, { integer: true, min: 0 });
  const optimizer = {
    lr: num(args, 'lr', methodName === 'full' ? 1e-4 : 1e-3, { min: 0 }),
    weightDecay: num(args, 'weight-decay', 0, { min: 0 }),
    warmupSteps: num(args, 'warmup', 0, { integer: true, min: 0 }),
    maxGradNorm: num(args, 'max-grad-norm', 1, { min: 0 }),
    schedule: schedule as 'constant' | 'cosine',
  };
  const cacheMemoryMb = num(args, 'cache-memory-mb', 256, { min: 0 });
  const resume = str(args, 'resume');
  const resumeMeta = resume ? readCheckpointMeta(resume) : undefined;

  const backend = await backendFrom(args);
  log(`backend: ${backend.detail}`);
  const { backbone, tokenizer } = await openModel(source);
  log(`engine: ${backbone.engine}`);
  const data = loadJsonl(dataFile, {
    vocabSize: backbone.config.vocabSize,
    encode: tokenizer.available ? (t) => tokenizer.encode(t) : undefined,
  });
  const seqLen = num(args, 'seq-len', sequenceLength(data, backbone.config.maxPositions), { integer: true, min: 2 });
  if (seqLen > backbone.config.maxPositions)
    throw new CliError(`--seq-len ${seqLen} exceeds the model's context of ${backbone.config.maxPositions}`);
  const config: TrainConfig = { epochs, batch, seed, seqLen, task: data.labelNames ? 'classification' : 'lm', optimizer };
  const method = createMethod(methodName, backbone, options, seed);
  const checkpointDir = str(args, 'out') ?? join('checkpoints', methodName);
  const run = {
    method: methodName,
    options,
    modelFingerprint: backbone.fingerprint,
    config,
    samples: data.samples.length,
    ...(data.labelNames ? { labelNames: data.labelNames } : {}),
  };
  if (resumeMeta) checkResumable(resumeMeta, run);
  const cache = cacheDir
    ? new ActivationCache({ memoryBytes: Math.floor(cacheMemoryMb * 2 ** 20), dir: cacheDir, dtype: cacheDtype as CacheDtype })
    : undefined;
  const trainer = new Trainer({
    backbone,
    method,
    data,
    config,
    cache,
    onStep: (m) => {
      if (!json) log(`epoch ${m.epoch + 1} step ${m.step + 1}: loss ${m.loss.toFixed(4)} (${m.seconds.toFixed(2)} s)`);
    },
    onEpoch: (m) =>
      log(
        `epoch ${m.epoch + 1}/${epochs}: loss ${m.loss.toFixed(4)}, ${m.seconds.toFixed(1)} s, peak ${(m.peakBytes / 2 ** 20).toFixed(1)} MiB${m.backboneSamples ? '' : ' (from cache)'}`,
      ),
  });
  if (resume) {
    trainer.load(loadCheckpoint(resume).state);
    log(`resumed from ${resume} at epoch ${trainer.currentEpoch + 1}`);
  }
  const trainableParams = [...trainer.parameters().values()].reduce((a, v) => a + v.size, 0);
  log(
    `method ${methodName}: ${trainableParams} trainable parameters, ${data.samples.length} samples of ${seqLen} tokens, ${trainer.stepsPerEpoch()} steps per epoch`,
  );
  while (!trainer.finished) {
    trainer.trainEpoch();
    saveCheckpoint(checkpointDir, { ...run, state: trainer.state() });
  }
  const epochsOut = trainer.epochMetrics();
  const result = {
    backend: backend.detail,
    engine: backbone.engine,
    model: backbone.fingerprint,
    method: methodName,
    options,
    trainableParams,
    samples: data.samples.length,
    seqLen,
    epochs: epochsOut,
    firstLoss: trainer.losses()[0],
    lastEpochLoss: epochsOut[epochsOut.length - 1]?.loss,
    peakTensorBytes: trainer.peakTensorBytes,
    peakRssBytes: trainer.peakRssBytes,
    cache: cache?.stats(),
    checkpoint: checkpointDir,
  };
  if (json) process.stdout.write(JSON.stringify(result) + '\n');
  else log(`checkpoint: ${checkpointDir}`);
  return 0;
}
