/**
 * Picks one instance of a service for each call, as Apache Curator's ServiceProvider does: the
 * instances come from an endpoint tracker (Go's `naming/endpoints` format, so Go and Node
 * registrations alike), a `filter` narrows them, a down-instance policy skips those that failed
 * lately, and a strategy chooses among the rest.
 *
 * - `round-robin` (default): each instance in turn, in key order, starting at a random place so
 *   that many clients do not all start on the same instance.
 * - `random`: uniformly at random.
 * - `sticky`: the same instance for as long as it stays eligible (registered, passing the filter,
 *   not down); then another, chosen at random, which is kept in turn.
 *
 * Down-instance policy (Curator's DownInstancePolicy): `errorThreshold` errors noted for one
 * instance within `windowMs` mark it down for `downMs`; then it is eligible again with a clean
 * slate. Counted on a monotonic clock, locally (no I/O): each client judges for itself.
 */
import { ClosedError, InvalidArgumentError, NoInstanceError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { validateSignal } from '../engines/lifecycle.js';
import { abortable, monotonicMs } from '../transport/timers.js';
import type { RecipeStream } from '../transport/stream-queue.js';
import { EndpointTracker, type EndpointData, type ServiceEndpoint } from './endpoint-tracker.js';

/** How a provider chooses among the eligible instances. */
export type ProviderStrategy = 'round-robin' | 'random' | 'sticky';

/** When an instance counts as down (see the module comment). */
export interface DownInstancePolicy {
  /** Errors within `windowMs` that mark an instance down. Default 2 (Curator's). */
  errorThreshold?: number;
  /** How far back errors count, in ms. Default 30000. */
  windowMs?: number;
  /** How long a down instance is skipped, in ms. Default 30000 (Curator's). */
  downMs?: number;
}

/** Options of `conn.newServiceProvider(servicePath, options)`. */
export interface ServiceProviderOptions {
  /** Default `'round-robin'`. */
  strategy?: ProviderStrategy;
  /** Only instances for which this returns true are picked (e.g. by `metadata.zone`). */
  filter?: (instance: ServiceEndpoint) => boolean;
  /** When noted errors take an instance out of rotation; `false`: never. Default as documented. */
  downInstancePolicy?: DownInstancePolicy | false;
}

/** Options of {@link ServiceProvider.pick}. */
export interface PickOptions {
  /** Gives up waiting for the first listing (AbortError). */
  signal?: AbortSignal;
}

const STRATEGIES: readonly ProviderStrategy[] = ['round-robin', 'random', 'sticky'];
/** Instances with noted errors beyond which `noteError` forgets those that no longer count. */
const SWEEP_AT = 256;

/** Errors noted for one instance. */
interface Health {
  /** Monotonic times of the errors within the window. */
  errors: number[];
  /** Monotonic time until which it is down (0: not down). */
  downUntil: number;
}

/**
 * Hands out instances of the service at `servicePath`. Create it with
 * `conn.newServiceProvider(servicePath, options)`; no I/O before the first `pick()`.
 *
 * ```ts
 * const provider = conn.newServiceProvider(conn.constructPath('grpc', 'api'), { strategy: 'random' });
 * const instance = await provider.pick();
 * try { await call(instance.addr); } catch (err) { provider.noteError(instance); throw err; }
 * ```
 */
export class ServiceProvider implements AsyncDisposable {
  readonly strategy: ProviderStrategy;

  private readonly tracker: EndpointTracker;
  private readonly filter: ((instance: ServiceEndpoint) => boolean) | undefined;
  private readonly policy: Required<DownInstancePolicy> | undefined;
  private readonly health = new Map<string, Health>();
  private latest: EndpointData | undefined;
  /** The tracker's stream ended: with its final error, or a ClosedError after `stop()`. */
  private ended: Error | undefined;
  private following: Promise<void> | undefined;
  /** Woken on every state (or the end): picks that wait for the first listing. */
  private waiters: (() => void)[] = [];
  private next = Math.floor(Math.random() * 0x7fffffff);
  private stuck: string | undefined;

  /** @internal Use `conn.newServiceProvider(...)`; validates everything, no I/O. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly servicePath: string,
    options: ServiceProviderOptions = {},
  ) {
    if (typeof options !== 'object' || (options as unknown) === null) {
      throw new InvalidArgumentError('options', 'must be an object');
    }
    const { filter, downInstancePolicy } = options;
    // Checked as unknown: JavaScript callers can pass anything.
    const strategy: unknown = options.strategy ?? 'round-robin';
    if (!isStrategy(strategy)) {
      throw new InvalidArgumentError(
        'options.strategy',
        `must be one of ${STRATEGIES.join(', ')}, got ${String(strategy)}`,
      );
    }
    if (filter !== undefined && typeof filter !== 'function') {
      throw new InvalidArgumentError('options.filter', 'must be a function');
    }
    this.strategy = strategy;
    this.filter = filter;
    this.policy = downInstancePolicy === false ? undefined : checkPolicy(downInstancePolicy ?? {});
    this.tracker = new EndpointTracker(ctx, servicePath);
  }

  /**
   * One eligible instance, chosen by the strategy. The first call starts following the service
   * and waits for the first listing; later calls answer at once from the latest known state
   * (also while etcd is unreachable: the last state is the best knowledge there is).
   *
   * @throws NoInstanceError no instance is registered, or every one is filtered out or down
   * @throws UnavailableError / TimeoutError etcd could not be reached for the first listing
   * @throws AbortError `signal` fired while waiting for the first listing
   * @throws ClosedError after `stop()` or the connector's close; a final error (permission
   *   denied, ...) of the tracker once it ended with it
   */
  async pick(options: PickOptions = {}): Promise<ServiceEndpoint> {
    const signal = validateSignal(options.signal);
    const data = await this.current(signal);
    const eligible: ServiceEndpoint[] = [];
    let filtered = 0;
    let down = 0;
    const now = monotonicMs();
    for (const instance of data.endpoints.values()) {
      if (this.filter !== undefined && !this.filter(instance)) filtered++;
      else if (this.downAt(instance.key, now)) down++;
      else eligible.push(instance);
    }
    const chosen = this.choose(eligible);
    if (chosen === undefined) {
      throw new NoInstanceError(this.servicePath, data.endpoints.size, filtered, down);
    }
    return chosen;
  }

  /**
   * Notes a failed call to `instance` (the object `pick()` returned, or its key) for the
   * down-instance policy. No I/O; a no-op when the policy is off.
   */
  noteError(instance: ServiceEndpoint | string): void {
    const key =
      typeof instance === 'string' ? instance : (instance as Partial<ServiceEndpoint>).key;
    if (typeof key !== 'string' || key === '') {
      throw new InvalidArgumentError('instance', 'must be an instance from pick() or its key');
    }
    const policy = this.policy;
    if (policy === undefined) return;
    const now = monotonicMs();
    // Errors noted for instances long gone would otherwise pile up: forget what no longer counts.
    if (this.health.size >= SWEEP_AT) for (const k of [...this.health.keys()]) this.downAt(k, now);
    let h = this.health.get(key);
    if (h === undefined || (h.downUntil !== 0 && h.downUntil <= now)) {
      h = { errors: [], downUntil: 0 };
      this.health.set(key, h);
    }
    if (h.downUntil > now) return; // already down
    h.errors = h.errors.filter((t) => t > now - policy.windowMs);
    h.errors.push(now);
    if (h.errors.length >= policy.errorThreshold) {
      h.downUntil = now + policy.downMs;
      h.errors = [];
    }
  }

  /** True while `instance` (or its key) is down by the down-instance policy. */
  isDown(instance: ServiceEndpoint | string): boolean {
    return this.downAt(typeof instance === 'string' ? instance : instance.key, monotonicMs());
  }

  private downAt(key: string, now: number): boolean {
    const h = this.health.get(key);
    if (h === undefined) return false;
    if (h.downUntil > now) return true;
    // Forget what no longer counts, so the map does not grow with instances long gone.
    if (h.downUntil !== 0 || h.errors.every((t) => t <= now - (this.policy?.windowMs ?? 0))) {
      this.health.delete(key);
    }
    return false;
  }

  /** Stops following the service. Idempotent; later picks fail with ClosedError. */
  async stop(): Promise<void> {
    this.ended ??= new ClosedError('service provider');
    await this.tracker.stop();
    await this.following;
    this.wake();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** The latest state after the first listing; starts following on the first call. */
  private async current(signal: AbortSignal | undefined): Promise<EndpointData> {
    this.ctx.assertOpen();
    for (;;) {
      if (this.ended !== undefined) throw this.ended;
      this.following ??= this.follow(this.tracker.start());
      const data = this.latest;
      if (data !== undefined && data.revision > 0) return data;
      // Not listed yet because etcd cannot be reached: that is the answer, not a reason to wait
      // (the tracker says so within the dial timeout and keeps trying meanwhile).
      if (data?.error !== undefined) throw data.error;
      const woken = new Promise<void>((resolve) => this.waiters.push(resolve));
      await (signal === undefined ? woken : abortable(woken, signal));
    }
  }

  private async follow(stream: RecipeStream<EndpointData>): Promise<void> {
    try {
      // Before the first listing: revision 0, with the error that keeps it from coming, if any.
      // After it: the last listing kept up to date (also while cut off: the best knowledge).
      for await (const data of stream) {
        this.latest = data;
        this.wake();
      }
    } catch (err) {
      this.ended ??= this.ctx.toError(err, `service provider ${this.servicePath}`);
    }
    this.ended ??= new ClosedError('service provider');
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private choose(eligible: readonly ServiceEndpoint[]): ServiceEndpoint | undefined {
    const n = eligible.length;
    if (n === 0) return undefined;
    switch (this.strategy) {
      case 'round-robin':
        return eligible[this.next++ % n];
      case 'random':
        return eligible[Math.floor(Math.random() * n)];
      case 'sticky': {
        const kept = eligible.find((e) => e.key === this.stuck);
        if (kept !== undefined) return kept;
        const chosen = eligible[Math.floor(Math.random() * n)];
        this.stuck = chosen?.key;
        return chosen;
      }
    }
  }
}

function isStrategy(s: unknown): s is ProviderStrategy {
  return STRATEGIES.includes(s as ProviderStrategy);
}

function checkPolicy(p: DownInstancePolicy): Required<DownInstancePolicy> {
  if (typeof p !== 'object' || (p as unknown) === null) {
    throw new InvalidArgumentError('options.downInstancePolicy', 'must be an object or false');
  }
  const { errorThreshold = 2, windowMs = 30_000, downMs = 30_000 } = p;
  if (!Number.isInteger(errorThreshold) || errorThreshold < 1) {
    throw new InvalidArgumentError(
      'options.downInstancePolicy.errorThreshold',
      'must be an integer >= 1',
    );
  }
  for (const [name, v] of [
    ['windowMs', windowMs],
    ['downMs', downMs],
  ] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new InvalidArgumentError(
        `options.downInstancePolicy.${name}`,
        'must be a positive number of ms',
      );
    }
  }
  return { errorThreshold, windowMs, downMs };
}
