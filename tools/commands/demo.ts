/**
 * `charon demo` (`npm run demo`): the shipped model (models/charon-mini) fine-tuned on a mailbox
 * (the SpamAssassin public corpus) across two local device processes with PAC and its activation
 * cache, on a private nats-server: two real `charon launch` runs, one learning the style of the
 * mail (language modelling), one telling spam from ham (classification head). Prints held-out
 * loss and perplexity, accuracy, and a completion of one prompt, each without and with the
 * trained adapter, and the run directory.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';
import { backendFrom, log } from '../model-args.ts';
import { ClassificationHead, createMethod } from '../../src/model/methods/index.ts';
import { loadJsonl } from '../../src/train/data.ts';
import { generate } from '../../src/train/generate.ts';
import { adaptedModel, openModel } from '../../src/train/session.ts';
import { evaluate, type EvalResult } from '../../src/train/trainer.ts';
import { prepareDemoData, type DemoDataOptions } from '../demo-data.ts';

export const summary = 'fine-tune the shipped model on a mailbox across two local devices: spam filter and writing style, before/after';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const usage = `usage: charon demo [--model DIR] [--run-dir DIR] [--seed N] [--epochs N] [--json]

  --model DIR     backbone (default models/charon-mini, shipped with the project)
  --run-dir DIR   where data, topologies and both runs go (default runs/demo-<time>)
  --seed N        mailbox split, sample choice, adapter init and order (default 1)
  --epochs N      epochs of each run (default 6)
  --json          print the results as one JSON document on stdout`;

/** The demo's sizes: chosen so both runs and every evaluation finish in minutes on two busy cores. */
const sizes: Omit<DemoDataOptions, 'seed'> = { tokens: 64, styleTrain: 256, styleHeldOut: 64, spamTrain: 160, spamHeldOut: 48 };
const prompt = 'Hi all,\n\nI have been trying to get';

/** A two-device topology of PAC with the cache on the embedded bus, training `data`. */
function topology(run: string, model: string, data: string, epochs: number, seed: number, lr: number): string {
  const device = (name: string) => ({ name, local: true, backend: 'wasm', memoryMb: 1024 });
  return stringify({
    run,
    model: { dir: model },
    method: { kind: 'parallel', k: 8 },
    data: { file: data },
    training: { epochs, batch: 16, lr, seed, schedule: 'cosine', warmupSteps: 2, cache: { budgetMb: 64, dir: 'cache', dtype: 'f32' } },
    bus: { embedded: true },
    devices: [device('dev0'), device('dev1')],
  });
}

/** Runs `charon launch` in a child process, relaying a short progress line per epoch; resolves when it exits 0. */
function launch(topologyFile: string, runDir: string): Promise<void> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [join(root, 'tools', 'charon.js'), 'launch', topologyFile, '--run-dir', runDir, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '',
      lastError = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let e: Record<string, unknown>;
        try {
          e = JSON.parse(line);
        } catch {
          continue;
        }
        if (e.type === 'DEVICE_JOINED') log(`  ${e.device}: ${e.rejoin ? 'rejoined' : 'joined'} (pid ${e.pid})`);
        else if (e.type === 'RUN_PLANNED')
          log(
            `  plan: ${(e.stages as { from: number; to: number; devices: string[] }[]).map((s) => `layers ${s.from}..${s.to} on ${s.devices.join('+')}`).join(' | ')}`,
          );
        else if (e.type === 'EPOCH_DONE')
          log(`  epoch ${e.epoch} (${e.phase}): mean loss ${(e.loss as number).toFixed(3)}, ${(e.seconds as number).toFixed(1)} s`);
        else if (e.type === 'DEVICE_LOST')
          log(`  ${e.device}: lost (${e.reason ?? `silent ${e.silentMs} ms`}); the run re-plans without it`);
        else if (e.type === 'RUN_FAILED') log(`  run failed: ${e.error}`);
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      const lines = d.toString().trim().split('\n');
      lastError = lines[lines.length - 1] ?? lastError;
    });
    child.on('error', rej);
    child.on('exit', (code, signal) =>
      code === 0 ? res() : rej(new Error(`charon launch ${topologyFile} failed (${signal ?? `exit ${code}`}): ${lastError}`)),
    );
  });
}

