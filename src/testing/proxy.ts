/**
 * A TCP proxy that injects network faults between a client and etcd: blackhole (socket open,
 * nothing flows — the failure a client notices last), delay, and connection reset.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { InvalidArgumentError } from '../errors.js';
import type { EtcdCluster } from './etcd-cluster.js';

/** What the proxy does with the bytes it receives. */
export type ProxyMode = 'pass' | 'blackhole' | 'delay';

/** A running fault proxy. Close it with `close()` or `await using`. */
export interface FaultProxy extends AsyncDisposable {
  /** Where clients connect: `http://127.0.0.1:PORT` (`https://` for an `https://` target). */
  readonly endpoint: string;
  /** Where the proxy forwards to, as given to {@link startProxy}. */
  readonly target: string;
  /** The current mode. */
  readonly mode: ProxyMode;
  /** Open client connections. */
  readonly connections: number;
  /** Forward normally. Data held during blackhole or delay is flushed first, in order. */
  pass(): void;
  /**
   * Keep every socket open but let nothing through in either direction, on open and new
   * connections alike. Data is held (as TCP retransmission would deliver it later) and flows
   * after `pass()` or `delay()`.
   */
  blackhole(): void;
  /** Forward every chunk `ms` milliseconds after it arrived, order preserved. */
  delay(ms: number): void;
  /** Destroy every open connection, both sides, at once (with a TCP RST). The mode is unchanged. */
  reset(): void;
  /** Stop listening and destroy every connection. Idempotent, never throws. */
  close(): Promise<void>;
}

/** Above this many bytes held in one direction, reading from the source pauses. */
const HIGH_WATER_BYTES = 1024 * 1024;

interface ProxyState {
  mode: ProxyMode;
  delayMs: number;
}

/** One direction of a connection: src's bytes go to dst, through a queue only when needed. */
class Pipe {
  readonly #queue: { chunk: Buffer; due: number }[] = [];
  #queuedBytes = 0;
  #waitingDrain = false;
  #srcEnded = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly src: Socket,
    private readonly dst: Socket,
    private readonly state: ProxyState,
  ) {
    src.on('data', (chunk: Buffer) => {
      const delay = state.mode === 'delay' ? state.delayMs : 0;
      this.#queue.push({ chunk, due: Date.now() + delay });
      this.#queuedBytes += chunk.length;
      this.pump();
    });
    src.on('end', () => {
      this.#srcEnded = true;
      this.pump();
    });
    dst.on('drain', () => {
      this.#waitingDrain = false;
      this.pump();
    });
  }

  /** Forwards what the mode allows, then pauses or resumes the source accordingly. */
  pump(): void {
    if (this.dst.destroyed) return;
    const mode = this.state.mode;
    if (mode !== 'blackhole') {
      while (!this.#waitingDrain) {
        const head = this.#queue[0];
        if (head === undefined) break;
        const wait = head.due - Date.now();
        if (mode === 'delay' && wait > 0) {
          this.#timer ??= setTimeout(() => {
            this.#timer = undefined;
            this.pump();
          }, wait);
          break;
        }
        this.#queue.shift();
        this.#queuedBytes -= head.chunk.length;
        // Back-pressure: a full destination pauses the source until 'drain'.
        if (!this.dst.write(head.chunk)) this.#waitingDrain = true;
      }
      if (this.#srcEnded && this.#queue.length === 0 && !this.dst.writableEnded) this.dst.end();
    }
    const hold = mode === 'blackhole' || this.#waitingDrain || this.#queuedBytes > HIGH_WATER_BYTES;
    if (hold) this.src.pause();
    else this.src.resume();
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

class Connection {
  readonly #pipes: Pipe[];
  #closed = false;

  constructor(
    readonly client: Socket,
    readonly upstream: Socket,
    state: ProxyState,
    private readonly onClose: (c: Connection) => void,
  ) {
    this.#pipes = [new Pipe(client, upstream, state), new Pipe(upstream, client, state)];
    for (const socket of [client, upstream]) {
      socket.setNoDelay(true);
      socket.on('error', () => {
        this.destroy(false);
      });
      socket.on('close', () => {
        this.destroy(false);
      });
    }
    this.pump();
  }

