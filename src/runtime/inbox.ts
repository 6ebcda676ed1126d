/**
 * An actor's inbox on the bus: subscriptions whose bodies are validated (zod) before a handler
 * sees them, and request handlers whose return value is the reply. The bus already rejects bad
 * envelopes; a body that fails its schema is rejected here with reason 'body': dropped, counted
 * and reported on `events`, never handed on, never a crash.
 */
import type { z } from 'zod';
import { MessageRejected, type Bus, type BusMsg, type BusSubscription } from '../bus/index.ts';
import type { Envelope } from '../tensor/index.ts';

/** Kind of every reply an inbox sends. */
export const REPLY_KIND = 'reply';

export type BodyHandler<T> = (body: T, env: Envelope<unknown>, msg: BusMsg) => void | Promise<void>;
export type RequestHandler<T> = (body: T, env: Envelope<unknown>, msg: BusMsg) => unknown | Promise<unknown>;

/** A request kind: the body schema and the handler computing the reply. */
export interface RequestRoute<S extends z.ZodType = z.ZodType> {
  body: S;
  handle: RequestHandler<z.output<S>>;
}

/** Builds a typed request route (keeps the handler's body type tied to its schema). */
export function route<S extends z.ZodType>(body: S, handle: RequestHandler<z.output<S>>): RequestRoute {
  return { body, handle: handle as RequestHandler<unknown> };
}

export class Inbox {
  private readonly subs: BusSubscription[] = [];

  constructor(private readonly bus: Bus) {}

  /** Messages of `kind` on `subject` whose body matches `schema` reach `handler`. */
  on<S extends z.ZodType>(subject: string, kind: string, schema: S, handler: BodyHandler<z.output<S>>): void {
    this.subs.push(
      this.bus.subscribe(
        subject,
        (env, msg) => {
          const body = this.check(schema, env, msg);
          if (body.ok) return handler(body.value, env, msg);
        },
        { kinds: [kind] },
      ),
    );
  }

  /**
   * Serves requests on `subject`: the envelope kind picks the route, the route's return value is
   * the reply (kind 'reply'). A handler that throws replies `{ ok: false, reason }`.
   */
  serve(subject: string, routes: Record<string, RequestRoute>): void {
    this.subs.push(
      this.bus.subscribe(
        subject,
        async (env, msg) => {
          const route = routes[env.kind]!;
          const body = this.check(route.body, env, msg);
          if (!body.ok) {
            if (msg.reply) this.bus.reply(msg, REPLY_KIND, { ok: false, reason: `invalid ${env.kind} body: ${body.reason}` });
            return;
          }
          let reply: unknown;
          try {
            reply = await route.handle(body.value, env, msg);
          } catch (err) {
            reply = { ok: false, reason: err instanceof Error ? err.message : String(err) };
          }
          if (!msg.reply || this.bus.isClosed) return;
          try {
            await this.bus.replyPaced(msg, REPLY_KIND, reply);
          } catch (err) {
            // A reply that cannot go (larger than the run's message limit, say) must still end the
            // request: the asker hears why instead of waiting out its deadline.
            const reason = `${env.kind}: the reply could not be sent: ${err instanceof Error ? err.message : String(err)}`;
            this.bus.reply(msg, REPLY_KIND, { ok: false, reason });
          }
        },
        { kinds: Object.keys(routes) },
      ),
    );
  }

  /** Messages rejected so far, per reason (the bus counts envelope and body rejections alike). */
  rejected(): Record<string, number> {
    return this.bus.rejected;
  }

  /** Unsubscribes everything this inbox subscribed. */
  close(): void {
    for (const s of this.subs.splice(0)) s.unsubscribe();
  }

  private check<S extends z.ZodType>(
    schema: S,
    env: Envelope<unknown>,
    msg: BusMsg,
  ): { ok: true; value: z.output<S> } | { ok: false; reason: string } {
    const parsed = schema.safeParse(env.body);
    if (parsed.success) return { ok: true, value: parsed.data };
    const issue = parsed.error.issues[0]!;
    const reason = `${issue.path.join('.') || '(body)'}: ${issue.message}`;
    this.bus.reject(msg.subject, new MessageRejected('body', `${env.kind} from ${env.from}: ${reason}`));
    return { ok: false, reason };
  }
}

/**
 * Sends a request and validates the reply body; `signal` ends the wait early.
 * @throws the bus's errors (BusTimeout, NoResponders: retryable; the signal's reason), or Error when the reply body is invalid.
 */
export async function ask<S extends z.ZodType>(
  bus: Bus,
  subject: string,
  kind: string,
  body: unknown,
  reply: S,
  timeoutMs: number,
  signal?: AbortSignal,
  onProgress?: () => void,
): Promise<z.output<S>> {
  const env = await bus.request(subject, kind, body, { timeoutMs, kinds: [REPLY_KIND], signal, onProgress });
  const parsed = reply.safeParse(env.body);
  if (!parsed.success) throw new Error(`invalid reply to ${kind} on ${subject}: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}
