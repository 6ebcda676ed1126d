/**
 * The cost model shared by the planner, its brute-force check and the report: what one stage
 * (consecutive layers on a group of devices) costs per micro-batch, how its micro-batch is split,
 * how much memory each member needs, and the 1F1B makespan of a sequence of stages.
 */
import { boundaryBytesPerSample, linkCost, type DeviceProfile, type Profile } from './profile.ts';

/** A linear cost per device: `fixed + rows * perRow`. */
export interface LinearCost {
  fixed: number;
  perRow: number;
}

/**
 * Splits `total` rows over devices to minimise the largest `fixed + rows * perRow`, every device
 * getting at least one row and at most `caps[i]` rows. Units go one at a time to the device that
 * would finish earliest with it, which is optimal for identical units on machines of different
 * speed; without fixed costs and caps it is the speed-proportional split rounded to integers.
 * Returns null when the caps cannot hold `total` rows (or a cap is below 1).
 */
export function splitRows(total: number, costs: readonly LinearCost[], caps?: readonly number[]): number[] | null {
  const m = costs.length;
  if (m === 0 || total < m) return null;
  const rows = new Array<number>(m).fill(1);
  let room = 0;
  for (let i = 0; i < m; i++) {
    const cap = caps ? caps[i]! : Infinity;
    if (cap < 1) return null;
    room += cap - 1;
  }
  if (room < total - m) return null;
  for (let left = total - m; left > 0; left--) {
    let best = -1;
    let bestEnd = Infinity;
    for (let i = 0; i < m; i++) {
      if (caps && rows[i]! >= caps[i]!) continue;
      const end = costs[i]!.fixed + (rows[i]! + 1) * costs[i]!.perRow;
      if (end < bestEnd) {
        bestEnd = end;
        best = i;
      }
    }
    rows[best]! += 1;
  }
  return rows;
}

/** Cuts a micro-batch's sample ids into consecutive slices, one per device, so ids travel with their rows. */
export function splitMicroBatch<T>(sampleIds: readonly T[], rows: readonly number[]): T[][] {
  const sum = rows.reduce((a, b) => a + b, 0);
  if (sum !== sampleIds.length) throw new RangeError(`rows sum to ${sum}, micro-batch has ${sampleIds.length} samples`);
  const out: T[][] = [];
  let at = 0;
  for (const r of rows) {
    out.push(sampleIds.slice(at, at + r));
    at += r;
  }
  return out;
}

/** Prefix sums of one device's per-layer costs, so any layer range costs O(1). Index l = layers 1..l. */
interface DevicePrefix {
  fwdFixed: Float64Array;
  fwdPer: Float64Array;
  bwdFixed: Float64Array;
  bwdPer: Float64Array;
  staticBytes: Float64Array;
  gradBytes: Float64Array;
  keptBytes: Float64Array;
  updateMs: Float64Array;
  /** workMax[x * (L + 1) + y]: largest transient forward bytes per sample over layers x..y. */
  workMax: Float64Array;
}

/** One device's share of a stage, per micro-batch. */
export interface MemberCost {
  device: string;
  rows: number;
  /** Forward of its rows, including sending b and a to the next stage. */
  fwdMs: number;
  /** Side backward of its rows, including sending dL/da to the previous stage. */
  bwdMs: number;
  /** The device's memory budget. */
  budgetBytes: number;
  /** Frozen weights plus side-network training state held for the whole step. */
  staticBytes: number;
  /** Activations kept for backward per sample and per micro-batch in flight. */
  keptBytesPerSample: number;
  /** Transient forward workspace per sample (largest layer). */
  workBytesPerSample: number;
}

/** Peak bytes of a member holding `inFlight` micro-batches for backward (1F1B: S - s at stage s). */
export function memberPeakBytes(m: MemberCost, inFlight: number): number {
  return m.staticBytes + m.rows * (inFlight * m.keptBytesPerSample + m.workBytesPerSample);
}

/** One stage, priced for a given micro-batch size and number of micro-batches kept in flight. */
export interface StageCost {
  from: number;
  to: number;
  members: MemberCost[];
  /** Slowest member's forward (warm-up term). */
  fwdMs: number;
  /** Slowest member's backward (drain term). */
  bwdMs: number;
  /** Slowest member's forward + backward: one steady-state 1F1B cycle. */
  cycleMs: number;
  /**
   * What the group does after its last backward: the ring all-reduce of its trainable gradients
   * (none for one device), then the optimiser update of its parameters (slowest member).
   */
  allReduceMs: number;
  gradBytes: number;
}

