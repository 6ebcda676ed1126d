/**
 * `charon` command dispatcher. Each subcommand lives in tools/commands/<name>.ts and exports
 * `summary` (one line for the help index) and `run(argv: string[]): Promise<number>` (exit code).
 * Errors that reach here are printed as one line and exit non-zero.
 */
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { CliError } from './args.ts';

const here = dirname(fileURLToPath(import.meta.url));
const commandsDir = join(here, 'commands');

interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

function listCommands(): string[] {
  return readdirSync(commandsDir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
}

async function load(name: string): Promise<Command> {
  return (await import(join(commandsDir, `${name}.ts`))) as Command;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const names = listCommands();
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const lines = ['usage: charon <command> [options]   (charon <command> --help for details)', '', 'commands:'];
    for (const n of names) lines.push(`  ${n.padEnd(10)} ${(await load(n)).summary}`);
    process.stdout.write(lines.join('\n') + '\n');
    return name ? 0 : 2;
  }
  if (!names.includes(name)) {
    process.stderr.write(`charon: unknown command '${name}' (known: ${names.join(', ')})\n`);
    return 2;
  }
  return (await load(name)).run(rest);
}

// A reader that stops early (`charon status | head`) is not an error of ours.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`charon: ${msg}\n`);
    if (process.env.CHARON_DEBUG && err instanceof Error && !(err instanceof CliError)) process.stderr.write(`${err.stack}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  },
);
