/**
 * Which engine runs the frozen backbone's inference forward in this process: `native`
 * (onnxruntime-node, src/native) or `tfjs` (the tfjs backend that runs everything else).
 *
 * The rule: an explicit choice (`--engine`, else the CHARON_ENGINE environment variable) is
 * honoured or refused with an error naming why; without one, native when onnxruntime-node loads
 * and tfjs runs on wasm or cpu (a tfjs-node backend keeps its own native kernels). A model family
 * without a native graph runs on tfjs whatever the choice, and says so. The same choice runs
 * PAC's side network (GPT-2 blocks) natively, forward and a hand-written backward
 * (src/native/side-graph.ts); tfjs keeps the parameters and the optimiser, LoRA and adapters,
 * autodiff elsewhere, and every forward that a gradient must pass through into the backbone.
 */
import type { FrozenLayerEngineFactory } from './backbone.ts';
import { BackendError } from './errors.ts';
import type { BackboneRange, ModelConfig, NativeHeadEngine } from './types.ts';
import type { WeightData } from './weights.ts';
import { NativeHead, NativeLayers, nativeFamilySupported } from '../native/layers.ts';
import { loadNativeRuntime, nativeThreads } from '../native/runtime.ts';
import { NativeSide } from '../native/side.ts';
import { nativeSideSupported } from '../native/side-graph.ts';
import type { SideShape } from './methods/side-block.ts';
import type { SideSpan } from './methods/side-network.ts';

export type EngineChoice = 'native' | 'tfjs';

export const engineChoices: readonly EngineChoice[] = ['native', 'tfjs'];

let explicit: EngineChoice | undefined;

/** Parses an engine name from a flag or the environment; `where` names the source in the error. */
export function parseEngine(value: string, where: string): EngineChoice {
  if (!(engineChoices as readonly string[]).includes(value))
    throw new BackendError(`${where}: engine must be native or tfjs, got '${value}'`);
  return value as EngineChoice;
}

/** Sets this process's engine (the --engine flag); overrides CHARON_ENGINE. */
export function setEngine(choice: EngineChoice | undefined): void {
  explicit = choice;
}

/** The explicit choice (flag, then CHARON_ENGINE), or undefined for the automatic rule. */
export function requestedEngine(): EngineChoice | undefined {
  if (explicit) return explicit;
  const env = process.env.CHARON_ENGINE;
  return env === undefined || env === '' ? undefined : parseEngine(env, 'CHARON_ENGINE');
}

/**
 * The engine this process uses for frozen forwards, given the tfjs backend's name. Throws a
 * BackendError when native was asked for and onnxruntime-node cannot load.
 */
export function resolveEngine(backend: string): { engine: EngineChoice; why: string } {
  const asked = requestedEngine();
  if (asked === 'tfjs') return { engine: 'tfjs', why: 'asked for' };
  const failure = loadNativeRuntime();
  if (asked === 'native') {
    if (failure) throw new BackendError(`engine native: ${failure} (npm ci installs onnxruntime-node; or run with --engine tfjs)`);
    return { engine: 'native', why: 'asked for' };
  }
  if (failure) return { engine: 'tfjs', why: failure };
  if (backend === 'tensorflow') return { engine: 'tfjs', why: 'the tensorflow backend runs natively already' };
  return { engine: 'native', why: 'onnxruntime-node loaded' };
}

/** The native layer factory for a backbone of `config`, or undefined when it runs on tfjs. */
export function frozenLayerFactory(config: ModelConfig, range: BackboneRange, backend: string): FrozenLayerEngineFactory | undefined {
  if (resolveEngine(backend).engine !== 'native' || !nativeFamilySupported(config)) return undefined;
  return (weights) => new NativeLayers(config, range, weights);
}

/** The native head factory (any family: the head is one matmul), or undefined on tfjs. */
export function frozenHeadFactory(backend: string): ((w: WeightData) => NativeHeadEngine) | undefined {
  if (resolveEngine(backend).engine !== 'native') return undefined;
  return (w) => new NativeHead(w);
}

/** A factory of native side networks (GPT-2 side blocks), or undefined when the side network runs on tfjs. */
export function nativeSideFactory(config: ModelConfig, shape: SideShape, backend: string): ((span: SideSpan) => NativeSide) | undefined {
  if (resolveEngine(backend).engine !== 'native' || !nativeSideSupported(shape)) return undefined;
  return (span) => new NativeSide(config, shape, span);
}

const NATIVE_DETAIL = 'frozen forward: native';

/** One line for results: which engine runs frozen forwards, for which families. */
export function engineDetail(backend: string): string {
  const { engine, why } = resolveEngine(backend);
  if (engine === 'tfjs') return `frozen forward: tfjs (${why})`;
  const threads = nativeThreads();
  return `${NATIVE_DETAIL} onnxruntime-node, ${threads} thread${threads === 1 ? '' : 's'} (GPT-2 layers and PAC side network, any family's LM head; Llama on tfjs)`;
}

/** Whether a device's backend detail (which ends with `engineDetail`'s line) says it runs frozen forwards natively. */
export function detailSaysNative(detail: string | null | undefined): boolean {
  return detail?.includes(NATIVE_DETAIL) ?? false;
}
