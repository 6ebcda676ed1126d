/**
 * GPT-2 tensor names <-> canonical weights. GPT-2's Conv1D weights are already (din, dout), so
 * only the fused c_attn is split into query/key/value. Both naming styles load: the
 * `transformer.`-prefixed one (GPT2LMHeadModel) and the bare one (GPT2Model).
 */
import { columns, concatColumns, readChecked, transpose2d, type FamilyMapping, type WeightData } from './weights.ts';

export const gpt2Mapping: FamilyMapping = {
  read(c, range, src, file) {
    const prefix = src.names.some((n) => n.startsWith('transformer.')) ? 'transformer.' : '';
    const d = c.dModel,
      V = c.vocabSize;
    const out = new Map<string, WeightData>();
    const get = (name: string, shape: number[]) => readChecked(src, file, prefix + name, shape);
    const put = (name: string, data: Float32Array, shape: number[]) => out.set(name, { data, shape });
    if (range.embed) {
      put('embed.tokens', get('wte.weight', [V, d]), [V, d]);
      put('embed.positions', get('wpe.weight', [c.maxPositions, d]), [c.maxPositions, d]);
    }
    for (let i = range.from; i <= range.to; i++) {
      const h = `h.${i - 1}`,
        p = `layers.${i}`;
      put(`${p}.attn_norm.weight`, get(`${h}.ln_1.weight`, [d]), [d]);
      put(`${p}.attn_norm.bias`, get(`${h}.ln_1.bias`, [d]), [d]);
      const qkv = get(`${h}.attn.c_attn.weight`, [d, 3 * d]); // (d, 3d): [q | k | v]
      const qkvBias = get(`${h}.attn.c_attn.bias`, [3 * d]);
      ['query', 'key', 'value'].forEach((name, k) => {
        put(`${p}.${name}.weight`, columns(qkv, d, 3 * d, k * d, d), [d, d]);
        put(`${p}.${name}.bias`, qkvBias.slice(k * d, (k + 1) * d), [d]);
      });
      put(`${p}.attn_out.weight`, get(`${h}.attn.c_proj.weight`, [d, d]), [d, d]);
      put(`${p}.attn_out.bias`, get(`${h}.attn.c_proj.bias`, [d]), [d]);
      put(`${p}.mlp_norm.weight`, get(`${h}.ln_2.weight`, [d]), [d]);
      put(`${p}.mlp_norm.bias`, get(`${h}.ln_2.bias`, [d]), [d]);
      put(`${p}.mlp_up.weight`, get(`${h}.mlp.c_fc.weight`, [d, c.dFF]), [d, c.dFF]);
      put(`${p}.mlp_up.bias`, get(`${h}.mlp.c_fc.bias`, [c.dFF]), [c.dFF]);
      put(`${p}.mlp_down.weight`, get(`${h}.mlp.c_proj.weight`, [c.dFF, d]), [c.dFF, d]);
      put(`${p}.mlp_down.bias`, get(`${h}.mlp.c_proj.bias`, [d]), [d]);
    }
    if (range.head) {
      put('final_norm.weight', get('ln_f.weight', [d]), [d]);
      put('final_norm.bias', get('ln_f.bias', [d]), [d]);
      // The head is stored (d, V): a one-time transpose of the (V, d) embedding or lm_head.
      const head = c.tiedHead ? get('wte.weight', [V, d]) : readChecked(src, file, 'lm_head.weight', [V, d]);
      put('head.weight', transpose2d(head, V, d), [d, V]);
    }
    return out;
  },

  write(c, w, options = {}) {
    const prefix = options.bareNames ? '' : 'transformer.';
    const d = c.dModel;
    const out = new Map<string, WeightData>();
    const put = (name: string, data: Float32Array, shape: number[]) => out.set(prefix + name, { data, shape });
    const get = (name: string) => {
      const t = w.get(name);
      if (!t) throw new Error(`gpt2 export: weight ${name} missing`);
      return t.data;
    };
    put('wte.weight', get('embed.tokens'), [c.vocabSize, d]);
    put('wpe.weight', get('embed.positions'), [c.maxPositions, d]);
    for (let i = 1; i <= c.nLayers; i++) {
      const h = `h.${i - 1}`,
        p = `layers.${i}`;
      put(`${h}.ln_1.weight`, get(`${p}.attn_norm.weight`), [d]);
      put(`${h}.ln_1.bias`, get(`${p}.attn_norm.bias`), [d]);
      put(`${h}.attn.c_attn.weight`, concatColumns([get(`${p}.query.weight`), get(`${p}.key.weight`), get(`${p}.value.weight`)], d), [
        d,
        3 * d,
      ]);
      const bias = new Float32Array(3 * d);
      ['query', 'key', 'value'].forEach((n, k) => bias.set(get(`${p}.${n}.bias`), k * d));
      put(`${h}.attn.c_attn.bias`, bias, [3 * d]);
      put(`${h}.attn.c_proj.weight`, get(`${p}.attn_out.weight`), [d, d]);
      put(`${h}.attn.c_proj.bias`, get(`${p}.attn_out.bias`), [d]);
      put(`${h}.ln_2.weight`, get(`${p}.mlp_norm.weight`), [d]);
      put(`${h}.ln_2.bias`, get(`${p}.mlp_norm.bias`), [d]);
      put(`${h}.mlp.c_fc.weight`, get(`${p}.mlp_up.weight`), [d, c.dFF]);
      put(`${h}.mlp.c_fc.bias`, get(`${p}.mlp_up.bias`), [c.dFF]);
      put(`${h}.mlp.c_proj.weight`, get(`${p}.mlp_down.weight`), [c.dFF, d]);
      put(`${h}.mlp.c_proj.bias`, get(`${p}.mlp_down.bias`), [d]);
    }
    put('ln_f.weight', get('final_norm.weight'), [d]);
    put('ln_f.bias', get('final_norm.bias'), [d]);
    if (!c.tiedHead) out.set('lm_head.weight', { data: transpose2d(get('head.weight'), d, c.vocabSize), shape: [c.vocabSize, d] });
    return out;
  },
};
