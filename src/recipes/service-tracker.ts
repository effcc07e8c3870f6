/**
 * Tracks the instances registered under a path on the reflector: lists them (paginated, at one
 * revision), then follows the prefix from that revision + 1 on the shared watch stream, and emits
 * the complete map after the listing and after every batch of changes. If the history was
 * compacted away (e.g. the tracker was cut off for long), it lists again and emits the true set
 * with a CompactedError attached, so nothing is missed silently.
 *
 * Cost per change: the map is a persistent sorted map; applying an event and emitting a snapshot
 * is O(log n) and shares structure with the previous snapshot, so every emitted map stays a
 * correct snapshot for as long as the consumer keeps it, with no O(n) copy per change.
 */
import type { IKeyValue } from 'etcd3';
import { InvalidArgumentError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import type { StartOptions } from '../engines/lifecycle.js';
import { PersistentMap } from '../engines/persistent-map.js';
import { PrefixState, type PrefixModel } from '../engines/prefix-state.js';
import { validatePath } from '../paths.js';
import type { RecipeStream } from '../transport/stream-queue.js';
import type { WatchEvent } from '../transport/watch-mux.js';

/** One complete state of a tracked service. */
export interface ServiceData {
  /**
   * Every registered instance: name (the key relative to `path + '/'`) -> value, sorted by name.
   * A snapshot: it never changes after it was emitted. `JSON.stringify` gives a plain object.
   */
  readonly services: ReadonlyMap<string, string>;
  /** The etcd revision this state is at. */
  readonly revision: number;
  /**
   * Set when something went wrong: UnavailableError / TimeoutError (etcd unreachable; the map is
   * the last known state and the tracker keeps trying), CompactedError (history was lost while
   * cut off; the map was re-listed and is correct).
   */
  readonly error?: Error;
}

/** Options of `conn.newServiceTracker(path, options)`. */
export interface ServiceTrackerOptions {
  /** Keys per page of the listing. Default 1000. */
  pageSize?: number;
}

/**
 * Follows the instances under `path`. Create it with `conn.newServiceTracker(path)`; no I/O
 * before `start()`.
 *
 * ```ts
 * for await (const { services } of tracker.start()) route(services);
 * ```
 */
export class ServiceTracker implements AsyncDisposable {
  /** The tracked prefix, `path + '/'`. */
  readonly prefix: string;

  private readonly engine: PrefixState<ServiceData>;

  /** @internal Use `conn.newServiceTracker(path)`; validates everything, does no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly path: string,
    options: ServiceTrackerOptions = {},
  ) {
    validatePath(path, ctx.root);
    this.prefix = path + '/';
    const { pageSize = 1000 } = options;
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw new InvalidArgumentError('options.pageSize', 'must be an integer >= 1');
    }
    this.engine = new PrefixState({
      ctx,
      name: 'service tracker',
      what: `tracker ${path}`,
      prefix: this.prefix,
      pageSize,
      model: new ServiceMap(this.prefix.length),
    });
  }

  /**
   * Lists, then follows the instances. The stream yields the complete map each time (latest
   * state; a slow reader skips intermediate states). Leaving the loop stops the tracker, as do
   * `stop()`, `signal` and `conn.close()`. A final error (permission denied, authentication,
   * TLS) ends the stream with that error.
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(options: StartOptions = {}): RecipeStream<ServiceData> {
    return this.engine.start(options);
  }

  /** Ends the stream; resolves when no watch or timer of this tracker is left. Idempotent. */
  stop(): Promise<void> {
    return this.engine.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** The instances as a persistent map: name -> value. */
class ServiceMap implements PrefixModel<ServiceData> {
  private services: PersistentMap = PersistentMap.empty;

  /** `cut`: the length of the prefix, cut off every key to give the instance name. */
  constructor(private readonly cut: number) {}

  reset(kvs: readonly IKeyValue[]): void {
    this.services = PersistentMap.from(
      kvs.map((kv) => [kv.key.toString().slice(this.cut), kv.value.toString()]),
    );
  }

  apply(events: readonly WatchEvent[]): void {
    let services = this.services;
    for (const e of events) {
      const name = e.key.slice(this.cut);
      services = e.type === 'put' ? services.set(name, e.value) : services.delete(name);
    }
    this.services = services;
  }

  state(revision: number, error: Error | undefined): ServiceData {
    const data: ServiceData = { services: this.services, revision };
    return error === undefined ? data : { ...data, error };
  }
}
