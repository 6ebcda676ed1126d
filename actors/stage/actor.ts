/**
 * The device side of a distributed PAC run: control handlers (`dev.<device>.ctl` kinds) that a
 * device process installs through the device actor's `ctl` option.
 *
 *   assign        {spec, stages, stage, rank, generation, firstStep, state?}  load this stage rank: only its
 *                 backbone layers (plus embedding / head on the first / last stage) and side blocks
 *   step          {step, sampleIds, withState}   one 1F1B step; rank 0 of a stage adds its side
 *                 parameters and AdamW state when `withState`, else its group's reduced gradient
 *                 (`grads`, side-state.ts PackedGrads: the coordinator replays the update)
 *   abort         {step?}                        end the work in flight (a step, a fill, a
 *                 redistribution; with `step`, only that step) and drop its in-flight messages
 *   fill          {sampleIds}                    forward only through the pipeline, caching what
 *                 this rank computes (refilling caches lost with a device or old processes)
 *   release       {}                             free the stage or cached-phase worker; the cache stays
 *   cache-report  {spec, fingerprint}            layers held per sample (opens the cache if needed)
 *   redistribute  {shards, devices, keep?, sends?} move cache entries so each device holds its shard (+ copies)
 *   cached-load   {rank, devices, shard, generation, firstStep, state}  the whole side network + head
 *                 for cached epochs
 *   cached-step   {step, sampleIds, withState}   one data-parallel step from the cache
 *   finish        {}                             drop everything of the run
 *
 * Argument and reply bodies are src/runtime/ctl.ts. The stage part runs on `stageMachine`
 * (unloaded -> loading -> ready -> running -> ready); the cache is the DeviceCache the device
 * process hands in (`openCache`). Compute goes through the device's simulated slowdown, sends
 * through its simulated link, and every compute operation yields to the event loop after it, so
 * that an abort gets in between two operations.
 */
import { canonicalJson } from '../../src/train/checkpoint.ts';
import { createActor, fromPromise, waitFor } from 'xstate';
import { loadConfig } from '../../src/model/load.ts';
import type { AdamW } from '../../src/train/optim.ts';
import type { Bus } from '../../src/bus/index.ts';
import type { DeviceCache, DeviceCacheOptions } from '../../src/cache/device-cache.ts';
import {
  abortArgs,
  assignArgs,
  cachedLoadArgs,
  cacheReportArgs,
  fillArgs,
  redistributeArgs,
  stepArgs,
  cachedStepArgs,
  type AssignArgs,
  type CtlDevice,
  type CtlHandler,
  type StepReply,
} from '../../src/runtime/ctl.ts';
import { loadRunData, plannedMicroBatches, stageSpec, usesCache, type RunSpec } from '../../src/train/run-spec.ts';
import {
  BusRing,
  BusStageLinks,
  cachedStep,
  crossPlace,
  openStageCompute,
  restoreState,
  packGrads,
  packState,
  rowSource,
  StageRunner,
  StepTimeline,
  tensorBytes,
  wallMs,
  unpackState,
  type OpenStage,
  type PackedGrads,
  type PackedState,
  type Pace,
  type RankOutcome,
  type RankCompute,
  type StageLayout,
} from '../../src/engine/index.ts';
import { stageMachine, type StepRun } from './machine.ts';
import { StepAborted, WrongState } from '../../src/runtime/errors.ts';
import { resetPeakTensorBytes, sampleTensorBytes, stepMemory } from '../../src/model/memory.ts';

interface Stage extends OpenStage {
  links: BusStageLinks;
  runner: StageRunner;
  rank: number;
}

interface CachedWorker extends OpenStage {
  ring: BusRing;
  rank: number;
  size: number;
  shard: Set<number>;
}

/** The settings in which two specs of one run differ: a re-plan may change the micro-batch count, nothing else. */
const runDifferences = (a: RunSpec, b: RunSpec): string[] => {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => k !== 'microBatches');
  const field = (s: RunSpec, k: string) => canonicalJson((s as unknown as Record<string, unknown>)[k]);
  return keys.filter((k) => field(a, k) !== field(b, k));
};

