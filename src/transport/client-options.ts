/**
 * How the connector configures its etcd3 client: a deadline on every unary call, a retry policy
 * that never stretches a call past its deadline, auth and TLS — and, for TLS to IP addresses, no
 * IP address as TLS server name (RFC 6066 forbids it; Node warns with DEP0123 on every run).
 */
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import {
  Etcd3,
  GRPCDeadlineExceededError,
  castGrpcError,
  isRecoverableError,
  type IOptions,
} from 'etcd3';
import { InvalidArgumentError } from '../errors.js';
import type { FailureMemory } from './rpc.js';

/** TLS material as PEM text or buffers. */
export interface TlsOptions {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface ClientSettings {
  auth?: { username: string; password: string };
  tls?: TlsOptions;
  dialTimeoutMs: number;
  callTimeoutMs: number;
  /** Unary calls in flight at most (see {@link CallGate}). */
  maxCallsInFlight: number;
  etcd3?: Omit<IOptions, 'hosts'>;
}

type CallPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** Runs each call once: no retry, no circuit breaker (etcd3 reads only `execute`). */
const singleAttempt = {
  execute: (fn: (ctx: { signal: AbortSignal; attempt: number }) => unknown) =>
    Promise.resolve(fn({ signal: new AbortController().signal, attempt: 0 })),
} as unknown as CallPolicy;

/** etcd3's `faultHandling` for a client whose every call is tried once, on its one host. */
export const singleAttemptFaults: NonNullable<IOptions['faultHandling']> = {
  global: singleAttempt,
  host: () => singleAttempt,
};

/** Tries of a unary call on another host after a transient failure (etcd3's default). */
const CALL_RETRIES = 3;

/** etcd3 passes this to the attempt function and ignores it; one object for every call. */
const ATTEMPT_CONTEXT = { signal: new AbortController().signal, attempt: 0 };

/**
 * etcd3's default retries a failed call on another host with a fresh deadline each time, so one
 * call could take 4 x callTimeoutMs (seen without quorum), and a write that timed out — or whose
 * connection dropped after it was sent, so it may have been applied — went out again and could
 * be applied twice. Here a call is tried again only when the failure proves the request never
 * left (no connection could be made, the host refused it, etcd3's breaker held it back: Go's
 * clientv3 retries mutations only then too), and only within a tenth of its deadline. So a call
 * ends within ~1.1 x callTimeoutMs, and a write is never sent twice. Per call this costs one
 * clock read: no closure, no AsyncLocalStorage (whose promise hooks would slow every promise of
 * the process). (etcd3 reads only `execute`.)
 */
function retryQuickFailures(
  callTimeoutMs: number,
  failures: FailureMemory,
  gate: CallGate,
): CallPolicy {
  const retryWindowMs = callTimeoutMs / 10;
  return {
    async execute(fn: (ctx: typeof ATTEMPT_CONTEXT) => Promise<unknown>): Promise<unknown> {
      const waiting = gate.enter();
      if (waiting !== undefined) await waiting;
      try {
        const start = performance.now();
        for (let attempt = 0; ; attempt++) {
          try {
            return await fn(ATTEMPT_CONTEXT);
          } catch (err) {
            failures.note(err);
            if (
              attempt >= CALL_RETRIES ||
              !(err instanceof Error) ||
              !isRecoverableError(err) ||
              err instanceof GRPCDeadlineExceededError ||
              !neverSent(err) ||
              performance.now() - start > retryWindowMs
            ) {
              throw err;
            }
          }
        }
      } finally {
        gate.leave();
      }
    },
  } as unknown as CallPolicy;
}

/**
 * Failures that prove the request did not reach etcd: no connection could be established, or
 * etcd3's circuit breaker refused the host. A dropped connection is not among them (the request
 * may have been applied before it dropped).
 */
const NEVER_SENT =
  /No connection established|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|Failed to connect|no address available|circuit breaker is open/i;

export function neverSent(err: Error): boolean {
  return (
    (err as { isBrokenCircuitError?: unknown }).isBrokenCircuitError === true ||
    NEVER_SENT.test(err.message)
  );
}

/**
 * At most `limit` unary calls of a connector in flight; the rest wait their turn in order. A burst
 * (a thousand electors starting at once) then builds a thousand small closures instead of a
 * thousand gRPC calls with their HTTP/2 streams and buffers: the process's memory stays near its
 * steady state instead of keeping the peak (V8 and malloc rarely give it back). Throughput is not
 * limited: one connection carries far fewer calls in flight than this.
 */
export class CallGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private head = 0;

  constructor(private readonly limit: number) {}

