/**
 * The topology file schema (**contract**, documented in the README): what a run trains, on which
 * data, with which settings, over which bus, on which devices. Validation is strict: an unknown
 * key is an error, so a typo never silently falls back to a default.
 */
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { checkFaultDevices, faultListSchema } from '../chaos/fault-schema.ts';
import { isLoopback } from '../security/certs.ts';

/** Names that end up inside NATS subjects: no dots, wildcards or whitespace. */
export const SUBJECT_SAFE = /^[A-Za-z0-9_-]+$/;
const subjectSafeName = z.string().regex(SUBJECT_SAFE, 'must be letters, digits, "-" or "_" (it becomes part of NATS subject names)');

const positiveInt = z.number().int().positive();

const model = z
  .strictObject({
    /** A built-in preset with seeded random weights. */
    preset: z.enum(['tiny', 'tiny-llama', 'w1']).optional(),
    /** A Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer.json). */
    dir: z.string().min(1).optional(),
  })
  .refine((m) => (m.preset === undefined) !== (m.dir === undefined), 'give exactly one of "preset" or "dir"');

const method = z.discriminatedUnion('kind', [
  /** PAC parallel adapters: side width r = d / k. */
  z.strictObject({ kind: z.literal('parallel'), k: positiveInt.default(8) }),
  z.strictObject({
    kind: z.literal('lora'),
    rank: positiveInt.default(8),
    alpha: z.number().positive().default(16),
    targets: z
      .array(z.enum(['query', 'key', 'value', 'attn_out', 'mlp_up', 'mlp_gate', 'mlp_down']))
      .min(1)
      .default(['query', 'value']),
  }),
  z.strictObject({ kind: z.literal('serial'), bottleneck: positiveInt.default(64) }),
  z.strictObject({ kind: z.literal('full') }),
]);

const markov = z.strictObject({
  sequences: positiveInt.default(256),
  seqLen: positiveInt.default(128),
  seed: z.number().int().nonnegative().default(1),
});

const data = z
  .strictObject({
    /** JSONL: {"text"} or {"ids"}, optional "label". Relative paths are relative to the topology file. */
    file: z.string().min(1).optional(),
    /** The seeded synthetic Markov-chain data set (each token has 4 possible successors). */
    markov: markov.optional(),
  })
  .refine((d) => (d.file === undefined) !== (d.markov === undefined), 'give exactly one of "file" or "markov"');

const cache = z.strictObject({
  budgetMb: z.number().nonnegative().default(256),
  /** Folder inside the run directory where each local device's cache spills (one subfolder per device). */
  dir: z
    .string()
    .min(1)
    .default('cache')
    .refine(
      (d) => !isAbsolute(d) && !d.split(/[\\/]/).includes('..'),
      'must be a folder inside the run directory (a relative path without "..")',
    ),
  dtype: z.enum(['f32', 'f16']).default('f32'),
  /**
   * Copies of every entry in the cached epochs: 2 keeps each sample's entries on its owner and on
   * one other device, so a device lost then needs no backbone recompute.
   */
  replicas: z
    .number()
    .int()
    .default(1)
    .refine((n) => n === 1 || n === 2, 'must be 1 (one copy) or 2 (every entry on two devices); more copies are not supported'),
});

const cacheDefaults = { budgetMb: 256, dir: 'cache', dtype: 'f32' as const, replicas: 1 };

