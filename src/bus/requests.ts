/**
 * The requests of one connection awaiting their reply. Every reply comes to one inbox
 * subscription, `<inbox prefix>.<token>`; the token names the request it answers.
 */
import type { Msg } from 'nats';
import type { Envelope } from '../tensor/index.ts';
import { BusTimeout, NoResponders } from './errors.ts';

interface Pending {
  resolve(env: Envelope): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  subject: string;
  kinds?: readonly string[];
  detach?: () => void;
  onProgress?: () => void;
}

export interface RequestOptions {
  timeoutMs: number;
  kinds?: readonly string[];
  signal?: AbortSignal;
  /** Called for each chunk of a chunked reply that arrives before the whole (the replier is at work sending it). */
  onProgress?: () => void;
}

export class PendingRequests {
  private readonly pending = new Map<string, Pending>();

  /**
   * Awaits the reply to the request `token` names, which `send` sends; a `send` that throws
   * fails the request. Fails with BusTimeout after `timeoutMs`, with `signal`'s reason once it aborts.
   */
  open<R>(token: string, subject: string, opts: RequestOptions, send: () => void): Promise<Envelope<R>> {
    const { signal } = opts;
    return new Promise<Envelope<R>>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(token, p).reject(new BusTimeout(subject, opts.timeoutMs)), opts.timeoutMs);
      const p: Pending = {
        resolve: resolve as (e: Envelope) => void,
        reject,
        timer,
        subject,
        kinds: opts.kinds,
        onProgress: opts.onProgress,
      };
      if (signal) {
        const onAbort = () => this.settle(token, p).reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        p.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.pending.set(token, p);
      try {
        send();
      } catch (err) {
        this.settle(token, p).reject(err as Error);
      }
    });
  }

  /**
   * Settles the request `token` names with its reply `m` (none listening: NoResponders).
   * `decode` turns `m` into the reply's envelope, null while it is a chunk of one not yet whole;
   * what it throws fails the request.
   */
  answer(token: string, m: Msg, decode: (kinds: readonly string[] | undefined) => Envelope | null): void {
    const p = this.pending.get(token);
    if (!p) return;
    if (m.headers?.code === 503) {
      this.settle(token, p).reject(new NoResponders(p.subject));
      return;
    }
    try {
      const env = decode(p.kinds);
      if (env) this.settle(token, p).resolve(env);
      else p.onProgress?.();
    } catch (err) {
      this.settle(token, p).reject(err as Error);
    }
  }

  /** Fails every request still awaiting its reply. */
  failAll(err: () => Error): void {
    for (const [token, p] of this.pending) this.settle(token, p).reject(err());
  }

  private settle(token: string, p: Pending): Pending {
    clearTimeout(p.timer);
    p.detach?.();
    this.pending.delete(token);
    return p;
  }
}
