/**
 * The envelope every bus message carries, and its validating decoder. Nothing a receiver uses
 * comes out of `decodeEnvelope` unchecked: version, run, field types and sizes, and every tensor's
 * shape x dtype against its byte length (checked while unpacking).
 */
import { encodeMessage, type EncodedMessage, unpackValue } from './codec.ts';
import { MessageRejected } from './rejected.ts';
import { checkMsgpack } from './msgpack-guard.ts';

/** Bumped whenever the wire format changes incompatibly. */
export const PROTOCOL_VERSION = 2;
/** Largest encoded message accepted by default (after chunk reassembly). */
export const MAX_MESSAGE_BYTES = 1 << 30;
/** Longest run, sender, id or kind string. */
export const MAX_NAME_CHARS = 256;

export interface Envelope<B = unknown> {
  /** protocol version */ v: number;
  /** run id */ run: string;
  /** sender (device or actor name) */ from: string;
  /** plan generation (0 where not applicable): grows at every re-plan, so late messages of an aborted attempt are told apart */ gen: number;
  /** training step (0 where not applicable) */ step: number;
  /** micro-batch index (0 where not applicable) */ mb: number;
  /** message id, unique per sender */ id: string;
  /** message type, e.g. 'hb', 'join', 'fwd' */ kind: string;
  body: B;
}

export interface EnvelopeExpectation {
  run: string;
  /** When given, any other kind is rejected with reason 'kind'. */
  kinds?: readonly string[];
  maxBytes?: number;
}

const KEYS = ['v', 'run', 'from', 'gen', 'step', 'mb', 'id', 'kind', 'body'];

/** Encodes an envelope (body may hold WireTensors anywhere). @throws TypeError on an invalid envelope. */
export function encodeEnvelope(env: Envelope): Uint8Array {
  return encodeEnvelopeMessage(env).bytes();
}

/** Like encodeEnvelope, but large tensors are referenced in place (see EncodedMessage). */
export function encodeEnvelopeMessage(env: Envelope): EncodedMessage {
  const problem = checkFields(env as unknown as Record<string, unknown>);
  if (problem) throw new TypeError(`invalid envelope: ${problem}`);
  return encodeMessage({
    v: env.v,
    run: env.run,
    from: env.from,
    gen: env.gen,
    step: env.step,
    mb: env.mb,
    id: env.id,
    kind: env.kind,
    body: env.body,
  });
}

/**
 * Decodes and validates. @throws MessageRejected with reason 'oversized' | 'truncated' |
 * 'malformed' | 'shape' | 'version' | 'run' | 'kind'; never returns a partly valid envelope.
 */
export function decodeEnvelope<B = unknown>(bytes: Uint8Array, expect: EnvelopeExpectation): Envelope<B> {
  const max = expect.maxBytes ?? MAX_MESSAGE_BYTES;
  if (!(bytes instanceof Uint8Array)) throw new MessageRejected('malformed', 'message is not bytes');
  if (bytes.length > max) throw new MessageRejected('oversized', `message of ${bytes.length} bytes exceeds ${max}`);
  if (bytes.length === 0) throw new MessageRejected('truncated', 'empty message');
  let value: unknown;
  try {
    checkMsgpack(bytes);
    value = unpackValue(bytes);
  } catch (err) {
    if (err instanceof MessageRejected) throw err;
    if ((err as { incomplete?: boolean }).incomplete || /end of|unexpected end/i.test(String((err as Error).message))) {
      throw new MessageRejected('truncated', `message ends early (${bytes.length} bytes)`, { cause: err });
    }
    throw new MessageRejected('malformed', `not a msgpack envelope: ${(err as Error).message}`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new MessageRejected('malformed', 'envelope is not a map');
  const rec = value as Record<string, unknown>;
  if (rec.v !== PROTOCOL_VERSION) throw new MessageRejected('version', `protocol version ${String(rec.v)}, expected ${PROTOCOL_VERSION}`);
  const problem = checkFields(rec);
  if (problem) throw new MessageRejected('malformed', problem);
  if (rec.run !== expect.run) throw new MessageRejected('run', `run '${String(rec.run)}', expected '${expect.run}'`);
  if (expect.kinds && !expect.kinds.includes(rec.kind as string)) {
    throw new MessageRejected('kind', `kind '${String(rec.kind)}' not among ${expect.kinds.join(', ')}`);
  }
  return rec as unknown as Envelope<B>;
}

function checkFields(rec: Record<string, unknown>): string | null {
  for (const k of Object.keys(rec)) if (!KEYS.includes(k)) return `unknown field '${k}'`;
  if (!('body' in rec)) return `missing field 'body'`;
  if (!Number.isSafeInteger(rec.v)) return `field 'v' must be an integer`;
  for (const k of ['run', 'from', 'id', 'kind']) {
    const s = rec[k];
    if (typeof s !== 'string' || s.length === 0 || s.length > MAX_NAME_CHARS)
      return `field '${k}' must be a string of 1..${MAX_NAME_CHARS} chars`;
  }
  for (const k of ['gen', 'step', 'mb']) {
    const n = rec[k];
    if (!Number.isSafeInteger(n) || (n as number) < 0) return `field '${k}' must be a non-negative integer`;
  }
  return null;
}
