/**
 * `charon bench <name>`: benchmarks that report ratios measured side by side in one run.
 * Each bench lives in tools/bench/<name>.ts and exports `summary` and `run(argv)`; processes a
 * bench spawns live in tools/bench/children/ (they run on import, so the index never loads them).
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { CliError } from '../args.ts';

export const summary = 'measure speed and memory (charon bench --help lists the benches); ratios side by side in one run';

const benchDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench');

export async function run(argv: string[]): Promise<number> {
  const names = readdirSync(benchDir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    const lines = ['usage: charon bench <name> [options]   (charon bench <name> --help)', '', 'benches:'];
    for (const n of names) lines.push(`  ${n.padEnd(10)} ${((await import(join(benchDir, `${n}.ts`))) as { summary: string }).summary}`);
    process.stdout.write(lines.join('\n') + '\n');
    return name ? 0 : 2;
  }
  if (!names.includes(name)) throw new CliError(`unknown bench '${name}' (known: ${names.join(', ')})`);
  const mod = (await import(join(benchDir, `${name}.ts`))) as { run(argv: string[]): Promise<number> };
  return mod.run(rest);
}
