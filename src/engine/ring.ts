/** The ring all-reduce of one rank over the bus: grad.<group>.<step> subjects addressed to the peer device. */
import type { Bus, BusSubscription } from '../bus/index.ts';
import { WireTensor } from '../tensor/index.ts';
import { Mailbox, ringKey, type RingTag, type RingTransport } from './allreduce.ts';
import { allFinite, expectedPeer, sameGeneration } from './peer-checks.ts';

interface GradBody {
  from: number;
  to: number;
  phase: RingTag['phase'];
  round: number;
  chunk: number;
  data: WireTensor<'float32'>;
}

/** Sends `bytes` through a device's simulated link (bandwidth knob); default: at once. */
export type Throttle = (bytes: number, send: () => void) => void;
export const unthrottled: Throttle = (_bytes, send) => send();

/**
 * One rank's all-reduce rings over grad.<group>.<step>, with `size` ranks. It subscribes to a
 * step's subject one step ahead (when the ring of the step before is taken), so that no chunk can
 * arrive before its subscription; older steps are unsubscribed.
 */
export class BusRing {
  private readonly grad = new Mailbox<Float32Array>();
  private readonly subs = new Map<number, BusSubscription>();
  bytesSent = 0;

  constructor(
    private readonly bus: Bus,
    private readonly o: {
      group: string;
      rank: number;
      /** the device of each rank of the ring: where chunks go, and the only senders accepted */
      members: readonly string[];
      generation: number;
      firstStep: number;
      throttle?: Throttle;
      onDrop?(reason: string): void;
    },
  ) {
    this.arm(o.firstStep);
  }

  private arm(step: number): void {
    if (this.o.members.length < 2 || this.subs.has(step)) return;
    this.subs.set(
      step,
      this.bus.subscribe<GradBody>(
        this.bus.subjects.gradIn(this.o.group, step),
        (env, msg) => {
          const b = env.body;
          if (b?.to !== this.o.rank) return;
          if (!sameGeneration(this.bus, msg, env, this.o.generation)) {
            this.o.onDrop?.('generation');
            return;
          }
          if (!(b.data instanceof WireTensor) || b.data.dtype !== 'float32' || !Number.isInteger(b.from)) {
            this.o.onDrop?.('grad');
            return;
          }
          if (!expectedPeer(this.bus, msg, env, this.o.members[b.from], `rank ${b.from} of ring ${this.o.group}`)) {
            this.o.onDrop?.('peer');
            return;
          }
          if (!allFinite(this.bus, msg, env, [b.data.data as Float32Array])) {
            this.o.onDrop?.('nonfinite');
            return;
          }
          this.grad.put(`${env.step}/${ringKey(b.from, { phase: b.phase, round: b.round, chunk: b.chunk })}`, b.data.data);
        },
        { kinds: ['grad'] },
      ),
    );
  }

  /** The ring of `step`. */
  ring(step: number): RingTransport {
    this.arm(step);
    this.arm(step + 1);
    for (const [s, sub] of this.subs)
      if (s < step) {
        sub.unsubscribe();
        this.subs.delete(s);
      }
    const subject = (to: number) => this.bus.subjects.grad(this.o.members[to]!, this.o.group, step);
    const throttle = this.o.throttle ?? unthrottled;
    return {
      send: (to, tag, data) => {
        const body: GradBody = {
          from: this.o.rank,
          to,
          phase: tag.phase,
          round: tag.round,
          chunk: tag.chunk,
          data: new WireTensor('float32', [data.length], data),
        };
        this.bytesSent += data.byteLength;
        throttle(data.byteLength, () => this.bus.publish(subject(to), 'grad', body, { gen: this.o.generation, step, mb: 0 }));
      },
      receive: (from, tag) => this.grad.take(`${step}/${ringKey(from, tag)}`),
    };
  }

  close(): void {
    for (const s of this.subs.values()) s.unsubscribe();
    this.subs.clear();
    this.grad.close(new Error('all-reduce ring closed'));
  }
}
