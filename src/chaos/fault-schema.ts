/**
 * The fault schedule's schema (**contract**, documented in the README "Chaos"): a list of faults,
 * each fired once at a point of the run. It is the value of a topology's `chaos:` section and the
 * whole content of a `charon chaos --faults FILE`. Every field a kind does not use is refused.
 */
import { z } from 'zod';

export const FAULT_KINDS = ['kill', 'stop', 'term', 'join', 'nats-restart', 'coordinator-kill', 'drop', 'delay', 'duplicate'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Subject patterns relative to `charon.<run>.`: tokens of letters, digits, '-', '_', or the wildcards '*' and '>'. */
export const SUBJECT_PATTERN = /^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?$|^>$/;

const positiveInt = z.number().int().positive();

const at = z
  .strictObject({
    /** The global step (1-based) in flight: fired as the step before it is done (step 1: when training starts). */
    step: positiveInt.optional(),
    /** Seconds after training started (the first deployment). */
    seconds: z.number().nonnegative().optional(),
    /** With `step`: the step-th step of this epoch. */
    epoch: positiveInt.optional(),
  })
  .refine(
    (a) => (a.seconds !== undefined) !== (a.step !== undefined) && (a.epoch === undefined || a.step !== undefined),
    'give exactly one of { step: N }, { seconds: S } or { epoch: E, step: N }',
  );

/** Which optional fields each kind needs (true), may have (false) or refuses (absent). */
const FIELDS: Record<FaultKind, Partial<Record<'device' | 'subject' | 'durationMs' | 'delayMs' | 'probability', boolean>>> = {
  kill: { device: true },
  stop: { device: true, durationMs: true },
  term: { device: true },
  join: { device: true },
  'nats-restart': { durationMs: false },
  'coordinator-kill': {},
  drop: { subject: true, durationMs: true, probability: false },
  delay: { subject: true, durationMs: true, delayMs: true, probability: false },
  duplicate: { subject: true, durationMs: true, probability: false },
};

export const faultSchema = z
  .strictObject({
    at,
    kind: z.enum(FAULT_KINDS),
    /** kill / stop / term: a device of the topology; join: the name the new device process takes. */
    device: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/, 'must be letters, digits, "-" or "_"')
      .optional(),
    /** drop / delay / duplicate: received messages on subjects matching this pattern. */
    subject: z.string().regex(SUBJECT_PATTERN, 'must be a subject pattern relative to charon.<run>. (tokens, * or a final >)').optional(),
    /** stop: how long the process stays stopped; nats-restart: how long the server stays down (default 0); message faults: how long they last. */
    durationMs: positiveInt.optional(),
    /** delay: how long each hit message is held. */
    delayMs: positiveInt.optional(),
    /** Message faults: the chance that a matching message is hit (default 1). */
    probability: z.number().gt(0).lte(1).optional(),
  })
  .superRefine((f, ctx) => {
    const fields = FIELDS[f.kind];
    for (const k of ['device', 'subject', 'durationMs', 'delayMs', 'probability'] as const) {
      if (fields[k] === true && f[k] === undefined) ctx.addIssue({ code: 'custom', path: [k], message: `is required for kind ${f.kind}` });
      if (fields[k] === undefined && f[k] !== undefined)
        ctx.addIssue({ code: 'custom', path: [k], message: `is not used by kind ${f.kind}: remove it` });
    }
  });

export const faultListSchema = z.array(faultSchema);

export type FaultSpec = z.output<typeof faultSchema>;

/** Kinds that act on a device the topology lists. */
export const DEVICE_FAULTS: readonly FaultKind[] = ['kill', 'stop', 'term'];

/** Reports each fault whose device the topology does not list (or, for join, a name it cannot take). */
export function checkFaultDevices(
  faults: readonly FaultSpec[],
  devices: readonly string[],
  issue: (index: number, field: string, message: string) => void,
): void {
  faults.forEach((f, i) => {
    if (f.device === undefined) return;
    if (DEVICE_FAULTS.includes(f.kind) && !devices.includes(f.device))
      issue(i, 'device', `no device "${f.device}" in the topology (devices: ${devices.join(', ')})`);
  });
}
