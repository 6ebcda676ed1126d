/**
 * Llama-family tensor names (llama, mistral, qwen2) <-> canonical weights. nn.Linear stores
 * (dout, din); every projection is transposed once here to the fast (din, dout) layout.
 */
import type { ModelConfig } from './types.ts';
import { readChecked, transpose2d, type FamilyMapping, type WeightData } from './weights.ts';

const projections = [
  ['query', 'self_attn.q_proj'],
  ['key', 'self_attn.k_proj'],
  ['value', 'self_attn.v_proj'],
  ['attn_out', 'self_attn.o_proj'],
  ['mlp_gate', 'mlp.gate_proj'],
  ['mlp_up', 'mlp.up_proj'],
  ['mlp_down', 'mlp.down_proj'],
] as const;

type Projection = (typeof projections)[number][0];

function projShapes(c: ModelConfig): Record<Projection, [number, number]> {
  const d = c.dModel,
    q = c.nHeads * c.headDim,
    kv = c.nKvHeads * c.headDim;
  // (din, dout) per canonical projection.
  return { query: [d, q], key: [d, kv], value: [d, kv], attn_out: [q, d], mlp_gate: [d, c.dFF], mlp_up: [d, c.dFF], mlp_down: [c.dFF, d] };
}

const hasBias = (name: string, qkvBias: boolean) => qkvBias && (name === 'query' || name === 'key' || name === 'value');

export const llamaMapping: FamilyMapping = {
  read(c, range, src, file) {
    const d = c.dModel,
      V = c.vocabSize;
    const shapes = projShapes(c);
    const out = new Map<string, WeightData>();
    const get = (name: string, shape: number[]) => readChecked(src, file, name, shape);
    const put = (name: string, data: Float32Array, shape: number[]) => out.set(name, { data, shape });
    if (range.embed) put('embed.tokens', get('model.embed_tokens.weight', [V, d]), [V, d]);
    for (let i = range.from; i <= range.to; i++) {
      const h = `model.layers.${i - 1}`,
        p = `layers.${i}`;
      put(`${p}.attn_norm.weight`, get(`${h}.input_layernorm.weight`, [d]), [d]);
      put(`${p}.mlp_norm.weight`, get(`${h}.post_attention_layernorm.weight`, [d]), [d]);
      for (const [name, hf] of projections) {
        const [din, dout] = shapes[name];
        put(`${p}.${name}.weight`, transpose2d(get(`${h}.${hf}.weight`, [dout, din]), dout, din), [din, dout]);
        if (hasBias(name, c.qkvBias)) put(`${p}.${name}.bias`, get(`${h}.${hf}.bias`, [dout]), [dout]);
      }
    }
    if (range.head) {
      put('final_norm.weight', get('model.norm.weight', [d]), [d]);
      const head = get(c.tiedHead ? 'model.embed_tokens.weight' : 'lm_head.weight', [V, d]);
      put('head.weight', transpose2d(head, V, d), [d, V]);
    }
    return out;
  },

  write(c, w) {
    const d = c.dModel;
    const shapes = projShapes(c);
    const out = new Map<string, WeightData>();
    const get = (name: string) => {
      const t = w.get(name);
      if (!t) throw new Error(`llama export: weight ${name} missing`);
      return t.data;
    };
    out.set('model.embed_tokens.weight', { data: get('embed.tokens'), shape: [c.vocabSize, d] });
    for (let i = 1; i <= c.nLayers; i++) {
      const h = `model.layers.${i - 1}`,
        p = `layers.${i}`;
      out.set(`${h}.input_layernorm.weight`, { data: get(`${p}.attn_norm.weight`), shape: [d] });
      out.set(`${h}.post_attention_layernorm.weight`, { data: get(`${p}.mlp_norm.weight`), shape: [d] });
      for (const [name, hf] of projections) {
        const [din, dout] = shapes[name];
        out.set(`${h}.${hf}.weight`, { data: transpose2d(get(`${p}.${name}.weight`), din, dout), shape: [dout, din] });
        if (hasBias(name, c.qkvBias)) out.set(`${h}.${hf}.bias`, { data: get(`${p}.${name}.bias`), shape: [dout] });
      }
    }
    out.set('model.norm.weight', { data: get('final_norm.weight'), shape: [d] });
    if (!c.tiedHead) out.set('lm_head.weight', { data: transpose2d(get('head.weight'), d, c.vocabSize), shape: [c.vocabSize, d] });
    return out;
  },
};
