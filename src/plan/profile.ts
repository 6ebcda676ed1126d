/**
 * The planner's input: what each device costs per backbone layer, what the links carry, and the
 * model's shape. One JSON document (`--profile FILE`), validated here; errors name the file and
 * the field.
 *
 * Schema (version 1):
 * ```json
 * {
 *   "version": 1,
 *   "model": { "name": "t5-base", "layers": 24, "encoderLayers": 12, "dModel": 768,
 *              "sideWidth": 96, "seqLen": 128, "bytesPerActivation": 4 },
 *   "training": { "batchSize": 16, "samples": 3668 },
 *   "devices": [ { "name": "nano-1", "memoryBytes": 3221225472,
 *                  "embed":  <BlockCost>, "head": <BlockCost>, "layers": [<BlockCost>, ...] } ],
 *   "links": { "defaultMbps": 1000, "latencyMs": 0.5, "pairs": [ { "from": "a", "to": "b", "mbps": 300 } ] }
 * }
 * BlockCost = { "fwd": { "fixedMs": 0.3, "perSampleMs": 21.5 },   // backbone layer + side block forward
 *               "bwd": { "fixedMs": 0.1, "perSampleMs": 1.9 },    // side block backward
 *               "backboneBytes": 28311552,            // frozen weights held for this block
 *               "sideBytes": 1769472,                 // side params + grads + AdamW moments
 *               "sideGradBytes": 442368,              // what the group all-reduce moves
 *               "activationBytesPerSample": 1376256,  // kept for backward, per sample
 *               "workBytesPerSample": 3145728,       // transient during forward, per sample
 *               "updateMs": 0.4 }                     // optional: AdamW on its trainable part, per step
 * ```
 * Times are linear in the rows a device processes: `ms(rows) = fixedMs + rows * perSampleMs`.
 * A linear model (rather than a table per micro-batch size) lets the planner price any uneven,
 * speed-proportional split of a micro-batch; measured tables are fitted to it by
 * `profileFromMeasurements`. `embed` is paid by the first stage (b_0 and the side network's
 * down_0), `head` by the last (final norm, frozen head, up-projection, loss). `layers` has one
 * entry per backbone layer, encoder layers first. `encoderLayers` is 0 for decoder-only models;
 * for encoder-decoder models a stage boundary inside the decoder also forwards the encoder output
 * (backbone and side), see `boundaryBytesPerSample`.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';

const nonNeg = z.number().finite().nonnegative();
const positive = z.number().finite().positive();

const timeSchema = z.object({ fixedMs: nonNeg, perSampleMs: nonNeg }).strict();

export const blockCostSchema = z
  .object({
    fwd: timeSchema,
    bwd: timeSchema,
    backboneBytes: nonNeg,
    sideBytes: nonNeg,
    sideGradBytes: nonNeg,
    activationBytesPerSample: nonNeg,
    workBytesPerSample: nonNeg,
    /** The optimiser update of this block's trainable parameters, once per step whatever the rows (absent: not measured, 0). */
    updateMs: nonNeg.optional(),
  })
  .strict();

export const modelInfoSchema = z
  .object({
    name: z.string().min(1).optional(),
    layers: z.number().int().positive(),
    encoderLayers: z.number().int().nonnegative().default(0),
    dModel: z.number().int().positive(),
    sideWidth: z.number().int().positive(),
    seqLen: z.number().int().positive(),
    bytesPerActivation: positive,
    /** The method's gradient runs through the backbone: stages send b (dModel wide) forward and dL/db back, no side activations. */
    backprop: z.boolean().optional(),
  })
  .strict();

const deviceSchema = z
  .object({
    name: z.string().min(1),
    memoryBytes: positive,
    embed: blockCostSchema,
    head: blockCostSchema,
    layers: z.array(blockCostSchema).min(1),
  })
  .strict();

const linkSchema = z.object({ from: z.string().min(1), to: z.string().min(1), mbps: positive, latencyMs: nonNeg.optional() }).strict();

export const profileSchema = z
  .object({
    version: z.literal(1),
    model: modelInfoSchema,
    training: z.object({ batchSize: z.number().int().positive(), samples: z.number().int().positive() }).strict().optional(),
    devices: z.array(deviceSchema).min(1),
    links: z.object({ defaultMbps: positive, latencyMs: nonNeg.default(0), pairs: z.array(linkSchema).default([]) }).strict(),
  })
  .strict();

export type TimeCost = z.infer<typeof timeSchema>;
export type BlockCost = z.infer<typeof blockCostSchema>;
export type ModelInfo = z.infer<typeof modelInfoSchema>;
export type DeviceProfile = z.infer<typeof deviceSchema>;
export type LinkProfile = z.infer<typeof linkSchema>;
export type Profile = z.infer<typeof profileSchema>;

