/**
 * Serial (Houlsby) adapters: after the attention and after the MLP sub-layer of every block,
 * h' = h + up(act(down(h))) with a bottleneck of width m. `up` starts at zero, so step 0 is the
 * base model. The activation is the backbone's own (GELU for GPT-2, SiLU for Llama).
 * Parameters: `serial.<layer>.<attn|mlp>.<down|up>.<weight|bias>`, weights laid (din, dout).
 */
import type * as tf from '@tensorflow/tfjs';
import { geluNew, linear, silu } from '../ops.ts';
import type { Backbone, LayerHooks, ModelConfig } from '../types.ts';
import { initVariable } from './init.ts';
import { HookedMethod, withDefaults, type MethodOptions } from './method.ts';

/** Serial adapters' parameters and hooks for layers from..to: the same names and seeded values whatever the range. */
export function serialLayers(
  config: ModelConfig,
  layers: { from: number; to: number },
  options: MethodOptions,
  seed: number,
): { params: Map<string, tf.Variable>; hooks: LayerHooks } {
  const { bottleneck: m } = withDefaults(options);
  const d = config.dModel;
  const params = new Map<string, tf.Variable>();
  const add = (name: string, shape: number[], init: Parameters<typeof initVariable>[3]) =>
    params.set(name, initVariable(seed, name, shape, init));
  for (let i = layers.from; i <= layers.to; i++) {
    for (const which of ['attn', 'mlp']) {
      const p = `serial.${i}.${which}`;
      add(`${p}.down.weight`, [d, m], { kind: 'kaiming', fanIn: d });
      add(`${p}.down.bias`, [m], { kind: 'zeros' });
      add(`${p}.up.weight`, [m, d], { kind: 'zeros' });
      add(`${p}.up.bias`, [d], { kind: 'zeros' });
    }
  }
  const act = config.activation === 'silu' ? silu : geluNew;
  const hooks: LayerHooks = {
    sublayer: (layer, which, h) => {
      const p = `serial.${layer}.${which}`;
      const w = (n: string) => params.get(`${p}.${n}`)!;
      const z = act(linear(h, w('down.weight') as tf.Tensor2D, w('down.bias') as tf.Tensor1D)); // (N, m)
      return h.add(linear(z, w('up.weight') as tf.Tensor2D, w('up.bias') as tf.Tensor1D)); // (N, d)
    },
  };
  return { params, hooks };
}

export class SerialMethod extends HookedMethod {
  readonly name = 'serial' as const;
  protected readonly hooks: LayerHooks;

  constructor(backbone: Backbone, options: MethodOptions, seed: number) {
    super(backbone, 'serial');
    const parts = serialLayers(backbone.config, { from: 1, to: backbone.config.nLayers }, options, seed);
    for (const [n, v] of parts.params) this.params.set(n, v);
    this.hooks = parts.hooks;
  }
}
