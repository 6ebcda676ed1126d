/**
 * `charon chaos`: the job with faults, then the same job fault-free, then the invariants. The
 * document it returns is what `--json` prints and what chaos.json in the run directory holds.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Topology } from '../topology/schema.ts';
import {
  completed,
  faultFigures,
  faultsFired,
  nothingLeft,
  recoveryByKind,
  rejectedByReason,
  sameWeights,
  samplesAndSteps,
  type FaultFigure,
  type Invariant,
} from './invariants.ts';
import { runWithFaults, startLaunch } from './runner.ts';
import type { Schedule } from './schedule.ts';

export interface ChaosOptions {
  topologyFile: string;
  topology: Topology;
  schedule: Schedule;
  seed: number;
  runDir: string;
  profile?: string;
  log?: (line: string) => void;
}

export interface ChaosReport {
  ok: boolean;
  topology: string;
  schedule: string;
  runDir: string;
  referenceDir: string;
  seed: number;
  invariants: Record<string, Invariant>;
  faults: FaultFigure[];
  recovery: ReturnType<typeof recoveryByKind>;
  /** Messages the run's processes rejected, per reason ('duplicate', 'generation', ...). */
  rejected: Record<string, number>;
  /** Steps given up at their deadline (or across a bus reconnect) and replayed. */
  stepsReplayed: number;
  seconds: { withFaults: number; reference: number };
}

/** Runs the chaos job and its fault-free reference; writes chaos.json into the run directory. */
export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? (() => {});
  const t0 = performance.now();
  log(`with faults: ${o.schedule.faults.length} from ${o.schedule.file}, run dir ${o.runDir}`);
  const run = await runWithFaults(o);
  const t1 = performance.now();
  const referenceDir = join(o.runDir, 'reference');
  log(`fault-free reference: ${referenceDir}`);
  const tmp = join(o.runDir, 'tmp');
  const reference = startLaunch(
    [o.topologyFile, '--run-dir', referenceDir, ...(o.profile ? ['--profile', o.profile] : [])],
    { ...process.env, TMPDIR: tmp },
    () => {},
  );
  const ref = await reference.done;
  const t2 = performance.now();
  const refPids = ref.events.flatMap((e) =>
    (e.type === 'DEVICE_SPAWNED' || e.type === 'LAUNCHED') && typeof e.pid === 'number' ? [e.pid] : [],
  );
  const refNats = ref.events.find((e) => e.type === 'LAUNCHED')?.natsPid;
  if (reference.child.pid) refPids.push(reference.child.pid);
  if (typeof refNats === 'number') refPids.push(refNats);

  const epochs = o.topology.training.epochs;
  const { samples, steps } = samplesAndSteps(o.runDir, o.schedule.totalSteps, epochs);
  const referenceDone = completed({ ...ref, pids: refPids });
  const invariants: Record<string, Invariant> = {
    completes: completed(run.launch),
    faultsFired: faultsFired(run.fired),
    samplesOncePerEpoch: samples,
    stepsCommittedOnce: steps,
    sameWeights: referenceDone.ok ? sameWeights(o.runDir, referenceDir) : { ok: false, detail: { reference: referenceDone.detail } },
    nothingLeft: nothingLeft([...run.launch.pids, ...refPids], run.leftoverConnections, [tmp]),
  };
  const faults = faultFigures(run.fired, run.launch.events);
  const report: ChaosReport = {
    ok: Object.values(invariants).every((i) => i.ok),
    topology: o.topologyFile,
    schedule: o.schedule.file,
    runDir: o.runDir,
    referenceDir,
    seed: o.seed,
    invariants,
    faults,
    recovery: recoveryByKind(faults),
    rejected: rejectedByReason(run.launch.events),
    stepsReplayed: run.launch.events.filter((e) => e.type === 'STEP_EXPIRED').length,
    seconds: { withFaults: Math.round(t1 - t0) / 1000, reference: Math.round(t2 - t1) / 1000 },
  };
  // An empty TMPDIR was only there to be watched.
  if (invariants.nothingLeft!.ok && existsSync(tmp)) rmSync(tmp, { recursive: true, force: true });
  writeFileSync(join(o.runDir, 'chaos.json'), JSON.stringify(report, null, 1) + '\n');
  return report;
}

/** The report as a terminal table. */
export function formatReport(r: ChaosReport): string {
  const s = (x: number | null) => (x === null ? '-' : x.toFixed(2));
  const lines = [
    `chaos ${r.ok ? 'PASSED' : 'FAILED'}: ${r.topology} with ${r.faults.length} faults (${r.schedule}), run dir ${r.runDir}`,
    '',
  ];
  lines.push('invariant             ok    detail');
  for (const [name, inv] of Object.entries(r.invariants))
    lines.push(`${name.padEnd(21)} ${(inv.ok ? 'yes' : 'NO').padEnd(5)} ${JSON.stringify(inv.detail).slice(0, 160)}`);
  lines.push('', 'fault              where                      fired s  detected s  recovery s  messages hit/matched');
  for (const f of r.faults)
    lines.push(
      `${(f.kind + (f.device ? ` ${f.device}` : '')).padEnd(18)} ${f.source.split('/').pop()!.padEnd(26)} ${s(f.firedSeconds).padStart(7)}  ${s(f.detectedSeconds).padStart(10)}  ${s(f.recoverySeconds).padStart(10)}  ${f.messages ? `${f.messages.hit}/${f.messages.matched}` : ''}`,
    );
  lines.push('', 'kind               detected median/max s   recovery median/max s');
  for (const [kind, st] of Object.entries(r.recovery))
    lines.push(
      `${kind.padEnd(18)} ${(st.detected ? `${s(st.detected.median)} / ${s(st.detected.max)}` : '-').padEnd(23)} ${st.recovery ? `${s(st.recovery.median)} / ${s(st.recovery.max)}` : '-'}`,
    );
  lines.push(
    '',
    `rejected messages: ${JSON.stringify(r.rejected)}; steps replayed: ${r.stepsReplayed}; ${r.seconds.withFaults} s with faults, ${r.seconds.reference} s fault-free`,
  );
  return lines.join('\n');
}
