/**
 * Tracks the instances registered under a path: lists them (paginated, at one revision), then
 * watches the prefix from that revision + 1 through the gap-free watch engine, and emits the
 * complete map after the listing and after every batch of changes. If the watch's history was
 * compacted away (e.g. the tracker was cut off for long), it lists again and emits the true set
 * with a CompactedError attached, so nothing is missed silently.
 *
 * Cost per change: the map is a persistent sorted map; applying an event and emitting a snapshot
 * is O(log n) and shares structure with the previous snapshot, so every emitted map stays a
 * correct snapshot for as long as the consumer keeps it, with no O(n) copy per change.
 */
import { CompactedError, ClosedError, InvalidArgumentError, InvalidStateError } from '../errors.js';
import { AsyncQueue } from '../internal/async-queue.js';
import type { ConnectorContext } from '../internal/context.js';
import { toConnectorError } from '../internal/etcd-rpc.js';
import { PersistentMap } from '../internal/persistent-map.js';
import { Backoff, delay, isAborted } from '../internal/timers.js';
import { Latch, prefixRange } from '../internal/wait-delete.js';
import { openWatch, type WatchEvent, type WatchStream } from '../internal/watch-stream.js';
import { UnavailableError } from '../errors.js';
import { validateMs, validatePath } from '../paths.js';

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
   * Set when something went wrong: UnavailableError (etcd unreachable; the map is the last known
   * state), CompactedError (history was lost while cut off; the map was re-listed and is correct).
   */
  readonly error?: Error;
}

/** Options of {@link ServiceTracker}. */
export interface ServiceTrackerOptions {
  /** Keys per page of the listing. Default 1000. */
  pageSize?: number;
  /**
   * A watch that hears nothing for this long (ms) checks its connection and re-dials if it is
   * dead. Default: the watch engine's.
   */
  silenceMs?: number;
}

/**
 * Follows the instances under `path`. Create it with `conn.newServiceTracker(path)`; the
 * constructor does no I/O.
 *
 * ```ts
 * for await (const { services } of tracker.start()) route(services);
 * ```
 */
export class ServiceTracker implements AsyncDisposable {
  /** The tracked prefix, `path + '/'`. */
  readonly prefix: string;

  private readonly pageSize: number;
  private readonly silenceMs: number | undefined;
  private queue: AsyncQueue<ServiceData> | undefined;
  private readonly controller = new AbortController();
  private readonly wake = new Latch();
  private running: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private untrack: (() => void) | undefined;
  private services = PersistentMap.empty;
  private revision = 0;
  private reconnecting = false;

  /** Use `conn.newServiceTracker(path)`; validates everything, does no I/O. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    options: ServiceTrackerOptions = {},
  ) {
    validatePath(path, ctx.root);
    this.prefix = path + '/';
    const { pageSize = 1000, silenceMs } = options;
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw new InvalidArgumentError('options.pageSize', 'must be an integer >= 1');
    }
    this.pageSize = pageSize;
    this.silenceMs =
      silenceMs === undefined ? undefined : validateMs(silenceMs, 'options.silenceMs');
  }

  /**
   * Lists, then follows the instances. The stream yields the complete map each time (latest
   * state; a slow reader skips intermediate states). Leaving the loop stops the tracker.
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(): AsyncIterable<ServiceData> {
    this.ctx.assertOpen();
    if (this.stopping !== undefined) throw new ClosedError('service tracker');
    if (this.queue !== undefined) throw new InvalidStateError('start() was already called');
    this.queue = new AsyncQueue<ServiceData>({
      capacity: 4,
      overflow: 'coalesce',
      keep: (d) => d.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.untrack = this.ctx.track({ close: () => this.stop() });
    this.running = this.run(this.controller.signal);
    return this.queue;
  }

  /** Ends the stream; resolves when no watch or timer of this tracker is left. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort(new ClosedError('service tracker'));
      this.wake.fire();
      await this.running;
      this.queue?.end();
      this.untrack?.();
    })();
    return this.stopping;
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(100, 2000);
    let report: Error | undefined;
    while (!signal.aborted) {
      let stream: WatchStream | undefined;
      try {
        await this.list();
        backoff.reset();
        this.emit(report);
        report = undefined;
        // An object: written from the watch's callback while the loop awaits.
        const watchState: { compactedAt?: number } = {};
        stream = openWatch({
          client: this.ctx.client,
          key: this.prefix,
          prefix: true,
          startRevision: this.revision + 1,
          onEvents: (events) => {
            this.apply(events);
          },
          onCompacted: (compactRevision) => {
            watchState.compactedAt = compactRevision;
            this.wake.fire();
          },
          onStateChange: (state) => {
            this.onWatchState(state);
          },
          ...(this.silenceMs === undefined ? {} : { silenceMs: this.silenceMs }),
        });
        for (;;) {
          this.wake.reset();
          if (isAborted(signal) || watchState.compactedAt !== undefined) break;
          await this.wake.wait();
        }
        if (watchState.compactedAt !== undefined) {
          const at = String(watchState.compactedAt);
          report = new CompactedError(String(stream.nextRevision), at);
        }
      } catch (err) {
        if (isAborted(signal)) break;
        this.emit(toConnectorError(err, `list ${this.path}`));
        await delay(backoff.next(), signal).catch(() => undefined);
      } finally {
        await stream?.close();
      }
    }
  }

  /** Reads every instance at one revision, a page at a time. */
  private async list(): Promise<void> {
    const { key, range_end } = prefixRange(this.prefix);
    const cut = this.prefix.length;
    const entries: [string, string][] = [];
    let from = key;
    let revision: string | undefined;
    for (;;) {
      const res = await this.ctx.client.kv.range(
        {
          key: from,
          range_end,
          limit: this.pageSize,
          ...(revision === undefined ? {} : { revision }),
        },
        this.ctx.callOptions(),
      );
      revision ??= res.header.revision;
      for (const kv of res.kvs) entries.push([kv.key.toString().slice(cut), kv.value.toString()]);
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || last === undefined) break;
      // The next page starts just after the last key of this one.
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
    this.services = PersistentMap.from(entries);
    this.revision = Number(revision);
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

  private onWatchState(state: 'connected' | 'reconnecting'): void {
    if (state === 'reconnecting' && !this.reconnecting) {
      this.reconnecting = true;
      this.emit(new UnavailableError(`watch of ${this.path} is reconnecting`));
    } else if (state === 'connected' && this.reconnecting) {
      this.reconnecting = false;
      this.emit(undefined);
    }
  }

  private emit(error: Error | undefined): void {
    const data: ServiceData = { services: this.services, revision: this.revision };
    this.queue?.push(error === undefined ? data : { ...data, error });
  }
}
