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
  decodeEnvelope,
  encodeEnvelopeMessage,
  formatChunkHeader,
  parseChunkHeader,
  splitSegments,
  type EncodedMessage,
  MAX_MESSAGE_BYTES,
  MAX_NAME_CHARS,
  PROTOCOL_VERSION,
  Reassembler,
  REJECT_REASONS,
  MessageRejected,
  type Envelope,
  type RejectReason,
} from '../tensor/index.ts';
import { BusFailure, ConnectFailed, ConnectionClosed, NoResponders, PayloadTooLarge, BusTimeout } from './errors.ts';
import { subjects, type Subjects } from './subjects.ts';
import { CHAOS_ENV, FaultLayer, parseFaultRule, type FaultReport } from './faults.ts';
import { RecentIds } from './recent.ts';
import { seedAuthenticator } from './keys.ts';

export const CHUNK_HEADER = 'Charon-Chunk';
/** Room left in a chunk message for its NATS header block. */
const HEADER_ROOM = 1024;

export interface BusOptions {
  /** NATS server URL(s), e.g. 'nats://127.0.0.1:4222' */ servers: string | string[];
  /** this process's name: the envelope sender and the NATS connection name */ name: string;
  /**
   * The identity this connection speaks for in subjects (`charon.<run>.from.<identity>.`): a
   * device name (shared by a device's connections), `coordinator`, an observer. Default: `name`.
   */
  identity?: string;
  run: string;
  /**
   * The NATS user seed (nkey) this connection signs the server's challenge with, when the server
   * requires credentials (src/security/credentials.ts `readSeed` reads one from its 0600 file).
   */
  seed?: string;
  /**
   * Speak TLS and verify the server against this CA (the run's `tls/ca.pem`, src/security/certs.ts)
   * rather than the system's; a server it did not sign is refused. With `certFile`/`keyFile`, also
   * present this client certificate (a server with mutual TLS requires one).
   */
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  /** deadline for the first connection; default 5000 ms */ timeoutMs?: number;
  /** reconnect forever after a drop (default) or give up after this many attempts */ maxReconnectAttempts?: number;
  reconnectWaitMs?: number;
  /** budget and timeout for partial chunked transfers; largest whole message accepted */
  reassembly?: { maxBytes?: number; timeoutMs?: number; maxMessageBytes?: number };
  /** Install the fault layer steered over the run's chaos subject; default: `CHARON_CHAOS=1` in the environment. */
  chaos?: boolean;
}

/** What a connection accepts: see `Bus.limitMessages`. */
export interface MessageLimits {
  maxMessageBytes: number;
  reassemblyBytes: number;
}

/** What a connection accepts when nobody says otherwise. */
export const DEFAULT_MESSAGE_LIMITS: MessageLimits = { maxMessageBytes: MAX_MESSAGE_BYTES, reassemblyBytes: 512 * 1024 * 1024 };

export interface Meta {
  gen?: number;
  step?: number;
  mb?: number;
}

/** A received message, as handlers see it. */
export interface BusMsg {
  subject: string;
  /** the identity that sent it, read from the subject (`from.<sender>.`); what the server's permissions prove */
  sender?: string;
  reply?: string;
  bytes: number;
}

export type Handler<B> = (env: Envelope<B>, msg: BusMsg) => void | Promise<void>;

export interface SubscribeOptions {
  /** accepted kinds; others are rejected with reason 'kind' */ kinds?: readonly string[];
  /**
   * NATS queue group: each message goes to one member. NATS spreads the chunks of a message over
   * max_payload across members, so such messages cannot reach a queue group (their partial
   * transfers time out and are counted in `reassembly.dropped`).
   */
  queue?: string;
}

export interface BusSubscription {
  readonly subject: string;
  /** envelopes handed to the handler so far */ readonly delivered: number;
  unsubscribe(): void;
}

export interface RejectedReport {
  subject: string;
  reason: RejectReason;
  message: string;
}

export interface BusEvents {
  disconnect: { server: string };
  reconnect: { server: string };
  closed: { error?: Error };
  rejected: RejectedReport;
  /** a handler threw or rejected; the bus keeps delivering */
  error: { subject: string; error: unknown };
  /** the server refused a publish or subscription of this connection (its permissions) */
  denied: { operation: 'publish' | 'subscription'; subject: string };
}

type Listener<K extends keyof BusEvents> = (detail: BusEvents[K]) => void;

interface Pending {
  resolve(env: Envelope): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  subject: string;
  kinds?: readonly string[];
  detach?: () => void;
}