/** Why a stage cannot be placed: the member short of memory and by how much. */
export interface MemoryShortfall {
  device: string;
  needBytes: number;
  haveBytes: number;
}

/** A stage's timings without its members: what the planner's search needs. */
export interface StageQuote {
  fwdMs: number;
  bwdMs: number;
  cycleMs: number;
  /** Ring all-reduce of the stage's gradients inside the group (0 for one device), then its update. */
  allReduceMs: number;
  /** Micro-batches every member could keep in flight with this split (Infinity if unbounded, 0 if none). */
  maxInFlight: number;
}

/**
 * Prices stages on one profile. Precomputes per-device prefix sums and the link matrix, so a
 * stage costs O(rows * group) with no allocation in `quote()` (the planner's inner loop);
 * `stage()` returns the same numbers with the members spelled out.
 * The link cost a member pays to send is its slowest link to any other device in the profile
 * (the next group is not known while a stage is priced); the simulator uses exact pairs.
 */
export class CostModel {
  readonly layers: number;
  private readonly prefix: DevicePrefix[];
  private readonly n: number;
  private readonly linkMs: Float64Array;
  private readonly linkLat: Float64Array;
  private readonly egressMs: Float64Array;
  private readonly egressLat: Float64Array;
  // Scratch, one slot per group member.
  private readonly fFix: Float64Array;
  private readonly fPer: Float64Array;
  private readonly bFix: Float64Array;
  private readonly bPer: Float64Array;
  private readonly held: Float64Array;
  private readonly kept: Float64Array;
  private readonly work: Float64Array;
  private readonly rows: Int32Array;
  private gradBytes = 0;
  /** Slowest member's optimiser update of the stage being priced. */
  private updateMs = 0;
  /** Bytes per sample sent across a boundary after layer l, forward and backward. */
  private readonly sendFwd: Float64Array;
  private readonly sendBwd: Float64Array;

  constructor(readonly profile: Profile) {
    const L = profile.model.layers;
    const N = profile.devices.length;
    this.layers = L;
    this.n = N;
    this.prefix = profile.devices.map((d) => buildPrefix(d, L));
    this.linkMs = new Float64Array(N * N);
    this.linkLat = new Float64Array(N * N);
    this.egressMs = new Float64Array(N);
    this.egressLat = new Float64Array(N);
    for (let a = 0; a < N; a++) {
      for (let b = 0; b < N; b++) {
        const c = linkCost(profile, profile.devices[a]!.name, profile.devices[b]!.name);
        this.linkMs[a * N + b] = c.msPerByte;
        this.linkLat[a * N + b] = c.latencyMs;
        if (a !== b || N === 1) {
          this.egressMs[a] = Math.max(this.egressMs[a]!, c.msPerByte);
          this.egressLat[a] = Math.max(this.egressLat[a]!, c.latencyMs);
        }
      }
    }
    this.sendFwd = new Float64Array(L + 1);
    this.sendBwd = new Float64Array(L + 1);
    for (let l = 0; l <= L; l++) {
      const b = boundaryBytesPerSample(profile.model, l);
      this.sendFwd[l] = b.fwd;
      this.sendBwd[l] = b.bwd;
    }
    const mk = () => new Float64Array(N);
    this.fFix = mk();
    this.fPer = mk();
    this.bFix = mk();
    this.bPer = mk();
    this.held = mk();
    this.kept = mk();
    this.work = mk();
    this.rows = new Int32Array(N);
  }

  /** Slowest link (ms per byte, latency) among devices[start .. start+m); used for the ring all-reduce. */
  groupLink(devices: readonly number[], start = 0, m = devices.length): { msPerByte: number; latencyMs: number } {
    let msPerByte = 0,
      latencyMs = 0;
    for (let i = start; i < start + m; i++)
      for (let j = start; j < start + m; j++) {
        if (i === j) continue;
        const k = devices[i]! * this.n + devices[j]!;
        msPerByte = Math.max(msPerByte, this.linkMs[k]!);
        latencyMs = Math.max(latencyMs, this.linkLat[k]!);
      }
    return { msPerByte, latencyMs };
  }

