/**
 * Placeholders for the effects a pure machine only names. `setup()` needs a logic per named actor
 * to type it; these fail loudly when a binding forgot to `provide()` the real one.
 */
import { fromCallback, fromPromise, type EventObject, type CallbackLogicFunction } from 'xstate';

function missing(name: string): Error {
  return new Error(`actor '${name}' has no implementation: bind it with machine.provide({ actors: { ${name}: ... } })`);
}

/** A promise actor named `name`, to be provided by the binding. */
export function namedPromise<TOutput, TInput = void>(name: string) {
  return fromPromise<TOutput, TInput>(async () => { throw missing(name); });
}

/** A callback actor named `name`, to be provided by the binding. */
export function namedCallback<TEvent extends EventObject, TInput = void>(name: string) {
  const fail: CallbackLogicFunction<TEvent, EventObject, TInput> = () => { throw missing(name); };
  return fromCallback<TEvent, TInput>(fail);
}