/** The backbone part a stage rank of `a` loads. */
const stagePart = (a: AssignArgs) => {
  const st = a.stages[a.stage]!;
  return { from: st.from, to: st.to, first: a.stage === 0, last: a.stage === a.stages.length - 1 };
};

/**
 * Whether the stage loaded for `held` serves `next` as it is: the same run and method, the same
 * layers (embedding and head included), and a committed side state to set it back to (without
 * one the side network would have to start again from its seed: it is loaded anew).
 */
const keepable = (held: AssignArgs | null, next: AssignArgs): boolean =>
  held !== null &&
  next.state !== undefined &&
  runDifferences(held.spec, next.spec).length === 0 &&
  canonicalJson(stagePart(held)) === canonicalJson(stagePart(next));

export interface TrainingCtlOptions {
  /** The device's activation cache for a run (opened on first use; the cache actor in `charon device`). */
  openCache: (device: CtlDevice, options: DeviceCacheOptions) => DeviceCache;
  log?: (line: string) => void;
  /** Where the device's activation cache spills to disk (private to this device process). */
  cacheDir: string;
}

/** The control handlers a device installs to take part in training. */
export function trainingCtl(opts: TrainingCtlOptions): Record<string, CtlHandler> {
  const log = opts.log ?? (() => {});
  let stage: Stage | null = null;
  let worker: CachedWorker | null = null;
  let cache: DeviceCache | null = null;
  let spec: RunSpec | null = null;
  let rows: ReturnType<typeof rowSource> | null = null;
  let device: CtlDevice | null = null;
  /** The abort signal of the work in flight (a step, a fill): pace() stops it at its next operation once aborted. */
  let stepSignal: AbortSignal | null = null;
  /** A fill (step 0) or cached step in flight, which `abort` ends (pipeline steps go through the stage machine). */
  let abortable: { step: number; controller: AbortController } | null = null;
  let computeMs = 0;
  /**
   * The last cached step's update, which runs once its reply is handed back (cachedStep's
   * `deferUpdate`); the next cached step and a release wait for it. A failed update fails every
   * cached step after it until the worker is released and loaded again from the coordinator's state.
   */
  let updating: Promise<void> = Promise.resolve();
  let updateFailure: Error | null = null;
  /** Spans of the work in flight, returned with its reply. */
  let timeline = new StepTimeline();

  const bus = (): Bus => device!.bus();
  const pace: Pace = async (op) => {
    if (stepSignal?.aborted) throw new StepAborted(machine.getSnapshot().context.step);
    const t0 = performance.now();
    const out = await device!.sim.compute(() => {
      const r = op();
      sampleTensorBytes();
      return r;
    });
    computeMs += performance.now() - t0;
    await new Promise((r) => setImmediate(r));
    return out;
  };
  const throttle = (bytes: number, send: () => void) => {
    const start = wallMs(),
      tl = timeline;
    void device!.sim.send(bytes, () => {
      send();
      tl.add({ kind: 'send', start, end: wallMs(), bytes });
    });
  };

  /**
   * Runs `work` so that `abort` ends it at once: the reply does not wait for a receive that waits
   * on a lost device (it fails when the links close at release), and pace() stops what was left
   * behind at its next operation (an aborted signal stays until the next work replaces it).
   */
  const untilAborted = async <T>(step: number, what: string, work: () => Promise<T>): Promise<T> => {
    const controller = new AbortController();
    abortable = { step, controller };
    stepSignal = controller.signal;
    const aborted = new Promise<never>((_, reject) =>
      controller.signal.addEventListener('abort', () => reject(new StepAborted(step, `aborted (${what})`)), { once: true }),
    );
    try {
      return await Promise.race([work(), aborted]);
    } finally {
      if (abortable?.controller === controller) {
        abortable = null;
        if (!controller.signal.aborted) stepSignal = null;
      }
    }
  };

  /** The device's cache for run `s` (created on first use, so devices without a stage get one too). */
  const ensureCache = (s: RunSpec, modelFingerprint: string): DeviceCache => {
    const differ = spec ? runDifferences(spec, s) : [];
    if (differ.length > 0)
      throw new Error(`a different run spec than this device already serves (${differ.map((k) => `'${k}'`).join(', ')} differ)`);
    spec = s;
    rows ??= rowSource(loadRunData(s), s.seqLen);
    const config = loadConfig(s.model);
    cache ??= opts.openCache(device!, {
      fingerprint: `${modelFingerprint}-t${s.seqLen}`,
      layers: config.nLayers,
      width: s.seqLen * config.dModel,
      memoryBytes: s.cache.budgetMb * 2 ** 20,
      dtype: s.cache.dtype,
      dir: opts.cacheDir,
    });
    return cache;
  };

  const loadStage = async (a: AssignArgs): Promise<void> => {
    const st = a.stages[a.stage]!,
      S = a.stages.length;
    const open = await openStageCompute({
      model: a.spec.model,
      part: stagePart(a),
      spec: stageSpec(a.spec),
      ...(a.state ? { state: unpackState(a.state as PackedState) } : {}),
    });
    stage = bindStage(open, a);
    log(
      `stage ${a.stage} rank ${a.rank}: layers ${st.from}..${st.to}${a.stage === 0 ? ' + embedding' : ''}${a.stage === S - 1 ? ' + head' : ''}, ${open.backbone.weights().size} backbone tensors`,
    );
  };

  /** The loaded stage's place in plan `a`: links to its peers under `a`'s generation, a runner over `a`'s layout. */
  const bindStage = (open: OpenStage, a: AssignArgs): Stage => {
    const st = a.stages[a.stage]!,
      S = a.stages.length,
      s = a.spec;
    const { backbone, compute, optimizer } = open;
    const T = s.seqLen,
      d = backbone.config.dModel;
    const fill = ensureCache(s, backbone.fingerprint);
    const links = new BusStageLinks(bus(), {
      stage: a.stage,
      rank: a.rank,
      group: `s${a.stage}`,
      peers: { group: st.devices, prev: a.stages[a.stage - 1]?.devices ?? [], next: a.stages[a.stage + 1]?.devices ?? [] },
      widths: { b: T * d, a: T * compute.width.r, g: T * compute.width.g },
      generation: a.generation,
      firstStep: a.firstStep,
      throttle,
      ...(S > 1 ? { cross: crossPlace(a.stages, a.stage, a.rank) } : {}),
    });
    const runner = new StageRunner({
      stages: a.stages as StageLayout[],
      stage: a.stage,
      rank: a.rank,
      microBatches: plannedMicroBatches(s),
      compute,
      optimizer,
      links,
      data: rows!,
      pace,
      timeline: () => timeline,
      // Without the cache (another method, or `cache: off`) nothing computed is kept.
      ...(usesCache(s) ? { onComputed: (ids: number[], computed: Map<number, Float32Array>) => fill.fill(ids, computed) } : {}),
    });
    return { ...open, links, runner, rank: a.rank };
  };

  /**
   * The loaded stage under the re-plan `a`, which gives it the same layers: the backbone slice
   * and compute stay, the old plan's links close (late messages of its generation find no
   * subscriber, the new links refuse them), and the side network and optimiser go back to the
   * committed state `a` carries, whatever the stage applied of the aborted step.
   */
  const rebindStage = (a: AssignArgs): AssignArgs => {
    const old = stage!;
    old.links.close();
    old.compute.clear();
    restoreState(old.compute, old.optimizer, unpackState(a.state as PackedState));
    stage = bindStage(old, a);
    log(`stage ${a.stage} rank ${a.rank}: kept layers ${a.stages[a.stage]!.from}..${a.stages[a.stage]!.to} (generation ${a.generation})`);
    return a;
  };

  const unloadStage = () => {
    if (!stage) return;
    stage.links.close();
    stage.dispose();
    stage = null;
  };

  /** Frees the stage (through its machine) and the cached-phase worker; the cache stays. */
  const release = async () => {
    await updating;
    updateFailure = null;
    if (machine.getSnapshot().value === 'ready') {
      machine.send({ type: 'UNLOAD' });
      await waitFor(machine, (x) => x.value === 'unloaded', { timeout: Infinity });
    }
    if (worker) {
      worker.ring.close();
      worker.dispose();
      worker = null;
    }
  };

  const machine = createActor(
    stageMachine.provide({
      actors: {
        loadStage: fromPromise<void, AssignArgs>(async ({ input }) => loadStage(input)),
        rebindStage: fromPromise<AssignArgs, AssignArgs>(async ({ input }) => rebindStage(input)),
        runStep: fromPromise<RankOutcome, StepRun>(async ({ input, signal }) => {
          stepSignal = signal;
          try {
            return await stage!.runner.runStep(input.step, input.sampleIds, input.shares);
          } finally {
            stepSignal = null;
          }
        }),
        abortStep: fromPromise(async () => {
          stage?.compute.clear();
        }),
        unloadStage: fromPromise(async () => unloadStage()),
      },
    }),
  ).start();

  const begin = (d: CtlDevice) => {
    device = d;
    computeMs = 0;
    timeline = new StepTimeline();
    resetPeakTensorBytes();
  };
  /** Rank 0 adds the full state when asked, else the reduced gradient it applied. */
  const reply = (
    { reduced, ...o }: RankOutcome,
    ids: number[],
    rank: number,
    withState: boolean,
    c: RankCompute,
    opt: AdamW,
  ): StepReply & { grads?: PackedGrads } => ({
    ...o,
    tokens: rows!.tokens(ids),
    computeSeconds: computeMs / 1000,
    timeline: timeline.spans,
    peakBytes: stepMemory(opt, cache?.memory().bytes ?? 0).bytes,
    ...(rank !== 0 ? {} : withState ? { state: packState(c, opt) } : { grads: packGrads(c, reduced) }),
  });

  return {
    assign: async (raw, d) => {
      device = d;
      const a = assignArgs.parse(raw);
      const held = machine.getSnapshot();
      let kept = false;
      if (held.value === 'ready' && keepable(held.context.assignment, a)) {
        machine.send({ type: 'REBIND', assignment: a });
        const s = await waitFor(machine, (x) => x.value !== 'rebinding', { timeout: Infinity });
        kept = s.value === 'ready';
        if (!kept) log(`stage ${a.stage} rank ${a.rank}: keeping the loaded layers failed (${s.context.error}); loading them again`);
      } else if (held.value === 'ready') machine.send({ type: 'UNLOAD' });
      if (!kept) {
        const s = await waitFor(machine, (x) => x.value !== 'unloading' && x.value !== 'rebinding', { timeout: Infinity });
        if (s.value !== 'unloaded') throw new WrongState(`stage ${String(s.value)}`, 'assign');
        machine.send({ type: 'LOAD', assignment: a });
        const loaded = await waitFor(machine, (x) => x.value !== 'loading', { timeout: Infinity });
        if (loaded.value !== 'ready') throw new Error(`assign: ${loaded.context.error}`);
      }
      return {
        fingerprint: stage!.backbone.fingerprint,
        weights: [...stage!.backbone.weights().keys()],
        sideParameters: [...stage!.compute.parameters().keys()],
        kept,
      };
    },
    step: async (raw, d) => {
      const a = stepArgs.parse(raw);
      if (machine.getSnapshot().value !== 'ready')
        throw new WrongState(`stage ${String(machine.getSnapshot().value)}`, `run step ${a.step}`);
      begin(d);
      machine.send({ type: 'RUN_STEP', step: a.step, sampleIds: a.sampleIds, ...(a.shares ? { shares: a.shares } : {}) });
      const s = await waitFor(machine, (x) => x.value === 'ready', { timeout: Infinity });
      const outcome = s.context.committed === a.step ? s.context.outcome : null;
      if (!outcome) throw new StepAborted(a.step, s.context.error ? `failed: ${s.context.error}` : 'aborted');
      return reply(outcome, a.sampleIds, stage!.rank, a.withState, stage!.compute, stage!.optimizer);
    },
    fill: async (raw, d) => {
      const { sampleIds } = fillArgs.parse(raw);
      if (machine.getSnapshot().value !== 'ready' || !stage) throw new Error(`fill: stage is ${String(machine.getSnapshot().value)}`);
      begin(d);
      const runner = stage.runner;
      return untilAborted(0, 'cache fill', () => runner.fill(sampleIds, spec!.batch));
    },
    abort: (raw) => {
      const { step } = abortArgs.parse(raw);
      machine.send({ type: 'ABORT', step });
      if (abortable && (step ?? abortable.step) === abortable.step) abortable.controller.abort();
      // A redistribution belongs to no step.
      if (step === undefined) cache?.abort();
      return { state: String(machine.getSnapshot().value) };
    },
    release: async () => {
      await release();
      return { tensorBytes: tensorBytes() };
    },
    'cache-report': (raw, d) => {
      device = d;
      const a = cacheReportArgs.parse(raw);
      const c = ensureCache(a.spec, a.fingerprint);
      return { holdings: c.holdings(a.spec.samples), memory: c.memory() };
    },
    redistribute: async (raw, d) => {
      device = d;
      const a = redistributeArgs.parse(raw);
      if (!cache) throw new Error('redistribute: this device has no cache (it held no stage in epoch 1)');
      return cache.redistribute(a.shards, a.devices, { ...(a.keep ? { keep: a.keep } : {}), ...(a.sends ? { sends: a.sends } : {}) });
    },
    'cached-load': async (raw, d) => {
      device = d;
      const a = cachedLoadArgs.parse(raw);
      if (!spec) throw new Error('cached-load: no run spec (this device was never assigned)');
      if (stage || worker) throw new Error(`cached-load: release the ${stage ? 'pipeline stage' : 'cached-phase worker'} first`);
      const open = await openStageCompute({
        model: spec.model,
        part: 'cached',
        spec: stageSpec(spec),
        state: unpackState(a.state as PackedState),
      });
      worker = {
        ...open,
        ring: new BusRing(bus(), {
          group: 'all',
          rank: a.rank,
          members: a.devices,
          generation: a.generation,
          firstStep: a.firstStep,
          throttle,
        }),
        rank: a.rank,
        size: a.devices.length,
        shard: new Set(a.shard),
      };
      return { tensorBytes: tensorBytes() };
    },
    'cached-step': async (raw, d) => {
      const a = cachedStepArgs.parse(raw);
      await updating;
      if (!worker || !cache) throw new Error(`cached step ${a.step}: no cached-phase worker loaded`);
      if (updateFailure) throw new Error(`cached step ${a.step}: the update of the step before failed (${updateFailure.message})`);
      begin(d);
      const w = worker,
        c = cache;
      const o = await untilAborted(a.step, 'cached step', () =>
        cachedStep({
          step: a.step,
          sampleIds: a.sampleIds,
          shard: w.shard,
          rank: w.rank,
          size: w.size,
          microBatches: plannedMicroBatches(spec!),
          compute: w.compute,
          optimizer: w.optimizer,
          ring: w.ring.ring(a.step),
          data: rows!,
          activations: (ids) => c.activations(ids),
          pace,
          timeline,
          // The first step after a load returns the state after its update: that one cannot wait.
          deferUpdate: !a.withState,
        }),
      );
      const { update, ...outcome } = o;
      const out = reply(outcome, a.sampleIds, w.rank, a.withState, w.compute, w.optimizer);
      if (update) {
        // After this handler's reply is on its way; its spans and compute time are not in it.
        updating = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
          try {
            await device!.sim.compute(update);
          } catch (e) {
            updateFailure = e instanceof Error ? e : new Error(String(e));
            log(`cached step ${a.step}: update failed: ${updateFailure.message}`);
          }
        });
      }
      return out;
    },
    finish: async () => {
      await release();
      cache?.drop();
      cache = null;
      spec = null;
      rows = null;
      return { tensorBytes: tensorBytes() };
    },
  };
}
