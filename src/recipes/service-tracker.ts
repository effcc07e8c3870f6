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
import type { ConnectorContext } from '../engines/context.js';
import { PersistentMap } from '../engines/persistent-map.js';
import { PrefixState, type PrefixModel } from '../engines/prefix-state.js';
import type { WatchEvent } from '../transport/watch-types.js';

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
export class ServiceTracker extends PrefixState<ServiceData> {
  /** @internal Use `conn.newServiceTracker(path)`; validates everything, does no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly path: string,
    options: ServiceTrackerOptions = {},
  ) {
    super(ctx, {
      name: 'service tracker',
      what: `tracker ${path}`,
      path,
      options,
      model: (cut) => new ServiceMap(cut),
    });
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

  state(revision: number): ServiceData {
    return { services: this.services, revision };
  }
}
