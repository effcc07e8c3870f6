/**
 * Observer: every change of a key (or of a subtree), in revision order, never lost, never repeated
 * — across reconnects and member failures. Built on the shared watch engine, which resumes from
 * the last delivered event's revision + 1.
 *
 * When etcd has compacted the history the observer needs (it was cut off too long, or was asked to
 * replay from a revision that is gone), it says so with one `resync` event carrying the complete
 * current state at one revision, then continues from that revision + 1. Nothing is skipped
 * silently.
 */
import {
  AbortError,
  ClosedError,
  EtcdConnectorError,
  InvalidArgumentError,
  InvalidStateError,
  RequestFailedError,
  SlowConsumerError,
} from '../errors.js';
import { AsyncQueue } from '../internal/async-queue.js';
import type { ConnectorContext } from '../internal/context.js';
import { toConnectorError } from '../internal/etcd-rpc.js';
import { Backoff, delay } from '../internal/timers.js';
import { prefixRange } from '../internal/wait-delete.js';
import { openWatch, type WatchEvent, type WatchStream } from '../internal/watch-stream.js';
import { validateMs } from '../paths.js';

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

/** What an observer's stream yields. */
export type ObserverEvent = ObserverChange | ObserverResync;

/** Options of `conn.newObserver(path, options)`. */
export interface ObserverOptions {
  /**
   * How many undelivered events may wait for the reader, default 1024. When full, reading from
   * etcd pauses until the reader drained half of them (back-pressure); nothing is dropped.
   */
  bufferSize?: number;
  /**
   * What a full buffer does: `'backpressure'` (default) pauses the watch; `'error'` ends the
   * stream with SlowConsumerError instead (for readers that must never lag).
   */
  slowConsumer?: 'backpressure' | 'error';
  /** Stops the observer (its stream ends) when it fires. */
  signal?: AbortSignal;
  /** A watch silent this long is probed; unanswered as long again, it is re-dialled. Default 2000. */
  silenceMs?: number;
}

/** Page size of the listing read after a compaction. */
const PAGE_SIZE = 1000;

