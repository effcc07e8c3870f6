import { AbortError } from '../errors.js';

/** Milliseconds on a monotonic clock: immune to wall-clock jumps, used for every deadline. */
export function monotonicMs(): number {
  return performance.now();
}

/** Resolves after `ms`, or rejects with AbortError as soon as `signal` fires. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new AbortError({ cause: signal.reason }));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AbortError({ cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Exponential backoff with full jitter, for reconnect loops. */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly initialMs = 50,
    private readonly maxMs = 1000,
  ) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 20);
    return cap / 2 + (Math.random() * cap) / 2;
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Rejects with AbortError when `signal` fires; otherwise settles like `promise`. */
export function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(new AbortError({ cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(new AbortError({ cause: signal.reason }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Reads `aborted` through a call, so the compiler does not assume it stays what it was. */
export function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}
