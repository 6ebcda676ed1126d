/**
 * `charon certs`: the run's TLS files (a CA of its own, a server certificate it signs) for a bus
 * that other hosts reach. `charon launch` makes them itself when the topology needs TLS; this
 * command adds names (how the other hosts address this one) or makes them before the launch.
 */
import { resolve } from 'node:path';
import { CliError, parseCommandArgs, requireStr } from '../args.ts';
import { ensureClientCertificate, ensureRunCertificates } from '../../src/security/certs.ts';

export const summary = "create a run's TLS CA and server certificate (for a bus other hosts reach)";

const usage = `usage: charon certs --run-dir DIR [--host NAME ...] [--client NAME ...]

  --run-dir DIR   the run directory (the files go in DIR/tls/, directory 0700, files 0600)
  --host NAME     a name or IP address devices use to reach this host (repeatable); localhost
                  and 127.0.0.1 are always included
  --client NAME   also make a client certificate for NAME (a device, or observer), for a bus with
                  mutual TLS (bus.tls: mutual): DIR/tls/clients/NAME.pem and NAME.key (repeatable)
Makes DIR/tls/ca.pem and ca.key (the run's CA) when missing, and a server certificate for the
names unless the present one covers them (it keeps the names it had). Prints the CA's path: copy
ca.pem (not ca.key) to the other hosts and start their devices with --tls-ca FILE (and, with
mutual TLS, --tls-cert NAME.pem --tls-key NAME.key, the key kept 0600).`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    { 'run-dir': { type: 'string' }, host: { type: 'string', multiple: true }, client: { type: 'string', multiple: true } },
    usage,
  );
  if (!args) return 0;
  const runDir = resolve(requireStr(args, 'run-dir'));
  const hosts = (args.values.host as string[] | undefined) ?? [];
  let files: ReturnType<typeof ensureRunCertificates>;
  try {
    files = ensureRunCertificates(runDir, hosts);
    for (const name of (args.values.client as string[] | undefined) ?? [])
      process.stderr.write(`client ${name}: ${ensureClientCertificate(runDir, name).certFile}\n`);
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
  process.stderr.write(`${files.issued ? 'issued' : 'kept'} ${files.certFile}\n`);
  process.stdout.write(`${files.caFile}\n`);
  return 0;
}
