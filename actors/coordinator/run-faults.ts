/**
 * What a run records of its faults and re-plans (summary.json `faults`, `replans`): which device
 * was lost when, what the run was doing, how the plan changed and when training went on.
 */
import type { StageLayout } from '../../src/engine/index.ts';
import type { Profile } from '../../src/plan/profile.ts';

/** A device the run lost. */
export interface FaultRecord {
  device: string;
  /** Why liveness gave it up (silent past the heartbeat deadline, or left). */
  reason: string;
  /** What the run was doing: 'deploying', 'pipeline step', 'committing', 'redistribution', 'cached step', 'recovery'... */
  during: string;
  epoch: number;
  /** The step in flight (replayed, unless it was committing). */
  step: number;
  /** When liveness reported it (ms since the epoch; null when not told). */
  lostAt: number | null;
  /** When the next step committed after it (null: the run ended first). */
  recoveredAt: number | null;
}

/** A plan as the re-plan records compare them. */
export interface PlanBrief {
  /** Pipeline stages (epoch 1; in the cached epochs the forward-only pipeline that recomputes lost cache entries). */
  stages: StageLayout[];
  microBatches: number;
  /** Ranks of the cached phase (null before it). */
  cachedRanks: string[] | null;
}

/** One re-plan over the devices there are: survivors of a loss, joiners, not the leavers. */
export interface ReplanRecord {
  /** The plan generation it starts (messages of older generations are dropped). */
  generation: number;
  /** The lost devices it answers. */
  lost: string[];
  /** Devices it puts to work mid-run. */
  joined: string[];
  /** Devices it lets go (they asked to leave). */
  left: string[];
  /** The devices it plans over. */
  devices: string[];
  /** When the new plan was made (ms since the epoch). */
  at: number;
  from: PlanBrief;
  to: PlanBrief;
  /**
   * Stage ranks of `to` whose device kept the layers it had loaded (only their side state was
   * set back to the last commit), and those loaded anew; null until the new plan is deployed
   * (it stays null when a further re-plan came first).
   */
  kept: StageRank[] | null;
  redeployed: StageRank[] | null;
}

/** A stage rank of a plan and the layers it holds. */
export interface StageRank {
  device: string;
  stage: number;
  rank: number;
  from: number;
  to: number;
}

/** `profile` restricted to `devices` (and the links between them): what the planner may use after a loss. */
export function survivorsProfile(profile: Profile, devices: readonly string[]): Profile {
  const keep = new Set(devices);
  return {
    ...profile,
    devices: profile.devices.filter((d) => keep.has(d.name)),
    links: { ...profile.links, pairs: profile.links.pairs.filter((p) => keep.has(p.from) && keep.has(p.to)) },
  };
}