  /** Undefined when the call may go now; else a promise that resolves when it may. */
  enter(): Promise<void> | undefined {
    if (this.active < this.limit) {
      this.active++;
      return undefined;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  leave(): void {
    const next = this.waiting[this.head];
    if (next === undefined) {
      this.active--;
      return;
    }
    this.waiting[this.head++] = undefined as unknown as () => void;
    if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting.splice(0, this.head);
      this.head = 0;
    }
    next();
  }
}

/** Validates the auth and TLS settings and returns etcd3's options (without hosts). */
export function buildClientOptions(
  settings: ClientSettings,
  failures: FailureMemory,
): Omit<IOptions, 'hosts'> {
  const { callTimeoutMs } = settings;
  const out: Omit<IOptions, 'hosts'> = {
    dialTimeout: settings.dialTimeoutMs,
    // etcd3 has no default deadline on unary calls; a call must never hang forever.
    defaultCallOptions: (ctx) =>
      ctx.isStream ? {} : { deadline: new Date(Date.now() + callTimeoutMs) },
    ...settings.etcd3,
    faultHandling: {
      global: retryQuickFailures(callTimeoutMs, failures, new CallGate(settings.maxCallsInFlight)),
      ...settings.etcd3?.faultHandling,
    },
  };
  if (settings.auth !== undefined) {
    const { username, password } = settings.auth as { username: unknown; password: unknown };
    if (typeof username !== 'string' || username === '' || typeof password !== 'string') {
      throw new InvalidArgumentError('auth', 'username (non-empty) and password are required');
    }
    out.auth = { username, password };
  }
  if (settings.tls !== undefined) {
    const { ca, cert, key } = settings.tls;
    if ((cert === undefined) !== (key === undefined)) {
      throw new InvalidArgumentError('tls', 'cert and key go together');
    }
    if (ca === undefined && cert === undefined) {
      throw new InvalidArgumentError('tls', 'give ca, or cert and key, or both');
    }
    out.credentials = {
      // null: the system roots.
      rootCertificate: ca === undefined ? (null as unknown as Buffer) : toBuffer(ca),
      ...(key === undefined ? {} : { privateKey: toBuffer(key) }),
      ...(cert === undefined ? {} : { certChain: toBuffer(cert) }),
    };
  }
  return out;
}

/** A new etcd3 client for `hosts` with `options` (from {@link buildClientOptions}). */
export function createClient(hosts: readonly string[], options: Omit<IOptions, 'hosts'>): Etcd3 {
  const client = new Etcd3({ ...options, hosts: [...hosts] });
  const tls = options.credentials;
  if (tls !== undefined || hosts.some((h) => h.startsWith('https://'))) {
    avoidIpServerNames(client, tls);
  }
  return client;
}

function toBuffer(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v) : v;
}

/** The parts of etcd3's connection pool that TLS to an IP address needs to change. */
interface PoolHostInternals {
  host: string;
  channelCredentials: unknown;
  channelOptions: Record<string, unknown> | undefined;
  getServiceClient(name: 'Auth'): {
    authenticate(
      req: { name: string; password: string },
      metadata: unknown,
      options: unknown,
      cb: (err: Error | null, res?: { token: string }) => void,
    ): void;
  };
}

interface PoolInternals {
  hosts?: PoolHostInternals[];
  authenticator?: {
    getCredentialsFromHost?: (
      address: string,
      name: string,
      password: string,
      callOptions: unknown,
    ) => Promise<string>;
  };
}

interface GrpcModule {
  credentials: {
    createSsl(
      root: Buffer | null,
      key: Buffer | null,
      cert: Buffer | null,
      verify: { checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined },
    ): unknown;
  };
  Metadata: new () => unknown;
}

/** Any non-IP name: etcd ignores SNI, and the certificate is checked against the IP below. */
const SNI_NAME = 'etcd';

/**
 * grpc-js sends the target host as TLS server name, also when it is an IP address. For such hosts
 * the server name becomes a plain name and the certificate is verified against the IP address
 * itself, exactly as Node verifies it without a server name. etcd3 builds one set of credentials
 * for all hosts, so each IP host gets its own; its auth call is routed through the same host.
 */
function avoidIpServerNames(client: Etcd3, tls: IOptions['credentials']): void {
  const pool = (client as unknown as { pool?: PoolInternals }).pool;
  const hosts = pool?.hosts;
  if (hosts === undefined) return;
  // etcd3's own grpc-js: credentials of another copy would not be accepted by its channels.
  const grpc = createRequire(import.meta.resolve('etcd3'))('@grpc/grpc-js') as GrpcModule;
  for (const host of hosts) {
    const name = hostname(host.host);
    if (isIP(name) === 0) continue;
    host.channelOptions = { ...host.channelOptions, 'grpc.ssl_target_name_override': SNI_NAME };
    host.channelCredentials = grpc.credentials.createSsl(
      tls?.rootCertificate ?? null,
      tls?.privateKey ?? null,
      tls?.certChain ?? null,
      { checkServerIdentity: (_servername, cert) => checkServerIdentity(name, cert) },
    );
  }
  const authenticator = pool?.authenticator;
  if (authenticator?.getCredentialsFromHost === undefined) return;
  const original = authenticator.getCredentialsFromHost.bind(authenticator);
  authenticator.getCredentialsFromHost = (address, name, password, callOptions) => {
    const host = hosts.find((h) => h.host === address);
    if (host === undefined || isIP(hostname(address)) === 0) {
      return original(address, name, password, callOptions);
    }
    return new Promise((resolve, reject) => {
      host
        .getServiceClient('Auth')
        .authenticate({ name, password }, new grpc.Metadata(), callOptions, (err, res) => {
          if (err !== null) reject(castGrpcError(err));
          else resolve(res?.token ?? '');
        });
    });
  };
}

/** `127.0.0.1:2379` -> `127.0.0.1`; `[::1]:2379` -> `::1`. */
function hostname(hostPort: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hostPort);
  if (bracketed?.[1] !== undefined) return bracketed[1];
  const i = hostPort.lastIndexOf(':');
  return i === -1 ? hostPort : hostPort.slice(0, i);
}
