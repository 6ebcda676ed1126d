/**
 * `charon bench bus`: throughput of a float32 tensor sent and received through codec + bus
 * (envelope encode, publish, chunking above max_payload, reassembly, validated decode) against raw
 * NATS bytes of the same size, on the same private nats-server, measured alternately in one run.
 * Payloads over max_payload cannot go raw in one message, so chunked sizes compare against the
 * raw per-byte rate of max_payload-sized messages. The receiver runs in its own process (as a
 * peer device would) and acknowledges each message; the sender keeps a bounded window in flight.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, startNatsServer } from '../../src/bus/index.ts';
import { WireTensor, codecStats } from '../../src/tensor/index.ts';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';

export const summary = 'tensor send+receive through codec and bus vs raw NATS bytes, 64 KB .. 32 MB';

const usage = `usage: charon bench bus [--sizes LIST] [--rounds N] [--mb-per-run N] [--json]

  --sizes LIST     payload sizes, e.g. 64k,1m,32m (default 64k,256k,1m,4m,8m,16m,32m)
  --rounds N       raw/tensor pairs per size, measured back to back (default 7); the ratio
                   reported is the median of the pairs' ratios, which cancels slow load drift
  --mb-per-run N   megabytes moved per measurement (default 32)
  --json           print one JSON document on stdout

Targets: tensor >= 80% of raw for payloads >= 1 MB; chunked 32 MB >= 70% of raw per-byte rate.`;

const MB = 1024 * 1024;
const WINDOW_BYTES = 32 * MB; // bytes in flight: at least 2 messages so sends pipeline; under nats-server's 64 MB pending limit at 32 MB

interface Row {
  bytes: number;
  chunked: boolean;
  rawReferenceBytes: number;
  tensorMBps: number;
  rawMBps: number;
  ratio: number;
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      sizes: { type: 'string' },
      rounds: { type: 'string' },
      'mb-per-run': { type: 'string' },
      json: { type: 'boolean' },
      'serve-receiver': { type: 'string' },
    },
    usage,
  );
  if (!args) return 0;
  const receiverOf = str(args, 'serve-receiver');
  if (receiverOf) return serveReceiver(receiverOf);
  const sizes = parseSizes(str(args, 'sizes') ?? '64k,256k,1m,4m,8m,16m,32m');
  const rounds = num(args, 'rounds', 7, { integer: true, min: 1 });
  const perRun = num(args, 'mb-per-run', 32, { min: 1 }) * MB;
  const json = flag(args, 'json');
  const log = (s: string) => process.stderr.write(s + '\n');

  const runDir = mkdtempSync(join(tmpdir(), 'charon-bench-bus-'));
  const server = await startNatsServer({ runDir, jetstream: false });
  const tx = await Bus.connect({ servers: server.url, name: 'bench-tx', run: 'bench' });
  const receiver = await startReceiver(server.url);
  try {
    const maxPayload = tx.maxPayload;
    const rows: Row[] = [];
    for (const bytes of sizes) {
      const chunked = bytes + 1024 > maxPayload;
      const rawBytes = chunked ? maxPayload : bytes;
      const raw: number[] = [];
      const tensor: number[] = [];
      for (let i = 0; i < rounds; i++) {
        // alternate which goes first so neither always follows the other's garbage
        if (i % 2 === 0) raw.push(await measureRaw(tx, rawBytes, perRun));
        tensor.push(await measureTensor(tx, bytes, perRun));
        if (i % 2 === 1) raw.push(await measureRaw(tx, rawBytes, perRun));
      }
      const ratio = median(tensor.map((t, i) => t / raw[i]!));
      const row: Row = {
        bytes,
        chunked,
        rawReferenceBytes: rawBytes,
        tensorMBps: round(median(tensor)),
        rawMBps: round(median(raw)),
        ratio: Math.round(ratio * 1000) / 1000,
      };
      rows.push(row);
      log(
        `${fmtSize(bytes).padStart(6)}${chunked ? ' (chunked)' : '          '}  tensor ${row.tensorMBps.toFixed(0).padStart(6)} MB/s  raw${chunked ? ` @${fmtSize(rawBytes)}` : ''} ${row.rawMBps.toFixed(0).padStart(6)} MB/s  ratio ${row.ratio.toFixed(2)}`,
      );
    }
    const large = rows.filter((r) => r.bytes >= MB && !r.chunked);
    const big = rows.find((r) => r.bytes === 32 * MB);
    const result = {
      bench: 'bus',
      maxPayload,
      rounds,
      bytesPerMeasurement: perRun,
      note: 'sender and receiver in separate processes over one loopback nats-server, receiver acknowledges each message; ratio = median over back-to-back raw/tensor pairs of tensor/raw, MB/s = medians; chunked sizes compare with raw messages of max_payload bytes',
      rows,
      targets: {
        tensorVsRawAtLeast1MB: { min: large.length ? Math.min(...large.map((r) => r.ratio)) : null, target: 0.8 },
        chunked32MB: { ratio: big?.ratio ?? null, target: 0.7 },
      },
    };
    if (json) process.stdout.write(JSON.stringify(result) + '\n');
    else
      log(
        `targets: tensor/raw >= 1 MB min ${result.targets.tensorVsRawAtLeast1MB.min} (>= 0.8); chunked 32 MB ${result.targets.chunked32MB.ratio} (>= 0.7)`,
      );
    return 0;
  } finally {
    receiver.kill('SIGTERM');
    await new Promise((r) => receiver.once('exit', r));
    await tx.close();
    await server.stop();
    rmSync(runDir, { recursive: true, force: true });
  }
}

const ACK = 'charon.bench.ack';

/**
 * The receiving side (hidden flag --serve-receiver URL): acknowledges each raw message with its
 * length and each tensor with its byte length once decoded and checked.
 */
