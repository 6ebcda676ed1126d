/**
 * Per-run TLS for the bus: a CA of the run's own and a server certificate it signs, made with the
 * system's `openssl` (no crypto of our own). Devices verify the server against the run's CA, so a
 * host on the network cannot pose as the bus, and what travels (activations, gradients, control)
 * is encrypted. Files live in `<runDir>/tls/` (directory 0700, files 0600): `ca.pem` (what another
 * host needs to verify the server), `ca.key`, `server.pem`, `server.key`, and with mutual TLS
 * `clients/<name>.pem` and `.key`, each identity's client certificate.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes, X509Certificate } from 'node:crypto';
import { hostname, networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { FILE_MODE, privateDir, writePrivateFile } from './files.ts';

export interface RunTlsFiles {
  dir: string;
  caFile: string;
  caKeyFile: string;
  certFile: string;
  keyFile: string;
}

export class CertsError extends Error {
  override name = 'CertsError';
  readonly retryable = false;
}

const DAYS = '825';
/** Names every server certificate carries: clients on the launching host connect through loopback. */
const ALWAYS = ['localhost', '127.0.0.1'];

export function tlsFiles(runDir: string): RunTlsFiles {
  const dir = join(runDir, 'tls');
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    caKeyFile: join(dir, 'ca.key'),
    certFile: join(dir, 'server.pem'),
    keyFile: join(dir, 'server.key'),
  };
}

/** Whether `host` (a listen address) reaches only this machine. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The names other hosts may use to reach a server listening on `host`: the host itself, or, for
 * a wildcard address, this machine's name and its non-internal IPv4 addresses.
 */
export function namesFor(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [host];
  const addrs = Object.values(networkInterfaces())
    .flat()
    .filter((a) => a && !a.internal && a.family === 'IPv4')
    .map((a) => a!.address);
  return [hostname(), ...addrs].filter(usableName);
}

/** A name openssl and TLS clients accept in a certificate (a host name or an IP address). */
const usableName = (h: string) => h.length > 0 && h.length <= 253 && (isIP(h) > 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(h));

/** The names (DNS and IP) a certificate file is valid for. */
export function certificateNames(certFile: string): string[] {
  const cert = new X509Certificate(readFileSync(certFile));
  return (cert.subjectAltName ?? '')
    .split(',')
    .map((s) => s.trim().replace(/^(DNS|IP Address):/, ''))
    .filter(Boolean);
}

/**
 * Makes the run's CA when it has none, and a server certificate for `hosts` (and localhost,
 * 127.0.0.1) unless the present one already covers them: a certificate made earlier with more
 * names (`charon certs --host`) is kept, and a new one keeps the names of the old. The CA is
 * kept, so hosts that hold its `ca.pem` need nothing new.
 * @throws CertsError when openssl is missing or fails, or a host name is unusable.
 */
export function ensureRunCertificates(runDir: string, hosts: readonly string[] = []): RunTlsFiles & { issued: boolean } {
  for (const h of hosts) if (!usableName(h)) throw new CertsError(`host '${h}': not a host name or IP address`);
  const f = tlsFiles(runDir);
  privateDir(f.dir);
  const wanted = [...new Set([...ALWAYS, ...hosts])];
  const haveCa = existsSync(f.caFile) && existsSync(f.caKeyFile);
  if (haveCa && existsSync(f.certFile) && existsSync(f.keyFile)) {
    const have = certificateNames(f.certFile);
    if (wanted.every((h) => have.includes(h))) return { ...f, issued: false };
    wanted.push(...have.filter((h) => !wanted.includes(h)));
  }
  if (!haveCa)
    openssl([
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', f.caKeyFile, '-out', f.caFile, '-days', DAYS, '-subj', '/CN=charon run CA'],
      ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ]);
  const san = wanted.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  sign(f, { certFile: f.certFile, keyFile: f.keyFile, cn: 'charon bus', usage: 'serverAuth', extra: [`subjectAltName=${san}`] });
  for (const file of [f.caFile, f.caKeyFile, f.certFile, f.keyFile]) chmodSync(file, FILE_MODE);
  return { ...f, issued: true };
}

