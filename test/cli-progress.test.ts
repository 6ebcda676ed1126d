/**
 * `charon launch` progress: the tracker behind it on a sequence of events, then real tiny runs:
 * `--json` (every stdout line one event object, nothing else), plain lines on a pipe, and the
 * cli-progress bars on a real pseudo-terminal (util-linux `script`).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { duration, eventName, RunProgress, RunTracker } from '../tools/progress.ts';
import { tempDir } from './fixtures/temp.ts';

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'tools/charon.js');
const tmp = tempDir('charon-progress-');

/** local-2 cut to 10 samples in batches of 4 (a short last step), 2 epochs. */
function tinyTopology(): string {
  const t = parse(readFileSync(join(root, 'topologies/local-2.yaml'), 'utf8'));
  t.run = 'progress';
  t.data.markov = { ...t.data.markov, sequences: 10, seqLen: 16 };
  t.training = { ...t.training, epochs: 2, batch: 4 };
  const file = join(tmp, 'tiny.yaml');
  writeFileSync(file, stringify(t));
  return file;
}

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
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

test('progress: samples per epoch (a short last step, a replayed step once, a resumed epoch), device states, event names', () => {
  const t = new RunTracker({ samples: 10, batch: 4, epochs: 2 });
  const ev = (type: string, f: Record<string, unknown> = {}) => t.apply({ type, ...f }, '/r');
  assert.equal(ev('DEVICE_SPAWNED', { device: 'a' }), { state: 'starting' });
  ev('DEVICE_JOINED', { device: 'a' });
  ev('DEVICE_JOINED', { device: 'b' });
  ev('RUN_PLANNED', { stages: [{ from: 1, to: 2, devices: ['a'] }], unused: ['b'] });
  assert.is(t.describeDevices(), 'devices: a layers 1..2 · b idle');
  ev('RUN_DEPLOYED');
  assert.equal(ev('STEP_DONE', { epoch: 1, step: 1, loss: 5, phase: 'pipeline' }), { samples: 4, samplesTotal: 10 });
  // The step replayed after a device was lost counts once.
  assert.equal(ev('STEP_DONE', { epoch: 1, step: 2, loss: 5, phase: 'pipeline' }), { samples: 8, samplesTotal: 10 });
  ev('DEVICE_LOST', { device: 'b' });
  assert.equal(ev('STEP_DONE', { epoch: 1, step: 2, loss: 4.9, phase: 'pipeline' }), { samples: 8, samplesTotal: 10 });
  assert.equal(ev('STEP_DONE', { epoch: 1, step: 3, loss: 4.8, phase: 'pipeline' }), { samples: 10, samplesTotal: 10 });
  assert.is(t.describeDevices(), 'devices: a layers 1..2 · b lost');
  assert.equal(ev('EPOCH_DONE', { epoch: 1 }), { checkpoint: '/r/checkpoints/epoch-1' });
  assert.is(t.epoch, 2);
  assert.is(t.samplesDone, 0);
  assert.equal(ev('STEP_DONE', { epoch: 2, step: 4, loss: 4, phase: 'cached' }), { samples: 4, samplesTotal: 10 });
  ev('RUN_FINISHED');
  ev('DEVICE_LEFT', { device: 'b' });
  assert.is(t.describeDevices(), 'devices: a done · b left');

  const resumed = new RunTracker({ samples: 10, batch: 4, epochs: 3 });
  resumed.apply({ type: 'RUN_RESUMED', step: 5, epoch: 2, stepInEpoch: 2 }, '/r');
  assert.is(resumed.samplesDone, 8);
  assert.equal(resumed.apply({ type: 'STEP_DONE', epoch: 2, step: 6, loss: 1, phase: 'cached' }, '/r'), { samples: 10, samplesTotal: 10 });
  assert.is(resumed.samplesDoneHere, 2);

  assert.is(eventName({ type: 'STEP_DONE' }), 'step');
  assert.is(eventName({ type: 'DEVICE_LOST' }), 'device');
  assert.is(eventName({ type: 'JOIN_REFUSED' }), 'device');
  assert.is(eventName({ type: 'RECOVERING' }), 'replan');
  assert.is(eventName({ type: 'STOPPED' }), 'done');
  assert.is(eventName({ type: 'CACHE_REFILLED' }), 'cache-refilled');
  // The bus's report of a dropped message has no type; it still gets a name, and no type is added.
  assert.is(eventName({ subject: 'charon.r.dev.a.ctl', reason: 'duplicate', message: 'seen' }), 'rejected');
  assert.is(eventName({ what: 1 }), 'unknown');
  assert.equal(t.apply({ subject: 's', reason: 'body', message: 'm' }, '/r'), {});
  assert.equal([duration(42.4), duration(185), duration(3720)], ['42s', '3m05s', '1h02m']);
});

