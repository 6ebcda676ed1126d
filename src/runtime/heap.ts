/**
 * How far V8 lets the old generation grow past the live heap before a full collection, in percent.
 * A device's compute thread turns over tens of MB of typed arrays a step (values into and out of
 * the engines, cache rows, gradients, all-reduce chunks), and the coordinator a reduced gradient
 * and its commit copy; that external memory counts toward the limit. V8's own growth factor,
 * chosen from how busy the thread is, left the limit a few MB above the live heap, so the churn
 * alone started full collections several times a step, with the platform's helper threads marking
 * beside the compute on cores the processes share. Twice the live heap holds more garbage for
 * longer (the live heap's size again) and saves most of those collections.
 */
import { setFlagsFromString } from 'node:v8';

const HEAP_GROWING_PERCENT = 100;

/**
 * Sets the growth for this process (V8 flags are per process, threads started later included),
 * unless it was started with its own value.
 */
export function roomyHeap(): void {
  if (process.execArgv.some((a) => /^--heap[-_]growing[-_]percent/.test(a))) return;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