  /** Fills the scratch with the linear costs and bytes of devices[start .. start+m) holding layers from..to. */
  private fill(from: number, to: number, devices: readonly number[], start: number, m: number): void {
    const L = this.layers;
    const first = from === 1;
    const last = to === L;
    const out = last ? 0 : this.sendFwd[to]!;
    const back = first ? 0 : this.sendBwd[from - 1]!;
    for (let i = 0; i < m; i++) {
      const di = devices[start + i]!;
      const dev = this.profile.devices[di]!;
      const p = this.prefix[di]!;
      const e = dev.embed,
        h = dev.head;
      this.fFix[i] = p.fwdFixed[to]! - p.fwdFixed[from - 1]! + (first ? e.fwd.fixedMs : 0) + (last ? h.fwd.fixedMs : this.egressLat[di]!);
      this.fPer[i] =
        p.fwdPer[to]! - p.fwdPer[from - 1]! + (first ? e.fwd.perSampleMs : 0) + (last ? h.fwd.perSampleMs : out * this.egressMs[di]!);
      this.bFix[i] = p.bwdFixed[to]! - p.bwdFixed[from - 1]! + (last ? h.bwd.fixedMs : 0) + (first ? e.bwd.fixedMs : this.egressLat[di]!);
      this.bPer[i] =
        p.bwdPer[to]! - p.bwdPer[from - 1]! + (last ? h.bwd.perSampleMs : 0) + (first ? e.bwd.perSampleMs : back * this.egressMs[di]!);
      this.held[i] =
        p.staticBytes[to]! -
        p.staticBytes[from - 1]! +
        (first ? e.backboneBytes + e.sideBytes : 0) +
        (last ? h.backboneBytes + h.sideBytes : 0);
      this.kept[i] =
        p.keptBytes[to]! - p.keptBytes[from - 1]! + (first ? e.activationBytesPerSample : 0) + (last ? h.activationBytesPerSample : 0);
      this.work[i] = Math.max(p.workMax[from * (L + 1) + to]!, first ? e.workBytesPerSample : 0, last ? h.workBytesPerSample : 0);
      // Every member holds the same side blocks; should profiles disagree on their gradient bytes,
      // the ring moves the largest, whatever the rank order.
      const grad = p.gradBytes[to]! - p.gradBytes[from - 1]! + (first ? e.sideGradBytes : 0) + (last ? h.sideGradBytes : 0);
      this.gradBytes = i === 0 ? grad : Math.max(this.gradBytes, grad);
      const update = p.updateMs[to]! - p.updateMs[from - 1]! + (first ? (e.updateMs ?? 0) : 0) + (last ? (h.updateMs ?? 0) : 0);
      this.updateMs = i === 0 ? update : Math.max(this.updateMs, update);
    }
  }

  /** Most rows member i can take when keeping `inFlight` micro-batches (Infinity: no limit). */
  private cap(i: number, budget: number, inFlight: number | null): number {
    if (inFlight === null) return Infinity;
    const perRow = inFlight * this.kept[i]! + this.work[i]!;
    if (perRow > 0) return Math.floor((budget - this.held[i]!) / perRow);
    return this.held[i]! <= budget ? Infinity : -1;
  }

  /** splitRows on the scratch (cycle = forward + backward), into this.rows; false if memory caps forbid. */
  private split(devices: readonly number[], start: number, m: number, rows: number, inFlight: number | null): boolean {
    let room = 0;
    for (let i = 0; i < m; i++) {
      const c = this.cap(i, this.profile.devices[devices[start + i]!]!.memoryBytes, inFlight);
      if (c < 1) return false;
      room += c - 1;
      this.rows[i] = 1;
    }
    if (room < rows - m) return false;
    for (let left = rows - m; left > 0; left--) {
      let best = -1;
      let bestEnd = Infinity;
      for (let i = 0; i < m; i++) {
        const r = this.rows[i]! + 1;
        if (inFlight !== null && r > this.cap(i, this.profile.devices[devices[start + i]!]!.memoryBytes, inFlight)) continue;
        const end = this.fFix[i]! + this.bFix[i]! + r * (this.fPer[i]! + this.bPer[i]!);
        if (end < bestEnd) {
          bestEnd = end;
          best = i;
        }
      }
      this.rows[best]! += 1;
    }
    return true;
  }

