/**
 * SVG charts drawn as strings, with no library and nothing fetched, so a report opens offline and
 * the same markup serves the report, its SVG files and the live dashboard. Every drawn datum
 * carries class "datum"; a chart without data says so and is marked data-empty.
 */
const W = 760,
  H = 300;
const M = { l: 64, r: 16, t: 34, b: 42 };
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
/** Marker colours by what happened. */
export const MARK_COLOURS: Record<string, string> = { fault: '#d62728', join: '#2ca02c', leave: '#ff7f0e', replan: '#9467bd' };

export const colour = (i: number): string => PALETTE[i % PALETTE.length]!;

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const fmt = (v: number): string => {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e9) return `${+(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return `${+v.toFixed(2)}`;
  return `${+v.toPrecision(3)}`;
};

/** About `n` round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n,
    mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function frame(id: string, title: string, body: string, empty = false): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" data-chart="${esc(id)}"` +
    `${empty ? ' data-empty="true"' : ''} font-family="sans-serif" font-size="11">` +
    `<title>${esc(title)}</title><rect width="${W}" height="${H}" fill="#fff"/>` +
    `<text x="${M.l}" y="16" font-size="13" font-weight="bold">${esc(title)}</text>${body}</svg>`
  );
}

/** A chart with nothing to draw yet. */
export function emptyChart(id: string, title: string, why: string): string {
  return frame(id, title, `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#777">${esc(why)}</text>`, true);
}

/** Names in the palette's colours, in order, right-aligned above the plot. */
function legend(names: string[]): string {
  let x = W - M.r,
    out = '';
  for (let i = names.length - 1; i >= 0; i--) {
    const label = names[i]!;
    x -= label.length * 6.2 + 22;
    out += `<rect x="${x}" y="8" width="10" height="10" fill="${colour(i)}"/><text x="${x + 14}" y="17">${esc(label)}</text>`;
  }
  return out;
}

interface Axes {
  x: (v: number) => number;
  y: (v: number) => number;
  svg: string;
}

function axes(
  x0: number,
  x1: number,
  y0: number,
  y1: number,
  o: { xLabel: string; yLabel: string; xFormat?: (v: number) => string; yFormat?: (v: number) => string },
): Axes {
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + (Math.abs(y0) || 1);
  const pw = W - M.l - M.r,
    ph = H - M.t - M.b;
  const x = (v: number) => M.l + ((v - x0) / (x1 - x0)) * pw;
  const y = (v: number) => M.t + ph - ((v - y0) / (y1 - y0)) * ph;
  let svg = `<g stroke="#ccc">`;
  const yt = ticks(y0, y1),
    xt = ticks(x0, x1, 8);
  for (const t of yt) svg += `<line x1="${M.l}" x2="${W - M.r}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}"/>`;
  svg += `</g><g stroke="#333"><line x1="${M.l}" x2="${M.l}" y1="${M.t}" y2="${H - M.b}"/><line x1="${M.l}" x2="${W - M.r}" y1="${H - M.b}" y2="${H - M.b}"/></g>`;
  for (const t of yt) svg += `<text x="${M.l - 4}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${esc((o.yFormat ?? fmt)(t))}</text>`;
  for (const t of xt) svg += `<text x="${x(t).toFixed(1)}" y="${H - M.b + 14}" text-anchor="middle">${esc((o.xFormat ?? fmt)(t))}</text>`;
  svg += `<text x="${M.l + pw / 2}" y="${H - 6}" text-anchor="middle">${esc(o.xLabel)}</text>`;
  svg += `<text transform="translate(14 ${M.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`;
  return { x, y, svg };
}

/** A vertical line at x marking what happened there (a fault, a join, a leave, a re-plan). */
export interface Marker {
  x: number;
  kind: 'fault' | 'join' | 'leave' | 'replan';
  label: string;
}

function markers(list: Marker[], x: (v: number) => number): string {
  return list
    .map((m, i) => {
      const px = x(m.x).toFixed(1),
        c = MARK_COLOURS[m.kind]!;
      return (
        `<g class="datum marker" data-kind="${m.kind}"><title>${esc(m.label)}</title>` +
        `<line x1="${px}" x2="${px}" y1="${M.t}" y2="${H - M.b}" stroke="${c}" stroke-dasharray="4 3" stroke-width="1.5"/>` +
        `<text x="${px}" y="${M.t + 10 + (i % 3) * 11}" fill="${c}" dx="3">${esc(m.label)}</text></g>`
      );
    })
    .join('');
}

export interface Series {
  name: string;
  points: [number, number][];
}

export function lineChart(o: {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  markers?: Marker[];
  xFormat?: (v: number) => string;
  yFormat?: (v: number) => string;
  /** Draw a dot at every point (few points). */
  dots?: boolean;
  /** Start the y axis at 0. */
  zero?: boolean;
}): string {
  const pts = o.series.flatMap((s) => s.points).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  if (pts.length === 0) return emptyChart(o.id, o.title, 'no data yet');
  const xs = pts.map((p) => p[0]),
    ys = pts.map((p) => p[1]);
  const mx = (o.markers ?? []).map((m) => m.x);
  let y0 = o.zero ? 0 : Math.min(...ys),
    y1 = Math.max(...ys);
  if (!o.zero) {
    const pad = (y1 - y0) * 0.05 || Math.abs(y1) * 0.05 || 1;
    y0 -= pad;
    y1 += pad;
  }
  const a = axes(Math.min(...xs, ...mx), Math.max(...xs, ...mx), y0, y1, o);
  let body = a.svg;
  o.series.forEach((s, i) => {
    const p = s.points.filter(([u, v]) => Number.isFinite(u) && Number.isFinite(v));
    if (p.length === 0) return;
    const d = p.map(([u, v], k) => `${k ? 'L' : 'M'}${a.x(u).toFixed(1)} ${a.y(v).toFixed(1)}`).join('');
    body += `<path class="datum" data-series="${esc(s.name)}" d="${d}" fill="none" stroke="${colour(i)}" stroke-width="1.8"/>`;
    if (o.dots || p.length === 1)
      for (const [u, v] of p)
        body += `<circle class="datum" cx="${a.x(u).toFixed(1)}" cy="${a.y(v).toFixed(1)}" r="3" fill="${colour(i)}"><title>${esc(`${s.name}: ${fmt(u)}, ${fmt(v)}`)}</title></circle>`;
  });
  body += markers(o.markers ?? [], a.x);
  return frame(o.id, o.title, body + legend(o.series.map((s) => s.name)));
}

