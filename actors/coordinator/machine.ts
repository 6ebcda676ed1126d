/**
 * The minimal coordinator's logic: gather the expected devices, know when all are alive
 * (`assembled`), fall back to `gathering` when one is lost or leaves. The run machine
 * (run-machine.ts) takes over from `assembled`; it reads the same DeviceRegistry.
 */
import { assign, setup } from 'xstate';

export interface CoordinatorContext {
  /** Device names the run waits for (the topology's local devices, or all of them). */
  expected: string[];
  /** Names alive now. */
  alive: string[];
}

export type CoordinatorEvent =
  | { type: 'DEVICE_JOINED'; name: string }
  | { type: 'DEVICE_LOST'; name: string }
  | { type: 'DEVICE_LEFT'; name: string }
  | { type: 'STOP' };

export const coordinatorMachine = setup({
  types: {
    context: {} as CoordinatorContext,
    input: {} as { expected: string[] },
    events: {} as CoordinatorEvent,
  },
  actions: {
    /** Every expected device is alive. */
    reportAssembled: (_, _params: { devices: string[] }) => {},
    /** An expected device went away after assembly. */
    reportIncomplete: (_, _params: { missing: string[] }) => {},
  },
  guards: {
    allExpectedAlive: ({ context }) => context.expected.every((n) => context.alive.includes(n)),
  },
}).createMachine({
  id: 'coordinator',
  context: ({ input }) => ({ expected: [...input.expected], alive: [] }),
  initial: 'gathering',
  on: {
    DEVICE_JOINED: {
      actions: assign({
        alive: ({ context, event }) => (context.alive.includes(event.name) ? context.alive : [...context.alive, event.name]),
      }),
    },
    DEVICE_LOST: { actions: assign({ alive: ({ context, event }) => context.alive.filter((n) => n !== event.name) }) },
    DEVICE_LEFT: { actions: assign({ alive: ({ context, event }) => context.alive.filter((n) => n !== event.name) }) },
    STOP: '.stopped',
  },
  states: {
    gathering: {
      always: { guard: 'allExpectedAlive', target: 'assembled' },
    },
    assembled: {
      entry: { type: 'reportAssembled', params: ({ context }) => ({ devices: context.expected }) },
      always: {
        guard: ({ context }) => !context.expected.every((n) => context.alive.includes(n)),
        target: 'gathering',
        actions: {
          type: 'reportIncomplete',
          params: ({ context }) => ({ missing: context.expected.filter((n) => !context.alive.includes(n)) }),
        },
      },
    },
    stopped: { type: 'final' },
  },
});
