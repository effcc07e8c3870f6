/**
 * A bounded single-consumer queue behind an AsyncIterable: the output stream of every recipe.
 * State streams coalesce (a slow reader gets the newest states, never unbounded memory); event
 * streams tell their producer to pause when full (back-pressure) and never drop.
 *
 * Every pending `next()` is settled — several may be pending at once when a caller does not await
 * one before asking for the next — and `closed` resolves (never rejects) once the producer ended
 * the stream or the reader left it: with the error that ended it, or `undefined`.
 */
export interface StreamQueueOptions<T> {
  /** How many undelivered items may wait. */
  capacity: number;
  /**
   * What happens past capacity: `'coalesce'` drops the oldest waiting item (state streams);
   * `'pause'` keeps it and calls `onFull` so the producer stops reading (event streams).
   */
  overflow: 'coalesce' | 'pause';
  /** With `'pause'`: called once when the queue reaches capacity. */
  onFull?: () => void;
  /** With `'pause'`: called once when a full queue has drained to half. */
  onDrain?: () => void;
  /** Called once when the consumer leaves (`break`, `return`) before the queue ended. */
  onReturn?: () => void;
  /** With `'coalesce'`: may keep an item that must not be dropped (e.g. a loss report). */
  keep?: (item: T) => boolean;
  /**
   * Receives `onFull` / `onDrain` / `onReturn` as methods instead of the callbacks above: one
   * object of the recipe's, no closures per stream (thousands of streams stay cheap).
   */
  owner?: QueueOwner;
}

/** See {@link StreamQueueOptions.owner}. */
export interface QueueOwner {
  onFull?(): void;
  onDrain?(): void;
  onReturn?(): void;
}

/** A recipe's output: iterate it once; `closed` tells how it ended. */
export interface RecipeStream<T> extends AsyncIterable<T> {
  /**
   * Resolves when the stream is over — its source stopped (items already queued can still be
   * read) or the reader left it — with the error that ended it, else `undefined`. Never rejects.
   */
  readonly closed: Promise<Error | undefined>;
}

interface Waiter<T> {
  resolve: (r: IteratorResult<T>) => void;
  reject: (e: unknown) => void;
}

export class StreamQueue<T> implements RecipeStream<T>, AsyncIterator<T> {
  private readonly items: T[] = [];
  /** Index of the first unread item (items are dropped from the front in chunks). */
  private head = 0;
  /**
   * The pending `next()` calls, oldest first: almost always none or one, kept in a field — an
   * idle stream of thousands then holds no array for it.
   */
  private waiter: Waiter<T> | undefined;
  private moreWaiters: Waiter<T>[] | undefined;
  private ended = false;
  private failure: { error: unknown } | undefined;
  /** The error that ended the stream, for `closed` (kept after the reader received it). */
  private endError: Error | undefined;
  private full = false;
  private iterating = false;
  private returned = false;
  private finished = false;
  private closedPromise: Promise<Error | undefined> | undefined;
  private resolveClosed: ((e: Error | undefined) => void) | undefined;

  constructor(private readonly opts: StreamQueueOptions<T>) {}

  /** See {@link RecipeStream.closed}; made when first asked for. */
  get closed(): Promise<Error | undefined> {
    this.closedPromise ??= this.finished
      ? Promise.resolve(this.endError)
      : new Promise((resolve) => (this.resolveClosed = resolve));
    return this.closedPromise;
  }

  /** Items waiting to be read. */
  get size(): number {
    return this.items.length - this.head;
  }

  /** True once `end()`/`fail()` was called or the consumer left. */
  get isClosed(): boolean {
    return this.ended || this.returned;
  }

  push(item: T): void {
    if (this.isClosed) return;
    const w = this.takeWaiter();
    if (w !== undefined) {
      w.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    if (this.size <= this.opts.capacity) return;
    if (this.opts.overflow === 'coalesce') {
      const keep = this.opts.keep;
      let drop = this.head;
      if (keep !== undefined) {
        while (drop < this.items.length && keep(this.items[drop] as T)) drop++;
        if (drop === this.items.length) drop = this.head;
      }
      this.items.splice(drop, 1);
    } else if (!this.full) {
      this.full = true;
      if (this.opts.owner?.onFull !== undefined) this.opts.owner.onFull();
      else this.opts.onFull?.();
    }
  }

  /** Ends the stream after the waiting items are read. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.settleWaiters();
    this.finish();
  }

  /** Ends the stream with an error, thrown to the consumer after the waiting items. */
  fail(error: Error): void {
    if (this.ended) return;
    this.failure = { error };
    this.endError = error;
    this.end();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterating) throw new TypeError('this stream can be iterated only once');
    this.iterating = true;
    return this;
  }

  /** Leaving the loop (`break`, `return`): the stream ends and its owner hears `onReturn`. */
  return(): Promise<IteratorResult<T>> {
    this.leave();
    return Promise.resolve({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.size > 0) {
      const value = this.items[this.head] as T;
      this.items[this.head] = undefined as T;
      this.head++;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      if (this.full && this.size <= this.opts.capacity / 2) {
        this.full = false;
        if (this.opts.owner?.onDrain !== undefined) this.opts.owner.onDrain();
        else this.opts.onDrain?.();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.returned) return Promise.resolve({ value: undefined, done: true });
    if (this.ended) {
      const f = this.failure;
      if (f !== undefined) {
        this.failure = undefined;
        // fail() takes what the producer had; it is passed through as thrown.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        return Promise.reject(f.error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      if (this.waiter === undefined) this.waiter = w;
      else (this.moreWaiters ??= []).push(w);
    });
  }

  /** The oldest pending `next()`, removed. */
  private takeWaiter(): Waiter<T> | undefined {
    const w = this.waiter;
    this.waiter = this.moreWaiters?.shift();
    if (this.moreWaiters?.length === 0) this.moreWaiters = undefined;
    return w;
  }

  private leave(): void {
    if (this.returned) return;
    this.returned = true;
    this.items.length = 0;
    this.head = 0;
    const wasEnded = this.ended;
    this.settleWaiters();
    this.finish();
    if (wasEnded) return;
    if (this.opts.owner?.onReturn !== undefined) this.opts.owner.onReturn();
    else this.opts.onReturn?.();
  }

  /** Settles every pending `next()`: the first gets the failure (if any), the rest `done`. */
  private settleWaiters(): void {
    for (let w = this.takeWaiter(); w !== undefined; w = this.takeWaiter()) {
      const f = this.failure;
      if (f !== undefined && !this.returned) {
        this.failure = undefined;
        w.reject(f.error);
      } else {
        w.resolve({ value: undefined, done: true });
      }
    }
  }

  private finish(): void {
    this.finished = true;
    this.resolveClosed?.(this.endError);
  }
}
