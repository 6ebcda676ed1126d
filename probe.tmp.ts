import { initBackend } from './src/model/backend.ts';
import { probeWork } from './src/engine/probe.ts';
await initBackend('wasm');
for (const method of ['parallel', 'lora', 'full'] as const) for (const preset of ['tiny', 'w1'] as const) {
  const r = await probeWork({ model: { preset }, layers: preset === 'tiny' ? 2 : 8, microBatches: [1, 4],
    spec: { method, seed: 1, reduction: 8, sideInit: 'random', seqLen: preset === 'tiny' ? 16 : 128, optimizer: { lr: 1e-3 } as never } });
  console.log(method, preset, r.tookMs.toFixed(0), JSON.stringify(r.runs.map((x) => [x.microBatch, x.layer.fwdMs.toFixed(1), x.layer.bwdMs.toFixed(1), x.embed.fwdMs.toFixed(1), x.head.fwdMs.toFixed(1), x.head.bwdMs.toFixed(1)])));
}
