/** How a chaos-mode connection takes its fault rules: over the run's chaos subject. */
import { MessageRejected, type Envelope } from '../tensor/index.ts';
import { FaultLayer, parseFaultRule, type FaultReport } from './faults.ts';
import type { Subjects } from './subjects.ts';

export interface FaultRuleChannel {
  /** sends a report of the layer on the chaos subject */
  report(subject: string, r: FaultReport): void;
  /** subscribes past the fault layer: a rule on '>' must not drop the rules that follow it */
  receive(subject: string, kinds: readonly string[], handle: (env: Envelope, subject: string) => void): void;
  /** counts and reports a rule that does not parse */
  refuse(subject: string, err: MessageRejected): void;
}

/** The fault layer of connection `name`: rules arrive on the chaos subject, reports leave on it. */
export function listenForFaults(name: string, subjects: Subjects, channel: FaultRuleChannel): FaultLayer {
  const reports = subjects.chaos('report');
  const layer = new FaultLayer(name, subjects.prefix, (r) => channel.report(reports, r));
  channel.receive(subjects.chaos('rule'), ['chaos-rule'], (env, subject) => {
    const rule = parseFaultRule(env.body);
    if (typeof rule === 'string') channel.refuse(subject, new MessageRejected('body', `chaos-rule from ${env.from}: ${rule}`));
    else layer.arm(rule);
  });
  return layer;
}
