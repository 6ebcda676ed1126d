/**
 * Fine-tuning methods, chosen by name. See method.ts for the contract every method keeps.
 */
import type { Backbone } from '../types.ts';
import { FullMethod } from './full.ts';
import { LoraMethod } from './lora.ts';
import type { FineTuneMethod, MethodName, MethodOptions } from './method.ts';
import { ParallelMethod } from './parallel.ts';
import { SerialMethod } from './serial.ts';

export type { FineTuneMethod, MethodName, MethodOptions } from './method.ts';
export { withDefaults } from './method.ts';
export { FullMethod } from './full.ts';
export { LoraMethod } from './lora.ts';
export { SerialMethod } from './serial.ts';
export { ParallelMethod } from './parallel.ts';
export { SideNetwork, type SideSpan, type SideInit, type Activations } from './side-network.ts';
export { ClassificationHead, lmLogits, type Pooling } from './heads.ts';
export { withoutTape } from './inference.ts';

export const methodNames: readonly MethodName[] = ['full', 'lora', 'serial', 'parallel'];

/** Builds method `name` on a whole backbone; parameters are seeded by (seed, parameter name). */
export function createMethod(name: MethodName, backbone: Backbone, options: MethodOptions = {}, seed = 0): FineTuneMethod {
  switch (name) {
    case 'full':
      return new FullMethod(backbone);
    case 'lora':
      return new LoraMethod(backbone, options, seed);
    case 'serial':
      return new SerialMethod(backbone, options, seed);
    case 'parallel':
      return new ParallelMethod(backbone, options, seed);
    default:
      throw new Error(`unknown method '${name as string}' (expected one of ${methodNames.join(', ')})`);
  }
}