  /**
   * Timings of layers `from..to` (1-based, inclusive) on devices[start .. start+m) (profile
   * indices) for micro-batches of `rows` samples with `inFlight` micro-batches held for backward
   * (1F1B: stage s of S holds S - s; null ignores memory). Null when the group has more devices
   * than rows or the members cannot fit their share in memory. Allocates only the result.
   */
  quote(
    from: number,
    to: number,
    devices: readonly number[],
    start: number,
    m: number,
    rows: number,
    inFlight: number | null,
  ): StageQuote | null {
    if (m > rows) return null;
    this.fill(from, to, devices, start, m);
    if (!this.split(devices, start, m, rows, inFlight)) return null;
    let fwdMs = 0,
      bwdMs = 0,
      cycleMs = 0,
      maxK = Infinity;
    for (let i = 0; i < m; i++) {
      const r = this.rows[i]!;
      const fm = this.fFix[i]! + r * this.fPer[i]!;
      const bm = this.bFix[i]! + r * this.bPer[i]!;
      fwdMs = Math.max(fwdMs, fm);
      bwdMs = Math.max(bwdMs, bm);
      cycleMs = Math.max(cycleMs, fm + bm);
      const room = this.profile.devices[devices[start + i]!]!.memoryBytes - this.held[i]! - r * this.work[i]!;
      const per = r * this.kept[i]!;
      maxK = room < 0 ? 0 : per > 0 ? Math.min(maxK, Math.floor(room / per)) : maxK;
    }
    const allReduceMs = (m > 1 ? ringAllReduceMs(this.gradBytes, m, this.groupLink(devices, start, m)) : 0) + this.updateMs;
    return { fwdMs, bwdMs, cycleMs, allReduceMs, maxInFlight: maxK };
  }

  /**
   * The stage `quote()` prices, with its members spelled out; or, when memory forbids it, the
   * member that lacks memory most (rows split to fit memory as well as possible) and by how much.
   * Null when the group has more devices than rows.
   */
  stage(
    from: number,
    to: number,
    devices: readonly number[],
    rows: number,
    inFlight: number | null,
  ): StageCost | { shortfall: MemoryShortfall } | null {
    const m = devices.length;
    if (m > rows) return null;
    this.fill(from, to, devices, 0, m);
    const budget = (i: number) => this.profile.devices[devices[i]!]!.memoryBytes;
    if (!this.split(devices, 0, m, rows, inFlight)) {
      const k = inFlight ?? 1;
      const mem = Array.from({ length: m }, (_, i) => ({ fixed: this.held[i]! - budget(i), perRow: k * this.kept[i]! + this.work[i]! }));
      const tight = splitRows(rows, mem)!;
      let worst = 0;
      const over = (i: number) => mem[i]!.fixed + tight[i]! * mem[i]!.perRow;
      for (let i = 1; i < m; i++) if (over(i) > over(worst)) worst = i;
      return {
        shortfall: {
          device: this.profile.devices[devices[worst]!]!.name,
          haveBytes: budget(worst),
          needBytes: budget(worst) + over(worst),
        },
      };
    }
    const members: MemberCost[] = [];
    let fwdMs = 0,
      bwdMs = 0,
      cycleMs = 0;
    for (let i = 0; i < m; i++) {
      const r = this.rows[i]!;
      const fm = this.fFix[i]! + r * this.fPer[i]!;
      const bm = this.bFix[i]! + r * this.bPer[i]!;
      members.push({
        device: this.profile.devices[devices[i]!]!.name,
        rows: r,
        fwdMs: fm,
        bwdMs: bm,
        budgetBytes: budget(i),
        staticBytes: this.held[i]!,
        keptBytesPerSample: this.kept[i]!,
        workBytesPerSample: this.work[i]!,
      });
      fwdMs = Math.max(fwdMs, fm);
      bwdMs = Math.max(bwdMs, bm);
      cycleMs = Math.max(cycleMs, fm + bm);
    }
    const gradBytes = this.gradBytes;
    const allReduceMs = ringAllReduceMs(gradBytes, m, this.groupLink(devices)) + this.updateMs;
    return { from, to, members, fwdMs, bwdMs, cycleMs, gradBytes, allReduceMs };
  }
}

