/**
 * `etcdc dashboard`: a local web page that shows, live, what lives in the namespace in recipe
 * terms, the cluster's health, leases counting down and a rolling log of changes.
 *
 * Plain `node:http` and server-sent events, no framework: the page only listens (it never sends
 * anything but GETs), which is exactly what SSE is for — one long GET per page, reconnected by the
 * browser's own EventSource, proxy- and curl-friendly — while a WebSocket would need a dependency
 * (or a hand-written framing layer) for a channel we use one way. Four routes do not need a
 * router. The page is static HTML, CSS and one vanilla JS module (./page), served as files: no
 * build step, no library to keep up to date, nothing fetched from elsewhere.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { EtcdConnector } from '../../connector.js';
import { InvalidArgumentError } from '../../errors.js';
import { validateMs, validatePath } from '../../paths.js';
import { LiveView, type LogLine, type PageState } from './live.js';

export interface DashboardOptions {
  /** TCP port; 0 (the default) takes a free one. */
  port?: number;
  /**
   * Address to bind. Default 127.0.0.1: the page shows keys and values, so it is not offered to
   * the network unless asked for.
   */
  host?: string;
  /** The subtree to show (absolute, in the connector's namespace). Default: the namespace. */
  path?: string;
  /** Time between two health checks of every member, in ms. Default 2000. */
  healthIntervalMs?: number;
  /** How often the TTLs of the leases on screen are asked again, in ms. Default 3000. */
  leaseRefreshMs?: number;
  /** Stops the dashboard when it fires. */
  signal?: AbortSignal;
}

export interface Dashboard extends AsyncDisposable {
  /** The page's address, e.g. `http://127.0.0.1:43210/`. */
  readonly url: string;
  readonly address: AddressInfo;
  /** Resolves when a first page is open (its event stream connected). */
  readonly opened: Promise<void>;
  /** Pages connected now. */
  readonly pages: number;
  /**
   * Closes every page's stream and the server, and stops the inspector and the health monitor.
   * The connector stays open (it is the caller's). Idempotent, never rejects.
   */
  stop(): Promise<void>;
}

/** States go out at most this often; a state is the whole picture, so skipping one loses nothing. */
const STATE_INTERVAL_MS = 100;
/** A comment line this often keeps idle streams open through proxies and finds dead pages. */
const HEARTBEAT_MS = 15_000;
/** A page that reads slower than this much buffered output is dropped (it reconnects). */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
const LOG_SIZE = 200;

const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** Only what the page itself serves: no inline script, no other origin. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/**
 * Starts the dashboard of `conn`'s namespace (or `options.path`) and resolves once it listens.
 *
 * @throws InvalidArgumentError bad port, path or interval (before any I/O)
 * @throws Error the port is taken or the address cannot be bound (EADDRINUSE, ...)
 */