test('progress: on a pipe a malformed event is a raw line and the next one still prints', () => {
  let out = '';
  const write = (s: string) => {
    out += s;
    return true;
  };
  const stream = { isTTY: false, write } as unknown as NodeJS.WriteStream;
  const p = new RunProgress({
    mode: 'text',
    describe: (e) => `${e.type} ${(e.loss as number).toFixed(1)}`,
    runDir: '/r',
    stream,
    training: { samples: 4, batch: 2, epochs: 1 },
  });
  p.event({ type: 'STEP_DONE', epoch: 1, step: 1 });
  p.event({ type: 'STEP_DONE', epoch: 1, step: 2, loss: 2 });
  p.event({ subject: 'charon.r.dev.a.ctl', reason: 'body', message: 'bad' });
  p.close();
  const lines = out.trimEnd().split('\n');
  assert.is(lines.length, 3, out);
  assert.match(lines[0]!, /^\[\d+\.\ds\] \{"type":"STEP_DONE","epoch":1,"step":1\}$/);
  assert.match(lines[1]!, /^\[\d+\.\ds\] STEP_DONE 2\.0$/);
  assert.match(lines[2]!, /^\[\d+\.\ds\] message on charon\.r\.dev\.a\.ctl dropped \(body\): bad$/);
});

test('progress: --json is one event object per stdout line on a real tiny launch, nothing else', async () => {
  const file = tinyTopology();
  const runDir = join(tmp, 'json');
  const r = await run(process.execPath, [cli, 'launch', file, '--run-dir', runDir, '--json']);
  assert.is(r.code, 0, r.stderr.slice(-3000));
  const lines = r.stdout.split('\n');
  assert.is(lines.pop(), '', 'stdout ends with a newline');
  const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const e of events) {
    assert.type(e.event, 'string');
    assert.type(e.type, 'string');
  }
  const steps = events.filter((e) => e.event === 'step');
  assert.equal(
    steps.map((e) => [e.epoch, e.samples]),
    [
      [1, 4],
      [1, 8],
      [1, 10],
      [2, 4],
      [2, 8],
      [2, 10],
    ],
  );
  for (const s of steps) {
    assert.is(s.samplesTotal, 10);
    assert.ok(Number.isFinite(s.loss as number));
  }
  const epochs = events.filter((e) => e.event === 'epoch');
  assert.equal(
    epochs.map((e) => e.checkpoint),
    [join(runDir, 'checkpoints', 'epoch-1'), join(runDir, 'checkpoints', 'epoch-2')],
  );
  const joined = events.filter((e) => e.event === 'device' && e.state === 'up').map((e) => e.device);
  assert.ok(joined.includes('dev0') && joined.includes('dev1'), JSON.stringify(joined));
  assert.ok(events.some((e) => e.event === 'plan'));
  const done = events.at(-1)!;
  assert.equal([done.event, done.reason, done.runDir], ['done', 'trained', runDir]);
  // The same steps as metrics.jsonl recorded.
  const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((m) => m.type === 'step');
  assert.equal(
    metrics.map((m) => m.loss),
    steps.map((s) => s.loss),
  );
});

test('progress: on a pipe, one plain line per event on stderr and the run dir alone on stdout', async () => {
  const file = tinyTopology();
  const r = await run(process.execPath, [cli, 'launch', file, '--run-dir', join(tmp, 'text'), '--until', 'registered']);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  for (const l of lines) assert.match(l, /^\[\d+\.\ds\] \S/);
  assert.not.ok(r.stderr.includes(ESC), 'no terminal escapes');
  assert.ok(lines.some((l) => / dev0: joined \(/.test(l)));
  assert.ok(lines.some((l) => /all devices up: dev0, dev1/.test(l)));
  assert.match(lines.at(-1)!, /stopped \(registered\)$/);
});

const ESC = String.fromCharCode(27);
const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

test('progress: on a terminal, a device line and a bar per epoch with samples, steps/s, loss and ETA; events above', async () => {
  assert.ok(hasScript, 'util-linux script is installed (a pseudo-terminal for this test)');
  const file = tinyTopology();
  const runDir = join(tmp, 'tty');
  const r = await run('script', [
    '-qfec',
    `stty cols 160 rows 40; '${process.execPath}' '${cli}' launch '${file}' --run-dir '${runDir}'`,
    '/dev/null',
  ]);
  assert.is(r.code, 0, r.stdout.slice(-3000));
  // What the terminal showed, a line break for each escape sequence (they move the cursor).
  const shown = r.stdout
    .split(ESC)
    .map((part) => part.replace(/^\[[0-9;?]*[A-Za-z]/, ''))
    .join('\n')
    .replace(/\r/g, '');
  assert.match(shown, /devices: dev0 (up|layers 1\.\.2) · dev1/);
  assert.match(shown, /epoch 1\/2 \(pipeline\) █{24} 10\/10 samples \| \d+\.\d\d steps\/s \| loss \d\.\d{4} \| ETA \d+s/);
  assert.match(shown, /epoch 2\/2 \(cached\) █{24} 10\/10 samples \| \d+\.\d\d steps\/s \| loss \d\.\d{4} \| ETA 0s/);
  for (const line of [
    /\[\d+\.\ds\] all devices up: dev0, dev1\n/,
    /\[\d+\.\ds\] epoch 1 done \(pipeline\)/,
    /\[\d+\.\ds\] stopped \(trained\)\n/,
  ])
    assert.match(shown, line);
  assert.match(shown, new RegExp(`\\n${runDir}\\n$`), 'the run dir is the last line');
  assert.ok(r.stdout.includes(`${ESC}[?25h`), 'the cursor is shown again');
});

test.run();