export class Bus {
  readonly subjects: Subjects;
  private readonly counts = Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<RejectReason, number>;
  private readonly listeners = new Map<keyof BusEvents, Set<(d: never) => void>>();
  private readonly reassembler: Reassembler;
  private maxMessageBytes: number;
  private readonly sweeper: NodeJS.Timeout;
  private msgCounter = 0;
  /**
   * Makes envelope ids unique across connections of the same name: a restarted device process
   * numbers its messages from 0 again, and those must not be taken for repeats of the old ones.
   */
  private readonly idPrefix: string;
  private subCounter = 0;
  private inbox?: { prefix: string; sub: Subscription };
  private readonly pending = new Map<string, Pending>();
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
    this.maxMessageBytes = opts.reassembly?.maxMessageBytes ?? MAX_MESSAGE_BYTES;
    const timeoutMs = opts.reassembly?.timeoutMs ?? 30_000;
    this.reassembler = new Reassembler({
      maxBytes: opts.reassembly?.maxBytes ?? DEFAULT_MESSAGE_LIMITS.reassemblyBytes,
      timeoutMs,
      maxMessageBytes: this.maxMessageBytes,
    });
    this.sweeper = setInterval(() => this.reassembler.sweep(), Math.max(100, timeoutMs / 2));
    this.sweeper.unref();
    if (opts.chaos ?? process.env[CHAOS_ENV] === '1') this.faults = this.listenForFaults();
    void this.watchStatus();
    void nc.closed().then((err) => {
      clearInterval(this.sweeper);
      for (const [token, p] of this.pending) this.settle(token, p).reject(new ConnectionClosed());
      this.emit('closed', err ? { error: err } : {});
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
    return {
      pendingBytes: this.reassembler.pendingBytes,
      pendingTransfers: this.reassembler.pendingTransfers,
      dropped: { ...this.reassembler.dropped },
      ...this.reassembler.limits,
    };
  }

  /**
   * Bounds what this connection accepts and sends from now on: the largest whole message and the
   * bytes all partial chunked transfers may hold together. A larger message is refused
   * ('oversized') before anything is allocated for it.
   */
  limitMessages(limits: MessageLimits): void {
    if (!(limits.maxMessageBytes > 0) || !(limits.reassemblyBytes > 0))
      throw new RangeError(`message limits: both must be positive, got ${JSON.stringify(limits)}`);
    this.maxMessageBytes = limits.maxMessageBytes;
    this.reassembler.setLimits({ maxBytes: limits.reassemblyBytes, maxMessageBytes: limits.maxMessageBytes });
  }
  get isClosed(): boolean {
    return this.nc.isClosed();
  }
  /** URL of the server this connection uses. */
  get server(): string {
    return this.nc.getServer();
  }

  /** Adds a listener; returns its remover. */
  on<K extends keyof BusEvents>(event: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener as (d: never) => void);
    return () => set!.delete(listener as (d: never) => void);
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
   * Sends a request and resolves with the first valid reply.
   * @throws BusTimeout (retryable) after `timeoutMs`; NoResponders (retryable) when nobody listens;
   * MessageRejected when the reply fails validation; ConnectionClosed; `signal`'s reason once it aborts.
   */
  request<B, R = unknown>(
    subject: string,
    kind: string,
    body: B,
    opts: { timeoutMs: number; meta?: Meta; kinds?: readonly string[]; signal?: AbortSignal },
  ): Promise<Envelope<R>> {
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const bytes = this.encode(kind, body, opts.meta ?? {});
    const inbox = this.requestInbox();
    const token = (this.subCounter++).toString(36);
    return new Promise<Envelope<R>>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(token, p).reject(new BusTimeout(subject, opts.timeoutMs)), opts.timeoutMs);
      const p: Pending = { resolve: resolve as (e: Envelope) => void, reject, timer, subject, kinds: opts.kinds };
      if (signal) {
        const onAbort = () => this.settle(token, p).reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        p.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.pending.set(token, p);
      try {
        this.send(subject, bytes, `${inbox}.${token}`);
      } catch (err) {
        this.settle(token, p).reject(err as Error);
      }
    });
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
          (r as Promise<void>).catch((error: unknown) => this.emit('error', { subject: m.subject, error }));
      } catch (error) {
        this.emit('error', { subject: m.subject, error });
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
    clearInterval(this.sweeper);
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
    if (msg.length > this.maxMessageBytes) throw new PayloadTooLarge(subject, msg.length, this.maxMessageBytes);
    if (msg.length <= this.maxPayload) {
      this.natsPublish(subject, msg.bytes(), { reply });
      return;
    }
    // Chunks are views on the encoded header pieces and on the tensors themselves: no copy here.
    for (const chunk of splitSegments(msg.segments(), this.maxPayload - HEADER_ROOM)) {
      const h = natsHeaders();
      h.set(CHUNK_HEADER, formatChunkHeader(chunk.header));
      this.natsPublish(subject, chunk.bytes, { reply, headers: h });
    }
  }

  /** Turns a NATS message into a validated envelope, or null (partial chunk, or rejected and counted). */
  private ingest(key: string, m: Msg, kinds: readonly string[] | undefined): Envelope | null {
    try {
      let bytes: Uint8Array | null = m.data;
      const chunkHeader = m.headers?.get(CHUNK_HEADER);
      if (chunkHeader) {
        const h = parseChunkHeader(chunkHeader);
        bytes = this.reassembler.add(`${key}/${h.transfer}`, h, m.data);
        if (!bytes) return null;
      }
      return decodeEnvelope(bytes, { run: this.run, kinds, maxBytes: this.maxMessageBytes });
    } catch (err) {
      const rejected =
        err instanceof MessageRejected ? err : new MessageRejected('malformed', String((err as Error).message), { cause: err });
      this.reject(m.subject, rejected);
      return null;
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
    this.emit('rejected', report);
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
      const p = this.pending.get(token);
      if (!p) return;
      if (m.headers?.code === 503) {
        this.settle(token, p).reject(new NoResponders(p.subject));
        return;
      }
      const chunkKey = `r${token}`;
      try {
        let bytes: Uint8Array | null = m.data;
        const ch = m.headers?.get(CHUNK_HEADER);
        if (ch) {
          const h = parseChunkHeader(ch);
          bytes = this.reassembler.add(`${chunkKey}/${h.transfer}`, h, m.data);
          if (!bytes) return;
        }
        const env = decodeEnvelope(bytes, { run: this.run, kinds: p.kinds, maxBytes: this.maxMessageBytes });
        this.settle(token, p).resolve(env);
      } catch (err) {
        const rejected =
          err instanceof MessageRejected ? err : new MessageRejected('malformed', String((err as Error).message), { cause: err });
        this.reject(m.subject, rejected);
        this.settle(token, p).reject(rejected);
      }
    });
    this.inbox = { prefix, sub };
    return prefix;
  }

  private settle(token: string, p: Pending): Pending {
    clearTimeout(p.timer);
    p.detach?.();
    this.pending.delete(token);
    return p;
  }

  private natsPublish(subject: string, bytes: Uint8Array, opts: { reply?: string; headers?: MsgHdrs }): void {
    try {
      this.nc.publish(subject, bytes, opts.reply || opts.headers ? { reply: opts.reply, headers: opts.headers } : undefined);
    } catch (err) {
      throw this.translate(err, subject, bytes.length);
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
      throw this.translate(err, subject, 0);
    }
  }

  private translate(err: unknown, subject: string, bytes: number): Error {
    const code = (err as { code?: string }).code;
    if (code === 'CONNECTION_CLOSED' || code === 'CONNECTION_DRAINING' || this.nc.isClosed())
      return new ConnectionClosed(undefined, { cause: err });
    if (code === 'MAX_PAYLOAD_EXCEEDED') return new PayloadTooLarge(subject, bytes, this.maxPayload);
    return new BusFailure(`${subject}: ${(err as Error).message}`, false, { cause: err });
  }

  /** The fault layer of a chaos-mode process: rules arrive on the chaos subject, reports leave on it. */
  private listenForFaults(): FaultLayer {
    const subject = this.subjects.chaos('rule');
    const layer = new FaultLayer(this.name, this.subjects.prefix, (r: FaultReport) => {
      if (!this.nc.isClosed()) this.publish(this.subjects.chaos('report'), 'chaos-report', r);
    });
    const key = `s${this.subCounter++}`;
    // Past the layer itself: a rule on '>' must not drop the rules that follow it.
    this.natsSubscribe(
      subject,
      undefined,
      (m) => {
        const env = this.ingest(key, m, ['chaos-rule']);
        if (!env) return;
        const rule = parseFaultRule(env.body);
        if (typeof rule === 'string') this.reject(m.subject, new MessageRejected('body', `chaos-rule from ${env.from}: ${rule}`));
        else layer.arm(rule);
      },
      null,
    );
    return layer;
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') {
        this.connected = s.type === 'reconnect';
        this.emit(s.type, { server: String(s.data) });
      }
      const denied = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (s.type === 'error' && denied)
        this.emit('denied', { operation: denied.operation === 'publish' ? 'publish' : 'subscription', subject: denied.subject });
    }
  }

  private emit<K extends keyof BusEvents>(event: K, detail: BusEvents[K]): void {
    for (const l of this.listeners.get(event) ?? []) {
      try {
        (l as Listener<K>)(detail);
      } catch {
        /* a listener's failure is its own */
      }
    }
  }
}