const fmt = (x: number) => x.toFixed(3);

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      model: { type: 'string' },
      'run-dir': { type: 'string' },
      seed: { type: 'string' },
      epochs: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  if (args.positionals.length) throw new CliError(`unexpected argument '${args.positionals[0]}'`);
  const model = resolve(str(args, 'model') ?? join(root, 'models', 'charon-mini'));
  const seed = num(args, 'seed', 1, { integer: true, min: 0 });
  const epochs = num(args, 'epochs', 6, { integer: true, min: 1 });
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runDir = resolve(str(args, 'run-dir') ?? join('runs', `demo-${stamp}`));
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(0)} s`;

  const backend = await backendFrom(args);
  const { backbone, tokenizer } = await openModel({ dir: model });
  if (!tokenizer.available) throw new CliError(`${model}: the demo needs a model with tokenizer.json`);
  const d = prepareDemoData(join(runDir, 'data'), tokenizer, { seed, ...sizes });
  log(
    `mailbox: ${d.counts.messages} messages (SpamAssassin public corpus), ${d.counts.trainMessages} for training, ${d.counts.heldOutMessages} held out (seed ${seed}); data in ${join(runDir, 'data')}`,
  );
  const encode = (t: string) => tokenizer.encode(t);
  const load = (f: string) => loadJsonl(f, { vocabSize: backbone.config.vocabSize, encode });
  const styleHeld = load(d.files.styleHeldOut),
    spamHeld = load(d.files.spamHeldOut);
  // A window re-encoded from its text may come out a few tokens longer; launch caps at the context too.
  const T = Math.min(sizes.tokens + 8, backbone.config.maxPositions);

  // (b) the style of the mail: the base model, then PAC across two devices, then the adapter.
  const base = adaptedModel(backbone);
  const lmBefore = evaluate(backbone, base.method, styleHeld, T, 16);
  const sample = (m: typeof base.method) =>
    tokenizer.decode(generate(backbone, m, encode(prompt), { maxNewTokens: 32, greedy: false, temperature: 0.7, topP: 0.9, seed }));
  const sampleBefore = sample(base.method);
  log(`style: held-out loss of the base model ${fmt(lmBefore.loss)} (perplexity ${Math.exp(lmBefore.loss).toFixed(1)}) [${elapsed()}]`);
  mkdirSync(runDir, { recursive: true });
  const styleTopology = join(runDir, 'style.yaml');
  writeFileSync(styleTopology, topology('demo-style', model, d.files.styleTrain, epochs, seed, 0.01));
  log(`style: charon launch ${styleTopology} (PAC, activation cache, 2 local devices, private nats-server)`);
  await launch(styleTopology, join(runDir, 'style'));
  const styleCkpt = join(runDir, 'style', 'checkpoints', 'latest');
  const tuned = adaptedModel(backbone, styleCkpt);
  const lmAfter = evaluate(backbone, tuned.method, styleHeld, T, 16);
  const sampleAfter = sample(tuned.method);
  log(`style: held-out loss with the adapter ${fmt(lmAfter.loss)} [${elapsed()}]`);

  // (a) spam or ham: the untrained head (same seed and init as the run's step 0), then the run's.
  const methodOptions = { reduction: 8 };
  const fresh = createMethod('parallel', backbone, methodOptions, seed);
  const freshHead = new ClassificationHead(backbone.config.dModel, 2, seed);
  const labelNames = loadJsonl(d.files.spamTrain, { vocabSize: backbone.config.vocabSize, encode }).labelNames!;
  if (JSON.stringify(labelNames) !== JSON.stringify(spamHeld.labelNames))
    throw new Error(`demo data: held-out classes ${spamHeld.labelNames} differ from the training classes ${labelNames}`);
  const clsBefore = evaluate(backbone, fresh, spamHeld, T, 16, freshHead);
  log(`spam: held-out accuracy of the untrained head ${(clsBefore.accuracy! * 100).toFixed(1)}% [${elapsed()}]`);
  const spamTopology = join(runDir, 'spam.yaml');
  writeFileSync(spamTopology, topology('demo-spam', model, d.files.spamTrain, epochs, seed, 0.01));
  log(`spam: charon launch ${spamTopology} (labelled data: a classification head on the last stage)`);
  await launch(spamTopology, join(runDir, 'spam'));
  const spamCkpt = join(runDir, 'spam', 'checkpoints', 'latest');
  const cls = adaptedModel(backbone, spamCkpt);
  if (!cls.head) throw new Error(`${spamCkpt}: the run saved no classification head`);
  const clsAfter: EvalResult = evaluate(backbone, cls.method, spamHeld, T, 16, cls.head);

  const result = {
    model,
    backend: backend.detail,
    runDir,
    seconds: (performance.now() - started) / 1000,
    style: {
      heldOutTokens: lmBefore.tokens,
      lossBefore: lmBefore.loss,
      lossAfter: lmAfter.loss,
      perplexityBefore: Math.exp(lmBefore.loss),
      perplexityAfter: Math.exp(lmAfter.loss),
      lossDrop: 1 - lmAfter.loss / lmBefore.loss,
      prompt,
      sampleBefore,
      sampleAfter,
      checkpoint: styleCkpt,
    },
    spam: {
      heldOutSamples: clsAfter.samples,
      accuracyBefore: clsBefore.accuracy!,
      accuracyAfter: clsAfter.accuracy!,
      checkpoint: spamCkpt,
    },
    reports: { style: join(runDir, 'style', 'report.html'), spam: join(runDir, 'spam', 'report.html') },
  };
  writeFileSync(join(runDir, 'demo.json'), JSON.stringify(result, null, 2) + '\n');
  if (flag(args, 'json')) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return 0;
  }
  const s = result.style;
  const quote = (t: string) => JSON.stringify(prompt + t);
  process.stdout.write(
    [
      '',
      `Writing style (held-out mail, ${s.heldOutTokens} tokens):`,
      `  loss        ${fmt(s.lossBefore)} -> ${fmt(s.lossAfter)}  (${(s.lossDrop * 100).toFixed(1)}% lower)`,
      `  perplexity  ${s.perplexityBefore.toFixed(1)} -> ${s.perplexityAfter.toFixed(1)}`,
      `  without the adapter: ${quote(s.sampleBefore)}`,
      `  with the adapter:    ${quote(s.sampleAfter)}`,
      `Spam or ham (held-out, ${result.spam.heldOutSamples} messages, half spam):`,
      `  accuracy    ${(result.spam.accuracyBefore * 100).toFixed(1)}% (untrained head) -> ${(result.spam.accuracyAfter * 100).toFixed(1)}%`,
      `Run reports (loss, time by phase, 1F1B timeline, memory, bytes moved): ${result.reports.style}`,
      `                                                                      ${result.reports.spam}`,
      `Took ${result.seconds.toFixed(0)} s. Run directory: ${runDir}`,
      `  (style/ and spam/ hold each run's summary.json, metrics.jsonl, checkpoints and device logs; demo.json these figures)`,
      '',
    ].join('\n'),
  );
  return 0;
}
