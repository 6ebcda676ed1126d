/**
 * The largest message a run can send, and so what every connection of the run needs to accept:
 * nothing larger is ever legitimate, so a device refuses it before allocating anything
 * (a peer that declares a gigabyte gets an 'oversized' rejection, not a gigabyte buffer).
 *
 * The bound holds for every plan of the run, re-plans included, because it takes each kind of
 * message at its largest over any plan:
 * - trainable state (parameters and both Adam moments) of every block: a commit or a restore
 *   carries it whole, and in the cached phase one device holds all of it;
 * - one gradient of every trainable parameter (an all-reduce chunk is a part of it);
 * - the activations (forward) and their gradients (backward) of a whole batch across the widest
 *   stage boundary: a micro-batch is at most the batch;
 * - one sample's cache entries for every layer (a redistribution message).
 * Envelope, ids, masks, labels and a classification head are small against these; `SLACK` covers
 * them and the analytic sizes' rounding.
 *
 * Reassembly holds partial transfers from several senders at once: the coordinator (one state
 * message) and every other device (pipeline neighbours, ring neighbours, cache holders, each with
 * a few redistribution messages in flight).
 */
import type { MessageLimits } from '../bus/index.ts';
import { analyticProfile, type ModelShape } from './analytic.ts';
import { boundaryBytesPerSample } from './profile.ts';

const SLACK = 1.25;
const ENVELOPE_BYTES = 1 << 20;
/** Redistribution requests one holder keeps in flight to one device (actors/cache). */
const CACHE_WINDOW = 4;

/** Bytes of each kind of message of a run (before slack). */
export interface MessageSizes {
  trainableState: number;
  gradients: number;
  boundary: number;
  cacheEntry: number;
}

export function messageSizes(shape: ModelShape, batchSize: number): MessageSizes {
  // Sizes only: the device figures of the probe do not enter them.
  const probe = {
    name: 'probe',
    tflops: 1,
    memoryBytes: 1,
    reserveBytes: 0,
    mbps: 1,
    latencyMs: 0,
    efficiency: 1,
    sideEfficiency: 1,
    fixedMsPerBlock: 0,
  };
  const profile = analyticProfile(shape, probe, 1, { batchSize, samples: batchSize });
  const device = profile.devices[0]!;
  const blocks = [device.embed, ...device.layers, device.head];
  const gradients = blocks.reduce((s, b) => s + b.sideGradBytes, 0);
  let boundary = 0;
  for (let l = 1; l <= device.layers.length; l++) {
    const b = boundaryBytesPerSample(profile.model, l);
    boundary = Math.max(boundary, b.fwd, b.bwd);
  }
  return {
    trainableState: 3 * gradients,
    gradients,
    boundary: boundary * batchSize,
    cacheEntry: (device.layers.length + 1) * shape.seqLen * shape.dModel * 4,
  };
}

/** What every connection of a run over `devices` devices accepts. */
export function runMessageLimits(shape: ModelShape, batchSize: number, devices: number): MessageLimits {
  const s = messageSizes(shape, batchSize);
  const size = (bytes: number) => Math.ceil(bytes * SLACK) + ENVELOPE_BYTES;
  const fromPeer = Math.max(size(s.gradients), size(s.boundary), CACHE_WINDOW * size(s.cacheEntry));
  const maxMessageBytes = Math.max(size(s.trainableState), size(s.gradients), size(s.boundary), size(s.cacheEntry));
  return { maxMessageBytes, reassemblyBytes: Math.max(maxMessageBytes, size(s.trainableState) + Math.max(1, devices - 1) * fromPeer) };
}

/** Before a device has joined it expects only control messages (join reply, profile, pings). */
export const PRE_JOIN_LIMITS: MessageLimits = { maxMessageBytes: 4 << 20, reassemblyBytes: 8 << 20 };
