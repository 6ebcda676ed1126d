/**
 * A child process of `charon bench scale`: prints a large-matmul GFLOP/s over about `argv[2]`
 * seconds as one JSON line — the wasm backend's, or with `argv[3]` = native the native engine's
 * (the weight a prepacked constant, as the backbone's are). Several run at once to measure how
 * much compute the machine gives concurrent device processes (the ceiling of any multi-process
 * speedup).
 */
import { initBackend, measureMatmulGflops } from '../../../src/model/backend.ts';
import { measureNativeMatmulGflops } from '../../../src/native/runtime.ts';

const seconds = Number(process.argv[2] ?? 4);
const native = process.argv[3] === 'native';
const measure = native ? () => measureNativeMatmulGflops(1024, 3, true) : () => measureMatmulGflops(768, 3);
if (native) measureNativeMatmulGflops(512, 2, true);
else {
  await initBackend('wasm');
  measureMatmulGflops(512, 2);
}
const t0 = performance.now();
const rates: number[] = [];
while (performance.now() - t0 < seconds * 1000) rates.push(measure());
process.stdout.write(JSON.stringify({ gflops: rates.reduce((a, b) => a + b, 0) / rates.length }) + '\n');
