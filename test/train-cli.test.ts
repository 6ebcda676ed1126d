import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './fixtures/temp.ts';

const dir = tempDir('charon-cli-');
const cli = join(process.cwd(), 'tools', 'charon.js');

function charon(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const good = join(dir, 'good.jsonl');
writeFileSync(
  good,
  Array.from({ length: 8 }, (_, i) => JSON.stringify({ ids: Array.from({ length: 12 }, (_, t) => (i * 7 + t * 3) % 256) })).join('\n') +
    '\n',
);
const malformed = join(dir, 'malformed.jsonl');
writeFileSync(malformed, '{"ids": [1, 2, 3]}\n{"ids": [4, 5,\n');
const outside = join(dir, 'outside.jsonl');
writeFileSync(outside, '{"ids": [1, 2, 3]}\n{"ids": [4, 999]}\n');

function oneLineError(r: { code: number; stderr: string }, re: RegExp): void {
  assert.ok(r.code !== 0, 'non-zero exit');
  const lines = r.stderr
    .trim()
    .split('\n')
    .filter((l) => /^charon \w+: /.test(l));
  assert.is(lines.length, 1, r.stderr);
  assert.match(lines[0]!, re);
}

test('cli: train rejects bad input with one line and writes nothing', async () => {
  const out = join(dir, 'ck');
  oneLineError(
    await charon('train', '--preset', 'tiny', '--method', 'lora', '--data', malformed, '--out', out),
    /malformed\.jsonl:2: malformed JSON/,
  );
  oneLineError(
    await charon('train', '--preset', 'tiny', '--method', 'lora', '--data', outside, '--out', out),
    /outside\.jsonl:2: token id 999 at position 1 is outside the vocabulary \[0, 256\)/,
  );
  oneLineError(await charon('train', '--preset', 'tiny', '--method', 'prefix', '--data', good, '--out', out), /unknown method 'prefix'/);
  oneLineError(
    await charon('train', '--model', join(dir, 'nope'), '--method', 'lora', '--data', good, '--out', out),
    /nope: model directory not found/,
  );
  oneLineError(
    await charon('train', '--preset', 'tiny', '--method', 'lora', '--data', good, '--cache-dir', join(dir, 'c'), '--out', out),
    /--cache-dir works with --method parallel only/,
  );
  assert.not.ok(existsSync(out));
  assert.not.ok(existsSync(join(dir, 'c')));
});

test('cli: eval and generate reject bad input with one line', async () => {
  oneLineError(await charon('eval', '--model', join(dir, 'nope'), '--data', good, '--json'), /model directory not found/);
  oneLineError(await charon('eval', '--preset', 'tiny', '--data', outside, '--json'), /outside\.jsonl:2: token id 999/);
  oneLineError(await charon('eval', '--preset', 'tiny', '--adapter', join(dir, 'missing-ckpt'), '--data', good), /not a checkpoint/);
  oneLineError(
    await charon('generate', '--preset', 'tiny', '--token-ids', '1,2,300', '--max-new-tokens', '2'),
    /id 300 at position 3 is outside the vocabulary/,
  );
  oneLineError(await charon('generate', '--preset', 'tiny', '--prompt', 'hello', '--max-new-tokens', '2'), /presets have no tokenizer/);
  oneLineError(await charon('generate', '--preset', 'tiny', '--token-ids', '1,x', '--max-new-tokens', '2'), /item 2 'x'/);
});

test('cli: train -> eval -> generate round trip with --json', async () => {
  const out = join(dir, 'run');
  const t = await charon(
    'train',
    '--preset',
    'tiny',
    '--method',
    'serial',
    '--data',
    good,
    '--epochs',
    '2',
    '--batch',
    '4',
    '--lr',
    '1e-2',
    '--out',
    out,
    '--json',
  );
  assert.is(t.code, 0, t.stderr);
  const tr = JSON.parse(t.stdout);
  assert.match(tr.backend, /wasm|tensorflow|cpu/);
  assert.is(tr.epochs.length, 2);
  assert.ok(existsSync(join(out, 'checkpoint.json')) && existsSync(join(out, 'weights.safetensors')));
  assert.not.ok(
    readdirSync(dir).some((n) => n.includes('.tmp-')),
    'no temporary left behind',
  );
  const e = await charon('eval', '--preset', 'tiny', '--adapter', out, '--data', good, '--json');
  assert.is(e.code, 0, e.stderr);
  const ev = JSON.parse(e.stdout);
  assert.is(ev.tokens, 8 * 11);
  assert.ok(ev.loss > 0 && ev.loss < 6);
  const g = await charon(
    'generate',
    '--preset',
    'tiny',
    '--adapter',
    out,
    '--token-ids',
    '1,2,3',
    '--max-new-tokens',
    '4',
    '--temperature',
    '0.8',
    '--top-p',
    '0.9',
    '--seed',
    '3',
    '--json',
  );
  assert.is(g.code, 0, g.stderr);
  const gen = JSON.parse(g.stdout);
  assert.is(gen.tokenIds.length, 4);
  const again = JSON.parse(
    (
      await charon(
        'generate',
        '--preset',
        'tiny',
        '--adapter',
        out,
        '--token-ids',
        '1,2,3',
        '--max-new-tokens',
        '4',
        '--temperature',
        '0.8',
        '--top-p',
        '0.9',
        '--seed',
        '3',
        '--json',
      )
    ).stdout,
  );
  assert.equal(again.tokenIds, gen.tokenIds, 'seeded sampling repeats');
  const resumed = await charon(
    'train',
    '--preset',
    'tiny',
    '--method',
    'serial',
    '--data',
    good,
    '--epochs',
    '3',
    '--batch',
    '4',
    '--lr',
    '1e-3',
    '--resume',
    out,
    '--out',
    join(dir, 'run2'),
  );
  oneLineError(resumed, /settings differ/);
});

test.run();
