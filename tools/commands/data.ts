/**
 * `charon data markov`: write the seeded synthetic Markov-chain data set (each token has exactly
 * 4 possible successors) as JSONL, e.g. the W1 workload's 256 sequences of 128 ids over 8192.
 */
import { CliError, flag, num, type OptionSpec, parseCommandArgs, requireStr } from '../args.ts';
import { markovDataset, writeJsonl } from '../../src/train/data.ts';

export const summary = 'write data sets: markov (seeded synthetic token sequences for quick starts and benches)';

const options: Record<string, OptionSpec> = {
  out: { type: 'string', arg: 'FILE', help: 'JSONL file to write ({"ids": [...]} per line)' },
  vocab: { type: 'string', arg: 'N', help: "vocabulary size (default 8192, the w1 preset's)" },
  sequences: { type: 'string', arg: 'N', help: 'number of sequences (default 256)' },
  length: { type: 'string', arg: 'N', help: 'ids per sequence (default 128)' },
  seed: { type: 'string', arg: 'N', help: '(default 0)' },
  json: { type: 'boolean', help: 'print {"file", "samples", "length", "vocab", "seed"} on stdout' },
};

const help = {
  usage: 'markov --out FILE [options]',
  description: 'Writes the seeded synthetic Markov-chain data set (each token has exactly 4 possible successors).',
};

export async function run(argv: string[]): Promise<number> {
  const [kind, ...rest] = argv;
  if (!kind || kind === '--help' || kind === '-h') {
    parseCommandArgs(['--help'], options, help);
    return kind ? 0 : 2;
  }
  if (kind !== 'markov') throw new CliError(`unknown data set '${kind}' (known: markov)`);
  const args = parseCommandArgs(rest, options, help);
  if (!args) return 0;
  const out = requireStr(args, 'out');
  const o = {
    vocab: num(args, 'vocab', 8192, { integer: true, min: 5 }),
    sequences: num(args, 'sequences', 256, { integer: true, min: 1 }),
    length: num(args, 'length', 128, { integer: true, min: 2 }),
    seed: num(args, 'seed', 0, { integer: true, min: 0 }),
  };
  writeJsonl(out, markovDataset(o));
  const result = { file: out, samples: o.sequences, length: o.length, vocab: o.vocab, seed: o.seed };
  if (flag(args, 'json')) process.stdout.write(JSON.stringify(result) + '\n');
  else process.stderr.write(`wrote ${o.sequences} sequences of ${o.length} ids (vocab ${o.vocab}, seed ${o.seed}) to ${out}\n`);
  return 0;
}
