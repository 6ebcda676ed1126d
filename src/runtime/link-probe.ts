/**
 * Link rates for the planner, measured on the bus the run's tensors take: a device publishes
 * float32 tensors to a peer on `from.<me>.to.<peer>.link` through its data-plane connection (the
 * same envelope, codec and chunking as activations, and the same simulated link when the device
 * has a bandwidth cap), then asks the peer how many bytes arrived. The request travels behind the
 * bytes on the same subject and connection, so its answer comes after all of them. The time from
 * the first send to the answer is one round trip plus the transfer; the round trip, timed on
 * empty transfers before (the fastest of a few: on a busy machine the slower ones measure the
 * neighbours), is taken off, as the planner prices a message as latency + bytes / rate. It takes
 * off at most half the time, so that a round trip timed short of a later one cannot make the
 * rate unbounded. A fast transfer is timed up to three times and the fastest kept, for the same
 * reason: one transfer timed while a neighbour computed made a loopback link look a tenth as
 * fast as it is, and the planner leave a device out.
 *
 * The peer's side keeps a byte count per (sender, transfer) and forgets it once asked; it holds
 * at most a few transfers, so a peer that never asks cannot grow it. Malformed messages are
 * dropped and counted by the bus, never fatal.
 */
import { MessageRejected, type Bus, type BusSubscription } from '../bus/index.ts';
import { WireTensor } from '../tensor/index.ts';
import { REPLY_KIND } from './inbox.ts';
import type { LinkProbeReply, LinkProbeRequest } from './messages.ts';

/** Transfers one receiver counts at once (one sender per probe round, a few rounds overlapping at most). */
const MAX_TRANSFERS = 16;
const MAX_NONCE = 64;
/** Empty transfers timed for the round trip. */
const EMPTY_TRANSFERS = 3;
/** Full transfers timed at most; the fastest is the link's rate. */
const TRANSFERS = 3;
/** A transfer slower than this is not repeated. */
const REPEAT_BELOW_MS = 500;

/** Sends `bytes` through the device's simulated link (its bandwidth knob); may wait before `send`. */
export type LinkThrottle = (bytes: number, send: () => void) => unknown;
const immediate: LinkThrottle = (_bytes, send) => send();

/** The receiving side: counts probe bytes per transfer and answers how many arrived. Returns the subscription. */
export function serveLinkProbe(bus: Bus): BusSubscription {
  const got = new Map<string, number>();
  return bus.subscribe<{ nonce?: unknown; data?: unknown }>(
    bus.subjects.linkIn(),
    (env, msg) => {
      const b = env.body;
      const sender = msg.sender;
      if (!sender || typeof b?.nonce !== 'string' || b.nonce.length === 0 || b.nonce.length > MAX_NONCE) {
        bus.reject(msg.subject, new MessageRejected('body', `${env.kind} from '${sender ?? '?'}': no transfer id`));
        return;
      }
      const key = `${sender}/${b.nonce}`;
      if (env.kind === 'link') {
        if (!(b.data instanceof WireTensor)) {
          bus.reject(msg.subject, new MessageRejected('body', `link from '${sender}': data is not a tensor`));
          return;
        }
        if (!got.has(key) && got.size >= MAX_TRANSFERS) got.delete(got.keys().next().value!);
        got.set(key, (got.get(key) ?? 0) + b.data.byteLength);
        return;
      }
      const bytes = got.get(key) ?? 0;
      got.delete(key);
      if (msg.reply && !bus.isClosed) bus.reply(msg, REPLY_KIND, { bytes });
    },
    { kinds: ['link', 'link-end'] },
  );
}

let transfers = 0;

/** Measures the link to each of `req.peers` in turn; a peer that fails gets an `error` instead of a rate. */
export async function measureLinks(bus: Bus, req: LinkProbeRequest, throttle: LinkThrottle = immediate): Promise<LinkProbeReply> {
  const out: LinkProbeReply = [];
  for (const peer of req.peers) {
    try {
      out.push(await measureOne(bus, peer, req, throttle));
    } catch (err) {
      out.push({ peer, error: (err instanceof Error ? err.message : String(err)).slice(0, 1000) });
    }
  }
  return out;
}

async function measureOne(bus: Bus, peer: string, req: LinkProbeRequest, throttle: LinkThrottle) {
  const subject = bus.subjects.link(peer);
  const deadline = performance.now() + req.timeoutMs;
  const left = () => Math.max(1, deadline - performance.now());
  const nonce = `${process.pid}-${++transfers}`;
  let rttMs = Infinity;
  for (let k = 0; k < EMPTY_TRANSFERS; k++) {
    const p0 = performance.now();
    await arrived(bus, peer, `${nonce}-${k}`, left());
    rttMs = Math.min(rttMs, performance.now() - p0);
  }
  const full = new Float32Array(Math.max(1, Math.floor(req.messageBytes / 4))).fill(0.5);
  let best: { ms: number; bytes: number; sent: number } | undefined;
  for (let k = 0; k < TRANSFERS; k++) {
    const t0 = performance.now();
    const id = `${nonce}-full-${k}`;
    let sent = 0;
    while (sent < req.bytes) {
      const n = Math.min(full.length, Math.ceil((req.bytes - sent) / 4));
      const data = n === full.length ? full : full.subarray(0, n);
      await throttle(n * 4, () => bus.publish(subject, 'link', { nonce: id, data: new WireTensor('float32', [n], data) }));
      sent += n * 4;
      if (performance.now() > deadline) throw new Error(`link to ${peer}: ${sent} of ${req.bytes} bytes sent in ${req.timeoutMs} ms`);
    }
    const bytes = await arrived(bus, peer, id, left());
    const ms = performance.now() - t0;
    if (bytes === 0) throw new Error(`link to ${peer}: none of ${sent} bytes arrived`);
    if (!best || ms < best.ms) best = { ms, bytes, sent };
    // One slow transfer is mostly the link; a fast one is easily doubled by a neighbour's burst
    // on a shared machine, so it is timed again while that costs little.
    if (ms > REPEAT_BELOW_MS || left() < 3 * ms) break;
  }
  const transferMs = Math.max(best!.ms - rttMs, best!.ms / 2, 1e-3);
  return { peer, mbps: (best!.bytes * 8) / (transferMs * 1e3), latencyMs: rttMs / 2, bytes: best!.bytes };
}

/** How many bytes of transfer `nonce` the peer has seen (the request follows the bytes on their subject). */
async function arrived(bus: Bus, peer: string, nonce: string, timeoutMs: number): Promise<number> {
  const env = await bus.request<{ nonce: string }, { bytes?: unknown }>(
    bus.subjects.link(peer),
    'link-end',
    { nonce },
    { timeoutMs, kinds: [REPLY_KIND] },
  );
  const bytes = env.body?.bytes;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`link to ${peer}: malformed answer`);
  return bytes;
}
