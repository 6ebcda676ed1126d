/**
 * Devices joining and leaving a run mid-way, as the run machine's context records them. A join
 * or a leave never interrupts a step: it is queued, and at the next step boundary (or in a
 * recovery already under way) the run re-plans over the devices it has, plus the joiners, minus
 * the leavers, once, however many arrived together (the machine waits `ELASTIC_DEBOUNCE_MS`
 * for the rest of a burst before it re-plans). A joiner comes in through the same path as a
 * survivor of a loss: released, profiled from what it reported, given its stage or its shard of
 * the cache. A leaver stays until what it held has been handed over (the cached phase moves its
 * cache entries to their new owners), then it is told to drain.
 *
 * Pure functions over the context: run-machine.ts wraps them in its actions and guards.
 */
import type { Phase } from './run-state.ts';

/** How long a re-plan waits for more joins, leaves and losses arriving with the first. */
export const ELASTIC_DEBOUNCE_MS = 300;

/** A device waiting for the next re-plan to put it to work. */
export interface QueuedJoin {
  device: string;
  /** When the run learnt of it, registered and profiled (ms since the epoch; null when not told). */
  at: number | null;
}

/** A device that asked to leave, waiting for the next re-plan. */
export interface QueuedLeave {
  device: string;
  reason: string;
  at: number | null;
}

/** The re-plan that took a device in or let it go: when it was made and where the run was. */
export interface MembershipChange {
  /** When the plan was made (ms since the epoch). */
  plannedAt: number;
  /** The first plan generation with the joiner, or without the leaver. */
  generation: number;
  phase: Phase;
  epoch: number;
  /** The first step with the joiner, or without the leaver. */
  step: number;
}

/** A device put to work mid-run (summary.json `joins`). */
export interface JoinRecord extends MembershipChange {
  device: string;
  /** When it was ready to join (registered and profiled; ms since the epoch). */
  at: number | null;
  /** A name the run had lost before (a restarted process, a stalled device that came back). */
  rejoin: boolean;
}

/** A device that left on purpose (summary.json `leaves`): no fault, no step replayed. */
export interface LeaveRecord extends MembershipChange {
  device: string;
  reason: string;
  /** When it asked to leave. */
  at: number | null;
}

export interface ElasticState {
  devices: string[];
  lost: string[];
  joining: QueuedJoin[];
  leaving: QueuedLeave[];
  /** Re-planned away; told to drain once what they held is handed over. */
  departing: string[];
  joins: JoinRecord[];
  leaves: LeaveRecord[];
}

export const noElastic = { joining: [], leaving: [], departing: [], joins: [], leaves: [] } satisfies Partial<ElasticState>;

/** A device (again) ready for the run: queued unless the run already counts on it. */
export function queueJoin(c: ElasticState, device: string, at: number | null): Pick<ElasticState, 'joining' | 'departing'> {
  if (c.devices.includes(device) || c.joining.some((j) => j.device === device)) return c;
  return {
    joining: [...c.joining, { device, at }],
    // A device that comes back while it was departing is a new one: it is not told to drain.
    departing: c.departing.filter((d) => d !== device),
  };
}

/** A device of the run asked to leave. */
export function queueLeave(c: ElasticState, device: string, reason: string, at: number | null): Pick<ElasticState, 'leaving'> {
  if (!c.devices.includes(device) || c.leaving.some((l) => l.device === device)) return c;
  return { leaving: [...c.leaving, { device, reason, at }] };
}

/** A device the run does not count on went away: it is no longer waiting to join or to be dismissed. */
export function forget(c: ElasticState, device: string): Pick<ElasticState, 'joining' | 'departing' | 'leaving'> {
  return {
    joining: c.joining.filter((j) => j.device !== device),
    departing: c.departing.filter((d) => d !== device),
    leaving: c.leaving.filter((l) => l.device !== device),
  };
}

/** A re-plan is due at the step boundary. */
export const rebalanceDue = (c: ElasticState): boolean => c.joining.length > 0 || c.leaving.length > 0;

/** The devices the next plan is made over: the run's, minus the leavers, plus the joiners. */
export function plannedDevices(c: ElasticState): string[] {
  const out = c.devices.filter((d) => !c.leaving.some((l) => l.device === d));
  for (const j of c.joining) if (!out.includes(j.device)) out.push(j.device);
  return out;
}

/** Everyone whose work a re-plan must end and release: the run's devices and the joiners (a stalled device that came back may still hold its old stage). */
export const resetDevices = (c: ElasticState): string[] => [
  ...c.devices,
  ...c.joining.map((j) => j.device).filter((d) => !c.devices.includes(d)),
];

/**
 * Whom a re-plan's abort releases. In a pipeline epoch the run's devices keep their stages: the
 * deployment of the new plan keeps those it leaves on the same layers and reloads the others;
 * joiners are released (a device that was declared lost is never trusted with its old role). In
 * the cached epochs everyone is released: the workers are loaded again over the new shards.
 */
export const releasedAtAbort = (c: ElasticState, pipelineEpoch: boolean): string[] =>
  pipelineEpoch ? resetDevices(c).filter((d) => !c.devices.includes(d)) : resetDevices(c);

/** The re-plan over `plannedDevices` is adopted: joiners become the run's devices, leavers depart. */
export function adoptMembership(
  c: ElasticState & { epoch: number; step: number },
  at: { plannedAt: number; generation: number },
): Pick<ElasticState, 'devices' | 'joining' | 'leaving' | 'departing' | 'joins' | 'leaves'> & { joined: string[]; left: string[] } {
  const phase: Phase = c.epoch > 1 ? 'cached' : 'pipeline';
  const where = { ...at, phase, epoch: c.epoch, step: c.step + 1 };
  const joins = c.joining.map((j) => ({ ...j, ...where, rejoin: c.lost.includes(j.device) }));
  const leaves = c.leaving.map((l) => ({ ...l, ...where }));
  return {
    devices: plannedDevices(c),
    joining: [],
    leaving: [],
    departing: [...c.departing, ...c.leaving.map((l) => l.device)],
    joins: [...c.joins, ...joins],
    leaves: [...c.leaves, ...leaves],
    joined: joins.map((j) => j.device),
    left: leaves.map((l) => l.device),
  };
}
