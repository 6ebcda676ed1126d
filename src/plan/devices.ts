/**
 * What the planner searches over: which devices can hold any stage at all, which devices are
 * interchangeable, and the chains (see search.ts) of the exact and the heuristic search.
 */
import type { CostModel } from './cost.ts';
import { linkCost, type Profile } from './profile.ts';
import type { Chain } from './search.ts';

/**
 * Devices that can hold some stage. A member holds at least one layer, one row and one
 * micro-batch in flight, and memory only grows from there, so a device that cannot hold one
 * layer that way fits nowhere and is left out wherever it stands.
 */
export function usableDevices(cm: CostModel): number[] {
  const out: number[] = [];
  cm.profile.devices.forEach((_, d) => {
    for (let l = 1; l <= cm.layers; l++) {
      const s = cm.stage(l, l, [d], 1, 1);
      if (s && 'members' in s) {
        out.push(d);
        return;
      }
    }
  });
  return out;
}

/**
 * Classes of interchangeable devices among `devices`, each in profile order, ordered by their first
 * device: same costs and memory, and the same link to every other device of the profile (the cost
 * model prices a member's sends by its slowest link to any of them). Swapping two devices of a
 * class changes no stage's price.
 */
export function deviceClasses(profile: Profile, devices: readonly number[]): number[][] {
  const n = profile.devices.length;
  const link = profile.devices.map((a) =>
    profile.devices.map((b) => {
      const c = linkCost(profile, a.name, b.name);
      return `${c.msPerByte}/${c.latencyMs}`;
    }),
  );
  const body = profile.devices.map((d) => JSON.stringify([d.memoryBytes, d.embed, d.head, d.layers]));
  const same = (i: number, j: number) => {
    if (body[i] !== body[j]) return false;
    for (let k = 0; k < n; k++) if (k !== i && k !== j && link[i]![k] !== link[j]![k]) return false;
    return true;
  };
  const classes: number[][] = [];
  for (const d of devices) {
    const home = classes.find((c) => same(c[0]!, d));
    if (home) home.push(d);
    else classes.push([d]);
  }
  return classes;
}

export type OrderingName = 'topology' | 'fastest-first' | 'slowest-first';

/** The paper's device orders (the options may restrict the planner to them), as profile indices, without duplicates. */
export function deviceOrderings(
  profile: Profile,
  names: readonly OrderingName[] = ['topology', 'fastest-first', 'slowest-first'],
): { name: OrderingName; order: number[] }[] {
  // Speed: per-sample forward + backward of every layer.
  const time = profile.devices.map((d) => d.layers.reduce((s, l) => s + l.fwd.perSampleMs + l.bwd.perSampleMs, 0));
  const topo = profile.devices.map((_, i) => i);
  const out: { name: OrderingName; order: number[] }[] = [];
  for (const name of names) {
    const order =
      name === 'topology'
        ? topo
        : [...topo].sort((a, b) => (name === 'fastest-first' ? time[a]! - time[b]! : time[b]! - time[a]!) || a - b);
    if (!out.some((o) => o.order.every((v, i) => v === order[i]))) out.push({ name, order });
  }
  return out;
}

/** One chain over `devices` in the given order; uniform when they all share a class. */
export function chainOf(devices: readonly number[], classes: readonly number[][]): Chain {
  const home = classes.find((c) => c.includes(devices[0]!));
  return { devices, uniform: devices.every((d) => home?.includes(d)) };
}
