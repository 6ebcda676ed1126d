/**
 * A chaos run's fault schedule: read from `--faults FILE` (a YAML list of faults) or from the
 * topology's `chaos:` section, checked against the topology (its devices, its number of steps),
 * and turned into triggers the runner fires. Every problem reads `file:line: field: reason`.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { lineAt, parseYamlWith, TopologyError, type TopologyIssue } from '../topology/load.ts';
import type { Topology } from '../topology/schema.ts';
import { epochSteps } from '../train/data.ts';
import { specFromTopology } from '../train/run-spec.ts';
import { checkFaultDevices, faultListSchema, type FaultSpec } from './fault-schema.ts';

/** When a fault fires: as global step `step` starts, or `seconds` after training started. */
export type Trigger = { step: number } | { seconds: number };

/** One fault of the schedule, with where it was written. */
export interface ScheduledFault extends FaultSpec {
  /** Position in the schedule (0-based). */
  index: number;
  trigger: Trigger;
  /** `file:line` of its entry. */
  source: string;
}

export interface Schedule {
  file: string;
  faults: ScheduledFault[];
  /** Steps of the whole run (every epoch). */
  totalSteps: number;
}

/**
 * The schedule of a chaos run: `faultsFile` when given, else the topology's `chaos:` section
 * (`topologyFile` is its text's source). @throws TopologyError naming file, line and field.
 */
export function loadSchedule(topology: Topology, topologyFile: string, faultsFile?: string): Schedule {
  let file: string, text: string, base: (string | number)[], faults: FaultSpec[];
  const devices = topology.devices.map((d) => d.name);
  if (faultsFile !== undefined) {
    file = faultsFile;
    text = read(faultsFile);
    base = [];
    const schema = faultListSchema.superRefine((list, ctx) =>
      checkFaultDevices(list, devices, (i, field, message) => ctx.addIssue({ code: 'custom', path: [i, field], message })),
    );
    faults = parseYamlWith(schema as z.ZodType<FaultSpec[]>, text, file, { root: 'list', reason: 'must be a list of faults' });
  } else {
    file = topologyFile;
    text = read(topologyFile);
    base = ['chaos'];
    faults = topology.chaos ?? [];
    if (faults.length === 0)
      throw new TopologyError(file, [{ line: 1, field: 'chaos', reason: 'no fault schedule: add a chaos: section or pass --faults FILE' }]);
  }
  const spec = specFromTopology(topology);
  const perEpoch = Array.from({ length: spec.epochs }, (_, e) => epochSteps(spec, e + 1).length);
  const totalSteps = perEpoch.reduce((a, n) => a + n, 0);
  const issues: TopologyIssue[] = [];
  const scheduled = faults.map((f, index): ScheduledFault => {
    const at = f.at;
    const line = lineAt(text, [...base, index]);
    let trigger: Trigger = { seconds: at.seconds ?? 0 };
    if (at.step !== undefined) {
      let step = at.step;
      if (at.epoch !== undefined) {
        if (at.epoch > spec.epochs) issues.push(issue(text, base, index, 'epoch', `the run has ${spec.epochs} epoch(s)`));
        else if (at.step > perEpoch[at.epoch - 1]!)
          issues.push(issue(text, base, index, 'step', `epoch ${at.epoch} has ${perEpoch[at.epoch - 1]} step(s)`));
        step = perEpoch.slice(0, at.epoch - 1).reduce((a, n) => a + n, 0) + at.step;
      } else if (step > totalSteps) issues.push(issue(text, base, index, 'step', `the run has ${totalSteps} step(s)`));
      trigger = { step };
    }
    return { ...f, index, trigger, source: `${file}:${line}` };
  });
  if (issues.length > 0) throw new TopologyError(file, issues);
  return { file, faults: scheduled, totalSteps };
}

function issue(text: string, base: (string | number)[], index: number, field: string, reason: string): TopologyIssue {
  const path = [...base, index, 'at', field];
  return {
    line: lineAt(text, path),
    field: path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join(''),
    reason,
  };
}

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TopologyError(file, [
      { line: 0, field: '(file)', reason: code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? (err as Error).message})` },
    ]);
  }
}
