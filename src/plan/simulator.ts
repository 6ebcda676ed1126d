/**
 * Discrete-event replay of one training step of a StagePlan on profiled devices and links.
 *
 * Each device runs its stage's 1F1B order (`oneFOneB`) on its rows of every micro-batch; an
 * operation starts when the device is free and its inputs have arrived. After a forward, a
 * device sends b and a of each of its rows to whichever device of the next stage holds that row
 * (rows keep their order across stages, so each pair exchanges the overlap of their slices);
 * after a backward, dL/da goes the same way back. A message occupies the sender's egress and
 * the receiver's ingress for bytes / bandwidth (first come, first served) and arrives one
 * latency later; sending does not stall compute. When every member of a group has run its last
 * backward, the group all-reduces its side gradients (ring) and its members update their
 * parameters; the step ends when the last group is done. Epoch time is steps x step time: steps do not overlap (a step commits before the next).
 */
import { ringAllReduceMs } from './cost.ts';
import type { StagePlan } from './planner.ts';
import { boundaryBytesPerSample, linkCost, type BlockCost, type Profile } from './profile.ts';
import { oneFOneB, type PipelineOp } from './schedule.ts';

export interface SimulationResult {
  stepMs: number;
  stepsPerEpoch: number | null;
  epochMs: number | null;
  /** Per stage: when its last backward ended, how long its all-reduce took, then its update (slowest member). */
  stages: { index: number; lastBackwardMs: number; allReduceMs: number; updateMs: number }[];
  /** Compute time per device in one step (busy, not waiting). */
  busyMsPerDevice: Record<string, number>;
  /** Bytes sent between stages in one step (all-reduce traffic excluded). */
  activationBytes: number;
}

interface SimDevice {
  name: string;
  stage: number;
  /** First row of its slice and number of rows, within each micro-batch. */
  rowStart: number;
  rows: number;
  ops: PipelineOp[];
  next: number;
  busy: boolean;
  fwdMs: number;
  bwdMs: number;
  busyMs: number;
  doneMs: number;
}

type SimEvent =
  | { t: number; seq: number; kind: 'opEnd'; device: number; op: PipelineOp }
  | { t: number; seq: number; kind: 'send'; from: number; to: number; bytes: number; key: string }
  | { t: number; seq: number; kind: 'arrive'; to: number; key: string };

type Unscheduled = SimEvent extends infer E ? (E extends SimEvent ? Omit<E, 'seq'> : never) : never;