/**
 * The client certificate of identity `name` (a device, the coordinator, the observer), made from
 * the run's CA when missing: a server with mutual TLS (`bus.tls: mutual`) accepts no connection
 * without one. @throws CertsError when the run has no CA yet, or openssl fails.
 */
export function ensureClientCertificate(runDir: string, name: string): { certFile: string; keyFile: string } {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new CertsError(`client '${name}': letters, digits, '-' and '_' only`);
  const f = tlsFiles(runDir);
  if (!existsSync(f.caKeyFile)) throw new CertsError(`${f.caKeyFile}: the run has no CA yet (charon certs --run-dir ${runDir})`);
  const dir = privateDir(join(f.dir, 'clients'));
  const out = { certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}.key`) };
  if (existsSync(out.certFile) && existsSync(out.keyFile)) return out;
  sign(f, { ...out, cn: name, usage: 'clientAuth', extra: [] });
  return out;
}

/** Makes a key and a certificate for it signed by the run's CA (0600). */
function sign(
  f: RunTlsFiles,
  o: { certFile: string; keyFile: string; cn: string; usage: 'serverAuth' | 'clientAuth'; extra: string[] },
): void {
  const csr = `${o.certFile}.csr`;
  const ext = `${o.certFile}.ext`;
  writePrivateFile(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${o.usage}`,
      ...o.extra,
      '',
    ].join('\n'),
  );
  try {
    openssl([
      ...['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', o.keyFile, '-out', csr, '-subj', `/CN=${o.cn}`],
    ]);
    openssl([
      ...['x509', '-req', '-in', csr, '-CA', f.caFile, '-CAkey', f.caKeyFile],
      ...['-set_serial', `0x${randomBytes(16).toString('hex')}`, '-days', DAYS, '-extfile', ext, '-out', o.certFile],
    ]);
  } finally {
    rmSync(csr, { force: true });
    rmSync(ext, { force: true });
  }
  for (const file of [o.certFile, o.keyFile]) chmodSync(file, FILE_MODE);
}

/** Runs openssl with a private umask, so that no key is ever readable by others, even briefly. */
function openssl(args: string[]): void {
  const mask = process.umask(0o077);
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new CertsError("openssl not found on PATH; install the Debian/Ubuntu package 'openssl'");
    const why = e.stderr?.toString().trim().split('\n').pop() ?? e.message;
    throw new CertsError(`openssl ${args[0]} failed: ${why}`);
  } finally {
    process.umask(mask);
  }
}

/** What a client needs for TLS: the CA it verifies the server with, and its own certificate for mutual TLS. */
export interface ClientTls {
  caFile: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * The client TLS option for files given on a command line (`--tls-ca`, `--tls-cert`,
 * `--tls-key`), or undefined without a CA. Like ssh with its keys, refuses a key file that
 * other users can read. @throws CertsError naming the file or option that is wrong.
 */
export function tlsOption(caFile: string | undefined, certFile?: string, keyFile?: string): ClientTls | undefined {
  if ((certFile === undefined) !== (keyFile === undefined)) throw new CertsError('--tls-cert and --tls-key go together');
  if (caFile === undefined) {
    if (certFile !== undefined) throw new CertsError("--tls-cert needs --tls-ca (the run's CA)");
    return undefined;
  }
  const ca = readCertificate(caFile);
  if (certFile === undefined || keyFile === undefined) return { caFile: ca };
  const key = resolve(keyFile);
  let mode: number;
  try {
    mode = statSync(key).mode;
  } catch (err) {
    throw new CertsError(`${key}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if ((mode & 0o077) !== 0)
    throw new CertsError(`${key}: key is accessible to other users (mode ${(mode & 0o777).toString(8)}): chmod 600 ${key}`);
  return { caFile: ca, certFile: readCertificate(certFile), keyFile: key };
}

function readCertificate(file: string): string {
  const full = resolve(file);
  try {
    new X509Certificate(readFileSync(full));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CertsError(
      `${full}: ${code?.startsWith('E') && !code.startsWith('ERR_') ? `cannot read (${code})` : 'not a PEM certificate'}`,
    );
  }
  return full;
}
