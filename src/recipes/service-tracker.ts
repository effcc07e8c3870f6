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
import { CompactedError, InvalidArgumentError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { Lifecycle, type StartOptions } from '../engines/lifecycle.js';
import { PersistentMap } from '../engines/persistent-map.js';
import { startReflector, type Reflector, type ReflectorListener } from '../engines/reflector.js';
import { prefixRange } from '../engines/wait-deletes.js';
import { validatePath } from '../paths.js';
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
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

  private readonly pageSize: number;
  private readonly life: Lifecycle;
  private queue: StreamQueue<ServiceData> | undefined;
  private reflector: Reflector | undefined;
  private services = PersistentMap.empty;
  private revision = 0;

  /** @internal Use `conn.newServiceTracker(path)`; validates everything, does no I/O. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    options: ServiceTrackerOptions = {},
  ) {
    validatePath(path, ctx.root);
    this.prefix = path + '/';
    const { pageSize = 1000 } = options;
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw new InvalidArgumentError('options.pageSize', 'must be an integer >= 1');
    }
    this.pageSize = pageSize;
    this.life = new Lifecycle(ctx, 'service tracker', async () => {
      this.reflector?.stop();
      await this.reflector?.done;
      this.queue?.end();
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
    this.life.begin(options);
    const queue = new StreamQueue<ServiceData>({
      capacity: 4,
      overflow: 'coalesce',
      keep: (d) => d.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.queue = queue;
    if (this.life.isStopping) {
      queue.end();
      return queue;
    }
    const { key, range_end: rangeEnd } = prefixRange(this.prefix);
    const reflector = startReflector({
      ctx: this.ctx,
      what: `tracker ${this.path}`,
      list: [{ key, rangeEnd }],
      watch: { key, rangeEnd },
      pageSize: this.pageSize,
      listener: this.feed(queue),
    });
    this.reflector = reflector;
    return queue;
  }

  /** The reflector's listener. */
  private feed(queue: StreamQueue<ServiceData>): ReflectorListener {
    const cut = this.prefix.length;
    return {
      onSnapshot: (snapshot) => {
        this.services = PersistentMap.from(
          snapshot.kvs.map((kv) => [kv.key.toString().slice(cut), kv.value.toString()]),
        );
        this.revision = snapshot.revision;
        const compacted =
          snapshot.reason === 'compacted'
            ? new CompactedError(
                String(snapshot.resumeRevision ?? 0),
                String(snapshot.compactRevision ?? 0),
              )
            : undefined;
        this.emit(compacted);
      },
      onEvents: (events) => {
        this.apply(events);
      },
      onStatus: (status) => {
        this.emit(status.state === 'unavailable' ? status.error : undefined);
      },
      onEnd: (error) => {
        if (error !== undefined) queue.fail(error);
        void this.stop();
      },
    };
  }

  /** Ends the stream; resolves when no watch or timer of this tracker is left. Idempotent. */
  stop(): Promise<void> {
    return this.life.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private apply(events: readonly WatchEvent[]): void {
    const cut = this.prefix.length;
    let services = this.services;
    for (const e of events) {
      const name = e.key.slice(cut);
      services = e.type === 'put' ? services.set(name, e.value) : services.delete(name);
      this.revision = e.revision;
    }
    this.services = services;
    this.emit(undefined);
  }

  private emit(error: Error | undefined): void {
    const data: ServiceData = { services: this.services, revision: this.revision };
    this.queue?.push(error === undefined ? data : { ...data, error });
  }
}
