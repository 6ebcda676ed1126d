/**
 * The stage machine: unloaded -> loading -> ready -> running (1F1B over one step's
 * micro-batches) -> ready; ABORT while running goes through `aborting`, which drops every
 * in-flight micro-batch of the step. A re-plan that leaves the stage's layers where they are
 * takes ready -> rebinding -> ready (REBIND: new plan position, links and side state over the
 * loaded backbone); a rebinding that fails unloads. Effects are named; the binding provides them.
 */
import { assign, fromPromise, setup } from 'xstate';
import type { AssignArgs } from '../../src/runtime/ctl.ts';
import type { RankOutcome } from '../../src/engine/index.ts';

export type StageEvent =
  | { type: 'LOAD'; assignment: AssignArgs }
  /** The same layers under a new plan: keep the backbone and compute, take the new position and state. */
  | { type: 'REBIND'; assignment: AssignArgs }
  | ({ type: 'RUN_STEP' } & StepRun)
  /** Without a step: whatever step is running. */
  | { type: 'ABORT'; step?: number }
  | { type: 'UNLOAD' };

/** A step to run; `shares` replaces the plan's row shares of every stage for this step. */
export interface StepRun {
  step: number;
  sampleIds: number[];
  shares?: number[][];
}

export interface StageContext {
  /** The plan position loaded (or loading), null when unloaded. */
  assignment: AssignArgs | null;
  step: number;
  /** The last step that ran to the end, and what it produced. */
  committed: number;
  outcome: RankOutcome | null;
  error: string | null;
}

const notProvided = <Out, In>(name: string) =>
  fromPromise<Out, In>(async () => {
    throw new Error(`stage machine: effect '${name}' was not provided`);
  });

export const stageMachine = setup({
  types: { context: {} as StageContext, events: {} as StageEvent },
  actors: {
    loadStage: notProvided<void, AssignArgs>('loadStage'),
    rebindStage: notProvided<AssignArgs, AssignArgs>('rebindStage'),
    runStep: notProvided<RankOutcome, StepRun>('runStep'),
    abortStep: notProvided<void, { step: number }>('abortStep'),
    unloadStage: notProvided<void, void>('unloadStage'),
  },
}).createMachine({
  id: 'stage',
  context: { assignment: null, step: 0, committed: 0, outcome: null, error: null },
  initial: 'unloaded',
  states: {
    unloaded: { on: { LOAD: { target: 'loading', actions: assign({ assignment: ({ event }) => event.assignment, error: null }) } } },
    loading: {
      invoke: {
        src: 'loadStage',
        input: ({ context }) => context.assignment!,
        onDone: 'ready',
        onError: {
          target: 'unloaded',
          actions: assign({ error: ({ event }) => String((event.error as Error)?.message ?? event.error), assignment: null }),
        },
      },
    },
    ready: {
      on: {
        RUN_STEP: { target: 'running', actions: assign({ step: ({ event }) => event.step, outcome: null, error: null }) },
        REBIND: { target: 'rebinding', actions: assign({ error: null }) },
        UNLOAD: 'unloading',
      },
    },
    rebinding: {
      invoke: {
        src: 'rebindStage',
        input: ({ event }) => (event as Extract<StageEvent, { type: 'REBIND' }>).assignment,
        onDone: {
          target: 'ready',
          actions: assign({ assignment: ({ event }) => event.output }),
        },
        // Half rebound is neither the old stage nor the new one.
        onError: { target: 'unloading', actions: assign({ error: ({ event }) => String((event.error as Error)?.message ?? event.error) }) },
      },
    },
    running: {
      invoke: {
        src: 'runStep',
        input: ({ context, event }): StepRun =>
          event.type === 'RUN_STEP'
            ? { step: context.step, sampleIds: event.sampleIds, ...(event.shares ? { shares: event.shares } : {}) }
            : { step: context.step, sampleIds: [] },
        onDone: { target: 'ready', actions: assign({ committed: ({ context }) => context.step, outcome: ({ event }) => event.output }) },
        onError: { target: 'aborting', actions: assign({ error: ({ event }) => String((event.error as Error)?.message ?? event.error) }) },
      },
      on: {
        ABORT: {
          guard: ({ context, event }) => (event.step ?? context.step) === context.step,
          target: 'aborting',
          actions: assign({ error: ({ context }) => `step ${context.step} aborted` }),
        },
      },
    },
    aborting: {
      invoke: { src: 'abortStep', input: ({ context }) => ({ step: context.step }), onDone: 'ready', onError: 'ready' },
    },
    unloading: {
      invoke: { src: 'unloadStage', onDone: { target: 'unloaded', actions: assign({ assignment: null }) }, onError: 'unloaded' },
    },
  },
});
