/**
 * Serial (Houlsby) adapters: after the attention and after the MLP sub-layer of every block,
 * h' = h + up(act(down(h))) with a bottleneck of width m. `up` starts at zero, so step 0 is the
 * base model. The activation is the backbone's own (GELU for GPT-2, SiLU for Llama).
 * Parameters: `serial.<layer>.<attn|mlp>.<down|up>.<weight|bias>`, weights laid (din, dout).
 */
import type * as tf from '@tensorflow/tfjs';
import { geluNew, linear, silu } from '../ops.ts';
import type { Backbone, LayerHooks } from '../types.ts';
import { initVariable } from './init.ts';
import { HookedMethod, withDefaults, type MethodOptions } from './method.ts';

export class SerialMethod extends HookedMethod {
  readonly name = 'serial' as const;
  protected readonly hooks: LayerHooks;

  constructor(backbone: Backbone, options: MethodOptions, seed: number) {
    super(backbone, 'serial');
    const { bottleneck: m } = withDefaults(options);
    const d = backbone.config.dModel;
    const add = (name: string, shape: number[], init: Parameters<typeof initVariable>[3]) =>
      this.params.set(name, initVariable(seed, name, shape, init));
    for (let i = 1; i <= backbone.config.nLayers; i++) {
      for (const which of ['attn', 'mlp']) {
        const p = `serial.${i}.${which}`;
        add(`${p}.down.weight`, [d, m], { kind: 'kaiming', fanIn: d });
        add(`${p}.down.bias`, [m], { kind: 'zeros' });
        add(`${p}.up.weight`, [m, d], { kind: 'zeros' });
        add(`${p}.up.bias`, [d], { kind: 'zeros' });
      }
    }
    const act = backbone.config.activation === 'silu' ? silu : geluNew;
    this.hooks = {
      sublayer: (layer, which, h) => {
        const p = `serial.${layer}.${which}`;
        const w = (n: string) => this.params.get(`${p}.${n}`)!;
        const z = act(linear(h, w('down.weight') as tf.Tensor2D, w('down.bias') as tf.Tensor1D)); // (N, m)
        return h.add(linear(z, w('up.weight') as tf.Tensor2D, w('up.bias') as tf.Tensor1D)); // (N, d)
      },
    };
  }
}
