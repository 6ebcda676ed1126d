import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, startNatsServer } from '../src/bus/index.ts';
import { WireTensor } from '../src/tensor/index.ts';
const N = 363520;
if (process.argv[2] === 'echo') {
  const rx = await Bus.connect({ servers: process.argv[3]!, name: 'echo', run: 'bench' });
  rx.subscribeBytes('pp.raw', (b) => rx.publishBytes('pp.raw.back', b));
  rx.subscribe<{ t: WireTensor<'float32'> }>('pp.t', (env) => rx.publish('pp.t.back', 't', { t: env.body.t }), { kinds: ['t'] });
  await rx.flush();
  process.stdout.write('ready\n');
  await new Promise(() => {});
}
const server = await startNatsServer({ runDir: mkdtempSync(join(tmpdir(), 'pp-')), jetstream: false });
const tx = await Bus.connect({ servers: server.url, name: 'tx', run: 'bench' });
const child = spawn(process.execPath, ['--import', 'tsx', new URL(import.meta.url).pathname, 'echo', server.url], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((r) => child.stdout!.once('data', r));
let wake: () => void = () => {};
tx.subscribeBytes('pp.raw.back', () => wake());
tx.subscribe('pp.t.back', () => wake(), { kinds: ['t'] });
await tx.flush();
const data = new Float32Array(N).fill(1.5);
const bytes = new Uint8Array(data.buffer);
for (const kind of ['raw', 't', 'raw', 't']) {
  const rtts: number[] = [];
  for (let i = 0; i < 30; i++) {
    const t0 = performance.now();
    const back = new Promise<void>((r) => (wake = r));
    if (kind === 'raw') tx.publishBytes('pp.raw', bytes);
    else tx.publish('pp.t', 't', { t: new WireTensor('float32', [N], data) });
    await back;
    rtts.push(performance.now() - t0);
  }
  rtts.sort((a, b) => a - b);
  console.log(kind, 'rtt median', rtts[15]!.toFixed(2), 'ms  min', rtts[0]!.toFixed(2));
}
child.kill();
await tx.close();
await server.stop();
process.exit(0);
