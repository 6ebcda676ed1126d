/**
 * The argument parser every subcommand shares, built on commander: declared options only, typed
 * values, one clear error naming the option. `--help` prints the command's help.
 *
 * A command declares its options as a spec (`{ name: { type: 'string' } }`) and either writes its
 * own usage text or gives a `CommandHelp`, from which commander generates the help out of the
 * options' `help` lines. Values are read back with `str`, `num`, `flag` and `requireStr`, so a
 * command's checks stay in one place whatever parses the line.
 */
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}

export type OptionSpec = {
  type: 'string' | 'boolean';
  short?: string;
  default?: string | boolean;
  multiple?: boolean;
  /** One line for the generated help. */
  help?: string;
  /** The value's name in the generated help (default VALUE). */
  arg?: string;
};

/** What commander generates a command's help from (instead of a hand-written usage text). */
export interface CommandHelp {
  /** The arguments after the command's name, e.g. 'TOPOLOGY [options]'. */
  usage: string;
  description?: string;
  /** Text after the option list. */
  after?: string;
}

export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

let commandName = 'charon';

/** The command line's name in help and errors, e.g. 'charon launch' (set by the dispatcher). */
export function setCommandName(name: string): void {
  commandName = name;
}

export function currentCommandName(): string {
  return commandName;
}

/** Commander's message as one line, without its 'error: ' prefix. */
export function commanderMessage(err: CommanderError): string {
  return err.message
    .replace(/^error: /, '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
}

function buildCommand(options: Record<string, OptionSpec>, usage: string | CommandHelp): Command {
  const cmd = new Command(commandName)
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s), outputError: () => {} })
    .helpOption('-h, --help', 'print this help')
    .argument('[args...]')
    .allowExcessArguments();
  if (typeof usage === 'string') cmd.configureHelp({ formatHelp: () => `${usage.trimEnd()}\n` });
  else {
    cmd.usage(usage.usage);
    if (usage.description) cmd.description(usage.description);
    if (usage.after) cmd.addHelpText('after', `\n${usage.after.trimEnd()}`);
    cmd.configureHelp({ visibleArguments: () => [] });
  }
  for (const [name, spec] of Object.entries(options)) {
    const flags = `${spec.short ? `-${spec.short}, ` : ''}--${name}${spec.type === 'string' ? ` <${spec.arg ?? 'VALUE'}>` : ''}`;
    const opt = new Option(flags, spec.help ?? '');
    if (spec.multiple) opt.argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]);
    if (spec.default !== undefined) opt.default(spec.multiple ? [spec.default] : spec.default);
    cmd.addOption(opt);
  }
  return cmd;
}

/** Parses argv against `options`; prints the help and returns null when --help was given. */
export function parseCommandArgs(argv: string[], options: Record<string, OptionSpec>, usage: string | CommandHelp): ParsedArgs | null {
  const cmd = buildCommand(options, usage);
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed') return null;
      throw new CliError(`${commanderMessage(err)} (see --help)`);
    }
    throw err;
  }
  const opts = cmd.opts();
  const values: ParsedArgs['values'] = {};
  for (const opt of cmd.options) {
    const name = opt.long?.slice(2);
    if (name && name !== 'help' && opts[opt.attributeName()] !== undefined) values[name] = opts[opt.attributeName()];
  }
  return { values, positionals: cmd.args };
}

export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function requireStr(args: ParsedArgs, name: string): string {
  const v = str(args, name);
  if (v === undefined || v === '') throw new CliError(`missing required option --${name}`);
  return v;
}

export function num(args: ParsedArgs, name: string, fallback: number, opts: { integer?: boolean; min?: number } = {}): number {
  const v = str(args, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    throw new CliError(
      `--${name} must be ${opts.integer ? 'an integer' : 'a number'}${opts.min !== undefined ? ` >= ${opts.min}` : ''}, got '${v}'`,
    );
  }
  return n;
}

export function flag(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}

/** The command's one positional argument, `name` in its usage (e.g. TOPOLOGY). */
export function onePositional(args: ParsedArgs, name: string): string {
  const [value, ...extra] = args.positionals;
  if (!value) throw new CliError(`missing ${name} (see --help)`);
  if (extra.length) throw new CliError(`unexpected argument '${extra[0]}'`);
  return value;
}

/**
 * Runs a script's `run` on this process's arguments when `moduleUrl` (its `import.meta.url`) is
 * the script node started, not one imported: an error ends it as one line `name: message` on
 * stderr, with the CliError's exit code (1 for any other error).
 */
export function runAsScript(moduleUrl: string, name: string, run: (argv: string[]) => Promise<number>): void {
  if (process.argv[1] !== fileURLToPath(moduleUrl)) return;
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: Error) => {
      process.stderr.write(`${name}: ${err.message}\n`);
      process.exitCode = err instanceof CliError ? err.exitCode : 1;
    },
  );
}
