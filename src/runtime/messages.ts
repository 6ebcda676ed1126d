/**
 * Bodies of the runtime's messages (**contract**: the wire vocabulary shared by the device actor,
 * the coordinator and `charon status`). The envelope (version, run, sender, id, kind) is checked by
 * the bus; these schemas check the body, so a handler only ever sees a well-formed body.
 *
 * Requests to the coordinator all go to `coord.join`, told apart by envelope kind:
 * 'join' | 'profile' | 'leave' | 'status'. Heartbeats are kind 'hb' on `dev.<device>.hb`,
 * control requests are kind 'ctl' on `dev.<device>.ctl`, run events kind 'event' on `events`.
 */
import { z } from 'zod';
import type { StageSpec } from '../engine/stage-setup.ts';
import { isPresetName } from '../model/presets.ts';
import { SUBJECT_SAFE } from '../topology/schema.ts';
import { wireError } from './errors.ts';

const name = z.string().regex(SUBJECT_SAFE).max(64);
const count = z.number().int().nonnegative();

/** A device introduces itself (state `registering`). Re-sent after a reconnect; idempotent per (device, pid, host). */
export const joinRequest = z.strictObject({
  device: name,
  backend: z.string().min(1).max(64),
  /** The budget the device offers (`--memory-mb`); null: the topology's figure for it applies. */
  memoryMb: z.number().positive().nullable(),
  pid: z.number().int().positive(),
  host: z.string().min(1).max(256),
  slowdown: z.number().min(1),
  bandwidthMbps: z.number().positive().nullable(),
});
export type JoinRequest = z.infer<typeof joinRequest>;

export const joinReply = z.discriminatedUnion('ok', [
  z.strictObject({
    ok: z.literal(true),
    role: z.literal('worker'),
    heartbeatMs: z.number().positive(),
    lostAfterMs: z.number().positive(),
    /** The largest message the run can send and the reassembly budget: the device accepts no more. */
    limits: z.strictObject({ maxMessageBytes: z.number().int().positive(), reassemblyBytes: z.number().int().positive() }).optional(),
    /** The run's work to time while profiling (src/engine/probe.ts); absent: the matmul rate alone. */
    probe: z
      .strictObject({
        model: z.union([
          z.strictObject({ preset: z.string().refine(isPresetName, 'a preset name'), seed: z.number().int().optional() }),
          z.strictObject({ dir: z.string().max(4096) }),
        ]),
        // The stage spec the device's stages will get (src/engine/stage-setup.ts), checked there.
        spec: z.custom<StageSpec>((v) => {
          const s = v as Partial<StageSpec> | null;
          return (
            typeof s === 'object' && s !== null && Number.isInteger(s.seed) && Number.isInteger(s.seqLen) && typeof s.optimizer === 'object'
          );
        }, 'a stage spec'),
        layers: z.number().int().positive().max(4096),
        microBatches: z.array(z.number().int().positive().max(4096)).min(1).max(4),
      })
      .optional(),
  }),
  z.strictObject({ ok: z.literal(false), reason: z.string() }),
]);
export type JoinReply = z.infer<typeof joinReply>;

const ms = z.number().nonnegative().max(3_600_000);
const blockTiming = z.strictObject({ fwdMs: ms, bwdMs: ms, updateMs: ms.optional() });

/** What a device measured about itself (state `profiling`). */
export const profileReport = z.strictObject({
  device: name,
  /** Large plain 2-D f32 matmul rate of the device's backend, divided by its slowdown knob. */
  matmulGflops: z.number().nonnegative(),
  backendDetail: z.string().max(512),
  /** The run's own work timed (when the join reply asked for it): per micro-batch size, one layer, the embedding and the head. */
  timings: z
    .array(z.strictObject({ microBatch: z.number().int().positive(), layer: blockTiming, embed: blockTiming, head: blockTiming }))
    .max(4)
    .optional(),
});
export type ProfileReport = z.infer<typeof profileReport>;

/**
 * Control `links` (coordinator -> device): send `bytes` to each peer over the bus, one peer after
 * the other, in messages of `messageBytes`, and time how fast they arrive (src/runtime/link-probe.ts).
 */
export const linkProbeRequest = z.strictObject({
  peers: z.array(name).min(1).max(64),
  bytes: z
    .number()
    .int()
    .positive()
    .max(64 << 20),
  messageBytes: z
    .number()
    .int()
    .min(4)
    .max(8 << 20),
  /** Per peer: a transfer not acknowledged by then counts as failed. */
  timeoutMs: z.number().positive().max(600_000),
});
export type LinkProbeRequest = z.infer<typeof linkProbeRequest>;

