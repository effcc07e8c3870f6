/**
 * The complete state of a key prefix as a state stream, on the reflector: the base of the service
 * tracker and the endpoint tracker (and of anything else that maps "every key under P" to a
 * value). The recipe supplies the model — how a listing and a batch of events change its state,
 * and what one emitted state looks like — and this engine runs the rest: the path and page size
 * checks, the lifecycle, the coalescing stream (error reports are never dropped), the reflector
 * (list at one revision, watch from the next, re-list after a compaction with a CompactedError
 * attached), the error on each state, and the stream's end with a final error.
 */
import type { IKeyValue } from 'etcd3';
import { CompactedError, InvalidArgumentError } from '../errors.js';
import { validatePath } from '../paths.js';
import type { RecipeStream, StreamQueue } from '../transport/stream-queue.js';
import { prefixTarget, type WatchEvent } from '../transport/watch-types.js';
import type { ConnectorContext } from './context.js';
import type { StartOptions } from './lifecycle.js';
import { ReflectedStream } from './reflected-stream.js';
import type { ReflectorListener } from './reflector.js';

/** What a recipe keeps of a prefix. */
export interface PrefixModel<T> {
  /** Replaces the whole state with a listing. */
  reset(kvs: readonly IKeyValue[]): void;
  /** Applies a batch of changes (in revision order). */
  apply(events: readonly WatchEvent[]): void;
  /** The state to emit, at `revision` (the engine adds what went wrong, if anything). */
  state(revision: number): T;
}

export interface PrefixStateOptions<T> {
  /** The recipe's name in ClosedError (e.g. `'service tracker'`). */
  name: string;
  /** What it is in other errors (e.g. `'tracker /ns/services/api'`). */
  what: string;
  /** The tracked path; the prefix is `path + '/'`. */
  path: string;
  /** The path's name in InvalidArgumentError. Default `'path'`. */
  pathArgument?: string;
  /** The recipe's options as the caller gave them. */
  options: { pageSize?: number };
  /** The model, given the prefix's length (cut off every key to give its name). */
  model: (cut: number) => PrefixModel<T>;
}

export class PrefixState<T extends { readonly error?: Error }> implements AsyncDisposable {
  /** The tracked prefix, `path + '/'`. */
  readonly prefix: string;

  private readonly stream: ReflectedStream<T>;
  private readonly what: string;
  private readonly pageSize: number;
  private readonly model: PrefixModel<T>;
  private revision = 0;

  /** Validates everything, no I/O. */
  protected constructor(
    private readonly ctx: ConnectorContext,
    { name, what, path, pathArgument = 'path', options, model }: PrefixStateOptions<T>,
  ) {
    validatePath(path, ctx.root, pathArgument);
    this.prefix = path + '/';
    const { pageSize = 1000 } = options;
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw new InvalidArgumentError('options.pageSize', 'must be an integer >= 1');
    }
    this.what = what;
    this.pageSize = pageSize;
    this.model = model(this.prefix.length);
    this.stream = new ReflectedStream({ ctx, name });
  }

  /**
   * Lists, then follows the prefix. The stream yields the complete state each time (latest
   * state; a slow reader skips intermediate ones, never an error report). Leaving the loop stops
   * the tracker, as do `stop()`, `signal` and `conn.close()`. A final error (permission denied,
   * authentication, TLS) ends the stream with that error.
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(options: StartOptions = {}): RecipeStream<T> {
    const range = prefixTarget(this.prefix);
    return this.stream.open(
      options,
      { ctx: this.ctx, what: this.what, list: [range], watch: range, pageSize: this.pageSize },
      (queue) => this.feed(queue),
    );
  }

  /** Ends the stream; resolves when no watch or timer of this tracker is left. Idempotent. */
  stop(): Promise<void> {
    return this.stream.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private feed(queue: StreamQueue<T>): ReflectorListener {
    const model = this.model;
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
    const state = this.model.state(this.revision);
    this.stream.push(error === undefined ? state : { ...state, error });
  }
}
