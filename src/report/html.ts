/**
 * report.html: one self-contained page (inline SVG and CSS, no script, a Content-Security-Policy
 * that forbids every fetch), plus each chart as its own SVG file in <runDir>/report/. The live
 * dashboard shows the same body, refreshed over server-sent events.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MemorySample } from '../../actors/coordinator/run-record.ts';
import { loadRunRecord, type RunRecord } from './record.ts';
import { esc } from './svg.ts';
import { happenings, reportCharts, runStart } from './views.ts';

/** What only a live run knows: the devices' latest heartbeats and the run's size. */
export interface LiveView {
  devices: MemorySample[];
  epochs?: number;
  stepsPerEpoch?: number;
}

const num = (v: unknown, digits = 4) => (typeof v === 'number' && Number.isFinite(v) ? +v.toFixed(digits) : '–');
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MB`;
const table = (head: string[], rows: string[][]) =>
  `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;

/** The run's state as its events tell: finished, failed, stopped, or still running. */
function status(r: RunRecord): string {
  const last = [...r.events].reverse().find((e) => ['RUN_FINISHED', 'RUN_FAILED', 'STOPPED'].includes(e.type));
  if (r.summary && last?.type !== 'RUN_FAILED') return 'finished';
  if (!last) return 'running';
  if (last.type === 'RUN_FAILED') return `failed: ${String(last.error)}`;
  if (last.type === 'STOPPED') return `stopped (${String(last.reason)}${last.error ? `: ${String(last.error)}` : ''})`;
  return 'finished';
}

function planSection(r: RunRecord): string {
  const stages =
    r.summary?.plan.stages ??
    ([...r.events].reverse().find((e) => e.type === 'RUN_PLANNED')?.stages as
      | { from: number; to: number; devices: string[] }[]
      | undefined);
  if (!stages) return '<p>No plan yet.</p>';
  return table(
    ['stage', 'layers', 'devices'],
    stages.map((s, i) => [String(i), `${s.from}..${s.to}`, s.devices.join(', ')]),
  );
}

function devicesSection(r: RunRecord, live?: LiveView): string {
  if (live?.devices.length)
    return table(
      ['device', 'state', 'role', 'step', 'phase', 'memory', 'heartbeat age'],
      live.devices.map((d) => [
        d.device,
        d.state,
        d.role ?? '–',
        String(d.step),
        d.phase ?? '–',
        mib(d.memoryBytes),
        `${((Date.now() - d.at) / 1000).toFixed(1)} s`,
      ]),
    );
  const devs = r.summary?.devices ?? [];
  if (!devs.length) return '<p>No device has reported yet.</p>';
  return table(
    ['device', 'GFLOP/s', 'sends at (slowest link)', 'memory budget', 'backend', 'peak step memory'],
    devs.map((d) => [
      d.name,
      String(num(d.matmulGflops, 1)),
      typeof d.bandwidthMbps !== 'number' ? '–' : `${num(d.bandwidthMbps, 0)} Mbit/s${d.bandwidthSource ? ` (${d.bandwidthSource})` : ''}`,
      `${d.memoryMb} MB`,
      d.backend ?? '–',
      r.summary?.peakBytesPerDevice[d.name] !== undefined ? mib(r.summary.peakBytesPerDevice[d.name]!) : '–',
    ]),
  );
}