const training = z
  .strictObject({
    epochs: positiveInt.default(3),
    batch: positiveInt.default(8),
    /** Micro-batches per step; omitted, the planner picks the count with the best predicted step time. */
    microBatches: positiveInt.optional(),
    lr: z.number().positive().default(1e-3),
    /** AdamW's decoupled weight decay (matrices only), as `charon train --weight-decay`. */
    weightDecay: z.number().nonnegative().default(0),
    /** Clip the global gradient norm (over every trainable parameter, wherever it lives) to this; 0 = no clipping. */
    maxGradNorm: z.number().nonnegative().default(1),
    /** Steps of linear learning-rate warm-up. */
    warmupSteps: z.number().int().nonnegative().default(0),
    /** Learning rate after warm-up: constant, or cosine decay to 0 at the run's last step. */
    schedule: z.enum(['constant', 'cosine']).default('constant'),
    seed: z.number().int().nonnegative().default(1),
    /** Plan shape: the planner's choice, every device holding every layer, or one device per stage. */
    plan: z.enum(['auto', 'data-parallel', 'pipeline']).default('auto'),
    /** PAC's activation cache, or `off` (every epoch runs the backbone). Only method parallel has one. */
    cache: z.union([z.literal('off'), cache]).optional(),
    /** A step not done within this many ms is given up and replayed (default: from the plan's predicted step time). */
    stepDeadlineMs: positiveInt.optional(),
  })
  .refine((t) => t.microBatches === undefined || t.microBatches <= t.batch, {
    message: 'must be <= training.batch',
    path: ['microBatches'],
  });

const auth = z.strictObject({
  token: z.string().min(1).optional(),
  user: z.string().min(1).optional(),
  password: z.string().optional(),
  credsFile: z.string().min(1).optional(),
});

const bus = z
  .strictObject({
    /** Launch starts a private nats-server on loopback. */
    embedded: z.literal(true).optional(),
    /** An existing NATS server or cluster. */
    url: z
      .string()
      .regex(/^(nats|tls|ws|wss):\/\/\S+$/, 'must be a NATS URL such as nats://host:4222')
      .optional(),
    /**
     * Where the embedded server listens, `host:port` (default: loopback, a free port). Another
     * address lets devices on other hosts join, with credentials (`charon creds add`).
     */
    listen: z
      .string()
      .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 0.0.0.0:4222')
      .refine(
        (l) => Number(l.slice(l.lastIndexOf(':') + 1)) > 0 && Number(l.slice(l.lastIndexOf(':') + 1)) < 65536,
        'port must be 1..65535',
      )
      .optional(),
    /**
     * Require TLS of the embedded server's clients (a per-run CA, src/security/certs.ts). On by
     * itself when `listen` is not a loopback address; `false` is refused there. `mutual`: every
     * client must also present a certificate of the run's CA (`charon certs --client`).
     */
    tls: z.union([z.boolean(), z.literal('mutual')], { error: 'must be true, false or "mutual"' }).optional(),
    /** Credentials for an external server: refused, since launch cannot honour them. */
    auth: auth.optional(),
  })
  .refine((b) => (b.embedded === undefined) !== (b.url === undefined), 'give exactly one of "embedded: true" or "url"')
  .refine((b) => b.listen === undefined || b.embedded === true, {
    path: ['listen'],
    message: 'only for the embedded server (bus.embedded: true)',
  })
  .refine((b) => b.tls === undefined || b.embedded === true, {
    path: ['tls'],
    message: 'only for the embedded server (bus.embedded: true); for your own server use a tls:// URL',
  })
  .refine((b) => b.tls !== false || b.listen === undefined || isLoopback(listenAddress(b.listen).host), {
    path: ['tls'],
    message: 'cannot be false when bus.listen lets other hosts connect: the bus would carry training data in clear',
  })
  .refine((b) => b.auth === undefined, {
    path: ['auth'],
    message:
      'credentials for an external server are not supported: remove it (use bus.embedded, whose per-run credentials launch creates, or secure your server yourself)',
  });

