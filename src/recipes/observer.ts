/**
 * Observer: every change of a key (or of a subtree), in revision order, never lost, never repeated
 * — across reconnects and member failures. Built on the reflector over the shared watch stream,
 * which resumes from the last delivered event's revision + 1.
 *
 * When etcd has compacted the history the observer needs (it was cut off too long, or was asked to
 * replay from a revision that is gone), it says so with one `resync` event carrying the complete
 * current state at one revision, then continues from that revision + 1. Nothing is skipped
 * silently.
 */
import { InvalidArgumentError, SlowConsumerError, type EtcdConnectorError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { Lifecycle, validateSignal, type StartOptions } from '../engines/lifecycle.js';
import {
  startReflector,
  type KeyRange,
  type Reflector,
  type ReflectorListener,
  type Snapshot,
} from '../engines/reflector.js';
import { prefixRange } from '../engines/ranges.js';
import { StreamQueue, type QueueOwner, type RecipeStream } from '../transport/stream-queue.js';
import type { WatchEvent, WatchStatus } from '../transport/watch-types.js';
import { anySignal } from '../transport/timers.js';

/** A change of one key. */
export interface ObserverChange {
  type: 'put' | 'delete';
  /** The full etcd key. */
  key: string;
  /** The new value; `''` for a delete. */
  value: string;
  /** The event's mod revision. */
  revision: number;
  /** Revision at which the key was created; `0` for a delete. */
  createRevision: number;
  /** How many times the key was written since its creation; `0` for a delete. */
  version: number;
}

/**
 * History the observer needed was compacted away: `snapshot` is the complete state (key -> value)
 * at `revision`; replace what you had with it. Changes after `revision` follow as usual.
 */
export interface ObserverResync {
  type: 'resync';
  reason: 'compacted';
  /** etcd's compaction revision: the oldest revision still available. */
  compactRevision: number;
  /** The revision of the snapshot. */
  revision: number;
  snapshot: ReadonlyMap<string, string>;
}

/**
 * The observer cannot reach etcd (`unavailable`, with the retryable reason — it keeps trying,
 * and nothing is lost: delivery resumes where it stopped) or can again (`connected`, only after an
 * `unavailable`). Told within the connector's dial timeout.
 */
export interface ObserverStatus {
  type: 'status';
  state: 'unavailable' | 'connected';
  /** With `unavailable`: why (UnavailableError, TimeoutError). */
  error?: EtcdConnectorError;
}

/** What an observer's stream yields. */
export type ObserverEvent = ObserverChange | ObserverResync | ObserverStatus;

/** Options of `conn.newObserver(path, options)`. */
export interface ObserverOptions {
  /**
   * How many undelivered events may wait for the reader, default 1024. When full, the watch is
   * paused until the reader drained half of them (back-pressure); nothing is dropped, and other
   * watches on the connector's shared stream are not slowed.
   */
  bufferSize?: number;
  /**
   * What a full buffer does: `'backpressure'` (default) pauses the watch; `'error'` ends the
   * stream with SlowConsumerError instead (for readers that must never lag).
   */
  slowConsumer?: 'backpressure' | 'error';
  /** Stops the observer (its stream ends) when it fires. */
  signal?: AbortSignal;
}

/** Options of `observer.start(options)`. */
export interface ObserverStartOptions extends StartOptions {
  /**
   * 0 (default): changes from now on; N: every change from revision N (a `resync` first if N was
   * compacted). "Now" is etcd's revision when the observer first reaches it; if it reports
   * `unavailable` before that, its `connected` marks the point from which nothing is missed.
   */
  fromRevision?: number;
  /** The path and everything below `path + '/'` (not siblings such as `path-x`). Default false. */
  recursive?: boolean;
}

/**
 * Every change of one key, or of a subtree. Create it with `conn.newObserver(path, options)`; no
 * I/O before `start()`.
 *
 * ```ts
 * const obs = conn.newObserver(conn.constructPath('config'));
 * for await (const ev of obs.start({ recursive: true })) {
 *   if (ev.type === 'resync') state = new Map(ev.snapshot);
 *   else if (ev.type === 'put') state.set(ev.key, ev.value);
 *   else if (ev.type === 'delete') state.delete(ev.key);
 * }
 * ```
 *
 * To resume later without a gap, start a new observer from the last seen `revision + 1`.
 * `conn.close()` stops it.
 */
export class Observer implements AsyncDisposable {
  /** The observed key (the full path). */
  readonly path: string;

  private readonly bufferSize: number;
  private readonly slowConsumer: 'backpressure' | 'error';
  private readonly signal: AbortSignal | undefined;
  private readonly life: Lifecycle;
  private queue: StreamQueue<ObserverEvent> | undefined;
  private reflector: Reflector | undefined;

  /** @internal Use `conn.newObserver(path, options)`; `path` must already be validated. */
  constructor(
    private readonly ctx: ConnectorContext,
    path: string,
    options: ObserverOptions = {},
  ) {
    const { bufferSize = 1024 } = options;
    // Checked at run time too: JavaScript callers get no help from the types.
    const slowConsumer: unknown = options.slowConsumer ?? 'backpressure';
    if (!Number.isSafeInteger(bufferSize) || bufferSize < 1) {
      throw new InvalidArgumentError(
        'options.bufferSize',
        `must be an integer >= 1, got ${String(bufferSize)}`,
      );
    }
    if (slowConsumer !== 'backpressure' && slowConsumer !== 'error') {
      throw new InvalidArgumentError(
        'options.slowConsumer',
        `must be 'backpressure' or 'error', got ${String(slowConsumer)}`,
      );
    }
    this.signal = validateSignal(options.signal);
    this.path = path;
    this.bufferSize = bufferSize;
    this.slowConsumer = slowConsumer;
    this.life = new Lifecycle(ctx, 'observer', async () => {
      this.reflector?.stop();
      await this.reflector?.done;
      this.queue?.end();
    });
  }

  /**
   * Starts watching and returns the event stream. `fromRevision` 0 means "changes from now on";
   * N replays every change from revision N (a `resync` event first if N was compacted).
   * `recursive` observes the path and everything below `path + '/'` (not siblings such as
   * `path-x`); otherwise exactly the key. `break` out of the loop stops the observer. The stream
   * ends on `stop()`, `conn.close()` or the abort signal; it throws SlowConsumerError with
   * `slowConsumer: 'error'`, or a final error (permission denied, authentication, TLS).
   *
   * @throws InvalidArgumentError `fromRevision` not an integer >= 0, `recursive` not a boolean
   * @throws InvalidStateError started before
   * @throws ClosedError stopped, or the connector is closed
   */
  start(options?: ObserverStartOptions): RecipeStream<ObserverEvent>;
  start(fromRevision?: number, recursive?: boolean): RecipeStream<ObserverEvent>;
  start(first: number | ObserverStartOptions = {}, second?: boolean): RecipeStream<ObserverEvent> {
    const opts: ObserverStartOptions =
      typeof first === 'object'
        ? first
        : { fromRevision: first, ...(second === undefined ? {} : { recursive: second }) };
    const { fromRevision = 0, recursive = false } = opts;
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) {
      throw new InvalidArgumentError(
        'fromRevision',
        `must be an integer >= 0, got ${String(fromRevision)}`,
      );
    }
    if (typeof recursive !== 'boolean') {
      throw new InvalidArgumentError('recursive', 'must be a boolean');
    }
    const signals = [this.signal, validateSignal(opts.signal)].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const [only] = signals;
    this.life.begin(
      only === undefined ? {} : { signal: signals.length === 1 ? only : anySignal(signals) },
    );
    const feed = new ObserverFeed(this, this.bufferSize, this.slowConsumer);
    const queue = feed.queue;
    this.queue = queue;
    if (this.life.isStopping) {
      queue.end();
      return queue;
    }
    const reflector = this.reflect(feed, fromRevision, recursive);
    feed.reflector = reflector;
    this.reflector = reflector;
    return queue;
  }

  /**
   * Stops watching and ends the stream (events already buffered can still be read). Resolves
   * once no stream or timer of the observer is left. Idempotent, never rejects.
   */
  stop(): Promise<void> {
    return this.life.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private reflect(feed: ObserverFeed, fromRevision: number, recursive: boolean): Reflector {
    const own: KeyRange = { key: this.path };
    let list: KeyRange[] = [own];
    let watch: KeyRange = own;
    let accept: ((key: string) => boolean) | undefined;
    if (recursive) {
      // The key itself and its children (`path/...`), never siblings such as `path-x`.
      const children = prefixRange(this.path + '/');
      list = [own, { key: children.key, rangeEnd: children.range_end }];
      watch = { key: own.key, rangeEnd: children.range_end };
      const child = this.path + '/';
      accept = (key) => key === this.path || key.startsWith(child);
    }
    return startReflector({
      ctx: this.ctx,
      what: `observer ${this.path}`,
      list,
      watch,
      ...(accept === undefined ? {} : { accept }),
      startRevision: fromRevision === 0 ? 'now' : fromRevision,
      listener: feed,
    });
  }
}

/**
 * Between an observer's reflector and its stream: turns changes into events and applies
 * back-pressure. Its methods are the callbacks of both, so an idle observer holds no closures.
 */
class ObserverFeed implements ReflectorListener, QueueOwner {
  readonly queue: StreamQueue<ObserverEvent>;
  reflector: Reflector | undefined;

  constructor(
    private readonly observer: Observer,
    capacity: number,
    private readonly slowConsumer: 'backpressure' | 'error',
  ) {
    this.queue = new StreamQueue<ObserverEvent>({ capacity, overflow: 'pause', owner: this });
  }

  onSnapshot(snapshot: Snapshot): void {
    const map = new Map<string, string>();
    for (const kv of snapshot.kvs) map.set(kv.key.toString(), kv.value.toString());
    this.queue.push({
      type: 'resync',
      reason: 'compacted',
      compactRevision: snapshot.compactRevision ?? 0,
      revision: snapshot.revision,
      snapshot: map,
    });
  }

  onEvents(events: readonly WatchEvent[]): void {
    for (const e of events) this.queue.push(toChange(e));
  }

  onStatus(status: WatchStatus): void {
    this.queue.push(
      status.state === 'unavailable'
        ? { type: 'status', state: 'unavailable', error: status.error }
        : { type: 'status', state: 'connected' },
    );
  }

  onEnd(error: EtcdConnectorError | undefined): void {
    if (error !== undefined) this.queue.fail(error);
    void this.observer.stop();
  }

  onFull(): void {
    if (this.slowConsumer === 'error') {
      this.queue.fail(new SlowConsumerError(this.queue.size));
      void this.observer.stop();
    } else {
      this.reflector?.pause();
    }
  }

  onDrain(): void {
    this.reflector?.resume();
  }

  onReturn(): void {
    void this.observer.stop();
  }
}

function toChange(e: WatchEvent): ObserverChange {
  return {
    type: e.type,
    key: e.key,
    value: e.value,
    revision: e.revision,
    createRevision: e.createRevision,
    version: e.version,
  };
}
