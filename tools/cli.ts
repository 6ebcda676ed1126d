/**
 * `charon` command dispatcher. Each subcommand lives in tools/commands/<name>.ts and exports
 * `summary` (one line for the help index) and `run(argv: string[]): Promise<number>` (exit code).
 * A known command is loaded alone (the others import heavy modules); anything else goes to
 * commander, which lists the commands, prints the version, or names the unknown command with a
 * suggestion. Errors that reach here are printed as one line naming the command.
 *
 * Exit codes: 0 done, 1 the command ran and failed, 2 usage error (the command line is wrong).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { CliError, commanderMessage, setCommandName } from './args.ts';

const here = dirname(fileURLToPath(import.meta.url));
const commandsDir = join(here, 'commands');

interface CommandModule {
  summary: string;
  run(argv: string[]): Promise<number>;
}

function listCommands(): string[] {
  return readdirSync(commandsDir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
}

async function load(name: string): Promise<CommandModule> {
  return (await import(join(commandsDir, `${name}.ts`))) as CommandModule;
}

async function runCommand(name: string, argv: string[]): Promise<number> {
  setCommandName(`charon ${name}`);
  return (await load(name)).run(argv);
}

/** The top level: help index, version, `help COMMAND`, unknown commands. */
async function topLevel(argv: string[], names: string[]): Promise<number> {
  const version = (JSON.parse(readFileSync(join(here, '..', 'package.json'), 'utf8')) as { version: string }).version;
  const program = new Command('charon')
    .usage('<command> [options]')
    .description(
      'Fine-tune a language model across your own devices (PAC over NATS).\nRun `charon <command> --help` for the options of one command.',
    )
    .version(version, '-V, --version')
    .helpOption('-h, --help', 'print this help')
    .helpCommand('help [command]', 'print the help of a command')
    .addHelpText('after', '\nExit codes: 0 done, 1 the run or command failed, 2 usage error.')
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s), outputError: () => {} });
  for (const n of names) {
    program
      .command(n)
      .description((await load(n)).summary)
      .helpOption(false)
      .allowUnknownOption()
      .allowExcessArguments()
      .action(() => {});
  }
  if (argv.length === 0) {
    // No command at all is a usage error, after showing what there is.
    program.outputHelp();
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return err.exitCode;
    throw new CliError(commanderMessage(err));
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const names = listCommands();
  if (name !== undefined && names.includes(name)) return runCommand(name, rest);
  // `charon help launch` is `charon launch --help` (the command's own help, not commander's stub).
  if (name === 'help' && rest.length === 1) return names.includes(rest[0]!) ? runCommand(rest[0]!, ['--help']) : topLevel(rest, names);
  return topLevel(argv, names);
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
    const name = argvCommand(process.argv.slice(2));
    process.stderr.write(`charon${name ? ` ${name}` : ''}: ${msg}\n`);
    if (process.env.CHARON_DEBUG && err instanceof Error && !(err instanceof CliError)) process.stderr.write(`${err.stack}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  },
);

/** The command an error belongs to, when the line named a known one. */
function argvCommand(argv: string[]): string | undefined {
  const [name] = argv;
  return name !== undefined && listCommands().includes(name) ? name : undefined;
}
