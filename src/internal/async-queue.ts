/**
 * A bounded single-consumer queue behind an AsyncIterable. The recipes' output streams are built
 * on it: state streams coalesce (a slow reader gets the newest states, never unbounded memory),
 * event streams tell their producer to pause when full (back-pressure) and never drop.
 */
export interface AsyncQueueOptions<T> {
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
}

export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter:
    { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private failure: { error: unknown } | undefined;
  private full = false;
  private iterating = false;
  private returned = false;

  constructor(private readonly opts: AsyncQueueOptions<T>) {}

  /** Items waiting to be read. */
  get size(): number {
    return this.items.length;
  }

  /** True once `end()`/`fail()` was called or the consumer left. */
  get closed(): boolean {
    return this.ended || this.returned;
  }

  push(item: T): void {
    if (this.closed) return;
    const w = this.waiter;
    if (w !== undefined) {
      this.waiter = undefined;
      w.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    if (this.items.length <= this.opts.capacity) return;
    if (this.opts.overflow === 'coalesce') {
      const keep = this.opts.keep;
      const drop = keep === undefined ? 0 : this.items.findIndex((i) => !keep(i));
      this.items.splice(drop === -1 ? 0 : drop, 1);
    } else if (!this.full) {
      this.full = true;
      this.opts.onFull?.();
    }
  }

  /** Ends the stream after the waiting items are read. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.settleWaiter();
  }

  /** Ends the stream with an error, thrown to the consumer after the waiting items. */
  fail(error: unknown): void {
    if (this.ended) return;
    this.failure = { error };
    this.end();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterating) throw new TypeError('this stream can be iterated only once');
    this.iterating = true;
    return {
      next: () => this.next(),
      return: () => {
        this.leave();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  private next(): Promise<IteratorResult<T>> {
    if (this.items.length > 0) {
      const value = this.items.shift() as T;
      if (this.full && this.items.length <= this.opts.capacity / 2) {
        this.full = false;
        this.opts.onDrain?.();
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
      this.waiter = { resolve, reject };
    });
  }

  private leave(): void {
    if (this.returned) return;
    this.returned = true;
    this.items.length = 0;
    const wasEnded = this.ended;
    this.settleWaiter();
    if (!wasEnded) this.opts.onReturn?.();
  }

  private settleWaiter(): void {
    const w = this.waiter;
    if (w === undefined) return;
    this.waiter = undefined;
    const f = this.failure;
    if (f !== undefined && !this.returned) {
      this.failure = undefined;
      w.reject(f.error);
    } else {
      w.resolve({ value: undefined, done: true });
    }
  }
}
