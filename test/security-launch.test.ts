import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLaunch, type Ev } from './fixtures/launch.ts';
import { CheckpointError, loadCheckpoint } from '../src/train/checkpoint.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-sec-launch-'));
const topology = join(tmp, 'sec.yaml');
writeFileSync(
  topology,
  [
    'run: sec',
    'model: { preset: tiny }',
    'method: { kind: parallel, k: 8 }',
    'data: { markov: { sequences: 16, seqLen: 16, seed: 1 } }',
    'training: { epochs: 2, batch: 8, microBatches: 2, lr: 0.001, seed: 1, cache: { budgetMb: 0, dir: cache, dtype: f32 } }',
    'devices:',
    '  - { name: dev0, local: true, backend: wasm, memoryMb: 2048 }',
    '  - { name: dev1, local: true, backend: wasm, memoryMb: 2048 }',
    '',
  ].join('\n'),
);

function status(nats: string, creds?: string): Promise<{ code: number; out: string; err: string }> {
  const args = [join(root, 'tools/charon.js'), 'status', '--nats', nats, '--run', 'sec', '--json', ...(creds ? ['--creds', creds] : [])];
  return new Promise((res) =>
    execFile(process.execPath, args, { cwd: root }, (e, out, err) =>
      res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out: String(out), err: String(err) }),
    ),
  );
}

const mode = (p: string) => statSync(p).mode & 0o777;

/** Every directory and file under `dir` with a mode other than 0700 / 0600. */
function loose(dir: string): string[] {
  const bad: string[] = [];
  const walk = (d: string) => {
    if (mode(d) !== 0o700) bad.push(`${d} ${mode(d).toString(8)}`);
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && mode(p) !== 0o600) bad.push(`${p} ${mode(p).toString(8)}`);
    }
  };
  walk(dir);
  return bad;
}

test.after(() => rmSync(tmp, { recursive: true, force: true }));

test('security: on a launched run, status needs its read-only credentials', async () => {
  let nats = '';
  let checked: Promise<{ code: number; out: string; err: string }[]> | undefined;
  const run = startLaunch([topology, '--run-dir', join(tmp, 'watched'), '--until', 'interrupted'], (e: Ev, child) => {
    if (e.type === 'LAUNCHED') nats = e.nats as string;
    if (e.type === 'ASSEMBLED' && !checked)
      checked = (async () => {
        const out = [await status(nats), await status(nats, join(tmp, 'watched', 'creds', 'observer.nk'))];
        child.kill('SIGINT');
        return out;
      })();
  });
  const r = await run.done;
  assert.ok(checked, r.stderr);
  const [anon, observer] = await checked!;
  assert.is(anon!.code, 1, 'status without credentials is refused');
  assert.match(anon!.err, /authorization violation/i);
  assert.is(observer!.code, 0, observer!.err);
  assert.equal((JSON.parse(observer!.out) as { devices: { name: string }[] }).devices.map((d) => d.name).sort(), ['dev0', 'dev1']);
});

test('security: a launched run trains over the authenticated bus; every file is private; a corrupt checkpoint is refused by name', async () => {
  const runDir = join(tmp, 'run');
  const r = await startLaunch([topology, '--run-dir', runDir]).done;
  assert.is(r.code, 0, r.stderr);
  assert.ok(
    r.events.some((e) => e.type === 'STEP_DONE'),
    'the run trained',
  );
  assert.is(r.events.find((e) => e.type === 'LAUNCHED')?.creds, join(runDir, 'creds'));
  // The server's monitoring port (connection and subscription lists) is closed unless asked for.
  assert.is(r.events.find((e) => e.type === 'LAUNCHED')?.monitorUrl, undefined);
  assert.not.match(readFileSync(join(runDir, 'nats', 'nats-server.conf'), 'utf8'), /^http:/m);

  assert.equal(loose(runDir), [], 'directories 0700, files 0600');
  assert.not.ok(existsSync(join(runDir, 'cache')), 'the activation caches are deleted when the run ends');

  const latest = join(runDir, 'checkpoints', 'latest');
  assert.is(loadCheckpoint(latest).meta.globalStep, 4);
  const weights = join(latest, 'weights.safetensors');
  const bytes = readFileSync(weights);
  bytes[bytes.length - 3]! ^= 0x10;
  writeFileSync(weights, bytes);
  assert.throws(
    () => loadCheckpoint(latest),
    (e: Error) => e instanceof CheckpointError && e.message.startsWith(`${weights}: corrupt`),
  );
});

test.run();
