/**
 * The cache machine: empty -> filling (epoch 1: the device's stages put what they computed) ->
 * sealed (epoch 1 over) -> redistributing (send other devices their shards' layers, receive
 * ours) -> serving (cached epochs) -> dropped. A re-plan that loses a device redistributes again
 * over the survivors: serving -> redistributing; an ABORT (the redistribution waited on a device
 * that is gone) goes back to sealed. Effects are named; the binding provides them.
 */
import { assertEvent, assign, fromPromise, setup } from 'xstate';
import type { RedistributionMoves } from '../../src/cache/device-cache.ts';

export type CacheEvent =
  | { type: 'FILL' }
  | { type: 'SEAL' }
  | { type: 'REDISTRIBUTE'; shards: number[][]; devices: string[]; moves?: RedistributionMoves }
  | { type: 'ABORT' }
  | { type: 'DROP' };

export interface CacheContext {
  bytesIn: number;
  bytesOut: number;
  shards: number[][] | null;
  devices: string[];
  moves: RedistributionMoves;
  error: string | null;
}

export const cacheMachine = setup({
  types: { context: {} as CacheContext, events: {} as CacheEvent },
  actors: {
    redistribute: fromPromise<
      { bytesIn: number; bytesOut: number },
      { shards: number[][]; devices: string[]; moves?: RedistributionMoves }
    >(async () => {
      throw new Error("cache machine: effect 'redistribute' was not provided");
    }),
  },
  actions: {
    release: () => {},
    takeShards: assign(({ event }) => {
      assertEvent(event, 'REDISTRIBUTE');
      return { shards: event.shards, devices: event.devices, moves: event.moves ?? {}, error: null };
    }),
  },
}).createMachine({
  id: 'cache',
  context: { bytesIn: 0, bytesOut: 0, shards: null, devices: [], moves: {}, error: null },
  initial: 'empty',
  states: {
    empty: { on: { FILL: 'filling', DROP: 'dropped' } },
    filling: { on: { SEAL: 'sealed', DROP: 'dropped' } },
    sealed: { on: { REDISTRIBUTE: { target: 'redistributing', actions: 'takeShards' }, DROP: 'dropped' } },
    redistributing: {
      invoke: {
        src: 'redistribute',
        input: ({ context }) => ({ shards: context.shards!, devices: context.devices, moves: context.moves }),
        onDone: {
          target: 'serving',
          actions: assign({ bytesIn: ({ event }) => event.output.bytesIn, bytesOut: ({ event }) => event.output.bytesOut }),
        },
        onError: { target: 'sealed', actions: assign({ error: ({ event }) => String((event.error as Error)?.message ?? event.error) }) },
      },
      on: { ABORT: { target: 'sealed', actions: assign({ error: 'redistribution aborted' }) }, DROP: 'dropped' },
    },
    serving: { on: { REDISTRIBUTE: { target: 'redistributing', actions: 'takeShards' }, DROP: 'dropped' } },
    dropped: { type: 'final', entry: 'release' },
  },
});
