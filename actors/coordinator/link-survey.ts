/**
 * The coordinator's measurement of the links between the run's devices, for the planner: each
 * device times its sends to each peer over the bus (control `links`, src/runtime/link-probe.ts).
 *
 * Rounds keep it short and fair: in round r device i sends to device i + r (mod n), so every
 * device sends to one peer and receives from one at a time, all devices at once, and n devices
 * take n - 1 rounds. A link measured once is kept for the coordinator's life: a device joining
 * mid-run has only its own links measured; a re-plan after a loss measures nothing. A link that
 * could not be measured (a timeout, a device without the probe, a malformed answer) is not tried
 * again; the planner takes the topology's figure for it.
 */
import type { Bus } from '../../src/bus/index.ts';
import { linkProbeReply, type LinkProbeRequest } from '../../src/runtime/messages.ts';
import type { MeasuredLink } from '../../src/plan/device-profile.ts';
import { control } from './control.ts';

/** The directed pairs among `devices` not `known`, in rounds where each device sends at most once and receives at most once. */
export function linkRounds(devices: readonly string[], known: (from: string, to: string) => boolean): [string, string][][] {
  const n = devices.length;
  const rounds: [string, string][][] = [];
  for (let r = 1; r < n; r++) {
    const round: [string, string][] = [];
    for (let i = 0; i < n; i++) {
      const from = devices[i]!,
        to = devices[(i + r) % n]!;
      if (!known(from, to)) round.push([from, to]);
    }
    if (round.length) rounds.push(round);
  }
  return rounds;
}

/** How much a probe sends per link: about one batch across the widest stage boundary, from 256 KiB to 4 MiB. */
export function linkProbeSize(boundaryBytes: number): Omit<LinkProbeRequest, 'peers'> {
  const bytes = Math.round(Math.min(4 << 20, Math.max(256 << 10, boundaryBytes)));
  // At least four messages, none above 1 MiB: what stage messages of such a batch look like.
  const messageBytes = Math.min(1 << 20, Math.ceil(bytes / 16) * 4);
  // Rates down to about 10 Mbit/s finish in time; a slower link falls back to the topology's figure.
  return { bytes, messageBytes, timeoutMs: 5000 + (bytes * 8) / 1e4 };
}

const key = (from: string, to: string) => `${from}>${to}`;

export class LinkSurvey {
  private readonly rates = new Map<string, MeasuredLink>();
  private readonly failed = new Map<string, string>();

  constructor(
    private readonly bus: Bus,
    private readonly size: Omit<LinkProbeRequest, 'peers'>,
    private readonly emit: (type: string, fields: Record<string, unknown>) => void = () => {},
  ) {}

  /** Measures every link among `devices` not measured or tried before, nor `skip`ped. Rejects only when `signal` aborts. */
  async measure(
    devices: readonly string[],
    signal?: AbortSignal,
    skip: (from: string, to: string) => boolean = () => false,
  ): Promise<void> {
    const rounds = linkRounds(devices, (a, b) => this.rates.has(key(a, b)) || this.failed.has(key(a, b)) || skip(a, b));
    if (rounds.length === 0) return;
    const t0 = performance.now();
    for (const round of rounds) {
      const asked = round.map(([from, to]) =>
        control<unknown>(this.bus, from, 'links', { ...this.size, peers: [to] }, { timeoutMs: this.size.timeoutMs + 5000, signal }),
      );
      const answers = await Promise.allSettled(asked);
      if (signal?.aborted) throw signal.reason;
      answers.forEach((a, i) => {
        const [from, to] = round[i]!;
        const why = (e: string) => this.failed.set(key(from, to), e);
        if (a.status === 'rejected') return why((a.reason as Error)?.message ?? String(a.reason));
        const parsed = linkProbeReply.safeParse(a.value);
        const got = parsed.success ? parsed.data.find((r) => r.peer === to) : undefined;
        if (!got) return why(`malformed links answer from ${from}`);
        if ('error' in got) return why(got.error);
        this.rates.set(key(from, to), { from, to, mbps: got.mbps, latencyMs: got.latencyMs });
      });
    }
    const pairs = rounds.flat();
    this.emit('LINKS_MEASURED', {
      seconds: (performance.now() - t0) / 1000,
      bytesPerLink: this.size.bytes,
      links: pairs.flatMap(([from, to]) => {
        const r = this.rates.get(key(from, to));
        return r ? [r] : [];
      }),
      failed: pairs.flatMap(([from, to]) => {
        const e = this.failed.get(key(from, to));
        return e ? [{ from, to, error: e }] : [];
      }),
    });
  }

  /** The measured links among `devices`. */
  links(devices: readonly string[]): MeasuredLink[] {
    const among = new Set(devices);
    return [...this.rates.values()].filter((l) => among.has(l.from) && among.has(l.to));
  }
}
