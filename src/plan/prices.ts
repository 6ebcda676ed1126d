/**
 * Stage prices for the planner's searches: one group (members in rank order) on any layer range,
 * priced by the cost model once and kept, with the cheap lower bounds the searches prune with.
 */
import type { CostModel } from './cost.ts';

const FIELDS = 5;

/** One group (members in rank order) and its stage prices at one micro-batch size, filled on demand. */
export class GroupPrices {
  /** base[x][FIELDS * y + i]: fwd, bwd, cycle, all-reduce, most micro-batches in flight; NaN = not priced. */
  readonly base: (Float64Array | undefined)[] = [];
  readonly capped = new Map<number, Float64Array | null>();
  constructor(
    readonly members: number[],
    readonly memoryBytes: number,
  ) {}
}

/**
 * What any placement of a layer prefix needs, per plan, for the searches' bounds.
 * perSample[d * (L + 1) + l]: device d's compute-only f + b per sample over layers 1..l.
 * prefixWork[x]: per-sample work of layers 1..x-1, each at the device cheapest for it.
 * prefixRate[d * (L + 2) + x]: the most of that work device d does per unit of time on any one
 * of those layers, so no set of devices gets through them faster than at the sum of its rates.
 * prefixBytes[x]: weights and side state of layers 1..x-1 (and the embedding), each at the device
 * that holds it in the fewest bytes: every layer is held by at least one device.
 */
export class Bounds {
  readonly perSample: Float64Array;
  readonly prefixWork: Float64Array;
  readonly prefixRate: Float64Array;
  readonly prefixBytes: Float64Array;

  constructor(cm: CostModel, usable: readonly number[]) {
    const L = cm.layers;
    const devices = cm.profile.devices;
    this.perSample = new Float64Array(devices.length * (L + 1));
    devices.forEach((d, i) => {
      for (let l = 1; l <= L; l++)
        this.perSample[i * (L + 1) + l] =
          this.perSample[i * (L + 1) + l - 1]! + d.layers[l - 1]!.fwd.perSampleMs + d.layers[l - 1]!.bwd.perSampleMs;
    });
    const work = (d: number, l: number) => this.perSample[d * (L + 1) + l]! - this.perSample[d * (L + 1) + l - 1]!;
    const least = (f: (d: number) => number) => usable.reduce((m, d) => Math.min(m, f(d)), Infinity);
    this.prefixWork = new Float64Array(L + 2);
    this.prefixRate = new Float64Array(devices.length * (L + 2));
    this.prefixBytes = new Float64Array(L + 2);
    for (let x = 2; x <= L + 1; x++) {
      const w = least((d) => work(d, x - 1));
      this.prefixWork[x] = this.prefixWork[x - 1]! + w;
      for (const d of usable) {
        const rate = w === 0 ? 0 : w / work(d, x - 1);
        this.prefixRate[d * (L + 2) + x] = Math.max(this.prefixRate[d * (L + 2) + x - 1]!, rate);
      }
      const held = (b: { backboneBytes: number; sideBytes: number }) => b.backboneBytes + b.sideBytes;
      this.prefixBytes[x] =
        (x === 2 ? least((d) => held(devices[d]!.embed)) : this.prefixBytes[x - 1]!) + least((d) => held(devices[d]!.layers[x - 2]!));
    }
  }
}

/**
 * Stage prices at one micro-batch size, shared by every search at that size. `fit` leaves the
 * price in f, b, c, ar so the search's inner loop allocates nothing.
 */
export class Prices {
  private readonly groups = new Map<string, GroupPrices>();
  private readonly stride: number;
  readonly perSample: Float64Array;
  readonly prefixWork: Float64Array;
  readonly prefixRate: Float64Array;
  readonly prefixBytes: Float64Array;
  f = 0;
  b = 0;
  c = 0;
  ar = 0;

  constructor(
    readonly cm: CostModel,
    readonly rows: number,
    bounds: Bounds,
  ) {
    this.stride = cm.layers + 1;
    ({ perSample: this.perSample, prefixWork: this.prefixWork, prefixRate: this.prefixRate, prefixBytes: this.prefixBytes } = bounds);
  }

  /** Sum of prefixRate at x over g's members. */
  rate(g: GroupPrices, x: number): number {
    let r = 0;
    for (const d of g.members) r += this.prefixRate[d * (this.stride + 1) + x]!;
    return r;
  }

  group(members: number[]): GroupPrices {
    const key = members.join(',');
    let g = this.groups.get(key);
    if (!g) {
      g = new GroupPrices(
        members,
        members.reduce((s, d) => s + this.cm.profile.devices[d]!.memoryBytes, 0),
      );
      this.groups.set(key, g);
    }
    return g;
  }

  /** A lower bound of the cycle of layers x..y on g: its rows spread fluidly over the members' compute speeds. Grows as x falls. */
  floor(g: GroupPrices, x: number, y: number): number {
    let speed = 0;
    for (const d of g.members) speed += 1 / (this.perSample[d * this.stride + y]! - this.perSample[d * this.stride + x - 1]!);
    return this.rows / speed;
  }

  /** Prices layers x..y on g keeping `inFlight` micro-batches; false if the members cannot fit their rows in memory. */
  fit(g: GroupPrices, x: number, y: number, inFlight: number): boolean {
    let row = g.base[x];
    if (!row) {
      row = new Float64Array(FIELDS * this.stride).fill(NaN);
      g.base[x] = row;
    }
    let o = FIELDS * y;
    if (Number.isNaN(row[o]!)) {
      const q = this.cm.quote(x, y, g.members, 0, g.members.length, this.rows, null);
      if (!q) throw new RangeError(`planner: a group of ${g.members.length} was priced for ${this.rows} rows`);
      row[o] = q.fwdMs;
      row[o + 1] = q.bwdMs;
      row[o + 2] = q.cycleMs;
      row[o + 3] = q.allReduceMs;
      row[o + 4] = q.maxInFlight;
    }
    if (inFlight > row[o + 4]!) {
      const key = x * this.stride + y + inFlight * this.stride * this.stride;
      let capped = g.capped.get(key);
      if (capped === undefined) {
        const q = this.cm.quote(x, y, g.members, 0, g.members.length, this.rows, inFlight);
        capped = q && Float64Array.of(q.fwdMs, q.bwdMs, q.cycleMs, q.allReduceMs);
        g.capped.set(key, capped);
      }
      if (!capped) return false;
      row = capped;
      o = 0;
    }
    this.f = row[o]!;
    this.b = row[o + 1]!;
    this.c = row[o + 2]!;
    this.ar = row[o + 3]!;
    return true;
  }
}
