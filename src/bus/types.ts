/** What the bus's users write and see: connection options, message limits, handlers, events. */
import { MAX_MESSAGE_BYTES, type Envelope, type RejectReason } from '../tensor/index.ts';

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