/** Per peer: the rate the bytes arrived at (Mbit/s) and half the acknowledgement round trip, or why not. */
export const linkProbeReply = z.array(
  z.union([
    z.strictObject({ peer: name, mbps: z.number().positive().finite(), latencyMs: z.number().nonnegative().finite(), bytes: count }),
    z.strictObject({ peer: name, error: z.string().max(1024) }),
  ]),
);
export type LinkProbeReply = z.infer<typeof linkProbeReply>;

/** A device leaves on purpose (drained); not a loss. */
export const leaveRequest = z.strictObject({ device: name, reason: z.string().max(512) });
export type LeaveRequest = z.infer<typeof leaveRequest>;

export const okReply = z.strictObject({ ok: z.boolean(), reason: z.string().optional() });
export type OkReply = z.infer<typeof okReply>;

export const statusRequest = z.strictObject({});

/** One device as the coordinator sees it. */
export const deviceStatus = z.strictObject({
  name,
  state: z.string(),
  alive: z.boolean(),
  backend: z.string(),
  /** The budget the device offered, null when it left it to the topology. */
  memoryMb: z.number().nullable(),
  memoryBytes: count,
  step: z.number().int(),
  /** What the device holds for the run (e.g. "stage 0 rank 1"), null when nothing. */
  role: z.string().nullable(),
  /** Phase of its current or last work ('pipeline', 'cached', 'fill', 'redistribute'), null before any. */
  phase: z.string().nullable(),
  /** ms since the last heartbeat (or the join), on the coordinator's clock. */
  heartbeatAgeMs: count,
  matmulGflops: z.number().nullable(),
  pid: z.number().int(),
  host: z.string(),
  joins: count,
});
export type DeviceStatus = z.infer<typeof deviceStatus>;

export const statusReply = z.strictObject({
  run: z.string(),
  /** The coordinator machine's state, e.g. 'gathering', 'assembled'. */
  state: z.string(),
  /** The training run's phase (its run machine's state, e.g. 'pipelineEpoch'), null when none runs. */
  runPhase: z.string().nullable(),
  /** Devices waiting to be put to work at the next step boundary, and devices handing their work over to leave. */
  elastic: z.strictObject({ joining: z.array(z.string()), leaving: z.array(z.string()) }).optional(),
  devices: z.array(deviceStatus),
  /** Messages the coordinator dropped because they failed validation, per reason. */
  rejected: z.record(z.string(), count),
});
export type StatusReply = z.infer<typeof statusReply>;

/** A heartbeat on `dev.<device>.hb`: liveness, state, step, memory in use. */
export const heartbeat = z.strictObject({
  /** Sender's device name. */
  device: name,
  /** The sender's machine state, e.g. 'idle', 'working'. */
  state: z.string().min(1).max(64),
  /** Training step the sender is on (-1 before the first). */
  step: z.number().int().min(-1),
  /** What the sender holds for the run, e.g. "stage 0 rank 1"; null when nothing. */
  role: z.string().max(64).nullable(),
  /** Phase of the sender's current or last work, e.g. 'pipeline', 'cached'; null before any. */
  phase: z.string().max(32).nullable(),
  /** Bytes in use: tensors plus caches where known, else the process's resident set. */
  memoryBytes: count,
  /** Increments by one per heartbeat from the same process; a restart starts again at 0. */
  seq: count,
  /** Sender's wall clock, ms (for display; liveness uses the receiver's clock). */
  sentAt: z.number(),
});
export type Heartbeat = z.infer<typeof heartbeat>;

/** Control request to a device; `kind` picks the handler, `args` is the handler's to validate. */
export const ctlRequest = z.strictObject({
  kind: z
    .string()
    .regex(/^[a-z][a-z-]*$/)
    .max(64),
  args: z.unknown().optional(),
  /**
   * The sending coordinator's epoch (grows at every coordinator start of a run): a device obeys
   * the highest it has seen and refuses an older one's requests, e.g. of a coordinator that was
   * frozen while another took the run over.
   */
  epoch: z.number().int().nonnegative().optional(),
});
export type CtlRequest = z.infer<typeof ctlRequest>;

/** A control reply: the handler's result, or its failure as a WireError (rebuilt as its class by the caller). */
export const ctlReply = z.discriminatedUnion('ok', [
  z.strictObject({ ok: z.literal(true), result: z.unknown().optional() }),
  z.strictObject({ ok: z.literal(false), error: wireError }),
]);
export type CtlReply = z.infer<typeof ctlReply>;

/** A run event (**contract** for `--json` output, dashboards and chaos checkers). */
export interface RunEvent {
  type: string;
  at: number;
  source: string;
  [field: string]: unknown;
}
