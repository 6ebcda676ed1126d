/**
 * The run report's charts, from a run directory's record: loss per step and per epoch, time per
 * epoch by phase, the 1F1B timeline of sampled steps per device, memory per device over time and
 * bytes moved, with faults, joins, leaves and re-plans marked where time is on an axis.
 */
import type { RunRecord, StepRow } from './record.ts';
import { barChart, ganttChart, lineChart, type GanttSpan, type Marker } from './svg.ts';

export interface Chart {
  id: string;
  title: string;
  svg: string;
}

/** Something that happened to the run's membership or plan, when (ms since the epoch). */
export interface Happening {
  at: number;
  kind: Marker['kind'];
  label: string;
  /** The step in flight, when known. */
  step?: number;
}

/** Faults, joins, leaves and re-plans: from summary.json once the run finished, else from the events so far. */
export function happenings(r: RunRecord): Happening[] {
  const s = r.summary;
  if (s) {
    const out: Happening[] = [];
    for (const f of s.faults ?? [])
      if (f.lostAt !== null) out.push({ at: f.lostAt, kind: 'fault', label: `${f.device} lost`, step: f.step });
    for (const j of s.joins ?? []) if (j.at !== null) out.push({ at: j.at, kind: 'join', label: `${j.device} joined` });
    for (const l of s.leaves ?? []) if (l.at !== null) out.push({ at: l.at, kind: 'leave', label: `${l.device} left` });
    for (const p of s.replans ?? []) out.push({ at: p.at, kind: 'replan', label: `re-plan ${p.generation}` });
    return out.sort((a, b) => a.at - b.at);
  }
  const out: Happening[] = [];
  let planned = 0;
  for (const e of r.events) {
    if (typeof e.at !== 'number') continue;
    const d = String(e.device ?? '');
    if (e.type === 'RUN_PLANNED' && planned++ > 0) out.push({ at: e.at, kind: 'replan', label: `re-plan ${planned - 1}` });
    // Before the first plan every device is joining the run: only later joins are news.
    else if (planned === 0) continue;
    else if (e.type === 'DEVICE_LOST') out.push({ at: e.at, kind: 'fault', label: `${d} lost` });
    else if (e.type === 'DEVICE_JOINED') out.push({ at: e.at, kind: 'join', label: `${d} joined` });
    else if (e.type === 'DEVICE_LEAVING') out.push({ at: e.at, kind: 'leave', label: `${d} leaving` });
  }
  return out;
}

/** When the run started (ms since the epoch): its first event, heartbeat or step. */
export function runStart(r: RunRecord): number {
  const times = [
    ...r.events.map((e) => e.at).filter((t): t is number => typeof t === 'number'),
    ...r.memory.map((m) => m.at),
    ...r.steps.flatMap((s) => (s.at === undefined ? [] : [s.at - s.seconds * 1000])),
  ];
  return times.length ? Math.min(...times) : 0;
}

/** The step axis position of time `at`: halfway past the last step that had finished by then. */
function stepAt(steps: StepRow[], h: Happening): number | null {
  if (steps.every((s) => s.at === undefined)) return h.step ?? null;
  const before = steps.filter((s) => s.at !== undefined && s.at <= h.at);
  return (before.at(-1)?.step ?? 0) + 0.5;
}

interface EpochTotals {
  label: string;
  compute: number;
  other: number;
  bytes: Map<string, number>;
}

/** Per epoch (closed or in progress): compute (mean over its devices), the rest of its steps' time, bytes per device. */
function epochTotals(r: RunRecord): Map<number, EpochTotals> {
  const out = new Map<number, EpochTotals>();
  for (const s of r.steps) {
    let e = out.get(s.epoch);
    if (!e) out.set(s.epoch, (e = { label: `epoch ${s.epoch} (${s.phase})`, compute: 0, other: 0, bytes: new Map() }));
    const devs = Object.entries(s.devices ?? {});
    const compute = devs.length ? devs.reduce((a, [, d]) => a + d.computeSeconds, 0) / devs.length : 0;
    e.compute += Math.min(compute, s.seconds);
    e.other += Math.max(0, s.seconds - compute);
    for (const [name, d] of devs) e.bytes.set(name, (e.bytes.get(name) ?? 0) + d.bytesSent);
  }
  return out;
}

/** The cache redistribution (seconds, bytes), once it happened. */
function redistribution(r: RunRecord): { seconds: number; bytes: number } | null {
  if (r.summary?.redistribution) return r.summary.redistribution;
  const e = r.events.find((x) => x.type === 'REDISTRIBUTED');
  return e && typeof e.seconds === 'number' && typeof e.bytes === 'number' ? { seconds: e.seconds, bytes: e.bytes } : null;
}

const mb = (v: number) => `${+(v / 2 ** 20).toFixed(v < 2 ** 20 ? 2 : 1)} MB`;

