/**
 * Placeholders for the effects a pure machine only names. `setup()` needs a logic per named actor
 * to type it; these fail loudly when a binding forgot to `provide()` the real one.
 */
import { fromPromise } from 'xstate';

function missing(name: string): Error {
  return new Error(`actor '${name}' has no implementation: bind it with machine.provide({ actors: { ${name}: ... } })`);
}

/** A promise actor named `name`, to be provided by the binding. */
export function namedPromise<TOutput, TInput = void>(name: string) {
  return fromPromise<TOutput, TInput>(async () => {
    throw missing(name);
  });
}
