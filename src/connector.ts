import { Etcd3, GRPCDeadlineExceededError, isRecoverableError, type IOptions } from 'etcd3';
import { ClosedError, InvalidArgumentError } from './errors.js';
import type { Closable, ConnectorContext } from './internal/context.js';
import { SessionPool } from './internal/session-pool.js';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  joinPath,
  namespaceRoot,
  validateMs,
  validatePath,
  validateTtl,
} from './paths.js';
import { EphemeralKey } from './recipes/ephemeral-key.js';
import { HealthMonitor, type HealthMonitorOptions } from './recipes/health-monitor.js';
import { LeaderElector, type LeaderElectorOptions } from './recipes/leader-elector.js';
import { LeaderObserver } from './recipes/leader-observer.js';
import { Observer, type ObserverOptions } from './recipes/observer.js';
import { ServiceRegistration } from './recipes/registration.js';
import { ServiceTracker, type ServiceTrackerOptions } from './recipes/service-tracker.js';
import type { Session } from './session.js';

export interface EtcdConnectorOptions {
  /** etcd user and password (etcd's auth must be enabled on the server). */
  auth?: { username: string; password: string };
  /** TLS material as PEM text or buffers; `https://` endpoints without `ca` use the system roots. */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** How long to wait for a connection to a member, in ms. Default 3000. */
  dialTimeoutMs?: number;
  /** Deadline of every unary call (get, put, txn, grant, ...), in ms. Default 5000. */
  callTimeoutMs?: number;
  /** etcd's `--max-request-bytes`; values that do not fit are refused before any I/O. */
  maxRequestBytes?: number;
  /** Extra etcd3 options, passed through (advanced; `hosts` comes from the endpoints). */
  etcd3?: Omit<IOptions, 'hosts'>;
}

/**
 * The entry point: one etcd3 client for a namespace, and a factory for the recipes. The constructor
 * does no I/O. `close()` ends every recipe it created and revokes its leases.
 */
export class EtcdConnector implements AsyncDisposable {
  /** The wrapped etcd3 client, for every plain etcd operation. Not namespaced. */
  readonly client: Etcd3;
  /** The namespace as given. */
  readonly namespace: string;
  /** The namespace root path, e.g. `/my_namespace`. */
  readonly root: string;
  readonly endpoints: readonly string[];

  private readonly ctx: ConnectorContext;
  private readonly sessions: SessionPool;
  private readonly owned = new Set<Closable>();
  private closing: Promise<void> | undefined;

  constructor(endpoints: readonly string[], namespace: string, options: EtcdConnectorOptions = {}) {
    // Checked as unknown: JavaScript callers can pass anything.
    const given: unknown = endpoints;
    if (!Array.isArray(given) || given.length === 0) {
      throw new InvalidArgumentError('endpoints', 'at least one endpoint is required');
    }
    given.forEach((e: unknown, i) => {
      if (typeof e !== 'string' || !/^https?:\/\/[^/\s]+$/.test(e)) {
        throw new InvalidArgumentError(
          `endpoints[${i}]`,
          `expected http(s)://host:port, got ${String(e)} (prepareEndpointList builds these)`,
        );
      }
    });
    this.root = namespaceRoot(namespace);
    this.namespace = namespace;
    this.endpoints = [...endpoints];
    const callTimeoutMs = validateMs(options.callTimeoutMs ?? 5000, 'callTimeoutMs');
    const dialTimeoutMs = validateMs(options.dialTimeoutMs ?? 3000, 'dialTimeoutMs');
    const maxRequestBytes = validateMs(
      options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
      'maxRequestBytes',
    );
    const clientOptions = buildClientOptions(options, dialTimeoutMs, callTimeoutMs);
    this.client = new Etcd3({ ...clientOptions, hosts: [...endpoints] });
    this.sessions = new SessionPool(this.client, { callTimeoutMs });
    const owned = this.owned;
    this.ctx = {
      client: this.client,
      root: this.root,
      endpoints: this.endpoints,
      clientOptions,
      sessions: this.sessions,
      callTimeoutMs,
      maxRequestBytes,
      assertOpen: () => {
        if (this.closing !== undefined) throw new ClosedError();
      },
      track(closable) {
        owned.add(closable);
        return () => owned.delete(closable);
      },
      callOptions: () => ({ deadline: new Date(Date.now() + callTimeoutMs) }),
    };
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.closing !== undefined;
  }

  /**
   * Joins segments under the namespace: `constructPath('elections', 'svc')` ->
   * `'/my_namespace/elections/svc'`. Repeated and trailing slashes fold away; `.`/`..` and NUL are
   * refused.
   */
  constructPath(...segments: string[]): string {
    return joinPath(this.root, segments);
  }

  /** A leader elector on `path` for this participant (`identity` is its value in etcd). */
  newLeaderElector(
    path: string,
    identity: string,
    ttl: number,
    options?: LeaderElectorOptions,
  ): LeaderElector {
    this.ctx.assertOpen();
    return new LeaderElector(this.ctx, this.path(path), identity, validateTtl(ttl), options);
  }

  /** Follows who leads the election on `path`, without campaigning. */
  newLeaderObserver(path: string): LeaderObserver {
    this.ctx.assertOpen();
    return new LeaderObserver(this.ctx, this.path(path));
  }

  /**
   * One instance of the service at `servicePath`: `register(value, ttl)` puts the ephemeral key
   * `servicePath + '/' + instance` that trackers on `servicePath` list as `instance`.
   */
  newRegistration(servicePath: string, instance: string): ServiceRegistration {
    this.ctx.assertOpen();
    return new ServiceRegistration(this.ctx, this.path(servicePath), instance);
  }

