/** Reading the recipes' AsyncIterable streams with deadlines, stamping each item on arrival. */
import { withTimeout } from '../src/testing/index.js';
import { now } from './stats.js';

/** An item read from a stream and the monotonic time it was handed to us. */
export interface Stamped<T> {
  readonly value: T;
  readonly at: number;
}

/**
 * A reader over one AsyncIterable: `until(pred)` reads items until one matches. Reads happen in one
 * pump loop so items are stamped when the stream yields them, not when the bench asks.
 */
export class StreamReader<T> {
  readonly #iterator: AsyncIterator<T>;
  readonly #items: Stamped<T>[] = [];
  #ended = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  readonly #pump: Promise<void>;

  constructor(iterable: AsyncIterable<T>) {
    this.#iterator = iterable[Symbol.asyncIterator]();
    this.#pump = this.#run();
  }

  async #run(): Promise<void> {
    try {
      for (;;) {
        const r = await this.#iterator.next();
        if (r.done === true) break;
        this.#items.push({ value: r.value, at: now() });
        this.#wake?.();
      }
    } catch (err) {
      this.#error = err;
    } finally {
      this.#ended = true;
      this.#wake?.();
    }
  }

  /** Resolves with the next item matching `pred`; earlier items are dropped. */
  async until(pred: (value: T) => boolean, timeoutMs: number, what: string): Promise<Stamped<T>> {
    return withTimeout(this.#until(pred), timeoutMs, what);
  }

  async #until(pred: (value: T) => boolean): Promise<Stamped<T>> {
    for (;;) {
      let item = this.#items.shift();
      while (item !== undefined) {
        if (pred(item.value)) return item;
        item = this.#items.shift();
      }
      if (this.#ended) {
        const why = this.#error instanceof Error ? `: ${this.#error.message}` : '';
        throw new Error(`stream ended${why}`);
      }
      await new Promise<void>((resolve) => {
        this.#wake = () => {
          this.#wake = undefined;
          resolve();
        };
      });
    }
  }

  /** Stops reading (like `break` in a `for await`) and waits for the pump to finish. */
  async close(): Promise<void> {
    await this.#iterator.return?.();
    await withTimeout(this.#pump, 10000, 'stream to end after return()').catch(() => undefined);
  }
}