  pump(): void {
    for (const pipe of this.#pipes) pipe.pump();
  }

  destroy(reset: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const pipe of this.#pipes) pipe.dispose();
    for (const socket of [this.client, this.upstream]) {
      if (reset) {
        try {
          socket.resetAndDestroy();
          continue;
        } catch {
          // not connected yet: plain destroy below
        }
      }
      socket.destroy();
    }
    this.onClose(this);
  }
}

function parseTarget(target: string): { host: string; port: number } {
  let url: URL;
  try {
    url = new URL(target.includes('://') ? target : `tcp://${target}`);
  } catch {
    throw new InvalidArgumentError('target', `not a URL or host:port: ${target}`);
  }
  const port = Number(url.port);
  if (!Number.isInteger(port) || port <= 0) {
    throw new InvalidArgumentError('target', `no port in ${target}`);
  }
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port };
}

class Proxy implements FaultProxy {
  readonly endpoint: string;
  readonly target: string;
  readonly #state: ProxyState;
  readonly #server: ReturnType<typeof createServer>;
  readonly #connections = new Set<Connection>();
  #closing: Promise<void> | undefined;

  constructor(
    target: string,
    server: ReturnType<typeof createServer>,
    state: ProxyState,
    port: number,
  ) {
    this.target = target;
    this.#server = server;
    this.#state = state;
    // TLS passes through untouched; the kit's server certificate is valid for 127.0.0.1.
    this.endpoint = `${target.startsWith('https://') ? 'https' : 'http'}://127.0.0.1:${port}`;
  }

  get mode(): ProxyMode {
    return this.#state.mode;
  }

  get connections(): number {
    return this.#connections.size;
  }

  /** @internal */
  accept(client: Socket, host: string, port: number): void {
    if (this.#closing !== undefined) {
      client.destroy();
      return;
    }
    const upstream = connect({ host, port });
    const connection = new Connection(client, upstream, this.#state, (c) =>
      this.#connections.delete(c),
    );
    this.#connections.add(connection);
  }

  #setMode(mode: ProxyMode, delayMs = 0): void {
    this.#state.mode = mode;
    this.#state.delayMs = delayMs;
    for (const connection of this.#connections) connection.pump();
  }

  pass(): void {
    this.#setMode('pass');
  }

  blackhole(): void {
    this.#setMode('blackhole');
  }

  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError('ms', 'must be >= 0');
    this.#setMode('delay', ms);
  }

  reset(): void {
    for (const connection of [...this.#connections]) connection.destroy(true);
  }

  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => {
        resolve();
      });
      for (const connection of [...this.#connections]) connection.destroy(false);
    });
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Starts a fault proxy on 127.0.0.1 (a free port unless `options.port` is given) forwarding to
 * `target` (`http://127.0.0.1:PORT`, `https://...` or `host:port`). It starts in `pass` mode.
 *
 * @throws {@link InvalidArgumentError} for a target without a port
 */
export async function startProxy(
  target: string,
  options: { port?: number } = {},
): Promise<FaultProxy> {
  const { host, port: targetPort } = parseTarget(target);
  const state: ProxyState = { mode: 'pass', delayMs: 0 };
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: options.port ?? 0, host: '127.0.0.1' }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Open connections keep the process alive, the idle listener does not.
  server.unref();
  const proxy = new Proxy(target, server, state, (server.address() as AddressInfo).port);
  server.on('connection', (client) => {
    proxy.accept(client, host, targetPort);
  });
  return proxy;
}

/** Starts one {@link startProxy | proxy} per member of `cluster`, in member order. */
export async function startClusterProxies(cluster: EtcdCluster): Promise<FaultProxy[]> {
  const results = await Promise.allSettled(cluster.endpoints.map((e) => startProxy(e)));
  const proxies = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed !== undefined) {
    await Promise.all(proxies.map((p) => p.close()));
    throw failed.reason;
  }
  return proxies;
}