  /** Tracks the instances registered under `path`. */
  newServiceTracker(path: string, options?: ServiceTrackerOptions): ServiceTracker {
    this.ctx.assertOpen();
    return new ServiceTracker(this.ctx, this.path(path), options);
  }

  /** A key that lives while this process does (bound to a lease). */
  newEphemeralKey(path: string): EphemeralKey {
    this.ctx.assertOpen();
    return new EphemeralKey(this.ctx, this.path(path));
  }

  /** Every change of the key `path` (or, with `recursive`, below it), gap-free. */
  newObserver(path: string, options?: ObserverOptions): Observer {
    this.ctx.assertOpen();
    return new Observer(this.ctx, this.path(path), options);
  }

  /** Health of every member of the connector's endpoints. */
  newHealthMonitor(options?: HealthMonitorOptions): HealthMonitor {
    this.ctx.assertOpen();
    return new HealthMonitor(this.ctx, options);
  }

  /**
   * The connector's shared session (lease + keepalive) for `ttl` seconds, for your own keys. Call
   * `releaseSession` when done; the last release revokes the lease.
   */
  async acquireSession(ttl: number, signal?: AbortSignal): Promise<Session> {
    this.ctx.assertOpen();
    validateTtl(ttl);
    return this.sessions.acquire(ttl, signal === undefined ? {} : { signal });
  }

  /** Gives back a session from `acquireSession`. */
  async releaseSession(session: Session): Promise<void> {
    await this.sessions.release(session);
  }

  /**
   * Ends every recipe this connector created (electors resign, ephemeral keys are deleted),
   * revokes its leases and closes the client. Idempotent; never rejects. Afterwards a Node process
   * has nothing of ours left to keep it alive.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async doClose(): Promise<void> {
    await Promise.allSettled([...this.owned].map((o) => o.close()));
    this.owned.clear();
    await this.sessions.close().catch(() => undefined);
    this.client.close();
  }

  private path(path: string): string {
    return validatePath(path, this.root);
  }
}

type CallPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/** Tries of a unary call on another host after a transient failure (etcd3's default). */
const CALL_RETRIES = 3;

/** etcd3 passes this to the attempt function and ignores it; one object for every call. */
const ATTEMPT_CONTEXT = { signal: new AbortController().signal, attempt: 0 };

/**
 * etcd3's default retries a failed call on another host with a fresh deadline each time, so one
 * call could take 4 x callTimeoutMs (seen without quorum), and a write that timed out (and may
 * have been applied) went out again. Here only quick transient failures (host down, connection
 * refused) are retried, while the call is within a tenth of its deadline; a timed-out call is
 * never retried. So a call ends within ~1.1 x callTimeoutMs, as in Go's clientv3 (where retries
 * share one context). Per call this costs one clock read: no closure, no AsyncLocalStorage (whose
 * promise hooks would slow every promise of the process). (etcd3 reads only `execute`.)
 */
function retryQuickFailures(callTimeoutMs: number): CallPolicy {
  const retryWindowMs = callTimeoutMs / 10;
  return {
    async execute(fn: (ctx: typeof ATTEMPT_CONTEXT) => Promise<unknown>): Promise<unknown> {
      const start = performance.now();
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn(ATTEMPT_CONTEXT);
        } catch (err) {
          if (
            attempt >= CALL_RETRIES ||
            !(err instanceof Error) ||
            !isRecoverableError(err) ||
            err instanceof GRPCDeadlineExceededError ||
            performance.now() - start > retryWindowMs
          ) {
            throw err;
          }
        }
      }
    },
  } as unknown as CallPolicy;
}

function buildClientOptions(
  options: EtcdConnectorOptions,
  dialTimeoutMs: number,
  callTimeoutMs: number,
): Omit<IOptions, 'hosts'> {
  const out: Omit<IOptions, 'hosts'> = {
    dialTimeout: dialTimeoutMs,
    // etcd3 has no default deadline on unary calls; a call must never hang forever.
    defaultCallOptions: (ctx) =>
      ctx.isStream ? {} : { deadline: new Date(Date.now() + callTimeoutMs) },
    ...options.etcd3,
    faultHandling: {
      global: retryQuickFailures(callTimeoutMs),
      ...options.etcd3?.faultHandling,
    },
  };
  if (options.auth !== undefined) {
    const { username, password } = options.auth;
    if (typeof username !== 'string' || username === '' || typeof password !== 'string') {
      throw new InvalidArgumentError('auth', 'username (non-empty) and password are required');
    }
    out.auth = { username, password };
  }
  if (options.tls !== undefined) {
    const { ca, cert, key } = options.tls;
    if ((cert === undefined) !== (key === undefined)) {
      throw new InvalidArgumentError('tls', 'cert and key go together');
    }
    if (ca === undefined && cert === undefined) {
      throw new InvalidArgumentError('tls', 'give ca, or cert and key, or both');
    }
    const buf = (v: string | Buffer): Buffer => (typeof v === 'string' ? Buffer.from(v) : v);
    out.credentials = {
      // null: the system roots.
      rootCertificate: ca === undefined ? (null as unknown as Buffer) : buf(ca),
      ...(key === undefined ? {} : { privateKey: buf(key) }),
      ...(cert === undefined ? {} : { certChain: buf(cert) }),
    };
  }
  return out;
}