async function serveReceiver(url: string): Promise<number> {
  const rx = await Bus.connect({ servers: url, name: 'bench-rx', run: 'bench' });
  const ack = (n: number) => rx.publishBytes(ACK, new TextEncoder().encode(String(n)));
  rx.subscribeBytes('charon.bench.raw.*', (b) => ack(b.length));
  rx.subscribe<{ t: WireTensor<'float32'> }>(
    'charon.bench.tensor.*',
    (env) => {
      const t = env.body.t;
      ack(t.size === 0 || t.data[t.size - 1] === 1.5 ? t.byteLength : -1);
    },
    { kinds: ['t'] },
  );
  await rx.flush();
  process.stdout.write('ready\n');
  await new Promise<void>((res) => process.once('SIGTERM', () => res()));
  process.stderr.write(`receiver: ${codecStats.views} tensors decoded as views, ${codecStats.copies} copied\n`);
  await rx.close();
  return 0;
}

function startReceiver(url: string): Promise<ChildProcess> {
  const cli = fileURLToPath(new URL('../cli.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'bench', 'bus', '--serve-receiver', url], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((res, rej) => {
    child.stdout!.once('data', () => res(child));
    child.once('exit', (code) => rej(new Error(`bench receiver exited (${code}) before it was ready`)));
  });
}

/** MB/s of `bytes`-sized raw messages, sender to receiver, with a bounded window in flight. */
async function measureRaw(tx: Bus, bytes: number, perRun: number): Promise<number> {
  const payload = new Uint8Array(bytes).fill(7);
  const subject = `charon.bench.raw.${bytes}`;
  return pump(tx, () => tx.publishBytes(subject, payload), bytes, perRun);
}

/** MB/s of float32 tensors of `bytes` through envelope, bus and validated decode. */
async function measureTensor(tx: Bus, bytes: number, perRun: number): Promise<number> {
  const n = bytes / 4;
  const t = new WireTensor('float32', [n], new Float32Array(n).fill(1.5));
  const subject = `charon.bench.tensor.${bytes}`;
  return pump(tx, () => tx.publish(subject, 't', { t }), bytes, perRun);
}

async function pump(tx: Bus, send: () => void, bytes: number, perRun: number): Promise<number> {
  const count = Math.max(4, Math.round(perRun / bytes));
  const window = Math.max(2, Math.floor(WINDOW_BYTES / bytes));
  let received = 0;
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  const sub = tx.subscribeBytes(ACK, (b) => {
    const got = Number(new TextDecoder().decode(b));
    if (got !== bytes) failure = new Error(`receiver acknowledged ${got} bytes, expected ${bytes}`);
    received++;
    wake?.();
  });
  await tx.flush();
  const t0 = process.hrtime.bigint();
  for (let sent = 0; sent < count; sent++) {
    while (sent - received >= window)
      await new Promise<void>((r) => {
        wake = r;
      });
    send();
  }
  while (received < count)
    await new Promise<void>((r) => {
      wake = r;
    });
  if (failure) throw failure;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  sub.unsubscribe();
  return (count * bytes) / MB / secs;
}

function parseSizes(text: string): number[] {
  return text.split(',').map((s) => {
    const m = /^(\d+)([km]?)$/i.exec(s.trim());
    if (!m) throw new CliError(`--sizes: '${s}' is not a size like 64k or 8m`);
    const n = Number(m[1]) * (m[2]!.toLowerCase() === 'm' ? MB : m[2]!.toLowerCase() === 'k' ? 1024 : 1);
    if (n < 4 || n % 4 !== 0) throw new CliError(`--sizes: '${s}' must be a positive multiple of 4 bytes`);
    return n;
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const round = (x: number) => Math.round(x * 10) / 10;
const fmtSize = (b: number) => (b >= MB ? `${b / MB}MB` : `${b / 1024}KB`);
