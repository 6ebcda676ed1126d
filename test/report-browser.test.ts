/**
 * The run report and the live dashboard in a real browser (Debian's chromium, driven by
 * playwright-core): a tiny two-device launch with --dashboard; while it trains, the dashboard's
 * charts fill in over server-sent events; afterwards report.html opens from file://. Every chart
 * must render with data, with no console error and no failed or outside request; a screenshot of
 * each is saved in the run directory.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startLaunch, type Ev, writeCiTopology } from './fixtures/launch.ts';
import { tempDir } from './fixtures/temp.ts';

const CHROMIUM = '/usr/bin/chromium';
const tmp = tempDir('charon-report-browser-');

/**
 * A CI-sized two-stage run, long enough to watch it live: tiny steps take milliseconds, and with
 * commits no longer written one per step a shorter run could end between two polls of the page.
 */
function topology(): string {
  return writeCiTopology(join(tmp, 'report.yaml'), { samples: 96, epochs: 4, training: { plan: 'pipeline' } });
}

/** Collects what must not happen on a page: console errors, page errors, failed requests, requests elsewhere. */
function watch(page: Page, allowed: (url: string) => boolean): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // The event stream ends when the page is closed: not a failure of the page.
    if (!r.url().endsWith('/events')) problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`);
  });
  page.on('request', (r) => {
    if (!allowed(r.url())) problems.push(`unexpected request: ${r.url()}`);
  });
  return problems;
}

/**
 * Every chart on the page: its id, whether it says it is empty, how many data marks it draws.
 * (Browser-side functions declare no named helpers: tsx would wrap them in one the page lacks.)
 */
interface ChartState {
  id: string;
  empty: boolean;
  data: number;
  width: number;
}
const chartsOn = (page: Page): Promise<ChartState[]> =>
  page.$$eval('svg[data-chart]', (svgs) =>
    svgs.map((s) => ({
      id: s.getAttribute('data-chart') ?? '',
      empty: s.getAttribute('data-empty') === 'true',
      data: s.querySelectorAll('.datum').length,
      width: s.getBoundingClientRect().width,
    })),
  );

const EXPECTED = ['loss-step', 'loss-epoch', 'epoch-time', 'memory', 'bytes'];

function checkCharts(charts: ChartState[], where: string): void {
  const ids = charts.map((c) => c.id);
  for (const id of EXPECTED) assert.ok(ids.includes(id), `${where}: chart ${id} is missing (has ${ids.join(', ')})`);
  assert.ok(
    ids.some((id) => id.startsWith('timeline-step-')),
    `${where}: no 1F1B timeline chart (has ${ids.join(', ')})`,
  );
  for (const c of charts) {
    assert.not.ok(c.empty, `${where}: chart ${c.id} is empty`);
    assert.ok(c.data > 0, `${where}: chart ${c.id} draws no data`);
    assert.ok(c.width > 100, `${where}: chart ${c.id} is not laid out (width ${c.width})`);
  }
}

test('report.html and the live dashboard render every chart in headless chromium', async () => {
  if (!existsSync(CHROMIUM))
    assert.unreachable(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does it)`);
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const runDir = join(tmp, 'run');
  let dashboardUrl: string | undefined;
  let stopped = false;
  let live: (url: string) => void;
  const urlSeen = new Promise<string>((res) => {
    live = res;
  });
  const launch = startLaunch([topology(), '--run-dir', runDir, '--dashboard'], (e: Ev) => {
    if (e.type === 'DASHBOARD') {
      dashboardUrl = e.url as string;
      live(dashboardUrl);
    }
    if (e.type === 'STOPPED') stopped = true;
  });
  try {
    const url = await Promise.race([urlSeen, launch.done.then((r) => Promise.reject(new Error(`launch ended first: ${r.stderr}`)))]);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await browser.newPage({ viewport: { width: 900, height: 1200 } });
    const origin = new URL(url).origin;
    const problems = watch(page, (u) => u.startsWith(origin));
    await page.goto(url);
    // The charts fill in as the run's events arrive (every chart has data once an epoch closed).
    await page
      .waitForFunction(
        (ids) =>
          [...ids, 'timeline-step-'].every((id) =>
            [...document.querySelectorAll('svg[data-chart]')].some(
              (c) => (c.getAttribute('data-chart') ?? '').startsWith(id) && c.querySelector('.datum') !== null,
            ),
          ),
        EXPECTED,
        { timeout: 240_000, polling: 500 },
      )
      .catch((err: Error) => {
        throw new Error(`dashboard charts did not fill in${stopped ? ' before the run ended' : ''}: ${err.message.split('\n')[0]}`);
      });
    assert.not.ok(stopped, 'the run ended before the dashboard showed every chart: the check was not live');
    checkCharts(await chartsOn(page), 'dashboard');
    // Each device's state as of its last heartbeat: on the tiny preset the first steps are done
    // before a device's first heartbeat after its assignment, which still says idle.
    assert.match((await page.textContent('#content')) ?? '', /dev[01](idle|loading|ready|working|unloading)/);
    const liveShot = join(runDir, 'dashboard-screenshot.png');
    await page.screenshot({ path: liveShot, fullPage: true });
    console.log(`dashboard screenshot: ${liveShot}`);
    await page.close();
    assert.equal(problems, [], 'dashboard');

    const result = await launch.done;
    assert.is(result.code, 0, result.stderr);
    const reportEvent = result.events.find((e) => e.type === 'REPORT');
    assert.ok(reportEvent, 'launch announced the report');
    const file = reportEvent!.path as string;
    assert.is(file, join(runDir, 'report.html'));
    const offline = await browser.newPage({ viewport: { width: 900, height: 1200 }, offline: true });
    const fileProblems = watch(offline, (u) => u === `file://${file}`);
    await offline.goto(`file://${file}`);
    const charts = await chartsOn(offline);
    checkCharts(charts, 'report.html');
    // Two stages: the Gantt chart has both devices' forwards and backwards.
    const gantt = await offline.$$eval('svg[data-chart="timeline-step-1"] rect[data-kind]', (rs) =>
      rs.map((r) => r.getAttribute('data-kind')),
    );
    for (const kind of ['forward', 'backward', 'allreduce', 'update'])
      assert.ok(gantt.includes(kind), `timeline of step 1 has a ${kind} span`);
    const shot = join(runDir, 'report-screenshot.png');
    await offline.screenshot({ path: shot, fullPage: true });
    console.log(`report screenshot: ${shot}`);
    assert.equal(fileProblems, [], 'report.html');
  } finally {
    if (launch.child.exitCode === null) launch.child.kill('SIGINT');
    await launch.done;
    await browser.close();
  }
});

test.run();
