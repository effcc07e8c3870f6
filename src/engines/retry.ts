/**
 * The retry loop every background recipe needs, once: try, and on a retryable failure say so and
 * try again with backoff until it works, the failure turns out final, or the recipe stops. A call
 * that hangs (a blackholed member) is reported as soon as it has taken longer than the stall time,
 * without cancelling it — so a recipe that cannot reach etcd says so within the dial timeout, not
 * after the call deadline.
 */
import { AbortError, TimeoutError, type EtcdConnectorError } from '../errors.js';
import { Backoff, delay, isAborted } from '../transport/timers.js';

export interface RetryOptions {
  /**
   * Stops the loop (it rejects with AbortError). A function is called only when the loop must
   * wait, so a caller that rarely retries need not keep an AbortController.
   */
  signal: AbortSignal | (() => AbortSignal);
  /** Checked before each attempt instead of the signal, when given. */
  isStopped?: () => boolean;
  /** Maps a failure to our typed error (the connector's `toError`). */
  toError: (err: unknown, what: string) => EtcdConnectorError;
  /** Names the operation in errors. */
  what: string;
  /** A retryable failure happened, or an attempt has been running longer than `stallMs`. */
  onRetry?: (error: EtcdConnectorError) => void;
  /** Report an attempt still running after this many ms (default: no report). */
  stallMs?: number;
  backoff?: Backoff;
}

/**
 * Runs `attempt` until it resolves. Rejects with the first final error (not `retryable`), or with
 * AbortError once `signal` fired.
 */
export async function retrying<T>(attempt: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const backoff = opts.backoff ?? new Backoff(100, 2000);
  const signal = (): AbortSignal =>
    typeof opts.signal === 'function' ? opts.signal() : opts.signal;
  const stopped = (): boolean => opts.isStopped?.() ?? isAborted(signal());
  for (;;) {
    if (stopped()) throw new AbortError();
    try {
      return await reportStall(attempt(), opts);
    } catch (err) {
      if (stopped()) throw new AbortError();
      const error = opts.toError(err, opts.what);
      if (!error.retryable) throw error;
      opts.onRetry?.(error);
    }
    await delay(backoff.next(), signal());
  }
}

/** Settles like `promise`; calls `onRetry` with a TimeoutError if it is still pending at `stallMs`. */
export function reportStall<T>(
  promise: Promise<T>,
  opts: Pick<RetryOptions, 'stallMs' | 'onRetry' | 'what'>,
): Promise<T> {
  const { stallMs, onRetry } = opts;
  if (stallMs === undefined || onRetry === undefined) return promise;
  const timer = setTimeout(() => {
    onRetry(new TimeoutError(`${opts.what}: no answer from etcd within ${stallMs} ms`));
  }, stallMs);
  return promise.finally(() => {
    clearTimeout(timer);
  });
}
