/**
 * How a stage rank reaches the other stages and its group: over the bus (fwd / bwd / grad subjects
 * addressed to the peer device, subjects.ts) or through in-process mailboxes (tests, single-process runs).
 *
 * Every message carries run, plan generation, step and micro-batch in its envelope and is
 * validated on arrival (kind, generation, sender rank, row count x width = values); what fails is
 * dropped and counted, never applied. The generation matters because a re-plan reuses stage
 * ranks, groups and step numbers: a message an aborted attempt sent late must not be taken for
 * one of the replay. Messages that arrive before they are asked for wait in a mailbox keyed by
 * (step, micro-batch, sender rank).
 */
import { MessageRejected, type Bus, type BusMsg, type BusSubscription } from '../bus/index.ts';
import { WireTensor, type Envelope } from '../tensor/index.ts';
import { Mailbox, ringKey, type RingTag, type RingTransport } from './allreduce.ts';
import { allFinite, expectedPeer, sameGeneration } from './peer-checks.ts';
import { BusRing, unthrottled, type Throttle } from './ring.ts';
import type { BwdMsg, FwdMsg, StageLinks } from './runner.ts';

const key = (step: number, mb: number, from: number) => `${step}/${mb}/${from}`;

/** In-process links for every (stage, rank) of a plan: `hub.links(stage, rank, group)`. */
export class MemoryHub {
  private readonly fwd = new Map<string, Mailbox<FwdMsg>>();
  private readonly bwd = new Map<string, Mailbox<BwdMsg>>();
  private readonly grad = new Map<string, Mailbox<Float32Array>>();

  private box<T>(m: Map<string, Mailbox<T>>, k: string): Mailbox<T> {
    let b = m.get(k);
    if (!b) m.set(k, (b = new Mailbox<T>()));
    return b;
  }

  /**
   * Links of `rank` in `stage`; `group` names its all-reduce ring (any string shared by the
   * group); `crossRank` is its rank in the ring over every stage (its global rank).
   */
  links(stage: number, rank: number, group: string, crossRank?: number): StageLinks {
    return {
      ...(crossRank !== undefined ? { crossRing: (step: number) => this.ring('cross', crossRank, step) } : {}),
      sendFwd: (step, mb, to, msg) => this.box(this.fwd, `${stage + 1}.${to}`).put(key(step, mb, rank), msg),
      recvFwd: (step, mb, from) => this.box(this.fwd, `${stage}.${rank}`).take(key(step, mb, from)),
      sendBwd: (step, mb, to, msg) => this.box(this.bwd, `${stage - 1}.${to}`).put(key(step, mb, rank), msg),
      recvBwd: (step, mb, from) => this.box(this.bwd, `${stage}.${rank}`).take(key(step, mb, from)),
      ring: (step) => this.ring(group, rank, step),
    };
  }

  /** Rank `rank`'s view of ring `group` at `step`. */
  ring(group: string, rank: number, step: number): RingTransport {
    return {
      send: (to: number, tag: RingTag, data: Float32Array) =>
        this.box(this.grad, `${group}.${to}`).put(`${step}/${ringKey(rank, tag)}`, data),
      receive: (from: number, tag: RingTag) => this.box(this.grad, `${group}.${rank}`).take(`${step}/${ringKey(from, tag)}`),
    };
  }
}

interface FwdBody {
  rank: number;
  ids: number[];
  b: WireTensor<'float32'>;
  a: WireTensor<'float32'>;
}
interface BwdBody {
  rank: number;
  ids: number[];
  g: WireTensor<'float32'>;
}
/** Widths a receiver checks rows against: values per row of b (T*d), of a (T*r) and of g (default: a's; T*d for methods that backpropagate through the backbone). */
export interface RowWidths {
  b: number;
  a: number;
  g?: number;
}

/**
 * Bus links of one stage rank. Subscribes to its fwd/bwd subjects at once (before the
 * coordinator starts any step); the group's ring is a BusRing. `close()` unsubscribes and fails
 * pending receives.
 */
export class BusStageLinks implements StageLinks {
  private readonly fwd = new Mailbox<FwdMsg>();
  private readonly bwd = new Mailbox<BwdMsg>();
  private readonly subs: BusSubscription[] = [];
  private readonly rings: BusRing;
  private readonly cross: BusRing | null;
  /** Messages dropped by validation, by reason. */
  readonly dropped = new Map<string, number>();
  private sentRows = 0;
  /** the latest step this rank has asked a message for (its steps run in order) */
  private working: number;

  constructor(
    private readonly bus: Bus,
    private readonly o: {
      stage: number;
      rank: number;
      group: string;
      /** the devices of each rank: of this stage (the all-reduce ring), of the stages before and after */
      peers: { group: readonly string[]; prev: readonly string[]; next: readonly string[] };
      widths: RowWidths;
      generation: number;
      firstStep: number;
      throttle?: Throttle;
      /** This rank's place in the ring over every rank of every stage (plans of more than one stage). */
      cross?: { rank: number; members: readonly string[] };
    },
  ) {
    this.working = o.firstStep;
    const s = bus.subjects;
    this.subs.push(
      bus.subscribe<FwdBody>(
        s.stageFwdIn(o.stage, o.rank),
        (env, msg) => {
          const b = env.body;
          const rows: [unknown, number][] = [
            [b?.b, o.widths.b],
            [b?.a, o.widths.a],
          ];
          if (!this.admit(msg, env, b?.rank, b?.ids, o.peers.prev, o.stage - 1, rows)) return;
          this.fwd.put(key(env.step, env.mb, b.rank), { ids: b.ids, b: b.b.data, a: b.a.data });
        },
        { kinds: ['fwd'] },
      ),
    );
    this.subs.push(
      bus.subscribe<BwdBody>(
        s.stageBwdIn(o.stage, o.rank),
        (env, msg) => {
          const b = env.body;
          if (!this.admit(msg, env, b?.rank, b?.ids, o.peers.next, o.stage + 1, [[b?.g, o.widths.g ?? o.widths.a]])) return;
          this.bwd.put(key(env.step, env.mb, b.rank), { ids: b.ids, g: b.g.data });
        },
        { kinds: ['bwd'] },
      ),
    );
    this.rings = new BusRing(bus, {
      group: o.group,
      rank: o.rank,
      members: o.peers.group,
      generation: o.generation,
      firstStep: o.firstStep,
      throttle: o.throttle,
      onDrop: (r) => this.drop(r),
    });
    this.cross = o.cross
      ? new BusRing(bus, {
          group: 'cross',
          rank: o.cross.rank,
          members: o.cross.members,
          generation: o.generation,
          firstStep: o.firstStep,
          throttle: o.throttle,
          onDrop: (r) => this.drop(r),
        })
      : null;
    if (this.cross) {
      const cross = this.cross;
      this.crossRing = (step) => cross.ring(step);
    }
  }