/** `host:port` of a `bus.listen` value, brackets of an IPv6 host removed. */
export function listenAddress(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

/** Whether the embedded server of `bus` requires TLS: asked for, or reachable from other hosts. */
export function busNeedsTls(bus: { tls?: boolean | 'mutual'; listen?: string }): boolean {
  return bus.tls === undefined ? bus.listen !== undefined && !isLoopback(listenAddress(bus.listen).host) : bus.tls !== false;
}

const device = z.strictObject({
  name: subjectSafeName,
  /** `launch` spawns local devices as processes; the others join with `charon device`. */
  local: z.boolean().default(true),
  backend: z.enum(['wasm', 'cpu', 'tensorflow']).default('wasm'),
  /** Memory budget the planner may use on this device. */
  memoryMb: positiveInt,
  /** Simulation knob: compute takes this many times longer (a sleep proportional to compute time). */
  slowdown: z.number().min(1).default(1),
  /** Simulation knob: outgoing traffic is delayed to at most this many megabits per second. */
  bandwidthMbps: z.number().positive().optional(),
  /** The run starts without it; it joins (and is put to work at a step boundary) whenever it registers. */
  optional: z.boolean().default(false),
  /**
   * Threads of a local device's native engine (default: the host's cores shared evenly among the
   * topology's local devices). A device that is not local is started with `charon device --threads`.
   */
  threads: positiveInt.optional(),
});

/** Who may join a run mid-way beside the listed devices. */
const elastic = z.strictObject({
  /** A device whose name the topology does not list may join (profiled from what it reports). */
  allowUnlisted: z.boolean().default(false),
});

export const topologySchema = z
  .strictObject({
    run: subjectSafeName,
    model,
    method,
    data,
    training: training.default({
      epochs: 3,
      batch: 8,
      lr: 1e-3,
      weightDecay: 0,
      maxGradNorm: 1,
      warmupSteps: 0,
      schedule: 'constant',
      seed: 1,
      plan: 'auto',
    }),
    bus: bus.default({ embedded: true }),
    devices: z.array(device).min(1, 'at least one device is required'),
    elastic: elastic.default({ allowUnlisted: false }),
    /** The fault schedule `charon chaos` injects (src/chaos/fault-schema.ts); `launch` runs the job without it. */
    chaos: faultListSchema.optional(),
  })
  .superRefine((t, ctx) => {
    if (t.devices.every((d) => d.optional))
      ctx.addIssue({ code: 'custom', path: ['devices'], message: 'at least one device must not be optional (the run starts with those)' });
    const seen = new Set<string>();
    t.devices.forEach((d, i) => {
      if (seen.has(d.name)) ctx.addIssue({ code: 'custom', path: ['devices', i, 'name'], message: `duplicate device name "${d.name}"` });
      if (d.threads !== undefined && !d.local)
        ctx.addIssue({
          code: 'custom',
          path: ['devices', i, 'threads'],
          message: 'only a local device\'s threads are set here; start a device on another host with "charon device --threads N"',
        });
      if (d.name === 'coordinator')
        ctx.addIssue({ code: 'custom', path: ['devices', i, 'name'], message: '"coordinator" is reserved for the run\'s coordinator' });
      seen.add(d.name);
    });
    checkFaultDevices(
      t.chaos ?? [],
      t.devices.map((d) => d.name),
      (i, field, message) => ctx.addIssue({ code: 'custom', path: ['chaos', i, field], message }),
    );
    if (t.method.kind !== 'parallel' && typeof t.training.cache === 'object')
      ctx.addIssue({
        code: 'custom',
        path: ['training', 'cache'],
        message: `method ${t.method.kind} has no activation cache (only parallel reuses backbone outputs): remove it or write "cache: off"`,
      });
    const given = t.training.cache;
    // A second copy needs a second device; an unlisted joiner could be one, so then it is allowed.
    if (typeof given === 'object' && given.replicas === 2 && t.devices.length < 2 && !t.elastic.allowUnlisted)
      ctx.addIssue({
        code: 'custom',
        path: ['training', 'cache', 'replicas'],
        message: `2 copies need at least 2 devices to hold them; the topology lists ${t.devices.length}`,
      });
  })
  .transform((t) => {
    const given = t.training.cache;
    // `use`: whether the run keeps PAC's activation cache (and trains epochs >= 2 from it).
    const cache =
      typeof given === 'object' ? { ...given, use: true } : { ...cacheDefaults, use: given !== 'off' && t.method.kind === 'parallel' };
    return { ...t, training: { ...t.training, cache } };
  });

/** A validated topology; model.dir and data.file are absolute after loading, training.cache.dir is relative to the run directory. */
export type Topology = z.output<typeof topologySchema>;
export type DeviceSpec = Topology['devices'][number];
export type MethodSpec = Topology['method'];
