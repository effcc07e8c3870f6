/**
 * The complete state of a key prefix as a state stream, on the reflector: the shared body of the
 * service tracker and the endpoint tracker (and of anything else that maps "every key under P"
 * to a value). The recipe supplies the model — how a listing and a batch of events change its
 * state, and what one emitted state looks like — and this engine runs the rest: the lifecycle,
 * the coalescing stream (error reports are never dropped), the reflector (list at one revision,
 * watch from the next, re-list after a compaction with a CompactedError attached), and the
 * stream's end with a final error.
 */
import type { IKeyValue } from 'etcd3';
import { CompactedError } from '../errors.js';
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
import type { WatchEvent } from '../transport/watch-mux.js';
import type { ConnectorContext } from './context.js';
import { Lifecycle, type StartOptions } from './lifecycle.js';
import { startReflector, type Reflector, type ReflectorListener } from './reflector.js';
import { prefixRange } from './wait-deletes.js';

/** What a recipe keeps of a prefix. */
export interface PrefixModel<T> {
  /** Replaces the whole state with a listing. */
  reset(kvs: readonly IKeyValue[]): void;
  /** Applies a batch of changes (in revision order). */
  apply(events: readonly WatchEvent[]): void;
  /** The state to emit, at `revision`, with what went wrong (if anything). */
  state(revision: number, error: Error | undefined): T;
}

export interface PrefixStateOptions<T> {
  ctx: ConnectorContext;
  /** The recipe's name in ClosedError (e.g. `'service tracker'`). */
  name: string;
  /** What it is in other errors (e.g. `'tracker /ns/services/api'`). */
  what: string;
  /** The prefix, including its trailing `/`. */
  prefix: string;
  pageSize: number;
  model: PrefixModel<T>;
}

/** Undelivered states kept for a slow reader. */
const CAPACITY = 4;

export class PrefixState<T extends { readonly error?: Error }> {
  private readonly life: Lifecycle;
  private queue: StreamQueue<T> | undefined;
  private reflector: Reflector | undefined;
  private revision = 0;

  constructor(private readonly opts: PrefixStateOptions<T>) {
    this.life = new Lifecycle(opts.ctx, opts.name, async () => {
      this.reflector?.stop();
      await this.reflector?.done;
      this.queue?.end();
    });
  }

  /**
   * Lists, then follows. See the trackers' `start()`.
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(options: StartOptions = {}): RecipeStream<T> {
    this.life.begin(options);
    const queue = new StreamQueue<T>({
      capacity: CAPACITY,
      overflow: 'coalesce',
      keep: (d) => d.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.queue = queue;
    if (this.life.isStopping) {
      queue.end();
      return queue;
    }
    const { key, range_end: rangeEnd } = prefixRange(this.opts.prefix);
    this.reflector = startReflector({
      ctx: this.opts.ctx,
      what: this.opts.what,
      list: [{ key, rangeEnd }],
      watch: { key, rangeEnd },
      pageSize: this.opts.pageSize,
      listener: this.feed(queue),
    });
    return queue;
  }

  /** Ends the stream; resolves when no watch or timer of it is left. Idempotent. */
  stop(): Promise<void> {
    return this.life.stop();
  }

  private feed(queue: StreamQueue<T>): ReflectorListener {
    const model = this.opts.model;
    return {
      onSnapshot: (snapshot) => {
        model.reset(snapshot.kvs);
        this.revision = snapshot.revision;
        this.emit(
          snapshot.reason === 'compacted'
            ? new CompactedError(
                String(snapshot.resumeRevision ?? 0),
                String(snapshot.compactRevision ?? 0),
              )
            : undefined,
        );
      },
      onEvents: (events) => {
        model.apply(events);
        const last = events[events.length - 1];
        if (last !== undefined) this.revision = last.revision;
        this.emit(undefined);
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

  private emit(error: Error | undefined): void {
    this.queue?.push(this.opts.model.state(this.revision, error));
  }
}
