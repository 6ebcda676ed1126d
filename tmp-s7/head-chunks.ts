import { NativeHead } from '../src/native/layers.ts';
const d = 512, V = 8192, n = 1024;
const W = new Float32Array(d * V).map(() => (Math.random() - 0.5) * 0.04);
const head = new NativeHead({ data: W, shape: [d, V] } as any);
const h = new Float32Array(n * d).map(() => Math.random() - 0.5);
const t = new Int32Array(n).map(() => Math.floor(Math.random() * V));
const s = new Float32Array(n).fill(1 / n);
const sizes = (process.argv[2] ?? '1024,512,256,128,64').split(',').map(Number);
for (const c of sizes) {
  const run = () => { for (let r = 0; r < n; r += c) head.lossGrad(h.subarray(r * d, (r + c) * d), c, t.subarray(r, r + c), s.subarray(r, r + c)); };
  run();
  const times: number[] = [];
  for (let k = 0; k < 7; k++) { const t0 = performance.now(); run(); times.push(performance.now() - t0); }
  times.sort((a, b) => a - b);
  console.log(`chunk ${c}: median ${times[3]!.toFixed(1)} ms for ${n} rows (${((4 * n * d * V) / 1e6 / times[3]!).toFixed(0)} GFLOP/s)`);
}