function progress(r: RunRecord, live?: LiveView): string {
  const last = r.steps.at(-1);
  const epochs = r.summary?.spec.epochs ?? live?.epochs;
  const perEpoch = r.summary?.stepsPerEpoch ?? live?.stepsPerEpoch;
  const total = epochs !== undefined && perEpoch !== undefined ? epochs * perEpoch : undefined;
  const facts: [string, string][] = [
    ['status', status(r)],
    ['steps committed', `${r.steps.length}${total ? ` of ${total}` : ''}`],
    ['epoch', last ? `${last.epoch}${epochs ? ` of ${epochs}` : ''} (${last.phase})` : '–'],
    ['last step loss', last ? String(num(last.loss)) : '–'],
  ];
  if (r.summary) facts.push(['final epoch loss', String(num(r.summary.finalLoss))], ['run seconds', String(num(r.summary.seconds, 1))]);
  const pct = total && last ? Math.min(100, (100 * r.steps.length) / total) : 0;
  return (
    `<dl>${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>` +
    (total ? `<div class="bar" data-progress="${pct.toFixed(1)}"><div style="width:${pct.toFixed(1)}%"></div></div>` : '')
  );
}

function happeningsSection(r: RunRecord): string {
  const list = happenings(r);
  if (!list.length) return '<p>No faults, joins, leaves or re-plans.</p>';
  const t0 = runStart(r);
  return table(
    ['at (s)', 'what'],
    list.map((h) => [((h.at - t0) / 1000).toFixed(1), `${h.kind}: ${h.label}${h.step !== undefined ? ` (step ${h.step} in flight)` : ''}`]),
  );
}

/** The page body: facts, plan, devices, charts, happenings. */
export function reportBody(r: RunRecord, live?: LiveView): string {
  const skipped = Object.entries(r.skipped);
  return (
    `<section><h2>Progress</h2>${progress(r, live)}</section>` +
    `<section><h2>Plan</h2>${planSection(r)}</section>` +
    `<section><h2>Devices</h2>${devicesSection(r, live)}</section>` +
    reportCharts(r)
      .map((c) => `<section class="chart" id="${esc(c.id)}"><h2>${esc(c.title)}</h2>${c.svg}</section>`)
      .join('') +
    `<section><h2>Faults, joins, leaves and re-plans</h2>${happeningsSection(r)}</section>` +
    (skipped.length ? `<p class="warn">Skipped unreadable lines: ${esc(skipped.map(([f, n]) => `${f} ${n}`).join(', '))}</p>` : '')
  );
}

const STYLE =
  'body{font-family:sans-serif;margin:1.5em;color:#222;max-width:800px}h1{font-size:1.4em}h2{font-size:1.05em;margin:1.2em 0 .4em}' +
  'table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}' +
  'dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0}dt{font-weight:bold}dd{margin:0}' +
  '.bar{background:#eee;height:10px;margin-top:6px;width:100%}.bar div{background:#1f77b4;height:10px}.warn{color:#a00}' +
  'svg{max-width:100%;height:auto;border:1px solid #eee}';

/** A whole page; `script` (the dashboard's) is the only script it may run. */
export function page(title: string, body: string, script?: string): string {
  const csp = `default-src 'none'; style-src 'unsafe-inline'; img-src data:${script ? "; script-src 'unsafe-inline'; connect-src 'self'" : ''}`;
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${csp}">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title><style>${STYLE}</style></head>` +
    `<body><h1>${esc(title)}</h1><div id="content">${body}</div>${script ? `<script>${script}</script>` : ''}</body></html>`
  );
}

export function reportTitle(r: RunRecord): string {
  const launched = r.events.find((e) => e.type === 'LAUNCHED');
  const name = r.summary?.run ?? (typeof launched?.run === 'string' ? launched.run : undefined);
  return `Charon run ${name ?? r.runDir}`;
}

/** Writes report.html and report/<chart>.svg into `runDir`; returns the page's path. @throws ReportError (bad run dir). */
export function writeReport(runDir: string): string {
  const r = loadRunRecord(runDir);
  const dir = join(runDir, 'report');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const c of reportCharts(r))
    writeFileSync(join(dir, `${c.id}.svg`), `<?xml version="1.0" encoding="UTF-8"?>\n${c.svg}\n`, { mode: 0o600 });
  const file = join(runDir, 'report.html');
  writeFileSync(file, page(reportTitle(r), reportBody(r)), { mode: 0o600 });
  return file;
}