/** A binary min-heap on (t, seq): simultaneous events run in the order they were scheduled. */
class EventQueue {
  private readonly heap: SimEvent[] = [];
  private seq = 0;
  push(e: Unscheduled): void {
    const h = this.heap;
    h.push({ ...e, seq: this.seq++ } as SimEvent);
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  pop(): SimEvent | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1,
          r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

/** Compute time of `rows` rows through layers from..to (with embed / head at the ends) on one device. */
function passMs(blocks: BlockCost[], pass: 'fwd' | 'bwd', rows: number): number {
  let ms = 0;
  for (const b of blocks) ms += b[pass].fixedMs + rows * b[pass].perSampleMs;
  return ms;
}

/** Replays one step of `plan` on `profile` (the profile the plan was made from, or another one). */
export function simulatePlan(plan: StagePlan, profile: Profile): SimulationResult {
  const L = profile.model.layers;
  const S = plan.stages.length;
  const M = plan.microBatches;
  const byName = new Map(profile.devices.map((d) => [d.name, d]));
  const devices: SimDevice[] = [];
  const stageMembers: number[][] = [];
  const stageGrad: number[] = [];
  const stageUpdate: number[] = [];
  for (const st of plan.stages) {
    const members: number[] = [];
    let rowStart = 0;
    st.devices.forEach((pd, rank) => {
      const dev = byName.get(pd.name);
      if (!dev) throw new RangeError(`plan device '${pd.name}' is not in the profile`);
      const blocks = dev.layers.slice(st.layers.from - 1, st.layers.to);
      if (st.layers.from === 1) blocks.unshift(dev.embed);
      if (st.layers.to === L) blocks.push(dev.head);
      const grad = blocks.reduce((s, b) => s + b.sideGradBytes, 0);
      const update = blocks.reduce((s, b) => s + (b.updateMs ?? 0), 0);
      if (rank === 0) {
        stageGrad.push(grad);
        stageUpdate.push(update);
      } else {
        stageGrad[stageGrad.length - 1] = Math.max(stageGrad.at(-1)!, grad);
        stageUpdate[stageUpdate.length - 1] = Math.max(stageUpdate.at(-1)!, update);
      }
      members.push(devices.length);
      devices.push({
        name: pd.name,
        stage: st.index,
        rowStart,
        rows: pd.rows,
        ops: oneFOneB(st.index, S, M),
        next: 0,
        busy: false,
        fwdMs: passMs(blocks, 'fwd', pd.rows),
        bwdMs: passMs(blocks, 'bwd', pd.rows),
        busyMs: 0,
        doneMs: 0,
      });
      rowStart += pd.rows;
    });
    stageMembers.push(members);
  }
  const overlap = (a: SimDevice, b: SimDevice) =>
    Math.max(0, Math.min(a.rowStart + a.rows, b.rowStart + b.rows) - Math.max(a.rowStart, b.rowStart));
  // Messages a device waits for before an op: key `${dir}:${mb}:${device}`.
  const expected = new Map<string, number>();
  const received = new Map<string, number>();
  for (let s = 0; s < S; s++) {
    for (const i of stageMembers[s]!) {
      const d = devices[i]!;
      const fromPrev = s > 0 ? stageMembers[s - 1]!.filter((j) => overlap(devices[j]!, d) > 0).length : 0;
      const fromNext = s < S - 1 ? stageMembers[s + 1]!.filter((j) => overlap(devices[j]!, d) > 0).length : 0;
      for (let mb = 0; mb < M; mb++) {
        expected.set(`F:${mb}:${i}`, fromPrev);
        expected.set(`B:${mb}:${i}`, fromNext);
      }
    }
  }
  const egressFree = new Float64Array(devices.length);
  const ingressFree = new Float64Array(devices.length);
  const queue = new EventQueue();
  let activationBytes = 0;
  const groupDone = new Array<number>(S).fill(0);
  const stageLast = new Array<number>(S).fill(0);

  const tryStart = (i: number, now: number) => {
    const d = devices[i]!;
    if (d.busy || d.next >= d.ops.length) return;
    const op = d.ops[d.next]!;
    const key = `${op.op}:${op.mb}:${i}`;
    if ((received.get(key) ?? 0) < expected.get(key)!) return;
    d.busy = true;
    d.next++;
    const ms = op.op === 'F' ? d.fwdMs : d.bwdMs;
    d.busyMs += ms;
    queue.push({ t: now + ms, kind: 'opEnd', device: i, op });
  };

  devices.forEach((_, i) => tryStart(i, 0));
  for (let e = queue.pop(); e; e = queue.pop()) {
    if (e.kind === 'opEnd') {
      const d = devices[e.device]!;
      d.busy = false;
      const s = d.stage;
      const toward = e.op.op === 'F' ? s + 1 : s - 1;
      if (toward >= 0 && toward < S) {
        const boundary = boundaryBytesPerSample(
          profile.model,
          e.op.op === 'F' ? plan.stages[s]!.layers.to : plan.stages[s]!.layers.from - 1,
        );
        const perRow = e.op.op === 'F' ? boundary.fwd : boundary.bwd;
        for (const j of stageMembers[toward]!) {
          const rows = overlap(d, devices[j]!);
          if (rows > 0)
            queue.push({ t: e.t, kind: 'send', from: e.device, to: j, bytes: rows * perRow, key: `${e.op.op}:${e.op.mb}:${j}` });
        }
      }
      if (d.next === d.ops.length) {
        d.doneMs = e.t;
        stageLast[s] = Math.max(stageLast[s]!, e.t);
        groupDone[s]! += 1;
      }
      tryStart(e.device, e.t);
    } else if (e.kind === 'send') {
      const link = linkCost(profile, devices[e.from]!.name, devices[e.to]!.name);
      const start = Math.max(e.t, egressFree[e.from]!, ingressFree[e.to]!);
      const done = start + e.bytes * link.msPerByte;
      egressFree[e.from] = done;
      ingressFree[e.to] = done;
      activationBytes += e.bytes;
      queue.push({ t: done + link.latencyMs, kind: 'arrive', to: e.to, key: e.key });
    } else {
      received.set(e.key, (received.get(e.key) ?? 0) + 1);
      tryStart(e.to, e.t);
    }
  }
  const stuck = devices.find((d) => d.next < d.ops.length);
  if (stuck)
    throw new Error(`simulation deadlocked: ${stuck.name} stopped before ${stuck.ops[stuck.next]!.op}${stuck.ops[stuck.next]!.mb}`);
  const stages = plan.stages.map((st, s) => {
    const members = stageMembers[s]!;
    let worst = { msPerByte: 0, latencyMs: 0 };
    for (const a of members)
      for (const b of members) {
        if (a === b) continue;
        const c = linkCost(profile, devices[a]!.name, devices[b]!.name);
        worst = { msPerByte: Math.max(worst.msPerByte, c.msPerByte), latencyMs: Math.max(worst.latencyMs, c.latencyMs) };
      }
    return {
      index: st.index,
      lastBackwardMs: stageLast[s]!,
      allReduceMs: ringAllReduceMs(stageGrad[s]!, members.length, worst),
      updateMs: stageUpdate[s]!,
    };
  });
  const stepMs = Math.max(...stages.map((s) => s.lastBackwardMs + s.allReduceMs + s.updateMs));
  const busyMsPerDevice: Record<string, number> = {};
  for (const d of devices) busyMsPerDevice[d.name] = d.busyMs;
  return {
    stepMs,
    stepsPerEpoch: plan.predicted.stepsPerEpoch,
    epochMs: plan.predicted.stepsPerEpoch === null ? null : plan.predicted.stepsPerEpoch * stepMs,
    stages,
    busyMsPerDevice,
    activationBytes,
  };
}