/** Ring all-reduce (reduce-scatter + all-gather) of `bytes` over `m` devices: 2(m-1) rounds of bytes/m each. */
export function ringAllReduceMs(bytes: number, m: number, link: { msPerByte: number; latencyMs: number }): number {
  if (m <= 1) return 0;
  return 2 * (m - 1) * ((bytes / m) * link.msPerByte + link.latencyMs);
}

function buildPrefix(d: DeviceProfile, L: number): DevicePrefix {
  const mk = () => new Float64Array(L + 1);
  const p: DevicePrefix = {
    fwdFixed: mk(),
    fwdPer: mk(),
    bwdFixed: mk(),
    bwdPer: mk(),
    staticBytes: mk(),
    gradBytes: mk(),
    keptBytes: mk(),
    updateMs: mk(),
    workMax: new Float64Array((L + 1) * (L + 1)),
  };
  for (let l = 1; l <= L; l++) {
    const c = d.layers[l - 1]!;
    p.fwdFixed[l] = p.fwdFixed[l - 1]! + c.fwd.fixedMs;
    p.fwdPer[l] = p.fwdPer[l - 1]! + c.fwd.perSampleMs;
    p.bwdFixed[l] = p.bwdFixed[l - 1]! + c.bwd.fixedMs;
    p.bwdPer[l] = p.bwdPer[l - 1]! + c.bwd.perSampleMs;
    p.staticBytes[l] = p.staticBytes[l - 1]! + c.backboneBytes + c.sideBytes;
    p.gradBytes[l] = p.gradBytes[l - 1]! + c.sideGradBytes;
    p.keptBytes[l] = p.keptBytes[l - 1]! + c.activationBytesPerSample;
    p.updateMs[l] = p.updateMs[l - 1]! + (c.updateMs ?? 0);
  }
  for (let x = 1; x <= L; x++) {
    let w = 0;
    for (let y = x; y <= L; y++) {
      w = Math.max(w, d.layers[y - 1]!.workBytesPerSample);
      p.workMax[x * (L + 1) + y] = w;
    }
  }
  return p;
}

/** The 1F1B estimate of one step for a pipeline of priced stages (see `stepMakespan`). */
export interface Makespan {
  stepMs: number;
  warmupMs: number;
  steadyMs: number;
  drainMs: number;
  allReduceTailMs: number;
}

/**
 * 1F1B step time of stages 0..S-1 with M micro-batches:
 *
 *   T    = sum_s f_s  +  (M - 1) * max_s (f_s + b_s)  +  sum_s b_s
 *   step = max_s ( T - sum_{s' < s} b_{s'} + AR_s )
 *
 * Warm-up: the first micro-batch's forward crosses every stage (sum f). Steady state: M - 1 more
 * cycles at the pace of the SLOWEST stage (its f + b per micro-batch), not the last stage's.
 * Drain: the last micro-batch's backward crosses every stage once (sum b) — the last stage's
 * backward is counted once, in the drain, not again in the steady state. Stage s finishes its
 * last backward sum_{s'<s} b_{s'} before the end of the drain and then all-reduces its side
 * gradients inside its group and updates its parameters (AR_s); the step ends when the last
 * group is done. For S identical stages this is the textbook (M + S - 1)(f + b) plus the
 * all-reduce tail. The paper's estimate
 * takes the steady state from the last stage only and adds that stage's backward both to the
 * steady state and to the drain.
 */
export function stepMakespan(
  stages: ReadonlyArray<Pick<StageCost, 'fwdMs' | 'bwdMs' | 'cycleMs' | 'allReduceMs'>>,
  microBatches: number,
): Makespan {
  let warmupMs = 0,
    drainMs = 0,
    slowest = 0;
  for (const s of stages) {
    warmupMs += s.fwdMs;
    drainMs += s.bwdMs;
    slowest = Math.max(slowest, s.cycleMs);
  }
  const steadyMs = (microBatches - 1) * slowest;
  const t = warmupMs + steadyMs + drainMs;
  let stepMs = t;
  let before = 0;
  for (const s of stages) {
    stepMs = Math.max(stepMs, t - before + s.allReduceMs);
    before += s.bwdMs;
  }
  return { stepMs, warmupMs, steadyMs, drainMs, allReduceTailMs: stepMs - t };
}
