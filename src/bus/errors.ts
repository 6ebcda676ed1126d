/**
 * Typed bus errors. `retryable` says whether trying the same operation again can succeed; the
 * runtime's supervision and the coordinator's recovery decide on it.
 */
export { MessageRejected } from '../tensor/rejected.ts';

export abstract class BusError extends Error {
  abstract readonly retryable: boolean;
}

/** No reply before the deadline. */
export class BusTimeout extends BusError {
  override name = 'BusTimeout';
  readonly retryable = true;
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`no reply on ${subject} within ${timeoutMs} ms`, options);
  }
}

/** Nobody subscribes to the subject a request went to (yet: retry after the peer joins). */
export class NoResponders extends BusError {
  override name = 'NoResponders';
  readonly retryable = true;
  constructor(
    readonly subject: string,
    options?: { cause?: unknown },
  ) {
    super(`no responders on ${subject}`, options);
  }
}

/** A message cannot be sent in this form (e.g. over the reassembly limit). */
export class PayloadTooLarge extends BusError {
  override name = 'PayloadTooLarge';
  readonly retryable = false;
  constructor(
    readonly subject: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`message of ${bytes} bytes on ${subject} exceeds ${limit}`);
  }
}

/** The connection is closed; a new Bus must be connected. */
export class ConnectionClosed extends BusError {
  override name = 'ConnectionClosed';
  readonly retryable = false;
  constructor(message = 'bus connection is closed', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The server could not be reached within the connect deadline. */
export class ConnectFailed extends BusError {
  override name = 'ConnectFailed';
  readonly retryable = true;
  constructor(
    readonly servers: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot connect to NATS at ${servers}${options?.cause instanceof Error ? `: ${options.cause.message}` : ''}`, options);
  }
}

/** Any other failure reported by the NATS client or server. */
export class BusFailure extends BusError {
  override name = 'BusFailure';
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The bus error for what nats.js threw at a publish or subscribe on `subject` (`bytes`: what was sent). */
export function fromNatsError(err: unknown, subject: string, bytes: number, conn: { closed: boolean; maxPayload: number }): Error {
  const code = (err as { code?: string }).code;
  if (code === 'CONNECTION_CLOSED' || code === 'CONNECTION_DRAINING' || conn.closed) return new ConnectionClosed(undefined, { cause: err });
  if (code === 'MAX_PAYLOAD_EXCEEDED') return new PayloadTooLarge(subject, bytes, conn.maxPayload);
  return new BusFailure(`${subject}: ${(err as Error).message}`, false, { cause: err });
}