/** The Gantt chart of one sampled step. */
function stepGantt(r: RunRecord, i: number): Chart {
  const t = r.timelines[i]!;
  const order = [...new Set([...t.groups.flat(), ...Object.keys(t.devices)])];
  const lanes = order.map((name) => ({
    name,
    spans: (t.devices[name] ?? []).map(
      (s): GanttSpan => ({
        start: s.start,
        end: s.end,
        kind: s.kind,
        ...(s.mb !== undefined && (s.kind === 'forward' || s.kind === 'backward') ? { label: `${s.kind[0]!.toUpperCase()}${s.mb}` } : {}),
        ...(s.kind === 'send' ? { thin: true } : {}),
      }),
    ),
  }));
  const id = `timeline-step-${t.step}`;
  const title = `1F1B timeline of step ${t.step} (epoch ${t.epoch}, ${t.phase}), per device`;
  return { id, title, svg: ganttChart({ id, title, t0: t.sentAt, lanes, kinds: ['forward', 'backward', 'send', 'allreduce', 'update'] }) };
}

/** Every chart of the report, in reading order. */
export function reportCharts(r: RunRecord): Chart[] {
  const charts: Chart[] = [];
  const marks = happenings(r);
  const t0 = runStart(r);
  const phases = [...new Set(r.steps.map((s) => s.phase))];
  const stepMarks = marks.flatMap((h): Marker[] => {
    const x = stepAt(r.steps, h);
    return x === null ? [] : [{ x, kind: h.kind, label: h.label }];
  });
  charts.push({
    id: 'loss-step',
    title: 'Loss per step',
    svg: lineChart({
      id: 'loss-step',
      title: 'Loss per step',
      xLabel: 'step',
      yLabel: 'loss',
      series: phases.map((p) => ({ name: p, points: r.steps.filter((s) => s.phase === p).map((s): [number, number] => [s.step, s.loss]) })),
      markers: stepMarks,
      dots: r.steps.length <= 40,
    }),
  });
  charts.push({
    id: 'loss-epoch',
    title: 'Mean loss per epoch',
    svg: lineChart({
      id: 'loss-epoch',
      title: 'Mean loss per epoch',
      xLabel: 'epoch',
      yLabel: 'mean loss',
      series: [{ name: 'loss', points: r.epochs.map((e): [number, number] => [e.epoch, e.loss]) }],
      dots: true,
      xFormat: (v) => (Number.isInteger(v) ? String(v) : ''),
    }),
  });
  const totals = [...epochTotals(r)].sort((a, b) => a[0] - b[0]).map(([, e]) => e);
  const redis = redistribution(r);
  // The redistribution sits between the pipeline epoch and the first cached one.
  const at = Math.min(1, totals.length);
  const cats = totals.map((e) => e.label);
  if (redis) cats.splice(at, 0, 'redistribution');
  const withRedis = (values: number[], redisValue: number) => {
    const v = [...values];
    if (redis) v.splice(at, 0, redisValue);
    return v;
  };
  charts.push({
    id: 'epoch-time',
    title: 'Time per epoch by phase',
    svg: barChart({
      id: 'epoch-time',
      title: 'Time per epoch by phase',
      yLabel: 'seconds',
      categories: cats,
      stacks: [
        {
          name: 'compute (mean over devices)',
          values: withRedis(
            totals.map((e) => e.compute),
            0,
          ),
        },
        {
          name: 'communication + waiting',
          values: withRedis(
            totals.map((e) => e.other),
            0,
          ),
        },
        {
          name: 'cache redistribution',
          values: withRedis(
            totals.map(() => 0),
            redis?.seconds ?? 0,
          ),
        },
      ],
    }),
  });
  for (let i = 0; i < r.timelines.length && i < 8; i++) charts.push(stepGantt(r, i));
  if (r.timelines.length === 0)
    charts.push({
      id: 'timeline',
      title: '1F1B timeline per device',
      svg: ganttChart({ id: 'timeline', title: '1F1B timeline per device', t0: 0, lanes: [], kinds: [] }),
    });
  const devices = [...new Set(r.memory.map((m) => m.device))].sort();
  charts.push({
    id: 'memory',
    title: 'Memory per device over time',
    svg: lineChart({
      id: 'memory',
      title: 'Memory per device over time',
      xLabel: 'seconds since the run started',
      yLabel: 'memory in use',
      yFormat: mb,
      zero: true,
      series: devices.map((d) => ({
        name: d,
        points: r.memory.filter((m) => m.device === d).map((m): [number, number] => [(m.at - t0) / 1000, m.memoryBytes]),
      })),
      markers: marks.map((h) => ({ x: (h.at - t0) / 1000, kind: h.kind, label: h.label })),
    }),
  });
  const byteDevices = [...new Set(totals.flatMap((e) => [...e.bytes.keys()]))].sort();
  charts.push({
    id: 'bytes',
    title: 'Bytes sent per epoch by device',
    svg: barChart({
      id: 'bytes',
      title: 'Bytes sent per epoch by device',
      yLabel: 'bytes sent',
      yFormat: mb,
      categories: cats,
      stacks: [
        ...byteDevices.map((d) => ({
          name: d,
          values: withRedis(
            totals.map((e) => e.bytes.get(d) ?? 0),
            0,
          ),
        })),
        {
          name: 'cache moves',
          values: withRedis(
            totals.map(() => 0),
            redis?.bytes ?? 0,
          ),
        },
      ],
    }),
  });
  return charts;
}
