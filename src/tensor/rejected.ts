/**
 * Why a received message was refused. Receivers drop, count (per reason) and report rejected
 * messages; nothing that fails validation reaches a handler. 'generation': a step-scoped message
 * of another plan generation than the receiver's (a late message of an aborted attempt). 'peer':
 * sent by another device than the one the plan expects in that role. 'nonfinite': a gradient or
 * activation holding NaN or Infinity. 'stale': a step already committed or not yet started. 'duplicate': an envelope id a
 * subscription has already delivered (the same message twice). 'coordinator': a control request
 * of a coordinator that another one (a restarted coordinator, a higher epoch) has taken over from.
 */

export const REJECT_REASONS = [
  'version',
  'run',
  'kind',
  'malformed',
  'truncated',
  'oversized',
  'shape',
  'chunk',
  'checksum',
  'body',
  'generation',
  'duplicate',
  'peer',
  'nonfinite',
  'stale',
  'coordinator',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** A message failed validation. Never retryable: the same bytes fail the same way. */
export class MessageRejected extends Error {
  override name = 'MessageRejected';
  readonly retryable = false;
  constructor(
    readonly reason: RejectReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${reason}: ${message}`, options);
  }
}
