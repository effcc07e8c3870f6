/**
 * What lives under a path, in recipe terms, live: one reflector lists the path at one revision and
 * follows it on the connector's shared watch stream (a compaction leads to a fresh listing), and
 * the layout decoders read elections, locks, queues, services, ... out of the keys. The TTLs left
 * on the leases in view are asked in one batch (one LeaseTimeToLive per distinct lease, not per
 * key) every `leaseRefreshMs` (sooner for short leases), and at once for a lease not seen before. `etcdc inspect` takes one
 * state; `etcdc dashboard` follows them all.
 */
import { CompactedError, InvalidArgumentError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import {
  decodeLayouts,
  keyEntry,
  leaseHex,
  type KeyEntry,
  type RecipeView,
  type Since,
} from '../engines/layouts/index.js';
import type { StartOptions } from '../engines/lifecycle.js';
import { ReflectedStream } from '../engines/reflected-stream.js';
import type { ReflectorListener } from '../engines/reflector.js';
import { validateMs, validatePath } from '../paths.js';
import type { RecipeStream, StreamQueue } from '../transport/stream-queue.js';
import { monotonicMs } from '../transport/timers.js';
import { prefixTarget, type WatchEvent } from '../transport/watch-types.js';

/** A lease's time to live, as etcd last told it. */
export interface LeaseTtl {
  /** Seconds left when etcd answered; -1 when the lease is gone (expired or revoked). */
  readonly ttl: number;
  /** The TTL the lease was granted with, in seconds. */
  readonly grantedTtl: number;
  /** When etcd answered (ms since the epoch): the time left now is `ttl - (now - checkedAt)`. */
  readonly checkedAt: number;
}

/** One state of the inspected path. */
export interface InspectorState {
  readonly path: string;
  /** The etcd revision this state is at. */
  readonly revision: number;
  /** Every recipe under the path, sorted by path; every key is in exactly one. */
  readonly recipes: readonly RecipeView[];
  /** The leases of the keys in view, by lease id in hex (as in the recipes' entries). */
  readonly leases: ReadonlyMap<string, LeaseTtl>;
  /**
   * Set when something went wrong: UnavailableError / TimeoutError (etcd unreachable; the state
   * is the last known one and the inspector keeps trying), CompactedError (history was lost while
   * cut off; the keys were listed again and are right).
   */
  readonly error?: Error;
}

/** Options of `conn.newInspector(path, options)`. */
export interface InspectorOptions {
  /**
   * How often the TTLs of the leases in view are asked again, in ms: at most this long apart, and
   * every half of the shortest TTL in view when that is shorter (at least 500 ms apart), so a live
   * lease's count-down never runs out between two answers. Default 3000.
   */
  leaseRefreshMs?: number;
  /** Keys per page of the listing. Default 1000. */
  pageSize?: number;
}

/** Options of `inspector.start(options)`. */
export interface InspectorStartOptions extends StartOptions {
  /**
   * One state (after the listing and its lease TTLs), then the stream ends; if etcd cannot be
   * reached the stream ends with that error instead of retrying. Default false.
   */
  once?: boolean;
}

/** States are decoded at most this often under a stream of changes (a decode reads every key). */
const MIN_DECODE_INTERVAL_MS = 50;
/** Lease rounds for short TTLs are at least this far apart. */
const MIN_REFRESH_MS = 500;

/**
 * Shows what lives under `path` in recipe terms. Create it with `conn.newInspector(path)`; no I/O
 * before `start()`.
 *
 * ```ts
 * for await (const { recipes, leases } of conn.newInspector(path).start()) render(recipes);
 * ```
 */
export class Inspector implements AsyncDisposable {
  private readonly leaseRefreshMs: number;
  private readonly pageSize: number;
  private readonly stream: ReflectedStream<InspectorState>;
  private once = false;
  private readonly entries = new Map<string, KeyEntry>();
  private revision = 0;
  private recipes: readonly RecipeView[] = [];
  private readonly leases = new Map<string, LeaseTtl>();
  /** The keys changed since the last decode. */
  private dirty = false;
  private lastDecodeAt = -Infinity;
  private emitTimer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshDueAt = 0;
  /** The lease batch in flight, and whether another was asked for meanwhile. */
  private batch: Promise<void> | undefined;
  private batchAgain: 'all' | 'new' | undefined;

  /** @internal Use `conn.newInspector(path, options)`; validates everything, does no I/O. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    options: InspectorOptions = {},
  ) {
    validatePath(path, ctx.root);
    this.leaseRefreshMs = validateMs(options.leaseRefreshMs ?? 3000, 'options.leaseRefreshMs');
    const { pageSize = 1000 } = options;
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw new InvalidArgumentError('options.pageSize', 'must be an integer >= 1');
    }
    this.pageSize = pageSize;
    this.stream = new ReflectedStream({
      ctx,
      name: 'inspector',
      beforeStop: () => {
        clearTimeout(this.emitTimer);
        clearTimeout(this.refreshTimer);
      },
      afterReflector: () => this.batch,
    });
  }

  /**
   * Lists the path, then follows it. The stream yields the whole state after the listing and its
   * lease TTLs, then after every change and every lease batch (latest state; a slow reader skips
   * intermediate ones). With `once`, one state and the end. Leaving the loop stops the inspector,
   * as do `stop()`, `signal` and `conn.close()`; a final error (permission denied,
   * authentication, TLS) ends the stream with that error.
   *
   * @throws InvalidArgumentError bad `once`
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(options: InspectorStartOptions = {}): RecipeStream<InspectorState> {
    const { once = false } = options;
    if (typeof once !== 'boolean') throw new InvalidArgumentError('once', 'must be a boolean');
    const below = prefixTarget(this.path + '/');
    const path = Buffer.from(this.path);
    return this.stream.open(
      options.signal === undefined ? {} : { signal: options.signal },
      {
        ctx: this.ctx,
        what: `inspect ${this.path}`,
        // The path itself (a Go barrier) and everything below it.
        list: [{ key: path }, below],
        // One range over both; the few siblings it also covers (`path-x`, `path.y`) are dropped.
        watch: { key: path, rangeEnd: below.rangeEnd },
        accept: (key) => key === this.path || key.startsWith(this.path + '/'),
        pageSize: this.pageSize,
      },
      (queue) => {
        this.once = once;
        return this.feed(queue);
      },
    );
  }

  /** Ends the stream; resolves when no watch, call or timer of it is left. Idempotent. */
  stop(): Promise<void> {
    return this.stream.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** The reflector's listener. */
  private feed(queue: StreamQueue<InspectorState>): ReflectorListener {
    return {
      onSnapshot: (snapshot) => {
        const now = Date.now();
        const known = new Map(this.entries);
        this.entries.clear();
        for (const kv of snapshot.kvs) {
          const key = kv.key.toString();
          const since: Since = known.get(key)?.since ?? { time: now, source: 'listing' };
          this.entries.set(key, keyEntry(kv, since));
        }
        this.revision = snapshot.revision;
        this.dirty = true;
        if (this.once) {
          this.stream.stopReflector();
          this.finishOnce();
          return;
        }
        if (snapshot.reason === 'compacted') {
          const error = new CompactedError(
            String(snapshot.resumeRevision ?? 0),
            String(snapshot.compactRevision ?? 0),
          );
          this.push(error);
        }
        this.scheduleEmit();
        this.scheduleRefresh();
      },
      onEvents: (events) => {
        this.apply(events);
      },
      onStatus: (status) => {
        if (status.state === 'unavailable' && this.once) {
          queue.fail(status.error);
          void this.stop();
          return;
        }
        this.push(status.state === 'unavailable' ? status.error : undefined);
      },
      onEnd: (error) => {
        if (error !== undefined) queue.fail(error);
        void this.stop();
      },
    };
  }

  private apply(events: readonly WatchEvent[]): void {
    const now = Date.now();
    for (const e of events) {
      if (e.type === 'delete') {
        this.entries.delete(e.key);
      } else {
        const known = this.entries.get(e.key);
        // Version 1: this event created the key, so we saw it happen.
        const since: Since = known?.since ?? {
          time: now,
          source: e.version === 1 ? 'watch' : 'listing',
        };
        this.entries.set(e.key, {
          key: e.key,
          value: e.value,
          createRevision: e.createRevision,
          modRevision: e.revision,
          version: e.version,
          ...(e.lease === '0' ? {} : { lease: leaseHex(e.lease) }),
          since,
        });
      }
      this.revision = e.revision;
    }
    this.dirty = true;
    this.scheduleEmit();
  }

  /** `once`: the TTLs of every lease in view, then the one state, then the end. */
  private finishOnce(): void {
    this.batch = this.askLeases('all').then(() => {
      this.push(undefined);
      this.stream.end();
      void this.stop();
    });
  }

  /** A decode and a state soon: at once, unless the last decode was under 50 ms ago. */
  private scheduleEmit(): void {
    if (this.emitTimer !== undefined || this.stream.life.isStopping) return;
    const wait = Math.max(0, this.lastDecodeAt + MIN_DECODE_INTERVAL_MS - monotonicMs());
    this.emitTimer = setTimeout(() => {
      this.emitTimer = undefined;
      this.push(undefined);
      // A lease not asked about yet: its TTL now, not at the next round.
      if (this.leasesInView().some((id) => !this.leases.has(id))) this.requestBatch('new');
    }, wait);
  }

  /**
   * The next round of every lease in view; with `soonerOnly` (after a batch of new leases, which
   * may be short ones) only if that brings the round forward, so arrivals never starve it.
   */
  private scheduleRefresh(soonerOnly = false): void {
    if (this.stream.life.isStopping) return;
    let shortest = Infinity;
    for (const t of this.leases.values()) {
      if (t.grantedTtl > 0) shortest = Math.min(shortest, t.grantedTtl);
    }
    const wait = Math.min(this.leaseRefreshMs, Math.max(MIN_REFRESH_MS, (shortest * 1000) / 2));
    const due = monotonicMs() + wait;
    if (soonerOnly && this.refreshTimer !== undefined && due >= this.refreshDueAt) return;
    clearTimeout(this.refreshTimer);
    this.refreshDueAt = due;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      this.requestBatch('all');
    }, wait);
  }

  /** One batch at a time; a request while one is in flight runs after it. */
  private requestBatch(which: 'all' | 'new'): void {
    if (this.stream.life.isStopping) return;
    if (this.batch !== undefined) {
      if (this.batchAgain !== 'all') this.batchAgain = which;
      return;
    }
    this.batch = this.askLeases(which).then(() => {
      this.batch = undefined;
      this.scheduleRefresh(which === 'new');
      this.push(undefined);
      const again = this.batchAgain;
      this.batchAgain = undefined;
      if (again !== undefined) this.requestBatch(again);
    });
  }

  /**
   * LeaseTimeToLive for each lease in view (`all`) or each not asked about yet (`new`): one call
   * per distinct lease, all at once. A failed call keeps what was known (the reflector reports an
   * unreachable etcd); never rejects.
   */
  private async askLeases(which: 'all' | 'new'): Promise<void> {
    const inView = this.leasesInView();
    const ids = which === 'all' ? inView : inView.filter((id) => !this.leases.has(id));
    await Promise.all(
      ids.map(async (id) => {
        try {
          const res = await this.ctx.client.leaseClient.leaseTimeToLive(
            { ID: BigInt(`0x${id}`).toString() },
            this.ctx.callOptions(),
          );
          this.leases.set(id, {
            ttl: Number(res.TTL),
            grantedTtl: Number(res.grantedTTL),
            checkedAt: Date.now(),
          });
        } catch {
          // Kept as it was; asked again next round.
        }
      }),
    );
  }

  /** The distinct leases of the keys in view (leases of keys gone are forgotten). */
  private leasesInView(): string[] {
    const ids = new Set<string>();
    for (const e of this.entries.values()) if (e.lease !== undefined) ids.add(e.lease);
    for (const id of this.leases.keys()) if (!ids.has(id)) this.leases.delete(id);
    return [...ids];
  }

  /** Pushes the current state, decoding the keys first if they changed. */
  private push(error: Error | undefined): void {
    if (this.dirty) {
      this.dirty = false;
      this.lastDecodeAt = monotonicMs();
      this.recipes = decodeLayouts([...this.entries.values()]);
      this.leasesInView();
    }
    const state: InspectorState = {
      path: this.path,
      revision: this.revision,
      recipes: this.recipes,
      leases: new Map(this.leases),
    };
    this.stream.push(error === undefined ? state : { ...state, error });
  }
}
