/**
 * `charon eval`: mean next-token cross-entropy of a model (optionally with a trained adapter)
 * over a JSONL data set; accuracy too when the adapter has a classification head.
 */
import { flag, num, parseCommandArgs, requireStr, str } from '../args.ts';
import { backendFrom, log, modelOptions, modelSource, modelUsage } from '../model-args.ts';
import { adaptedModel, openModel } from '../../src/train/session.ts';
import { loadJsonl, sequenceLength } from '../../src/train/data.ts';
import { evaluate } from '../../src/train/trainer.ts';

export const summary = 'evaluate a model or adapter: mean next-token loss (and accuracy for labelled data)';

const usage = `usage: charon eval (--model DIR | --preset NAME) [--adapter CKPT] --data FILE [--batch N] [--json]

${modelUsage}
  --adapter CKPT       checkpoint directory written by charon train
  --data FILE          JSONL data ({"text"} / {"ids"}, optional "label")
  --batch N            (default 8)
  --seq-len N          (default: the checkpoint's, else the longest sample capped by the context)
  --json               print {"loss", "tokens", "accuracy"?, "backend"} on stdout`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      ...modelOptions,
      adapter: { type: 'string' },
      data: { type: 'string' },
      batch: { type: 'string' },
      'seq-len': { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const source = modelSource(args);
  const dataFile = requireStr(args, 'data');
  const batch = num(args, 'batch', 8, { integer: true, min: 1 });
  const backend = await backendFrom(args);
  log(`backend: ${backend.detail}`);
  const { backbone, tokenizer } = await openModel(source);
  const { method, head, meta } = adaptedModel(backbone, str(args, 'adapter'));
  const data = loadJsonl(dataFile, {
    vocabSize: backbone.config.vocabSize,
    encode: tokenizer.available ? (t) => tokenizer.encode(t) : undefined,
  });
  if (head && meta?.labelNames && data.labelNames) {
    // Labels are indexed by the training run's class names, whatever subset this file holds.
    const index = new Map(meta.labelNames.map((n, i) => [n, i]));
    for (const s of data.samples) {
      const name = data.labelNames[s.label!]!;
      if (!index.has(name)) throw new Error(`${dataFile}: label '${name}' was not a class of the adapter (${meta.labelNames.join(', ')})`);
      s.label = index.get(name);
    }
    data.labelNames = meta.labelNames;
  }
  const seqLen = num(args, 'seq-len', meta?.config.seqLen ?? sequenceLength(data, backbone.config.maxPositions), { integer: true, min: 2 });
  const r = evaluate(backbone, method, data, Math.min(seqLen, backbone.config.maxPositions), batch, data.labelNames ? head : undefined);
  const out: Record<string, unknown> = { loss: r.loss, tokens: r.tokens };
  if (r.accuracy !== undefined) out.accuracy = r.accuracy;
  out.samples = r.samples;
  out.backend = backend.detail;
  if (meta) out.adapter = { method: meta.method, epoch: meta.epoch };
  if (flag(args, 'json')) process.stdout.write(JSON.stringify(out) + '\n');
  else
    process.stdout.write(
      `loss ${r.loss.toFixed(4)} over ${r.tokens} ${head && data.labelNames ? 'samples' : 'tokens'}${r.accuracy !== undefined ? `, accuracy ${(r.accuracy * 100).toFixed(1)}%` : ''} (${backend.name})\n`,
    );
  return 0;
}