  crossRing?: (step: number) => RingTransport;

  /** Bytes of activations, gradients and all-reduce chunks sent so far. */
  get bytesSent(): number {
    return this.sentRows + this.rings.bytesSent + (this.cross?.bytesSent ?? 0);
  }

  private drop(reason: string): false {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
    return false;
  }

  /**
   * Whether `env` is for the step this rank works on or a later one. A rank takes its steps in
   * order, so a message for an earlier step (a replay of an old message, a late duplicate) can
   * never be asked for: it is refused and counted instead of waiting in a mailbox for ever.
   * Step 0 is a cache fill, which may come between training steps.
   */
  private current(msg: BusMsg, env: Envelope<unknown>): boolean {
    if (env.step === 0 || env.step >= this.working) return true;
    this.bus.reject(
      msg.subject,
      new MessageRejected(
        'stale',
        `${env.kind} for step ${env.step} from '${msg.sender ?? env.from}', this rank is at step ${this.working}`,
      ),
    );
    return this.drop('stale');
  }

  private rowsOk(ids: unknown, rank: unknown, senders: number, tensors: [unknown, number][]): boolean {
    if (!Array.isArray(ids) || !ids.every((i) => Number.isSafeInteger(i) && i >= 0)) return this.drop('ids');
    if (!Number.isInteger(rank) || (rank as number) < 0 || (rank as number) >= senders) return this.drop('rank');
    for (const [t, width] of tensors) {
      if (!(t instanceof WireTensor) || t.dtype !== 'float32' || t.size !== ids.length * width) return this.drop('shape');
    }
    return true;
  }

  /**
   * Whether a row message passes every check, in order: plan generation, step, ids and rank,
   * tensor shapes, sender (the device the plan puts at that rank of stage `peerStage`), finite
   * values. What fails is dropped and counted by reason, never applied.
   */
  private admit(
    msg: BusMsg,
    env: Envelope<unknown>,
    rank: unknown,
    ids: unknown,
    senders: readonly string[],
    peerStage: number,
    tensors: [unknown, number][],
  ): boolean {
    if (!sameGeneration(this.bus, msg, env, this.o.generation)) return this.drop('generation');
    if (!this.current(msg, env) || !this.rowsOk(ids, rank, senders.length, tensors)) return false;
    if (!expectedPeer(this.bus, msg, env, senders[rank as number], `stage ${peerStage} rank ${rank}`)) return this.drop('peer');
    const values = tensors.map(([t]) => (t as WireTensor<'float32'>).data);
    return allFinite(this.bus, msg, env, values) || this.drop('nonfinite');
  }

  private send(subject: string, kind: string, body: unknown, step: number, mb: number, bytes: number): void {
    this.sentRows += bytes;
    (this.o.throttle ?? unthrottled)(bytes, () => this.bus.publish(subject, kind, body, { gen: this.o.generation, step, mb }));
  }

  sendFwd(step: number, mb: number, to: number, msg: FwdMsg): void {
    const body: FwdBody = {
      rank: this.o.rank,
      ids: msg.ids,
      b: new WireTensor('float32', [msg.b.length], msg.b),
      a: new WireTensor('float32', [msg.a.length], msg.a),
    };
    this.send(
      this.bus.subjects.stageFwd(this.o.peers.next[to]!, this.o.stage + 1, to),
      'fwd',
      body,
      step,
      mb,
      msg.b.byteLength + msg.a.byteLength,
    );
  }

  recvFwd(step: number, mb: number, from: number): Promise<FwdMsg> {
    this.working = Math.max(this.working, step);
    return this.fwd.take(key(step, mb, from));
  }

  sendBwd(step: number, mb: number, to: number, msg: BwdMsg): void {
    const body: BwdBody = { rank: this.o.rank, ids: msg.ids, g: new WireTensor('float32', [msg.g.length], msg.g) };
    this.send(this.bus.subjects.stageBwd(this.o.peers.prev[to]!, this.o.stage - 1, to), 'bwd', body, step, mb, msg.g.byteLength);
  }

  recvBwd(step: number, mb: number, from: number): Promise<BwdMsg> {
    this.working = Math.max(this.working, step);
    return this.bwd.take(key(step, mb, from));
  }

  ring(step: number): RingTransport {
    return this.rings.ring(step);
  }

  close(): void {
    for (const s of this.subs) s.unsubscribe();
    this.rings.close();
    this.cross?.close();
    const closed = new Error('stage links closed');
    this.fwd.close(closed);
    this.bwd.close(closed);
  }
}
