/**
 * The command line: the shared option parser (commander underneath, the spec-and-usage API on
 * top) in process, and the real `charon` binary for the help index, unknown commands and flags,
 * and the exit codes (0 done, 1 failed, 2 usage error).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, flag, num, parseCommandArgs, requireStr, setCommandName, str, type OptionSpec } from '../tools/args.ts';
import { tempDir } from './fixtures/temp.ts';

const root = new URL('..', import.meta.url).pathname;
const charon = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'tools/charon.js'), ...args], { cwd: root, encoding: 'utf8' });

const spec: Record<string, OptionSpec> = {
  nats: { type: 'string', help: 'the NATS server', arg: 'URL' },
  'run-dir': { type: 'string' },
  lr: { type: 'string' },
  host: { type: 'string', multiple: true },
  json: { type: 'boolean', help: 'line-delimited JSON events' },
  mode: { type: 'string', default: 'auto' },
};

function usageError(argv: string[]): string {
  try {
    parseCommandArgs(argv, spec, 'usage: x');
  } catch (err) {
    assert.instance(err, CliError);
    assert.is((err as CliError).exitCode, 2);
    return (err as Error).message;
  }
  throw new Error(`no error for ${argv.join(' ')}`);
}

/** stdout written while `fn` runs. */
function captureStdout(fn: () => void): string {
  const write = process.stdout.write;
  let out = '';
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  try {
    fn();
  } finally {
    process.stdout.write = write;
  }
  return out;
}

test('args: typed values, dashed names, = values, repeats, defaults, positionals anywhere, --', () => {
  const a = parseCommandArgs(
    ['t.yaml', '--nats=nats://h:1', '--run-dir', 'r', '--host', 'a', '--host', 'b', '--json', '--lr', '-0.5', 'x', '--', '--not-an-option'],
    spec,
    'usage: x',
  )!;
  assert.is(str(a, 'nats'), 'nats://h:1');
  assert.is(str(a, 'run-dir'), 'r');
  assert.equal(a.values.host, ['a', 'b']);
  assert.ok(flag(a, 'json'));
  assert.is(num(a, 'lr', 1), -0.5);
  assert.is(str(a, 'mode'), 'auto');
  assert.equal(a.positionals, ['t.yaml', 'x', '--not-an-option']);
  const b = parseCommandArgs([], spec, 'usage: x')!;
  assert.not.ok(flag(b, 'json'));
  assert.is(str(b, 'nats'), undefined);
  assert.is(b.values.host, undefined);
  assert.is(num(b, 'lr', 7), 7);
});

test('args: errors name the flag, exit code 2', () => {
  assert.is(usageError(['--jsn']), "unknown option '--jsn' (Did you mean --json?) (see --help)");
  assert.match(usageError(['t.yaml', '--nats']), /^option '--nats <URL>' argument missing/);
  const a = parseCommandArgs(['--lr', 'x', 'run-dir'], spec, 'usage: x')!;
  assert.throws(
    () => num(a, 'lr', 1, { min: 0 }),
    (e: Error) => e instanceof CliError && e.message === "--lr must be a number >= 0, got 'x'",
  );
  const c = parseCommandArgs(['--lr', '1.5', '--run-dir', ''], spec, 'usage: x')!;
  assert.throws(() => num(c, 'lr', 1, { integer: true, min: 1 }), /--lr must be an integer >= 1, got '1.5'/);
  assert.throws(() => requireStr(c, 'run-dir'), /missing required option --run-dir/);
  assert.throws(() => requireStr(c, 'nats'), /missing required option --nats/);
  const e = parseCommandArgs(['--lr', ' '], spec, 'usage: x')!;
  assert.throws(() => num(e, 'lr', 1), /--lr must be a number, got ' '/);
});

test('args: --help prints the usage text, or help generated from the options', () => {
  let result: unknown = 'unset';
  assert.is(
    captureStdout(() => {
      result = parseCommandArgs(['--help'], spec, 'usage: charon thing X\n\n  --nats URL   somewhere\n\n');
    }),
    'usage: charon thing X\n\n  --nats URL   somewhere\n',
  );
  assert.is(result, null);
  setCommandName('charon thing');
  const generated = captureStdout(() => {
    result = parseCommandArgs(['-h'], spec, { usage: 'TOPOLOGY [options]', description: 'Does a thing.', after: 'More words.' });
  });
  assert.is(result, null);
  assert.match(generated, /^Usage: charon thing TOPOLOGY \[options\]\n\nDoes a thing\.\n/);
  assert.match(generated, /--nats <URL>\s+the NATS server/);
  assert.match(generated, /--json\s+line-delimited JSON events/);
  assert.match(generated, /More words\.\n$/);
});

test('charon: the help index lists every command; no command is a usage error', () => {
  const help = charon('--help');
  assert.is(help.status, 0, help.stderr);
  for (const name of ['launch', 'chaos', 'train', 'plan', 'device', 'status'])
    assert.match(help.stdout, new RegExp(`\\n  ${name} +\\S`), `${name} listed`);
  assert.match(help.stdout, /Exit codes: 0 done, 1 the run or command failed, 2 usage error/);
  const none = charon();
  assert.is(none.status, 2);
  assert.is(none.stdout, help.stdout);
  const sub = charon('help', 'launch');
  assert.is(sub.status, 0, sub.stderr);
  assert.is(sub.stdout, charon('launch', '--help').stdout);
  assert.match(sub.stdout, /^usage: charon launch TOPOLOGY/);
  // A command whose help commander generates from its options' descriptions.
  const data = charon('data', 'markov', '--help');
  assert.is(data.status, 0, data.stderr);
  assert.match(data.stdout, /^Usage: charon data markov --out FILE \[options\]\n/);
  assert.match(data.stdout, /\n {2}--out <FILE> +JSONL file to write/);
});

test('charon: unknown command, unknown flag, missing value and bad number are one line naming it, exit 2', () => {
  const cases: [string[], string][] = [
    [['lanch'], "charon: unknown command 'lanch' (Did you mean launch?)"],
    [['launch', 't.yaml', '--jsn'], "charon launch: unknown option '--jsn' (Did you mean --json?) (see --help)"],
    [['launch', 't.yaml', '--run-dir'], "charon launch: option '--run-dir <VALUE>' argument missing (see --help)"],
    [['chaos', 't.yaml', '--seed', 'x'], "charon chaos: --seed must be an integer >= 0, got 'x'"],
    [['launch'], 'charon launch: missing TOPOLOGY (see --help)'],
  ];
  for (const [argv, line] of cases) {
    const r = charon(...argv);
    assert.is(r.status, 2, `${argv.join(' ')}: ${r.stderr}`);
    assert.is(r.stderr, `${line}\n`);
    assert.is(r.stdout, '');
  }
});

test('charon: a command that runs and fails exits 1 with one line', () => {
  const dir = tempDir('charon-args-');
  writeFileSync(join(dir, 'blocker'), '');
  const r = charon('data', 'markov', '--out', join(dir, 'blocker', 'x.jsonl'), '--sequences', '2');
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /^charon data: E[A-Z]+: [^\n]*blocker[^\n]*\n$/);
  const ok = charon('data', 'markov', '--out', join(dir, 'x.jsonl'), '--sequences', '2', '--length', '4', '--json');
  assert.is(ok.status, 0, ok.stderr);
  assert.is(JSON.parse(ok.stdout).samples, 2);
});

test.run();
