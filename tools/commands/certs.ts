/**
 * `charon certs`: the run's TLS files (a CA of its own, a server certificate it signs) for a bus
 * that other hosts reach. `charon launch` makes them itself when the topology needs TLS; this
 * command adds names (how the other hosts address this one) or makes them before the launch.
 */
import { resolve } from 'node:path';
import { CliError, parseCommandArgs, requireStr } from '../args.ts';
import { ensureRunCertificates } from '../../src/security/certs.ts';

export const summary = "create a run's TLS CA and server certificate (for a bus other hosts reach)";

const usage = `usage: charon certs --run-dir DIR [--host NAME ...]

  --run-dir DIR   the run directory (the files go in DIR/tls/, directory 0700, files 0600)
  --host NAME     a name or IP address devices use to reach this host (repeatable); localhost
                  and 127.0.0.1 are always included
Makes DIR/tls/ca.pem and ca.key (the run's CA) when missing, and a server certificate for the
names unless the present one covers them (it keeps the names it had). Prints the CA's path: copy
ca.pem (not ca.key) to the other hosts and start their devices with --tls-ca FILE.`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(argv, { 'run-dir': { type: 'string' }, host: { type: 'string', multiple: true } }, usage);
  if (!args) return 0;
  const runDir = resolve(requireStr(args, 'run-dir'));
  const hosts = (args.values.host as string[] | undefined) ?? [];
  let files: ReturnType<typeof ensureRunCertificates>;
  try {
    files = ensureRunCertificates(runDir, hosts);
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
  process.stderr.write(`${files.issued ? 'issued' : 'kept'} ${files.certFile}\n`);
  process.stdout.write(`${files.caFile}\n`);
  return 0;
}
