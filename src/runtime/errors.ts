/**
 * Errors across process and thread boundaries. A failure travels as `{code, message, retryable,
 * detail}` (a control reply, a compute worker's answer) and is rebuilt on the other side as the
 * same class, so the coordinator can tell a retryable failure (a timeout, an aborted step, a lost
 * worker) from a fatal one (a plan that fits nowhere, a corrupt checkpoint) by `instanceof` or
 * `retryable` instead of by parsing strings.
 */
import { z } from 'zod';
import { BusFailure, BusTimeout, ConnectFailed, ConnectionClosed, MessageRejected, NoResponders, PayloadTooLarge } from '../bus/errors.ts';
import { BackendError, ModelLoadError } from '../model/errors.ts';
import { ProfileError } from '../plan/profile.ts';
import { InfeasiblePlanError } from '../plan/planner.ts';
import { CheckpointError } from '../train/checkpoint.ts';
import { DataError } from '../train/data.ts';

export const wireError = z.strictObject({
  code: z.string().min(1).max(64),
  message: z.string().max(16_384),
  retryable: z.boolean(),
  detail: z.record(z.string(), z.unknown()).optional(),
});
export type WireError = z.infer<typeof wireError>;

/** A step in flight was aborted on request; running it again from the committed state can succeed. */
export class StepAborted extends Error {
  override name = 'StepAborted';
  readonly retryable = true;
  constructor(
    readonly step: number,
    reason = 'aborted',
  ) {
    super(`step ${step} ${reason}`);
  }
}

/** A device's compute worker ended (crashed, out of memory, terminated) while work was asked of it. */
export class WorkerExited extends Error {
  override name = 'WorkerExited';
  readonly retryable = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A request that the receiver's machine cannot take in its current state (e.g. a step before assign). */
export class WrongState extends Error {
  override name = 'WrongState';
  readonly retryable = false;
  constructor(
    readonly state: string,
    readonly request: string,
  ) {
    super(`cannot ${request} while ${state}`);
  }
}

/** A failure whose class this side does not know: code, message and retryable still arrive intact. */
export class RemoteError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    readonly detail: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = code;
  }
}

type ErrorClass = abstract new (...args: never[]) => Error;
const classes = new Map<string, ErrorClass>();

/** Lets errors of `cls` (named `code`, by default the class's `name` field) cross as themselves. */
export function registerWireError(code: string, cls: ErrorClass): void {
  classes.set(code, cls);
}

for (const [code, cls] of Object.entries({
  BusTimeout,
  NoResponders,
  PayloadTooLarge,
  ConnectionClosed,
  ConnectFailed,
  BusFailure,
  MessageRejected,
  BackendError,
  ModelLoadError,
  ProfileError,
  InfeasiblePlanError,
  CheckpointError,
  DataError,
  StepAborted,
  WorkerExited,
  WrongState,
} satisfies Record<string, ErrorClass>))
  registerWireError(code, cls);

const RESERVED = new Set(['name', 'message', 'stack', 'cause', 'retryable']);

/** The wire form of `err`; plain-data own fields (a subject, a step, the planner's lines) go in `detail`. */
export function toWire(err: unknown): WireError {
  if (!(err instanceof Error)) return { code: 'Error', message: String(err), retryable: false };
  const detail: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err)) {
    if (RESERVED.has(k) || v === undefined || typeof v === 'function') continue;
    if (isPlain(v)) detail[k] = v;
  }
  const code = err instanceof RemoteError ? err.code : err.name || 'Error';
  const retryable = (err as { retryable?: unknown }).retryable === true;
  return { code, message: err.message, retryable, ...(Object.keys(detail).length ? { detail } : {}) };
}

/**
 * The error `w` describes, as an instance of its registered class (constructor not run: fields
 * come from `detail`), else a RemoteError. `context` prefixes the message (e.g. "device d1: step").
 */
export function fromWire(w: WireError, context?: string): Error {
  const message = context ? `${context}: ${w.message}` : w.message;
  const cls = classes.get(w.code);
  if (!cls) return new RemoteError(w.code, message, w.retryable, w.detail);
  const err = Object.create(cls.prototype) as Error & Record<string, unknown>;
  Object.assign(err, w.detail ?? {});
  Object.defineProperty(err, 'message', { value: message, writable: true, configurable: true });
  Object.defineProperty(err, 'name', { value: w.code, writable: true, configurable: true });
  Object.defineProperty(err, 'retryable', { value: w.retryable, writable: true, configurable: true });
  Object.defineProperty(err, 'stack', { value: `${w.code}: ${message}\n    at (remote)`, writable: true, configurable: true });
  return err;
}

/** Whether `err` says that trying again can succeed (false for errors that do not say). */
export function isRetryable(err: unknown): boolean {
  return err instanceof Error && (err as { retryable?: unknown }).retryable === true;
}

function isPlain(v: unknown, depth = 0): boolean {
  if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) return true;
  if (depth > 3) return false;
  if (Array.isArray(v)) return v.length <= 1024 && v.every((x) => isPlain(x, depth + 1));
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype)
    return Object.values(v as object).every((x) => isPlain(x, depth + 1));
  return false;
}
