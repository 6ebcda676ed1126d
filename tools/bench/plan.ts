/**
 * `charon bench plan`: how long the planner takes on 16 devices x 48 layers (T5-Large shape on
 * Jetson Nanos), homogeneous and with heterogeneous speeds and memory, wall and CPU time per run,
 * and the step time its plan predicts (whether the search was exact or local).
 */
import { flag, num, parseCommandArgs } from '../args.ts';
import { analyticProfile, devicePresets, modelPresets } from '../../src/plan/analytic.ts';
import { planPipeline } from '../../src/plan/planner.ts';
import type { Profile } from '../../src/plan/profile.ts';

export const summary = 'planner time on 16 devices x 48 layers (homogeneous and heterogeneous)';

const usage = `usage: charon bench plan [--runs N] [--json]`;

function heterogeneous(p: Profile): Profile {
  return {
    ...p,
    devices: p.devices.map((d, i) => {
      const f = 0.5 + (i % 5) * 0.4;
      return {
        ...d,
        memoryBytes: d.memoryBytes * (0.6 + (i % 3) * 0.5),
        layers: d.layers.map((l) => ({
          ...l,
          fwd: { ...l.fwd, perSampleMs: l.fwd.perSampleMs * f },
          bwd: { ...l.bwd, perSampleMs: l.bwd.perSampleMs * f },
        })),
      };
    }),
  };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(argv, { runs: { type: 'string' }, json: { type: 'boolean' } }, usage);
  if (!args) return 0;
  const runs = num(args, 'runs', 5, { integer: true, min: 1 });
  const base = analyticProfile(modelPresets['t5-large']!, devicePresets['jetson-nano']!, 16, { batchSize: 16, samples: 3668 });
  const cases = [
    { name: 'homogeneous', profile: base },
    { name: 'heterogeneous', profile: heterogeneous(base) },
  ];
  const results = cases.map(({ name, profile }) => {
    const wall: number[] = [],
      cpu: number[] = [];
    let groups = '',
      stepMs = 0,
      exact = false;
    for (let i = 0; i < runs; i++) {
      const c = process.cpuUsage();
      const t = performance.now();
      const plan = planPipeline(profile);
      wall.push(performance.now() - t);
      const u = process.cpuUsage(c);
      cpu.push((u.user + u.system) / 1000);
      groups = plan.stages.map((s) => s.devices.length).join('-');
      stepMs = plan.predicted.stepMs;
      exact = plan.search.exact;
    }
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
    return {
      name,
      devices: 16,
      layers: 48,
      groups,
      stepMs,
      exact,
      firstWallMs: wall[0]!,
      medianWallMs: median(wall),
      medianCpuMs: median(cpu),
    };
  });
  if (flag(args, 'json')) process.stdout.write(JSON.stringify({ bench: 'plan', runs, results }) + '\n');
  else
    for (const r of results)
      process.stdout.write(
        `${r.name.padEnd(14)} 16x48  first ${r.firstWallMs.toFixed(0)} ms  median wall ${r.medianWallMs.toFixed(0)} ms  median cpu ${r.medianCpuMs.toFixed(0)} ms  stages [${r.groups}]  predicted step ${r.stepMs.toFixed(0)} ms (${r.exact ? 'exact' : 'local search'})\n`,
      );
  return 0;
}
