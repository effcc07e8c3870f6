/**
 * Reads gRPC endpoints in Go's `naming/endpoints` format under a service path — ours, Go's
 * `endpoints.Manager.AddEndpoint`, 3.4's `GRPCResolver.Update` — on the reflector: lists the
 * prefix at one revision, watches from the next, re-lists after a compaction, and resumes after
 * reconnects from the last delivered revision. Go's own watch channel closes on an error and its
 * resolver then stops following; this one goes on and says what happened on its stream.
 *
 * Values are read as Go's decoder reads them (engines/go-endpoint.ts). Keys under the path whose
 * value is not an endpoint (a plain registration, garbage) are skipped and reported in `skipped`,
 * with the reason, so a foreign entry never breaks the list or goes unnoticed.
 *
 * Prefix: `servicePath + '/'` (upstream 3.4's watcher). Debian's and 3.5's Go reader list
 * `servicePath` without the slash, so they also see sibling paths (`api2/...`); this one does not.
 */
import type { IKeyValue } from 'etcd3';
import type { ConnectorContext } from '../engines/context.js';
import { parseEndpoint } from '../engines/go-endpoint.js';
import { PersistentMap } from '../engines/persistent-map.js';
import { PrefixState, type PrefixModel } from '../engines/prefix-state.js';
import type { WatchEvent } from '../transport/watch-types.js';

/** One registered instance, as Go's `endpoints.Endpoint` plus where it is. */
export interface ServiceEndpoint {
  /** The key in etcd (`servicePath + '/' + addr` when written by Go or by us): its identity. */
  readonly key: string;
  /** The address to dial, `host:port`. */
  readonly addr: string;
  /** The metadata, any JSON value; `null` when none (Go's nil). */
  readonly metadata: unknown;
}

/** One complete state of the endpoints of a service. */
export interface EndpointData {
  /**
   * Every readable endpoint: name (the key relative to `servicePath + '/'`) -> endpoint, sorted
   * by name. A snapshot: it never changes after it was emitted.
   */
  readonly endpoints: ReadonlyMap<string, ServiceEndpoint>;
  /**
   * Keys under the path that are not endpoints in Go's format: name -> why (`not JSON`, `no Addr`,
   * `Addr is not a string`, ...). Go's readers skip the same entries (with a log line).
   */
  readonly skipped: ReadonlyMap<string, string>;
  /** The etcd revision this state is at (0 before the first listing). */
  readonly revision: number;
  /**
   * Set when something went wrong: UnavailableError / TimeoutError (etcd unreachable; the maps
   * are the last known state and the tracker keeps trying), CompactedError (history was lost
   * while cut off; the maps were re-listed and are correct).
   */
  readonly error?: Error;
}

/** Options of `conn.newEndpointTracker(servicePath, options)`. */
export interface EndpointTrackerOptions {
  /** Keys per page of the listing. Default 1000. */
  pageSize?: number;
}

/**
 * Follows the gRPC endpoints under `servicePath`. Create it with
 * `conn.newEndpointTracker(servicePath)`; no I/O before `start()`.
 *
 * ```ts
 * for await (const { endpoints } of tracker.start()) dial([...endpoints.values()]);
 * ```
 */
export class EndpointTracker extends PrefixState<EndpointData> {
  /** @internal Use `conn.newEndpointTracker(servicePath)`; validates everything, no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly servicePath: string,
    options: EndpointTrackerOptions = {},
  ) {
    super(ctx, {
      name: 'endpoint tracker',
      what: `endpoints ${servicePath}`,
      path: servicePath,
      pathArgument: 'servicePath',
      options,
      model: (cut) => new EndpointMap(cut),
    });
  }
}

/** The endpoints and the skipped entries, as persistent maps (O(log n) per change). */
class EndpointMap implements PrefixModel<EndpointData> {
  private endpoints: PersistentMap<ServiceEndpoint> = PersistentMap.empty;
  private skipped: PersistentMap = PersistentMap.empty;

  /** `cut`: the length of the prefix, cut off every key to give its name. */
  constructor(private readonly cut: number) {}

  reset(kvs: readonly IKeyValue[]): void {
    this.endpoints = PersistentMap.empty;
    this.skipped = PersistentMap.empty;
    for (const kv of kvs) this.put(kv.key.toString(), kv.value.toString());
  }

  apply(events: readonly WatchEvent[]): void {
    for (const e of events) {
      if (e.type === 'put') {
        this.put(e.key, e.value);
      } else {
        const name = e.key.slice(this.cut);
        this.endpoints = this.endpoints.delete(name);
        this.skipped = this.skipped.delete(name);
      }
    }
  }

  state(revision: number): EndpointData {
    return { endpoints: this.endpoints, skipped: this.skipped, revision };
  }

  /** One key's value into the maps: a PUT adds or updates, as in Go, or is skipped with why. */
  private put(key: string, value: string): void {
    const name = key.slice(this.cut);
    const parsed = parseEndpoint(value);
    if ('reason' in parsed) {
      this.endpoints = this.endpoints.delete(name);
      this.skipped = this.skipped.set(name, parsed.reason);
    } else {
      this.skipped = this.skipped.delete(name);
      this.endpoints = this.endpoints.set(name, {
        key,
        addr: parsed.addr,
        metadata: parsed.metadata,
      });
    }
  }
}