/**
 * Every change of one key, or of a subtree. Create it with `conn.newObserver(path, options)`; the
 * constructor does no I/O.
 *
 * ```ts
 * const obs = conn.newObserver(conn.constructPath('config'));
 * for await (const ev of obs.start(0, true)) {
 *   if (ev.type === 'resync') state = new Map(ev.snapshot);
 *   else if (ev.type === 'put') state.set(ev.key, ev.value);
 *   else state.delete(ev.key);
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
  private readonly silenceMs: number | undefined;
  private readonly controller = new AbortController();
  private started = false;
  private queue: AsyncQueue<ObserverEvent> | undefined;
  private watch: WatchStream | undefined;
  /** The listing / revision read in progress, if any. */
  private task: Promise<void> | undefined;
  private full = false;
  private untrack: (() => void) | undefined;
  private unlisten: (() => void) | undefined;
  private stopping: Promise<void> | undefined;

  /** Use `conn.newObserver(path, options)`; `path` must already be validated. */
  constructor(
    private readonly ctx: ConnectorContext,
    path: string,
    options: ObserverOptions = {},
  ) {
    const { bufferSize = 1024, signal, silenceMs } = options;
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
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new InvalidArgumentError('options.signal', 'must be an AbortSignal');
    }
    this.path = path;
    this.bufferSize = bufferSize;
    this.slowConsumer = slowConsumer;
    this.signal = signal;
    this.silenceMs =
      silenceMs === undefined ? undefined : validateMs(silenceMs, 'options.silenceMs');
  }

  /**
   * Starts watching and returns the event stream. `fromRevision` 0 means "changes from now on";
   * N replays every change from revision N (a `resync` event first if N was compacted).
   * `recursive` observes the path and everything below `path + '/'` (not siblings such as
   * `path-x`); otherwise exactly the key. `break` out of the loop stops the observer. The stream
   * ends on `stop()`, `conn.close()` or the abort signal; it throws SlowConsumerError with
   * `slowConsumer: 'error'`, or an error etcd returned that retrying cannot fix.
   *
   * @throws InvalidArgumentError `fromRevision` not an integer >= 0, `recursive` not a boolean
   * @throws InvalidStateError started before
   * @throws ClosedError stopped, or the connector is closed
   */
  start(fromRevision = 0, recursive = false): AsyncIterable<ObserverEvent> {
    if (!Number.isSafeInteger(fromRevision) || fromRevision < 0) {
      throw new InvalidArgumentError(
        'fromRevision',
        `must be an integer >= 0, got ${String(fromRevision)}`,
      );
    }
    if (typeof recursive !== 'boolean') {
      throw new InvalidArgumentError('recursive', 'must be a boolean');
    }
    if (this.isStopping()) throw new ClosedError('observer');
    this.ctx.assertOpen();
    if (this.started) throw new InvalidStateError('the observer was already started');
    this.started = true;
    const queue = new AsyncQueue<ObserverEvent>({
      capacity: this.bufferSize,
      overflow: 'pause',
      onFull: () => {
        this.onFull(queue);
      },
      onDrain: () => {
        this.full = false;
        this.watch?.resume();
      },
      onReturn: () => void this.stop(),
    });
    this.queue = queue;
    this.untrack = this.ctx.track({ close: () => this.stop() });
    const signal = this.signal;
    if (signal !== undefined) {
      const onAbort = (): void => void this.stop();
      signal.addEventListener('abort', onAbort, { once: true });
      this.unlisten = () => {
        signal.removeEventListener('abort', onAbort);
      };
      if (signal.aborted) void this.stop();
    }
    if (!this.isStopping()) this.task = this.begin(fromRevision, recursive);
    return queue;
  }

  /**
   * Stops watching and ends the stream (events already buffered can still be read). Resolves
   * once no stream or timer of the observer is left. Idempotent, never rejects.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** True once stopping began. A method, so the checker does not narrow it across calls. */
  private isStopping(): boolean {
    return this.controller.signal.aborted;
  }

  private async doStop(): Promise<void> {
    this.controller.abort();
    this.unlisten?.();
    // Closing the watch first means no compaction can start another listing meanwhile.
    await Promise.all([this.watch?.close(), this.task]);
    this.queue?.end();
    this.untrack?.();
    this.untrack = undefined;
  }

  private onFull(queue: AsyncQueue<ObserverEvent>): void {
    if (this.slowConsumer === 'error') {
      queue.fail(new SlowConsumerError(queue.size));
      void this.stop();
      return;
    }
    this.full = true;
    this.watch?.pause();
  }

  private async begin(fromRevision: number, recursive: boolean): Promise<void> {
    await this.guard(async () => {
      let from = fromRevision;
      if (from === 0) {
        // "Now" as a number, so the resume point is always known (etcd's 0 = now is not).
        const res = await this.retrying(() =>
          this.ctx.client.kv.range(
            { key: Buffer.from(this.path), count_only: true },
            this.ctx.callOptions(),
          ),
        );
        from = Number(res.header.revision) + 1;
      }
      this.openFrom(from, recursive);
    });
  }

  private openFrom(startRevision: number, recursive: boolean): void {
    if (this.isStopping()) return;
    const child = this.path + '/';
    const watch = openWatch({
      client: this.ctx.client,
      key: this.path,
      prefix: recursive,
      startRevision,
      onEvents: (events) => {
        this.deliver(events, recursive, child);
      },
      onCompacted: (compactRevision) => {
        this.task = this.resync(compactRevision, recursive);
      },
      // An observer that silently retried a refused watch would look like a quiet key.
      onCanceled: (reason) => {
        if (this.isStopping()) return;
        this.queue?.fail(
          new RequestFailedError(`etcd canceled the watch of ${this.path}: ${reason}`),
        );
        void this.stop();
      },
      ...(this.silenceMs === undefined ? {} : { silenceMs: this.silenceMs }),
    });
    this.watch = watch;
    if (this.full) watch.pause();
  }

  private deliver(events: readonly WatchEvent[], recursive: boolean, child: string): void {
    const queue = this.queue;
    if (queue === undefined) return;
    for (const e of events) {
      // A raw prefix watch on `path` also sees siblings such as `path-x`: not ours.
      if (recursive && e.key !== this.path && !e.key.startsWith(child)) continue;
      queue.push({
        type: e.type,
        key: e.key,
        value: e.value,
        revision: e.revision,
        createRevision: e.createRevision,
        version: e.version,
      });
    }
  }

  /** History is gone: list the current state at one revision, report it, watch on from there. */
  private async resync(compactRevision: number, recursive: boolean): Promise<void> {
    const old = this.watch;
    this.watch = undefined;
    await old?.close();
    await this.guard(async () => {
      const { revision, snapshot } = await this.list(recursive);
      if (this.isStopping()) return;
      this.queue?.push({
        type: 'resync',
        reason: 'compacted',
        compactRevision,
        revision,
        snapshot,
      });
      this.openFrom(revision + 1, recursive);
    });
  }

  /** The key (and with `recursive` its subtree) at one revision, read a page at a time. */
  private async list(
    recursive: boolean,
  ): Promise<{ revision: number; snapshot: Map<string, string> }> {
    for (;;) {
      const snapshot = new Map<string, string>();
      try {
        const own = await this.retrying(() =>
          this.ctx.client.kv.range({ key: Buffer.from(this.path) }, this.ctx.callOptions()),
        );
        const revision = own.header.revision;
        for (const kv of own.kvs) snapshot.set(kv.key.toString(), kv.value.toString());
        if (recursive) {
          // Children only (`path/` ...), so siblings like `path-x` are never read.
          const { key: start, range_end: rangeEnd } = prefixRange(this.path + '/');
          let from = start;
          for (;;) {
            const page = await this.retrying(() =>
              this.ctx.client.kv.range(
                { key: from, range_end: rangeEnd, limit: PAGE_SIZE, revision },
                this.ctx.callOptions(),
              ),
            );
            for (const kv of page.kvs) snapshot.set(kv.key.toString(), kv.value.toString());
            const last = page.kvs[page.kvs.length - 1];
            if (!page.more || last === undefined) break;
            from = Buffer.concat([last.key, Buffer.from([0])]);
          }
        }
        return { revision: Number(revision), snapshot };
      } catch (err) {
        // Compacted between two pages: start over at a newer revision.
        if (!isCompactedRead(err)) throw err;
      }
    }
  }

  /** Runs `fn`; an error that retrying cannot fix ends the stream with it. */
  private async guard(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (this.isStopping()) return;
      this.queue?.fail(toConnectorError(err, `observer ${this.path}`));
      void this.stop();
    }
  }

  /** Retries transient failures (etcd unreachable, timeouts) with backoff until stopped. */
  private async retrying<T>(call: () => Promise<T>): Promise<T> {
    const backoff = new Backoff(50, 1000);
    const signal = this.controller.signal;
    for (;;) {
      if (this.isStopping()) throw new AbortError();
      try {
        return await call();
      } catch (err) {
        if (this.isStopping()) throw err;
        if (isCompactedRead(err)) throw err;
        const mapped = toConnectorError(err, `observer ${this.path}`);
        if (!mapped.retryable) throw mapped;
        await delay(backoff.next(), signal);
      }
    }
  }
}

/** etcd refused a read at a revision that was compacted meanwhile. */
function isCompactedRead(err: unknown): boolean {
  const e = err instanceof EtcdConnectorError && err.cause !== undefined ? err.cause : err;
  return e instanceof Error && e.message.includes('required revision has been compacted');
}
