import type { Etcd3, IOptions } from 'etcd3';
import { ClosedError, InvalidArgumentError } from './errors.js';
import type { Closable, ConnectorContext } from './engines/context.js';
import { validateSignal } from './engines/lifecycle.js';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  joinPath,
  namespaceRoot,
  validateMs,
  validatePath,
  validateTtl,
} from './paths.js';
import { Barrier } from './recipes/barrier.js';
import { Counter, type CounterOptions } from './recipes/counter.js';
import { DoubleBarrier, type DoubleBarrierOptions } from './recipes/double-barrier.js';
import {
  EndpointRegistration,
  type EndpointRegistrationOptions,
} from './recipes/endpoint-registration.js';
import { EndpointTracker, type EndpointTrackerOptions } from './recipes/endpoint-tracker.js';
import { EphemeralKey } from './recipes/ephemeral-key.js';
import { HealthMonitor, type HealthMonitorOptions } from './recipes/health-monitor.js';
import { Inspector, type InspectorOptions } from './recipes/inspector.js';
import { LeaderElector, type LeaderElectorOptions } from './recipes/leader-elector.js';
import { LeaderObserver } from './recipes/leader-observer.js';
import { MultiLock, type MultiLockOptions } from './recipes/multi-lock.js';
import { Mutex, type MutexOptions } from './recipes/mutex.js';
import { RWMutex, type RWMutexOptions } from './recipes/rw-mutex.js';
import { Semaphore, type SemaphoreOptions } from './recipes/semaphore.js';
import { Observer, type ObserverOptions } from './recipes/observer.js';
import { PriorityQueue, type PriorityQueueOptions } from './recipes/priority-queue.js';
import { Queue, type QueueOptions } from './recipes/queue.js';
import { ServiceRegistration } from './recipes/registration.js';
import { ServiceProvider, type ServiceProviderOptions } from './recipes/service-provider.js';
import { ServiceTracker, type ServiceTrackerOptions } from './recipes/service-tracker.js';
import { StmRunner, type StmOptions, type StmResult, type StmTx } from './recipes/stm.js';
import { SessionHandle } from './session/session-handle.js';
import { SessionPool } from './session/session-pool.js';
import { buildClientOptions, createClient } from './transport/client-options.js';
import { ConnectionMonitor, type ConnectionState } from './transport/connection-state.js';
import { FailureMemory } from './transport/rpc.js';
import { TxnBatcher } from './transport/txn-batch.js';
import type { RecipeStream } from './transport/stream-queue.js';
import { WatchMux } from './transport/watch-mux.js';

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
  /**
   * Unary calls of this connector in flight at most (the rest wait in order). Keeps a burst (a
   * thousand recipes starting at once) from inflating memory. Default 128.
   */
  maxCallsInFlight?: number;
  /**
   * The shared watch stream is probed after this long without a message, and re-dialled
   * (possibly to another member) when the probe goes unanswered as long again, in ms. Default
   * 2000.
   */
  watchSilenceMs?: number;
  /** Extra etcd3 options, passed through (advanced; `hosts` comes from the endpoints). */
  etcd3?: Omit<IOptions, 'hosts'>;
}

const DEFAULT_CALLS_IN_FLIGHT = 128;

/** Options of `conn.session(options)`. */
export interface SessionRequest {
  /** Lease TTL in whole seconds. */
  ttl: number;
  /** Gives up waiting for etcd (the promise rejects with AbortError). */
  signal?: AbortSignal;
}

