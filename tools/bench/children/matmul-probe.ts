/**
 * A child process of `charon bench scale`: prints the wasm backend's large-matmul GFLOP/s over
 * about `argv[2]` seconds as one JSON line. Several run at once to measure how much compute the
 * machine gives concurrent device processes (the ceiling of any multi-process speedup).
 */
import { initBackend, measureMatmulGflops } from '../../../src/model/backend.ts';

await initBackend('wasm');
measureMatmulGflops(512, 2);
const seconds = Number(process.argv[2] ?? 4);
const t0 = performance.now();
const rates: number[] = [];
while (performance.now() - t0 < seconds * 1000) rates.push(measureMatmulGflops(768, 3));
process.stdout.write(JSON.stringify({ gflops: rates.reduce((a, b) => a + b, 0) / rates.length }) + '\n');