/** Stacked bars: one bar per category, one segment per stack. */
export function barChart(o: {
  id: string;
  title: string;
  yLabel: string;
  categories: string[];
  stacks: { name: string; values: number[] }[];
  yFormat?: (v: number) => string;
}): string {
  const totals = o.categories.map((_, c) => o.stacks.reduce((s, st) => s + Math.max(0, st.values[c] ?? 0), 0));
  if (o.categories.length === 0 || !totals.some((t) => t > 0)) return emptyChart(o.id, o.title, 'no data yet');
  const a = axes(0, o.categories.length, 0, Math.max(...totals) * 1.05, {
    xLabel: '',
    yLabel: o.yLabel,
    xFormat: () => '',
    ...(o.yFormat ? { yFormat: o.yFormat } : {}),
  });
  let body = a.svg;
  const slot = a.x(1) - a.x(0),
    bw = Math.min(60, slot * 0.6);
  o.categories.forEach((cat, c) => {
    const cx = a.x(c + 0.5);
    let acc = 0;
    o.stacks.forEach((st, i) => {
      const v = Math.max(0, st.values[c] ?? 0);
      if (v <= 0) return;
      const top = a.y(acc + v),
        bottom = a.y(acc);
      body +=
        `<rect class="datum" x="${(cx - bw / 2).toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${Math.max(0.5, bottom - top).toFixed(1)}" fill="${colour(i)}">` +
        `<title>${esc(`${cat}: ${st.name} ${(o.yFormat ?? fmt)(v)}`)}</title></rect>`;
      acc += v;
    });
    body += `<text x="${cx.toFixed(1)}" y="${H - M.b + 14}" text-anchor="middle">${esc(cat)}</text>`;
  });
  return frame(o.id, o.title, body + legend(o.stacks.map((s) => s.name)));
}

export interface GanttSpan {
  start: number;
  end: number;
  kind: string;
  label?: string;
  /** Drawn as a thin bar under the lane's main row (sends overlap compute). */
  thin?: boolean;
}

/** One lane per device; x in ms from `t0`. */
export function ganttChart(o: {
  id: string;
  title: string;
  t0: number;
  lanes: { name: string; spans: GanttSpan[] }[];
  kinds: string[];
}): string {
  const spans = o.lanes.flatMap((l) => l.spans);
  if (spans.length === 0) return emptyChart(o.id, o.title, 'no spans recorded');
  const t1 = Math.max(...spans.map((s) => s.end));
  const lane = (H - M.t - M.b) / Math.max(1, o.lanes.length);
  const pw = W - M.l - M.r;
  const x = (t: number) => M.l + ((t - o.t0) / Math.max(1e-6, t1 - o.t0)) * pw;
  let body = `<g stroke="#333"><line x1="${M.l}" x2="${W - M.r}" y1="${H - M.b}" y2="${H - M.b}"/></g>`;
  for (const t of ticks(0, t1 - o.t0, 8))
    body += `<text x="${x(o.t0 + t).toFixed(1)}" y="${H - M.b + 14}" text-anchor="middle">${esc(fmt(t))}</text>`;
  body += `<text x="${M.l + pw / 2}" y="${H - 6}" text-anchor="middle">ms since the coordinator sent the step</text>`;
  o.lanes.forEach((l, i) => {
    const top = M.t + i * lane;
    body += `<text x="${M.l - 4}" y="${(top + lane / 2 + 4).toFixed(1)}" text-anchor="end">${esc(l.name)}</text>`;
    body += `<line x1="${M.l}" x2="${W - M.r}" y1="${(top + lane).toFixed(1)}" y2="${(top + lane).toFixed(1)}" stroke="#eee"/>`;
    for (const s of l.spans) {
      const k = Math.max(0, o.kinds.indexOf(s.kind));
      const h = s.thin ? lane * 0.15 : lane * 0.6,
        y = s.thin ? top + lane * 0.78 : top + lane * 0.12;
      const x0 = x(s.start),
        w = Math.max(0.8, x(s.end) - x0);
      const tip = `${l.name}: ${s.kind}${s.label ? ` ${s.label}` : ''}, ${fmt(s.start - o.t0)}..${fmt(s.end - o.t0)} ms`;
      body += `<rect class="datum" data-kind="${esc(s.kind)}" x="${x0.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}" fill="${colour(k)}" stroke="#fff" stroke-width="0.3"><title>${esc(tip)}</title></rect>`;
      if (s.label && !s.thin && w > 14)
        body += `<text x="${(x0 + w / 2).toFixed(1)}" y="${(y + h / 2 + 4).toFixed(1)}" text-anchor="middle" fill="#fff" pointer-events="none">${esc(s.label)}</text>`;
    }
  });
  return frame(o.id, o.title, body + legend(o.kinds));
}
