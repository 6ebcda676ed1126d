/**
 * The live dashboard of a run (`charon launch --dashboard [PORT]`): the report's views, served
 * read-only on loopback and refreshed over server-sent events whenever the run's events or the
 * devices' heartbeats change something (at most once per REFRESH_MS). It serves a run's private
 * figures, so it never listens beyond this host, and it refuses requests whose Host header is not
 * its own address (a web page elsewhere cannot read it through DNS rebinding).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunRecorder } from '../../actors/coordinator/run-record.ts';
import { loadRunRecord, type RunRecord } from './record.ts';
import { page, reportBody, reportTitle, type LiveView } from './html.ts';

const REFRESH_MS = 1000;
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export class DashboardError extends Error {
  override name = 'DashboardError';
}

/** Where `--dashboard` listens: a port on 127.0.0.1, or HOST:PORT with a loopback HOST. @throws DashboardError otherwise. */
export function dashboardAddress(value: string): { host: string; port: number } {
  const m = /^(?:(.+):)?(\d+)$/.exec(value);
  if (!m) throw new DashboardError(`--dashboard: '${value}' is not a port or HOST:PORT`);
  const host = (m[1] ?? '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
  const port = Number(m[2]);
  if (port > 65535) throw new DashboardError(`--dashboard: port ${port} is above 65535`);
  if (!LOOPBACK.has(host))
    throw new DashboardError(
      `--dashboard: ${host} is not a loopback address; the dashboard shows the run's data to whoever reaches it, so it listens on loopback only (use an SSH tunnel to view it from elsewhere)`,
    );
  return { host, port };
}

/**
 * `--dashboard` takes an optional value: given alone (next to nothing, another option or the
 * topology file), it means `fallback`. Returns argv with the value attached (`--dashboard=V`).
 */
export function withOptionalValue(argv: string[], option: string, fallback: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a !== option) out.push(a);
    else if (/^(?:.+:)?\d+$/.test(argv[i + 1] ?? '')) out.push(`${option}=${argv[++i]}`);
    else out.push(`${option}=${fallback}`);
  }
  return out;
}

const SCRIPT = `const es = new EventSource('events');
es.addEventListener('update', (m) => { document.getElementById('content').innerHTML = JSON.parse(m.data).html; });`;

export interface Dashboard {
  url: string;
  close(): Promise<void>;
}

/** Serves `recorder`'s run until `close()`. */
export async function startDashboard(o: {
  recorder: RunRecorder;
  host: string;
  port: number;
  epochs?: number;
  stepsPerEpoch?: number;
}): Promise<Dashboard> {
  const clients = new Set<ServerResponse>();
  const view = (): { title: string; body: string } => {
    let r: RunRecord;
    try {
      r = loadRunRecord(o.recorder.runDir);
    } catch {
      // Nothing written yet: an empty record of the run directory.
      r = { runDir: o.recorder.runDir, summary: null, steps: [], epochs: [], timelines: [], memory: [], events: [], skipped: {} };
    }
    const live: LiveView = {
      devices: [...o.recorder.devices.values()].sort((a, b) => a.device.localeCompare(b.device)),
      ...(o.epochs !== undefined ? { epochs: o.epochs } : {}),
      ...(o.stepsPerEpoch !== undefined ? { stepsPerEpoch: o.stepsPerEpoch } : {}),
    };
    return { title: reportTitle(r), body: reportBody(r, live) };
  };
  let timer: NodeJS.Timeout | null = null;
  const push = () => {
    timer = null;
    if (clients.size === 0) return;
    const data = `event: update\ndata: ${JSON.stringify({ html: view().body })}\n\n`;
    for (const c of clients) c.write(data);
  };
  const stopWatching = o.recorder.onChange(() => {
    timer ??= setTimeout(push, REFRESH_MS);
  });
  let address = '',
    hosts = new Set<string>();
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (!hosts.has(req.headers.host ?? '')) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden: unexpected Host header\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('read-only\n');
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/') {
      const v = view();
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(page(v.title, v.body, SCRIPT));
    } else if (path === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(`event: update\ndata: ${JSON.stringify({ html: view().body })}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
    } else res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  };
  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new DashboardError(`--dashboard: cannot listen on ${o.host}:${o.port}: ${err.message}`)));
    server.listen(o.port, o.host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  address = `${host}:${port}`;
  hosts = new Set(['127.0.0.1', 'localhost', '[::1]'].map((h) => `${h}:${port}`));
  return {
    url: `http://${address}/`,
    close: async () => {
      stopWatching();
      if (timer) clearTimeout(timer);
      push();
      for (const c of clients) c.end();
      clients.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
