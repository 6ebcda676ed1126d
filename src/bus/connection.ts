/**
 * The bus: one NATS connection per process, speaking validated envelopes. Publish/subscribe and
 * request/reply carry `Envelope`s; messages above the server's max_payload travel in chunks
 * (NATS header `Charon-Chunk`) and are reassembled before decoding. A received message that fails
 * validation is dropped, counted per reason (`bus.rejected`) and reported on the run's `events`
 * subject; it never reaches a handler and never throws into one. A subscription delivers an
 * envelope id at most once: a repeated one is rejected as 'duplicate'. In chaos mode only
 * (faults.ts), received messages first pass the fault layer.
 */
import { connect, createInbox, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from 'nats';
import {
  encodeEnvelopeMessage,
  formatChunkHeader,
  segmentChunks,
  type EncodedMessage,
  MAX_NAME_CHARS,
  PROTOCOL_VERSION,
  REJECT_REASONS,
  MessageRejected,
  type Envelope,
  type RejectReason,
} from '../tensor/index.ts';
import { BusFailure, ConnectFailed, ConnectionClosed, fromNatsError, PayloadTooLarge } from './errors.ts';
import { type Listener, Listeners } from './listeners.ts';
import { subjects, type Subjects } from './subjects.ts';
import { CHAOS_ENV, type FaultLayer } from './faults.ts';
import { listenForFaults } from './fault-rules.ts';
import { CHUNK_HEADER, Intake } from './intake.ts';
import { PendingRequests } from './requests.ts';
import { RecentIds } from './recent.ts';
import { seedAuthenticator } from './keys.ts';
import type {
  BusEvents,
  BusMsg,
  BusOptions,
  BusSubscription,
  Handler,
  MessageLimits,
  Meta,
  RejectedReport,
  SubscribeOptions,
} from './types.ts';

/** Room left in a chunk message for its NATS header block. */
const HEADER_ROOM = 1024;
/** A paced reply lets the event loop run after about this many bytes of chunks. */
const PACE_BYTES = 16 << 20;

export class Bus {
  readonly subjects: Subjects;
  private readonly counts = Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<RejectReason, number>;
  private readonly listeners = new Listeners<BusEvents>();
  private readonly intake: Intake;
  private msgCounter = 0;
  /**
   * Makes envelope ids unique across connections of the same name: a restarted device process
   * numbers its messages from 0 again, and those must not be taken for repeats of the old ones.
   */
  private readonly idPrefix: string;
  private subCounter = 0;
  private inbox?: { prefix: string; sub: Subscription };
  private readonly requests = new PendingRequests();
  private connected = true;
  private readonly faults?: FaultLayer;

  private constructor(
    private readonly nc: NatsConnection,
    readonly name: string,
    readonly run: string,
    opts: BusOptions,
  ) {
    this.subjects = subjects(run, opts.identity ?? name);
    this.idPrefix = `${name.slice(0, 200)}-${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
    this.intake = new Intake(run, opts.reassembly);
    if (opts.chaos ?? process.env[CHAOS_ENV] === '1') this.faults = this.listenForFaults();
    void this.watchStatus();
    void nc.closed().then((err) => {
      this.intake.close();
      this.requests.failAll(() => new ConnectionClosed());
      this.listeners.emit('closed', err ? { error: err } : {});
    });
  }

  /**
   * Connects (one connection per process is the intent; nothing enforces it).
   * @throws InvalidSubjectToken for a bad run name, TypeError for a bad bus name,
   * ConnectFailed (retryable) when no server answers within `timeoutMs`.
   */
  static async connect(opts: BusOptions): Promise<Bus> {
    subjects(opts.run, 'x'); // validates the run token before any network work
    if (typeof opts.name !== 'string' || opts.name.length === 0 || opts.name.length > MAX_NAME_CHARS) {
      throw new TypeError(`bus name must be a string of 1..${MAX_NAME_CHARS} characters, got '${String(opts.name)}'`);
    }
    subjects(opts.run, opts.identity ?? opts.name);
    const servers = Array.isArray(opts.servers) ? opts.servers : [opts.servers];
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers,
        name: opts.name,
        inboxPrefix: subjects(opts.run, opts.identity ?? opts.name).inbox(),
        ...(opts.seed ? { authenticator: seedAuthenticator(opts.seed) } : {}),
        ...(opts.tls ? { tls: { ...opts.tls } } : {}),
        timeout: opts.timeoutMs ?? 5000,
        maxReconnectAttempts: opts.maxReconnectAttempts ?? -1,
        reconnectTimeWait: opts.reconnectWaitMs ?? 250,
      });
    } catch (err) {
      throw new ConnectFailed(servers.join(','), { cause: err });
    }
    const bus = new Bus(nc, opts.name, opts.run, opts);
    // The fault layer listens before connect resolves: rules sent from then on reach it.
    if (bus.faults) await nc.flush();
    return bus;
  }

  /** The server's max_payload in bytes; larger messages are chunked. */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }
  /** Rejected received messages, per reason (a copy). */
  get rejected(): Record<RejectReason, number> {
    return { ...this.counts };
  }
  /** Partial chunked transfers held now, and those dropped (timeout / memory cap). */
  get reassembly() {
    return this.intake.stats;
  }

  /**
   * Bounds what this connection accepts and sends from now on: the largest whole message and the
   * bytes all partial chunked transfers may hold together. A larger message is refused
   * ('oversized') before anything is allocated for it.
   */
  limitMessages(limits: MessageLimits): void {
    this.intake.limit(limits);
  }
  private get connState() {
    return { closed: this.nc.isClosed(), maxPayload: this.maxPayload };
  }
  get isClosed(): boolean {
    return this.nc.isClosed();
  }
  /** URL of the server this connection uses. */
  get server(): string {
    return this.nc.getServer();
  }

  /** Adds a listener; returns its remover. */
  on<K extends keyof BusEvents>(event: K, listener: Listener<BusEvents, K>): () => void {
    return this.listeners.on(event, listener);
  }

  /**
   * Sends an envelope of `kind`; chunked when it exceeds max_payload. Buffered: `flush()` waits
   * until the server has it. As with nats.js payloads, large tensors in `body` are referenced,
   * not copied: do not modify them before the next tick. @throws ConnectionClosed, PayloadTooLarge (over maxMessageBytes).
   */
  publish<B>(subject: string, kind: string, body: B, meta: Meta = {}): void {
    this.send(subject, this.encode(kind, body, meta), undefined);
  }

  /** Replies to a request message `msg` (chunked like publish when large). */
  reply<B>(msg: BusMsg, kind: string, body: B, meta: Meta = {}): void {
    if (!msg.reply) throw new BusFailure(`message on ${msg.subject} has no reply subject`, false);
    this.send(msg.reply, this.encode(kind, body, meta), undefined);
  }

  /**
   * reply(), letting the event loop run between chunks of a large reply (a model's state or
   * gradients: hundreds of MB): its chunks are made and sent a few at a time, so this process's
   * timers (its heartbeats) and socket keep going while it sends. Resolves once every chunk is
   * handed to the client. Only replies are paced: each answers its own request, so no order
   * between messages depends on it.
   */
  async replyPaced<B>(msg: BusMsg, kind: string, body: B, meta: Meta = {}): Promise<void> {
    if (!msg.reply) throw new BusFailure(`message on ${msg.subject} has no reply subject`, false);
    let sinceYield = 0;
    for (const bytes of this.sending(msg.reply, this.encode(kind, body, meta), undefined)) {
      sinceYield += bytes;
      if (sinceYield >= PACE_BYTES) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
  }

  /**
   * Sends a request and resolves with the first valid reply.
   * @throws BusTimeout (retryable) after `timeoutMs`; NoResponders (retryable) when nobody listens;
   * MessageRejected when the reply fails validation; ConnectionClosed; `signal`'s reason once it aborts.
   */
  request<B, R = unknown>(
    subject: string,
    kind: string,
    body: B,
    opts: { timeoutMs: number; meta?: Meta; kinds?: readonly string[]; signal?: AbortSignal; onProgress?: () => void },
  ): Promise<Envelope<R>> {
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);
    const bytes = this.encode(kind, body, opts.meta ?? {});
    const inbox = this.requestInbox();
    const token = (this.subCounter++).toString(36);
    return this.requests.open<R>(token, subject, opts, () => this.send(subject, bytes, `${inbox}.${token}`));
  }

  /**
   * Subscribes; the handler gets only decoded, validated envelopes (chunked ones reassembled).
   * A handler that throws or rejects is reported as an 'error' event; delivery continues.
   */
  subscribe<B = unknown>(subject: string, handler: Handler<B>, opts: SubscribeOptions = {}): BusSubscription {
    const key = `s${this.subCounter++}`;
    let delivered = 0;
    const seen = new RecentIds();
    const sub = this.natsSubscribe(subject, opts.queue, (m) => {
      const env = this.ingest(key, m, opts.kinds);
      if (!env) return;
      if (!seen.add(env.id)) {
        this.reject(
          m.subject,
          new MessageRejected('duplicate', `${env.kind} ${env.id} from ${env.from} (step ${env.step}) delivered before`),
        );
        return;
      }
      delivered++;
      const info: BusMsg = {
        subject: m.subject,
        sender: this.subjects.senderOf(m.subject),
        reply: m.reply || undefined,
        bytes: m.data.length,
      };
      try {
        const r = handler(env as Envelope<B>, info);
        if (r && typeof (r as Promise<void>).catch === 'function')
          (r as Promise<void>).catch((error: unknown) => this.listeners.emit('error', { subject: m.subject, error }));
      } catch (error) {
        this.listeners.emit('error', { subject: m.subject, error });
      }
    });
    return {
      subject,
      get delivered() {
        return delivered;
      },
      unsubscribe: () => sub.unsubscribe(),
    };
  }

  /** Raw bytes, no envelope (benchmarks' baseline and fault injection only). Not chunked. */
  publishBytes(subject: string, bytes: Uint8Array, headers?: Record<string, string>): void {
    let h: MsgHdrs | undefined;
    if (headers) {
      h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
    }
    this.natsPublish(subject, bytes, { headers: h });
  }

  /** Raw bytes as received (benchmarks' baseline only): no decoding, no validation. */
  subscribeBytes(subject: string, handler: (bytes: Uint8Array) => void): BusSubscription {
    let delivered = 0;
    const sub = this.natsSubscribe(subject, undefined, (m) => {
      delivered++;
      handler(m.data);
    });
    return {
      subject,
      get delivered() {
        return delivered;
      },
      unsubscribe: () => sub.unsubscribe(),
    };
  }

  /** Resolves once the server has processed everything sent so far. */
  async flush(): Promise<void> {
    if (this.nc.isClosed()) throw new ConnectionClosed();
    await this.nc.flush();
  }

  /**
   * Drains subscriptions and closes the connection; pending requests fail with ConnectionClosed.
   * Idempotent. With the server gone (e.g. a Ctrl-C reached it first) there is nothing to drain:
   * nats.js's drain() then resolves with the connection still open and reconnecting, and its
   * timers and those of pending requests would keep the process alive, so the connection is
   * closed outright.
   */
  async close(): Promise<void> {
    this.intake.close();
    this.faults?.close();
    if (this.nc.isClosed()) return;
    if (this.connected) await this.nc.drain().catch(() => {});
    if (!this.nc.isClosed()) await this.nc.close();
  }

  private encode<B>(kind: string, body: B, meta: Meta): EncodedMessage {
    const env: Envelope<B> = {
      v: PROTOCOL_VERSION,
      run: this.run,
      from: this.name,
      gen: meta.gen ?? 0,
      step: meta.step ?? 0,
      mb: meta.mb ?? 0,
      id: `${this.idPrefix}-${(this.msgCounter++).toString(36)}`,
      kind,
      body,
    };
    return encodeEnvelopeMessage(env);
  }

  private send(subject: string, msg: EncodedMessage, reply: string | undefined): void {
    for (const _ of this.sending(subject, msg, reply));
  }

  /**
   * Publishes `msg`, whole or in chunks, one message per step of the iteration (yielding its
   * bytes): `send` runs it through at once, `replyPaced` lets the event loop run in between.
   * Each chunk is made (and checksummed) only when its turn comes.
   */
  private *sending(subject: string, msg: EncodedMessage, reply: string | undefined): Generator<number> {
    const max = this.intake.maxMessageBytes;
    if (msg.length > max) throw new PayloadTooLarge(subject, msg.length, max);
    if (msg.length <= this.maxPayload) {
      this.natsPublish(subject, msg.bytes(), { reply });
      yield msg.length;
      return;
    }
    // Chunks inside one piece are views on it (a tensor's own bytes): only spanning ones are copied.
    for (const chunk of segmentChunks(msg.segments(), this.maxPayload - HEADER_ROOM)) {
      const h = natsHeaders();
      h.set(CHUNK_HEADER, formatChunkHeader(chunk.header));
      this.natsPublish(subject, chunk.bytes, { reply, headers: h });
      yield chunk.bytes.length;
    }
  }

  /** Turns a NATS message into a validated envelope, or null (partial chunk, or rejected and counted). */
  private ingest(key: string, m: Msg, kinds: readonly string[] | undefined): Envelope | null {
    try {
      return this.decode(key, m, kinds);
    } catch {
      return null;
    }
  }

  /** As `Intake.decode`; a rejection is counted and reported before it is thrown. */
  private decode(key: string, m: Msg, kinds: readonly string[] | undefined): Envelope | null {
    try {
      return this.intake.decode(key, m, kinds);
    } catch (err) {
      this.reject(m.subject, err as MessageRejected);
      throw err;
    }
  }

  /**
   * Counts a rejected message and reports it (local 'rejected' event + kind 'rejected' on the run's
   * `events` subject). Layers above the bus that validate bodies report through here too, so every
   * rejection has one count and one event shape.
   */
  reject(subject: string, err: MessageRejected): void {
    this.counts[err.reason]++;
    const report: RejectedReport = { subject, reason: err.reason, message: err.message };
    this.listeners.emit('rejected', report);
    const events = this.subjects.events();
    if (subject !== events && !this.nc.isClosed()) {
      try {
        this.publish(events, 'rejected', report);
      } catch {
        /* the count and the local event remain */
      }
    }
  }

  private requestInbox(): string {
    if (this.inbox) return this.inbox.prefix;
    const prefix = createInbox(this.subjects.inbox());
    const sub = this.natsSubscribe(`${prefix}.*`, undefined, (m) => {
      const token = m.subject.slice(prefix.length + 1);
      this.requests.answer(token, m, (kinds) => this.decode(`r${token}`, m, kinds));
    });
    this.inbox = { prefix, sub };
    return prefix;
  }

  private natsPublish(subject: string, bytes: Uint8Array, opts: { reply?: string; headers?: MsgHdrs }): void {
    try {
      this.nc.publish(subject, bytes, opts.reply || opts.headers ? { reply: opts.reply, headers: opts.headers } : undefined);
    } catch (err) {
      throw fromNatsError(err, subject, bytes.length, this.connState);
    }
  }

  private natsSubscribe(
    subject: string,
    queue: string | undefined,
    callback: (m: Msg) => void,
    faults: FaultLayer | null = this.faults ?? null,
  ): Subscription {
    try {
      return this.nc.subscribe(subject, {
        queue,
        callback: (err, m) => {
          if (err) return;
          if (faults) faults.deliver(m.subject, () => callback(m));
          else callback(m);
        },
      });
    } catch (err) {
      throw fromNatsError(err, subject, 0, this.connState);
    }
  }

  private listenForFaults(): FaultLayer {
    return listenForFaults(this.name, this.subjects, {
      report: (subject, r) => {
        if (!this.nc.isClosed()) this.publish(subject, 'chaos-report', r);
      },
      receive: (subject, kinds, handle) => {
        const key = `s${this.subCounter++}`;
        this.natsSubscribe(
          subject,
          undefined,
          (m) => {
            const env = this.ingest(key, m, kinds);
            if (env) handle(env, m.subject);
          },
          null,
        );
      },
      refuse: (subject, err) => this.reject(subject, err),
    });
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') {
        this.connected = s.type === 'reconnect';
        this.listeners.emit(s.type, { server: String(s.data) });
      }
      const denied = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (s.type === 'error' && denied)
        this.listeners.emit('denied', { operation: denied.operation === 'publish' ? 'publish' : 'subscription', subject: denied.subject });
    }
  }
}
