/**
 * Writes a built-in preset (seeded weights) as a Hugging Face model directory, so the same
 * model can be loaded by `--model DIR` here or by PyTorch/transformers elsewhere.
 *
 *   node --import tsx tools/make-hf-model.ts --preset w1 --out DIR [--seed 0] [--dtype F32|F16|BF16]
 *        [--shards N] [--bare-names] [--json]
 */
import { fullRange } from '../src/model/backbone.ts';
import { writeHfModel } from '../src/model/export.ts';
import { isPresetName, presetWeights, presets } from '../src/model/presets.ts';
import { CliError, flag, num, parseCommandArgs, requireStr, runAsScript, str } from './args.ts';

const usage = `usage: node --import tsx tools/make-hf-model.ts --preset NAME --out DIR [--seed 0] [--dtype F32|F16|BF16] [--shards 1] [--bare-names] [--json]
  presets: ${Object.keys(presets).join(', ')}`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      preset: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      dtype: { type: 'string' },
      shards: { type: 'string' },
      'bare-names': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const preset = requireStr(args, 'preset');
  if (!isPresetName(preset)) throw new CliError(`--preset: unknown preset '${preset}' (known: ${Object.keys(presets).join(', ')})`);
  const dtype = str(args, 'dtype') ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new CliError(`--dtype must be F32, F16 or BF16, got '${dtype}'`);
  const config = presets[preset];
  const seed = num(args, 'seed', 0, { integer: true, min: 0 });
  const files = writeHfModel(requireStr(args, 'out'), config, presetWeights(config, fullRange(config), seed), {
    dtype,
    shards: num(args, 'shards', 1, { integer: true, min: 1 }),
    bareNames: flag(args, 'bare-names'),
  });
  if (flag(args, 'json')) process.stdout.write(JSON.stringify({ preset, seed, dtype, files }) + '\n');
  else process.stdout.write(files.join('\n') + '\n');
  return 0;
}

runAsScript(import.meta.url, 'make-hf-model', run);
