/**
 * The run report from a run directory written here (two devices, a pipeline and a cached epoch, a
 * fault, a join and a re-plan): every chart drawn with data, the happenings marked where time is
 * on an axis, `charon report` and its errors, and the live dashboard's HTTP surface.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { writeReport } from '../src/report/html.ts';
import { loadRunRecord } from '../src/report/record.ts';
import { reportCharts } from '../src/report/views.ts';
import { dashboardAddress, startDashboard, withOptionalValue } from '../src/report/dashboard.ts';
import { RunRecorder } from '../actors/coordinator/run-record.ts';
import { tempDir } from './fixtures/temp.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = tempDir('charon-report-');
const T0 = 1_800_000_000_000;
const lines = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';

/** A run directory as launch leaves it, with a fault of dev1 at step 3, a join of dev2 and a re-plan. */
function fakeRun(dir: string, opts: { summary: boolean }): void {
  mkdirSync(dir, { recursive: true });
  const steps = [1, 2, 3, 4, 5, 6].map((step) => ({
    type: 'step',
    at: T0 + step * 1000,
    phase: step <= 3 ? 'pipeline' : 'cached',
    epoch: step <= 3 ? 1 : 2,
    step,
    loss: 5 - step * 0.1,
    seconds: 0.5,
    bytes: 1000,
    tokens: 60,
    devices: {
      dev0: { rows: 2, computeSeconds: 0.2, bytesSent: 400, peakBytes: 1e6 },
      dev1: { rows: 2, computeSeconds: 0.3, bytesSent: 600, peakBytes: 1e6 },
    },
  }));
  const epochs = [
    { type: 'epoch', epoch: 1, phase: 'pipeline', steps: 3, seconds: 1.5, loss: 4.8, bytes: 3000 },
    { type: 'epoch', epoch: 2, phase: 'cached', steps: 3, seconds: 1.5, loss: 4.5, bytes: 3000 },
  ];
  // A malformed line is skipped and counted, not fatal.
  writeFileSync(join(dir, 'metrics.jsonl'), lines([...steps.slice(0, 3), epochs[0], ...steps.slice(3), epochs[1]]) + '{"type": "step", \n');
  const span = (kind: string, start: number, end: number, mb?: number) => ({
    kind,
    start: T0 + start,
    end: T0 + end,
    ...(mb === undefined ? {} : { mb }),
  });
  writeFileSync(
    join(dir, 'timeline.jsonl'),
    lines([
      {
        type: 'timeline',
        phase: 'pipeline',
        epoch: 1,
        step: 1,
        sentAt: T0,
        doneAt: T0 + 500,
        groups: [['dev0'], ['dev1']],
        devices: {
          dev0: [
            span('forward', 1, 50, 0),
            span('send', 50, 55),
            span('forward', 55, 100, 1),
            span('backward', 200, 300, 0),
            span('allreduce', 400, 410),
            span('update', 410, 420),
          ],
          dev1: [span('forward', 60, 90, 0), span('backward', 90, 190, 0), span('send', 190, 195), span('allreduce', 400, 410)],
        },
      },
    ]),
  );
  writeFileSync(
    join(dir, 'memory.jsonl'),
    lines(
      [0, 1, 2, 3, 4, 5].flatMap((s) =>
        ['dev0', 'dev1'].map((device) => ({
          at: T0 + s * 1000,
          device,
          memoryBytes: (100 + s) * 2 ** 20,
          state: 'working',
          role: 'stage 0 rank 0',
          step: s,
          phase: 'pipeline',
        })),
      ),
    ),
  );
  writeFileSync(
    join(dir, 'events.jsonl'),
    lines([
      { type: 'LAUNCHED', at: T0 - 1000, run: 'fake', source: 'launch' },
      {
        type: 'RUN_PLANNED',
        at: T0 - 500,
        stages: [
          { from: 1, to: 1, devices: ['dev0'] },
          { from: 2, to: 2, devices: ['dev1'] },
        ],
      },
      { type: 'DEVICE_LOST', at: T0 + 2500, device: 'dev1', reason: 'killed' },
      { type: 'DEVICE_JOINED', at: T0 + 3200, device: 'dev2' },
      { type: 'RUN_PLANNED', at: T0 + 3300, stages: [{ from: 1, to: 2, devices: ['dev0', 'dev2'] }] },
      { type: 'REDISTRIBUTED', at: T0 + 3500, bytes: 5000, seconds: 0.3 },
    ]),
  );
  if (!opts.summary) return;
  writeFileSync(
    join(dir, 'summary.json'),
    JSON.stringify({
      run: 'fake',
      spec: { epochs: 2 },
      stepsPerEpoch: 3,
      devices: [{ name: 'dev0', matmulGflops: 2, memoryMb: 2048, slowdown: 1, bandwidthMbps: null, backend: 'wasm' }],
      plan: { stages: [{ from: 1, to: 2, devices: ['dev0', 'dev2'], shares: [1, 1] }] },
      peakBytesPerDevice: { dev0: 1e6 },
      redistribution: { bytes: 5000, seconds: 0.3, shardSizes: {} },
      faults: [{ device: 'dev1', reason: 'killed', during: 'pipeline step', epoch: 1, step: 3, lostAt: T0 + 2500, recoveredAt: T0 + 3600 }],
      joins: [{ device: 'dev2', at: T0 + 3200, rejoin: false }],
      leaves: [],
      replans: [{ generation: 1, lost: ['dev1'], joined: ['dev2'], left: [], devices: ['dev0', 'dev2'], at: T0 + 3300 }],
      finalLoss: 4.5,
      seconds: 9,
    }),
  );
}