/** Bad profile: `source` names the file (or origin), `field` the JSON path, e.g. `devices[2].layers[5].fwd.perSampleMs`. */
export class ProfileError extends Error {
  override name = 'ProfileError';
  constructor(
    readonly source: string,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${source}: ${field || '(root)'}: ${reason}`);
  }
}

function pathText(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out;
}

/**
 * Validates a parsed JSON value as a profile and checks what the schema alone cannot: every
 * device has one cost per model layer, device names are unique, links name known devices.
 * Throws ProfileError naming `source` and the first bad field.
 */
export function parseProfile(value: unknown, source: string): Profile {
  const parsed = profileSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ProfileError(source, pathText(issue.path), issue.message);
  }
  const profile = parsed.data;
  const names = new Set<string>();
  profile.devices.forEach((d, i) => {
    if (names.has(d.name)) throw new ProfileError(source, `devices[${i}].name`, `duplicate device name '${d.name}'`);
    names.add(d.name);
    if (d.layers.length !== profile.model.layers) {
      throw new ProfileError(source, `devices[${i}].layers`, `has ${d.layers.length} entries, model.layers is ${profile.model.layers}`);
    }
  });
  if (profile.model.encoderLayers >= profile.model.layers && profile.model.encoderLayers > 0) {
    throw new ProfileError(source, 'model.encoderLayers', `must be below model.layers (${profile.model.layers})`);
  }
  profile.links.pairs.forEach((l, i) => {
    for (const end of ['from', 'to'] as const) {
      if (!names.has(l[end])) throw new ProfileError(source, `links.pairs[${i}].${end}`, `unknown device '${l[end]}'`);
    }
  });
  return profile;
}

/** Reads and validates a profile JSON file; errors name the file (and the field). */
export function loadProfile(file: string): Profile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ProfileError(file, '', `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ProfileError(file, '', `not valid JSON: ${(err as Error).message}`);
  }
  return parseProfile(json, file);
}

/** Keeps only the named devices (in the given order), or the first `count` devices. */
export function selectDevices(profile: Profile, pick: { names?: readonly string[]; count?: number }, source = 'profile'): Profile {
  let devices = profile.devices;
  if (pick.names) {
    devices = pick.names.map((n) => {
      const d = profile.devices.find((x) => x.name === n);
      if (!d)
        throw new ProfileError(source, 'devices', `has no device named '${n}' (known: ${profile.devices.map((x) => x.name).join(', ')})`);
      return d;
    });
  }
  if (pick.count !== undefined) {
    if (pick.count < 1 || pick.count > devices.length)
      throw new ProfileError(source, 'devices', `cannot take ${pick.count} of ${devices.length} devices`);
    devices = devices.slice(0, pick.count);
  }
  const keep = new Set(devices.map((d) => d.name));
  return { ...profile, devices, links: { ...profile.links, pairs: profile.links.pairs.filter((l) => keep.has(l.from) && keep.has(l.to)) } };
}

/**
 * Bytes per sample that cross a stage boundary placed after backbone layer `layer` (1-based;
 * 0 = after the embedding). Forward: b_layer (dModel) and a_layer (sideWidth) for every token;
 * inside a decoder also the encoder's output, backbone and side, which every decoder layer's
 * cross-attention reads. Backward: dL/da (sideWidth), plus dL/d(side encoder output) inside a
 * decoder. The backbone gets no gradient, so nothing of width dModel travels backward.
 */
export function boundaryBytesPerSample(model: ModelInfo, layer: number): { fwd: number; bwd: number } {
  const { seqLen: t, dModel: d, sideWidth: r, bytesPerActivation: bpa, encoderLayers: enc } = model;
  const insideDecoder = enc > 0 && layer > enc;
  if (model.backprop) return { fwd: t * d * bpa * (insideDecoder ? 2 : 1), bwd: t * d * bpa * (insideDecoder ? 2 : 1) };
  return {
    fwd: t * (d + r) * bpa * (insideDecoder ? 2 : 1),
    bwd: t * r * bpa * (insideDecoder ? 2 : 1),
  };
}

/**
 * Milliseconds per byte and latency of the link from `from` to `to`: the pair listed in that
 * direction, else the one listed the other way (a link given once stands for both directions),
 * else the defaults. Measured links are listed per direction: a device's sends may be capped
 * while what it receives is not.
 */
export function linkCost(profile: Profile, from: string, to: string): { msPerByte: number; latencyMs: number } {
  const pairs = profile.links.pairs;
  const pair = pairs.find((l) => l.from === from && l.to === to) ?? pairs.find((l) => l.from === to && l.to === from);
  const mbps = pair?.mbps ?? profile.links.defaultMbps;
  return { msPerByte: 8 / (mbps * 1e3), latencyMs: pair?.latencyMs ?? profile.links.latencyMs };
}
