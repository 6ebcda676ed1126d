import { initBackend } from '../src/model/backend.ts';
import { openStageCompute } from '../src/engine/stage-setup.ts';
const info = await initBackend();
console.log(JSON.stringify(info).slice(0, 200));
const open = await openStageCompute({ model: { preset: 'w1', seed: 1 }, part: 'cached', spec: { seed: 1, sideInit: 'random', seqLen: 128, optimizer: { lr: 1e-3, maxGradNorm: 1 } } as any });
const c = open.compute;
const T = 128, d = 512, L = 8;
for (const rows of [1, 2, 4, 8, 4, 8]) {
  const acts = Array.from({ length: L + 1 }, () => new Float32Array(rows * T * d).map(() => Math.random() - 0.5));
  const ids = new Int32Array(rows * T).map((_, i) => 1 + (i % 7));
  const mask = new Float32Array(rows * T).fill(1);
  const t: Record<string, number[]> = { fwd: [], bwd: [], flat: [], apply: [] };
  for (let k = 0; k < 6; k++) {
    let t0 = performance.now();
    c.forward(0, rows, { kind: 'cached', acts });
    t.fwd!.push(performance.now() - t0); t0 = performance.now();
    c.lossBackward(0, { ids, mask }, rows * T);
    t.bwd!.push(performance.now() - t0); t0 = performance.now();
    const g = c.flatGradients();
    t.flat!.push(performance.now() - t0); t0 = performance.now();
    c.apply(g, open.optimizer);
    t.apply!.push(performance.now() - t0);
  }
  const med = (a: number[]) => a.slice(1).sort((x, y) => x - y)[2]!.toFixed(1);
  console.log(`rows ${rows}: fwd ${med(t.fwd!)} bwd ${med(t.bwd!)} flat ${med(t.flat!)} apply ${med(t.apply!)}`);
}
process.exit(0);
