/**
 * `charon creds add`: issues bus credentials for a device that joins a run from another host (or
 * an observer), and makes the run's server, if it is running, accept them at once.
 */
import { resolve } from 'node:path';
import { CliError, parseCommandArgs, requireStr, str } from '../args.ts';
import { DEFAULT_MAX_PAYLOAD, reloadAuthorization } from '../../src/bus/index.ts';
import {
  authorizationConfig,
  issueCredentials,
  maxReplyMessages,
  readIdentities,
  ROLES,
  type Role,
} from '../../src/security/credentials.ts';

export const summary = 'issue bus credentials for a device joining a run from another host';

const usage = `usage: charon creds add --run-dir DIR --name NAME [--role device|observer]

  --run-dir DIR   the run directory of a launched run (holds creds/ and the server's config)
  --name NAME     the device's name (letters, digits, '-', '_'), as it will join with --name
  --role R        device (default): may publish only under its own name and read what is
                  addressed to it; observer: may only ask for the status and read run events
Writes DIR/creds/NAME.nk (mode 0600) and prints its path. Copy it to the device's host over a
channel you trust (scp), keep it 0600 there, and start the device with
  charon device --nats URL --run RUN --name NAME --creds FILE
A running server of the run reloads its authorization at once; a reply in flight at that moment
can be refused (the coordinator retries the step).`;

export async function run(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === '--help' || verb === '-h') {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  if (verb !== 'add') throw new CliError(`charon creds: unknown action '${verb ?? ''}' (known: add; see --help)`);
  const args = parseCommandArgs(rest, { 'run-dir': { type: 'string' }, name: { type: 'string' }, role: { type: 'string' } }, usage);
  if (!args) return 0;
  const runDir = resolve(requireStr(args, 'run-dir'));
  const name = requireStr(args, 'name');
  const role = (str(args, 'role') ?? 'device') as Role;
  if (role === 'coordinator' || !ROLES.includes(role)) throw new CliError(`--role must be device or observer, got '${role}'`);
  const list = (() => {
    try {
      return readIdentities(runDir);
    } catch (err) {
      throw new CliError((err as Error).message, 1);
    }
  })();
  if (!list) throw new CliError(`${runDir}: no credentials here (creds/identities.json): not the run directory of a launched run`, 1);
  let file: string;
  try {
    file = issueCredentials(runDir, list.run, name, role);
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
  const reloaded = reloadAuthorization(runDir, authorizationConfig(readIdentities(runDir)!, maxReplyMessages(DEFAULT_MAX_PAYLOAD)));
  process.stderr.write(`${name}: ${role} of run '${list.run}'${reloaded ? ', accepted by the running server' : ''}\n`);
  process.stdout.write(`${file}\n`);
  return 0;
}