const datums = (svg: string) => (svg.match(/class="datum/g) ?? []).length;

for (const summary of [true, false]) {
  test(`every chart has data and marks the fault, join and re-plan (${summary ? 'finished run' : 'run in progress'})`, () => {
    const dir = join(tmp, summary ? 'done' : 'live');
    fakeRun(dir, { summary });
    const r = loadRunRecord(dir);
    assert.equal(r.skipped, { 'metrics.jsonl': 1 });
    const charts = reportCharts(r);
    assert.equal(
      charts.map((c) => c.id),
      ['loss-step', 'loss-epoch', 'epoch-time', 'timeline-step-1', 'memory', 'bytes'],
    );
    for (const c of charts) {
      assert.not.match(c.svg, 'data-empty', c.id);
      assert.ok(datums(c.svg) > 0, `${c.id} draws data`);
    }
    const byId = new Map(charts.map((c) => [c.id, c.svg]));
    for (const id of ['loss-step', 'memory']) {
      const svg = byId.get(id)!;
      for (const kind of ['fault', 'join', 'replan']) assert.match(svg, `data-kind="${kind}"`, `${id} marks the ${kind}`);
    }
    const gantt = byId.get('timeline-step-1')!;
    assert.is((gantt.match(/data-kind="forward"/g) ?? []).length, 3);
    assert.match(gantt, '>F0<');
    assert.match(byId.get('epoch-time')!, 'redistribution');
    assert.match(byId.get('bytes')!, 'cache moves');
  });
}

test('writeReport: a self-contained page and one SVG file per chart', () => {
  const dir = join(tmp, 'done');
  const file = writeReport(dir);
  const html = readFileSync(file, 'utf8');
  assert.match(html, "default-src 'none'");
  assert.not.match(html, /<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  assert.match(html, 'dev1 lost');
  assert.equal(readdirSync(join(dir, 'report')).sort(), [
    'bytes.svg',
    'epoch-time.svg',
    'loss-epoch.svg',
    'loss-step.svg',
    'memory.svg',
    'timeline-step-1.svg',
  ]);
  assert.match(readFileSync(join(dir, 'report', 'memory.svg'), 'utf8'), /^<\?xml[^\n]*\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
});

const charon = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'tools/charon.js'), ...args], { cwd: root, encoding: 'utf8' });

test('charon report RUN_DIR rebuilds the report; a bad run directory is one error line and exit 2', () => {
  const dir = join(tmp, 'live');
  const ok = charon('report', dir);
  assert.is(ok.status, 0, ok.stderr);
  assert.is(ok.stdout.trim(), join(dir, 'report.html'));
  assert.ok(existsSync(join(dir, 'report', 'loss-step.svg')));
  const empty = join(tmp, 'empty');
  mkdirSync(empty);
  for (const [args, re] of [
    [[join(tmp, 'nope')], /no such run directory/],
    [[empty], /not a run directory/],
    [[join(dir, 'metrics.jsonl')], /not a directory/],
    [[], /missing RUN_DIR/],
  ] as const) {
    const r = charon('report', ...args);
    assert.is(r.status, 2, r.stderr);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, re);
  }
});

test('--dashboard: optional port, loopback only', () => {
  assert.equal(withOptionalValue(['t.yaml', '--dashboard'], '--dashboard', '0'), ['t.yaml', '--dashboard=0']);
  assert.equal(withOptionalValue(['--dashboard', 't.yaml'], '--dashboard', '0'), ['--dashboard=0', 't.yaml']);
  assert.equal(withOptionalValue(['--dashboard', '8080', 't.yaml'], '--dashboard', '0'), ['--dashboard=8080', 't.yaml']);
  assert.equal(dashboardAddress('8080'), { host: '127.0.0.1', port: 8080 });
  assert.equal(dashboardAddress('[::1]:0'), { host: '::1', port: 0 });
  assert.throws(() => dashboardAddress('0.0.0.0:8080'), /not a loopback address/);
  assert.throws(() => dashboardAddress('eth0'), /not a port or HOST:PORT/);
  const r = charon('launch', join(root, 'topologies/local-2.yaml'), '--dashboard', '192.168.1.2:80');
  assert.is(r.status, 2);
  assert.match(r.stderr, /^charon launch: --dashboard: 192\.168\.1\.2 is not a loopback address/);
});

function get(url: string, opts: { method?: string; host?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.host ? { host: opts.host } : {} }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
        // An event stream stays open: its first event is enough.
        if (res.headers['content-type'] === 'text/event-stream' && body.includes('\n\n')) {
          res.destroy();
          resolve({ status: res.statusCode ?? 0, body });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the dashboard serves the views read-only, refuses a foreign Host, streams updates', async () => {
  const dir = join(tmp, 'live');
  const recorder = new RunRecorder(dir);
  const d = await startDashboard({ recorder, host: '127.0.0.1', port: 0, epochs: 2, stepsPerEpoch: 3 });
  try {
    assert.match(d.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await get(d.url);
    assert.is(page.status, 200);
    assert.match(page.body, 'data-chart="timeline-step-1"');
    assert.match(page.body, 'new EventSource');
    assert.is((await get(d.url, { method: 'POST' })).status, 405);
    assert.is((await get(d.url, { host: 'evil.example:80' })).status, 403);
    assert.is((await get(`${d.url}nothing`)).status, 404);
    const sse = await get(`${d.url}events`);
    assert.match(sse.body, /^event: update\ndata: \{"html":/);
    assert.match(sse.body, '6 of 6');
  } finally {
    await d.close();
  }
});

test.run();
