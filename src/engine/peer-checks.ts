/**
 * Checks every message between stage ranks passes on arrival. What fails one is counted and
 * reported by the bus as rejected (`bus.reject`), and never applied.
 */
import { MessageRejected, type Bus, type BusMsg } from '../bus/index.ts';
import type { Envelope } from '../tensor/index.ts';

/**
 * Whether `msg` was sent by `device`, the one the plan expects for the rank the body claims (the
 * subject names the sender, and the server's permissions prove it); if not, the bus counts and
 * reports it as rejected.
 */
export function expectedPeer(bus: Bus, msg: BusMsg, env: Envelope<unknown>, device: string | undefined, role: string): boolean {
  if (device !== undefined && msg.sender === device) return true;
  bus.reject(
    msg.subject,
    new MessageRejected('peer', `${env.kind} from '${msg.sender ?? '?'}' claims ${role}, which the plan gives to '${device ?? 'nobody'}'`),
  );
  return false;
}

/** Whether `tensors` hold only finite values; if not, the bus counts and reports the message as rejected. */
export function allFinite(bus: Bus, msg: BusMsg, env: Envelope<unknown>, tensors: Float32Array[]): boolean {
  for (const t of tensors)
    for (let i = 0; i < t.length; i++)
      if (!Number.isFinite(t[i]!)) {
        bus.reject(
          msg.subject,
          new MessageRejected('nonfinite', `${env.kind} from '${msg.sender ?? env.from}' (step ${env.step}) holds ${t[i]} at value ${i}`),
        );
        return false;
      }
  return true;
}

/** Whether `env` belongs to plan generation `gen`; if not, the bus counts and reports it as rejected. */
export function sameGeneration(bus: Bus, msg: BusMsg, env: Envelope<unknown>, gen: number): boolean {
  if (env.gen === gen) return true;
  bus.reject(
    msg.subject,
    new MessageRejected(
      'generation',
      `${env.kind} of generation ${env.gen} from ${env.from} (step ${env.step}), expected generation ${gen}`,
    ),
  );
  return false;
}
