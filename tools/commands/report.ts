/**
 * `charon report RUN_DIR`: (re)builds a run directory's report: report.html (self-contained, works
 * offline) and each chart as report/<chart>.svg, from summary.json, metrics.jsonl, timeline.jsonl,
 * memory.jsonl and events.jsonl.
 */
import { resolve } from 'node:path';
import { CliError, flag, onePositional, parseCommandArgs } from '../args.ts';
import { writeReport } from '../../src/report/html.ts';
import { ReportError } from '../../src/report/record.ts';

export const summary = "rebuild a run directory's report (report.html and report/*.svg)";

const usage = `usage: charon report RUN_DIR [--json]

  RUN_DIR   a run directory of charon launch (runs/<run>-<time>/)
  --json    print {"report": PATH} instead of the path
Writes RUN_DIR/report.html (loss per step and epoch, time per epoch by phase, the 1F1B timeline of
sampled steps per device, memory per device over time, bytes sent, faults, joins, leaves and
re-plans) and each chart as RUN_DIR/report/<chart>.svg; prints the page's path.`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(argv, { json: { type: 'boolean' } }, usage);
  if (!args) return 0;
  const dir = onePositional(args, 'RUN_DIR');
  let path: string;
  try {
    path = writeReport(resolve(dir));
  } catch (err) {
    if (err instanceof ReportError) throw new CliError(err.message);
    throw err;
  }
  process.stdout.write(flag(args, 'json') ? JSON.stringify({ report: path }) + '\n' : `${path}\n`);
  return 0;
}