export async function startDashboard(
  conn: EtcdConnector,
  options: DashboardOptions = {},
): Promise<Dashboard> {
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError('port', `must be an integer from 0 to 65535, got ${port}`);
  }
  const host = options.host ?? '127.0.0.1';
  const path = validatePath(options.path ?? conn.root, conn.root, 'path');
  const assets = loadAssets();
  const live = new LiveView(conn, {
    path,
    healthIntervalMs: validateMs(options.healthIntervalMs ?? 2000, 'healthIntervalMs'),
    leaseRefreshMs: validateMs(options.leaseRefreshMs ?? 3000, 'leaseRefreshMs'),
    logSize: LOG_SIZE,
  });

  const pages = new Set<ServerResponse>();
  let resolveOpened!: () => void;
  const opened = new Promise<void>((resolve) => (resolveOpened = resolve));
  let boundPort = port;
  const server = createServer((req, res) => {
    handle(req, res);
  });

  function handle(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    if (!hostAllowed(req.headers.host, host, boundPort)) {
      // Another name pointing at 127.0.0.1 (DNS rebinding) must not read the namespace.
      plain(res, 421, 'unexpected Host header\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      plain(res, 405, 'method not allowed\n');
      return;
    }
    const route = new URL(req.url ?? '/', 'http://x').pathname;
    const asset = assets.get(route);
    if (asset !== undefined) {
      res.writeHead(200, {
        'Content-Type': asset.type,
        'Content-Length': asset.body.length,
        'Cache-Control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
    } else if (route === '/state') {
      const body = JSON.stringify(live.state());
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(body);
    } else if (route === '/events') {
      openStream(res);
    } else {
      plain(res, 404, 'not found\n');
    }
  }

  /** One page's event stream: the log so far and the state, then every change. */
  function openStream(res: ServerResponse): void {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
    res.write(`retry: 2000\n\n`);
    res.write(event('hello', { log: live.log, state: live.state() }));
    pages.add(res);
    res.on('close', () => pages.delete(res));
    resolveOpened();
  }

  function send(chunk: string): void {
    for (const res of pages) {
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        res.destroy();
        continue;
      }
      res.write(chunk);
    }
  }

  // States are coalesced (the newest wins); log lines all go out, in order.
  let stateTimer: NodeJS.Timeout | undefined;
  let lastStateAt = 0;
  const unsubscribe = live.subscribe(({ state, log }) => {
    if (log !== undefined) send(event('log', log));
    if (state === undefined || stateTimer !== undefined) return;
    const wait = Math.max(0, lastStateAt + STATE_INTERVAL_MS - Date.now());
    stateTimer = setTimeout(() => {
      stateTimer = undefined;
      lastStateAt = Date.now();
      send(event('state', live.state()));
    }, wait);
  });
  const heartbeat = setInterval(() => {
    send(': ping\n\n');
  }, HEARTBEAT_MS);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    clearInterval(heartbeat);
    unsubscribe();
    throw err;
  });
  const address = server.address() as AddressInfo;
  boundPort = address.port;
  live.start();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      clearInterval(heartbeat);
      clearTimeout(stateTimer);
      unsubscribe();
      for (const res of pages) res.end();
      pages.clear();
      const closed = new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      server.closeAllConnections();
      await closed;
      await live.stop();
    })().catch(() => undefined);
    return stopping;
  };
  options.signal?.addEventListener('abort', () => void stop(), { once: true });
  if (options.signal?.aborted === true) void stop();

  return {
    url: `http://${urlHost(host)}:${address.port}/`,
    address,
    opened,
    get pages() {
      return pages.size;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function event(name: string, data: PageState | LogLine | object): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** Bound to a loopback address, only loopback names are served; otherwise any Host. */
function hostAllowed(header: string | undefined, host: string, port: number): boolean {
  if (!LOOPBACK.has(host) && !host.startsWith('127.')) return true;
  if (header === undefined) return false;
  const allowed = [host, 'localhost', '127.0.0.1', '[::1]'].map((h) => `${urlHost(h)}:${port}`);
  return allowed.includes(header.toLowerCase());
}

/** A host as it goes into a URL: IPv6 in brackets; "any address" as the loopback one. */
function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '' || host === '::') return '127.0.0.1';
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

interface Asset {
  body: Buffer;
  type: string;
}

/**
 * The page's files. They live in src/cli/dashboard/page/ and are read from there both when run
 * from the sources and from dist/ (the package ships src/, so no copy step is needed).
 */
function loadAssets(): Map<string, Asset> {
  const candidates = [
    new URL('./page/', import.meta.url),
    new URL('../../../../src/cli/dashboard/page/', import.meta.url),
  ];
  const dir = candidates.find((url) => existsSync(new URL('index.html', url)));
  if (dir === undefined) {
    throw new Error(
      `the dashboard page is missing (looked in ${candidates.map((u) => fileURLToPath(u)).join(', ')})`,
    );
  }
  const assets = new Map<string, Asset>();
  for (const [route, { file, type }] of Object.entries(FILES)) {
    assets.set(route, { body: readFileSync(new URL(file, dir)), type });
  }
  return assets;
}