/**
 * The entry point: one etcd3 client for a namespace, one multiplexed watch stream, one session
 * per TTL, and a factory for the recipes. The constructor does no I/O. `close()` ends every
 * recipe it created and revokes its leases.
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
  private readonly watches: WatchMux;
  private readonly connection = new ConnectionMonitor();
  private readonly owned = new Set<Closable>();
  private closing: Promise<void> | undefined;
  private stmRunner: StmRunner | undefined;

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
    const watchSilenceMs = validateMs(options.watchSilenceMs ?? 2000, 'watchSilenceMs');
    const maxCallsInFlight = options.maxCallsInFlight ?? DEFAULT_CALLS_IN_FLIGHT;
    if (!Number.isSafeInteger(maxCallsInFlight) || maxCallsInFlight < 1) {
      throw new InvalidArgumentError('maxCallsInFlight', 'must be an integer >= 1');
    }
    const failures = new FailureMemory();
    const clientOptions = buildClientOptions(
      {
        dialTimeoutMs,
        callTimeoutMs,
        maxCallsInFlight,
        ...(options.auth === undefined ? {} : { auth: options.auth }),
        ...(options.tls === undefined ? {} : { tls: options.tls }),
        ...(options.etcd3 === undefined ? {} : { etcd3: options.etcd3 }),
      },
      failures,
    );
    this.client = createClient(endpoints, clientOptions);
    const connection = this.connection;
    this.sessions = new SessionPool(this.client, { callTimeoutMs, failures }, connection);
    const watches = new WatchMux({
      client: this.client,
      failures,
      dialTimeoutMs,
      silenceMs: watchSilenceMs,
      onConnection: (state) => {
        if (state === 'idle') connection.remove(watches);
        else connection.set(watches, state === 'up');
      },
    });
    this.watches = watches;
    const callOptions = (): { deadline: Date } => ({
      deadline: new Date(Date.now() + callTimeoutMs),
    });
    const txns = new TxnBatcher({
      client: this.client,
      callOptions,
      toError: (err, what) => failures.toError(err, what),
    });
    const owned = this.owned;
    const isClosing = (): boolean => this.closing !== undefined;
    this.ctx = {
      client: this.client,
      root: this.root,
      endpoints: this.endpoints,
      clientOptions,
      sessions: this.sessions,
      watches,
      txns,
      failures,
      callTimeoutMs,
      dialTimeoutMs,
      maxRequestBytes,
      get closing() {
        return isClosing();
      },
      assertOpen: () => {
        if (this.closing !== undefined) throw new ClosedError();
      },
      track(closable) {
        owned.add(closable);
        return () => owned.delete(closable);
      },
      untrack(closable) {
        owned.delete(closable);
      },
      callOptions,
      toError: (err, what) => failures.toError(err, what),
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

  /**
   * A gRPC endpoint of the service at `servicePath` in Go's `naming/endpoints` format: key
   * `servicePath + '/' + addr`, value `{"Op":0,"Addr":...,"Metadata":...}` under a lease, readable
   * by Go's etcd resolver and by `newEndpointTracker` / `newServiceProvider` / the gRPC resolver.
   */
  newEndpointRegistration(
    servicePath: string,
    addr: string,
    options?: EndpointRegistrationOptions,
  ): EndpointRegistration {
    this.ctx.assertOpen();
    return new EndpointRegistration(this.ctx, this.path(servicePath), addr, options);
  }

  /** Follows the gRPC endpoints (Go's `naming/endpoints` format) under `servicePath`. */
  newEndpointTracker(servicePath: string, options?: EndpointTrackerOptions): EndpointTracker {
    this.ctx.assertOpen();
    return new EndpointTracker(this.ctx, this.path(servicePath), options);
  }

  /**
   * Picks an instance of the service at `servicePath` per call (Curator's ServiceProvider):
   * round-robin, random or sticky, with a filter and a down-instance policy.
   */
  newServiceProvider(servicePath: string, options?: ServiceProviderOptions): ServiceProvider {
    this.ctx.assertOpen();
    return new ServiceProvider(this.ctx, this.path(servicePath), options);
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
   * A barrier on the key `path` (Go's `recipe.Barrier` layout): `hold()`, `release()`,
   * `wait({ signal })`.
   */
  newBarrier(path: string): Barrier {
    this.ctx.assertOpen();
    return new Barrier(this.ctx, this.path(path));
  }

  /**
   * A double barrier for `count` participants on `path` (Go's `recipe.DoubleBarrier` layout):
   * `enter({ signal })` waits until `count` have entered, `leave({ signal })` until all have left.
   * One object is one participant.
   */
  newDoubleBarrier(path: string, count: number, options?: DoubleBarrierOptions): DoubleBarrier {
    this.ctx.assertOpen();
    return new DoubleBarrier(this.ctx, this.path(path), count, options);
  }

  /**
   * A FIFO queue on `path` (Go's `recipe.Queue` layout: items `path/<UnixNano>`):
   * `enqueue(value)`, `dequeue({ signal })` -> value. Each item goes to exactly one consumer.
   */
  newQueue(path: string, options?: QueueOptions): Queue {
    this.ctx.assertOpen();
    return new Queue(this.ctx, this.path(path), options);
  }

  /**
   * A priority queue on `path` (Go's `recipe.PriorityQueue` layout): `enqueue(value, priority)`
   * with priority 0..65535, lower first; `dequeue({ signal })` -> value.
   */
  newPriorityQueue(path: string, options?: PriorityQueueOptions): PriorityQueue {
    this.ctx.assertOpen();
    return new PriorityQueue(this.ctx, this.path(path), options);
  }

  /**
   * A shared integer counter on the key `path` (value: the integer in decimal): `get()`,
   * `add(delta)` -> new value, `compareAndSet(expected, next)`. Exact under contention.
   */
  newCounter(path: string, options?: CounterOptions): Counter {
    this.ctx.assertOpen();
    return new Counter(this.ctx, this.path(path), options);
  }

  /**
   * Runs `fn` as a software transaction (Go's `concurrency.NewSTM`): reads through `tx` are
   * recorded, writes buffered, and one etcd transaction commits them only if what `fn` read is
   * unchanged (per `isolation`, default `serializable-snapshot`); on a conflict `fn` runs again,
   * until it commits or `signal` fires. `fn` may run several times: no side effects besides `tx`.
   *
   * ```ts
   * await conn.stm(async (tx) => {
   *   const a = Number((await tx.get(from)) ?? '0');
   *   tx.put(from, String(a - 10));
   *   tx.put(to, String(Number((await tx.get(to)) ?? '0') + 10));
   * });
   * ```
   *
   * @throws TransactionConflictError `signal` fired (or `maxAttempts` reached) after conflicts
   * @throws AbortError / ClosedError; whatever `fn` throws (nothing is written then)
   */
  stm<T>(fn: (tx: StmTx) => Promise<T> | T, options?: StmOptions): Promise<StmResult<T>> {
    this.ctx.assertOpen();
    this.stmRunner ??= new StmRunner(this.ctx);
    return this.stmRunner.run(fn, options);
  }

  /**
   * A mutex on `path` in Go's `concurrency.Mutex` layout (`path/<lease id hex>`), so it queues
   * with `etcdctl lock <path>` and Go services. Callers of this connector that lock it under the
   * same session queue in process first (they would share one key).
   */
  newMutex(path: string, options?: MutexOptions): Mutex {
    this.ctx.assertOpen();
    return new Mutex(this.ctx, this.path(path), options);
  }

  /** A readers-writer lock on `path` in Go's recipes layout (`path/read/...`, `path/write/...`). */
  newRWMutex(path: string, options?: RWMutexOptions): RWMutex {
    this.ctx.assertOpen();
    return new RWMutex(this.ctx, this.path(path), options);
  }

  /** A semaphore of `permits` on `path`: at most that many holders at once. */
  newSemaphore(path: string, permits: number, options?: SemaphoreOptions): Semaphore {
    this.ctx.assertOpen();
    return new Semaphore(this.ctx, this.path(path), permits, options);
  }

  /** Mutexes on several paths, taken all or nothing in one global order (no deadlock). */
  newMultiLock(paths: readonly string[], options?: MultiLockOptions): MultiLock {
    this.ctx.assertOpen();
    return new MultiLock(this.ctx, paths, options);
  }

  /**
   * Shows what lives under `path` in recipe terms (elections, locks, queues, services, ...), live:
   * one watch of the path on the shared stream, lease TTLs asked in batches.
   */
  newInspector(path: string, options?: InspectorOptions): Inspector {
    this.ctx.assertOpen();
    return new Inspector(this.ctx, this.path(path), options);
  }

  /**
   * A handle on the connector's shared session (lease + keepalive) for `ttl` seconds — the one
   * every recipe with that TTL uses — for your own leased keys, or to tie recipes to one lease
   * (`{ session }`). Closing the handle releases it only; the lease is revoked when its last
   * holder lets go, so no holder can revoke a lease others still use.
   *
   * @throws InvalidArgumentError bad TTL or signal (before any I/O)
   * @throws UnavailableError / TimeoutError / AuthenticationFailedError / TlsError etcd refused
   *   or could not be reached (the grant is not retried); TimeoutError also when its answer came
   *   after the granted TTL could have run out (the lease is revoked then)
   * @throws AbortError `signal` fired
   * @throws ClosedError the connector is closed
   */
  async session(request: SessionRequest): Promise<SessionHandle> {
    this.ctx.assertOpen();
    if (typeof request !== 'object' || (request as unknown) === null) {
      throw new InvalidArgumentError('request', 'must be { ttl, signal? }');
    }
    const ttl = validateTtl(request.ttl, 'ttl');
    const signal = validateSignal(request.signal, 'signal');
    const ref = await this.sessions.acquire(ttl, signal === undefined ? {} : { signal });
    this.sessions.revokeAtLastRelease(ref.session);
    const handle = new SessionHandle(ref);
    const untrack = this.ctx.track({ close: () => handle.close() });
    handle.signal.addEventListener('abort', untrack, { once: true });
    return handle;
  }

  /**
   * The connection's state in Apache Curator's vocabulary: `connected` (first contact),
   * `suspended` (the watch stream or a keepalive went silent or broke: leases may expire soon),
   * `lost` (a session's lease was lost), `reconnected` (all streams answer again after
   * `suspended` or `lost`). Yields the current state first when known. Keeps the shared watch
   * stream open (its liveness probe is what tells). Ends on `conn.close()` or `signal`.
   */
  status(options: { signal?: AbortSignal } = {}): RecipeStream<ConnectionState> {
    this.ctx.assertOpen();
    const signal = validateSignal(options.signal);
    const release = this.watches.hold();
    let untrack: () => void = () => undefined;
    const stream = this.connection.subscribe(() => {
      release();
      untrack();
    });
    const stop = (): Promise<void> => {
      release();
      untrack();
      this.connection.end(stream);
      return Promise.resolve();
    };
    untrack = this.ctx.track({ close: stop });
    signal?.addEventListener('abort', () => void stop(), { once: true });
    if (signal?.aborted === true) void stop();
    return stream;
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
    // One revoke per lease removes every leased key at once (recipes skip their own deletes).
    await this.sessions.close().catch(() => undefined);
    this.watches.close();
    this.connection.close();
    this.client.close();
  }

  private path(path: string): string {
    return validatePath(path, this.root);
  }
}
