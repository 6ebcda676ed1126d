/**
 * `charon generate`: continue a prompt with a model (optionally with a trained adapter), greedy
 * or sampled (temperature, top-p, seed).
 */
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';
import { backendFrom, log, modelOptions, modelSource, modelUsage } from '../model-args.ts';
import { adaptedModel, openModel } from '../../src/train/session.ts';
import { generate } from '../../src/train/generate.ts';

export const summary = 'generate text or token ids with a model or adapter';

const usage = `usage: charon generate (--model DIR | --preset NAME) [--adapter CKPT] (--prompt TEXT | --token-ids 1,2,3)
                       --max-new-tokens N [--greedy | --temperature T --top-p P] [--seed N] [--json]

${modelUsage}
  --adapter CKPT       checkpoint directory written by charon train
  --prompt TEXT        text prompt (needs the model's tokenizer.json)
  --token-ids LIST     prompt as comma-separated token ids
  --max-new-tokens N   (default 32)
  --greedy             arg-max decoding (the default unless --temperature or --top-p is given)
  --temperature T      sampling temperature (default 1)   --top-p P  nucleus mass (default 1)
  --seed N             sampling seed (default 0)
  --json               print {"tokenIds": [generated ids], "text": "...", "backend"} on stdout`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      ...modelOptions,
      adapter: { type: 'string' },
      prompt: { type: 'string' },
      'token-ids': { type: 'string' },
      'max-new-tokens': { type: 'string' },
      greedy: { type: 'boolean' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const source = modelSource(args);
  const prompt = str(args, 'prompt'),
    idsText = str(args, 'token-ids');
  if ((prompt === undefined) === (idsText === undefined)) throw new CliError('give exactly one of --prompt TEXT or --token-ids 1,2,3');
  const maxNew = num(args, 'max-new-tokens', 32, { integer: true, min: 0 });
  const sampling = str(args, 'temperature') !== undefined || str(args, 'top-p') !== undefined;
  if (flag(args, 'greedy') && sampling) throw new CliError('--greedy excludes --temperature and --top-p');
  const temperature = num(args, 'temperature', 1, { min: 0 });
  const topP = num(args, 'top-p', 1, { min: 0 });
  if (topP <= 0 || topP > 1) throw new CliError(`--top-p must be in (0, 1], got ${topP}`);
  const seed = num(args, 'seed', 0, { integer: true, min: 0 });
  let ids: number[] | undefined;
  if (idsText !== undefined) {
    ids = idsText.split(',').map((s, i) => {
      const n = Number(s.trim());
      if (s.trim() === '' || !Number.isInteger(n) || n < 0)
        throw new CliError(`--token-ids: item ${i + 1} '${s}' is not a non-negative integer`);
      return n;
    });
  }
  const backend = await backendFrom(args);
  log(`backend: ${backend.detail}`);
  const { backbone, tokenizer } = await openModel(source);
  const { method } = adaptedModel(backbone, str(args, 'adapter'));
  const promptIds = ids ?? tokenizer.encode(prompt!);
  const V = backbone.config.vocabSize;
  promptIds.forEach((id, i) => {
    if (id >= V) throw new CliError(`--token-ids: id ${id} at position ${i + 1} is outside the vocabulary [0, ${V})`);
  });
  const out = generate(backbone, method, promptIds, {
    maxNewTokens: maxNew,
    greedy: !sampling,
    temperature,
    topP,
    seed,
    eosTokenId: backbone.config.eosTokenId,
  });
  const text = tokenizer.available ? tokenizer.decode(out) : '';
  if (flag(args, 'json')) process.stdout.write(JSON.stringify({ tokenIds: out, text, backend: backend.detail }) + '\n');
  else process.stdout.write((tokenizer.available ? text : out.join(',')) + '\n');
  return 0;
}
