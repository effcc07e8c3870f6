import { AbortError } from '../errors.js';

/** Milliseconds on a monotonic clock: immune to wall-clock jumps, used for every deadline. */
export function monotonicMs(): number {
  return performance.now();
}

/** A {@link monotonicMs} time as epoch ms, as diagnostics give times (comparable across processes). */
export function epochMs(monotonic: number): number {
  return performance.timeOrigin + monotonic;
}

/** The source signals of each composite of {@link anySignal}, alive as long as it is. */
const sourcesOf = new WeakMap<AbortSignal, readonly AbortSignal[]>();

/**
 * `AbortSignal.any(signals)` that keeps its sources alive as long as the composite lives. Node
 * 20's composite holds its sources only weakly, and a source made by `AbortSignal.timeout()` that
 * nothing else holds is then collected at the next GC and never fires: the composite never
 * aborts (nodejs/node#57736; chaos run: a double barrier `enter()` given a 0.3-3 s give-up signal
 * waited 35 s, and every other participant's `leave()` with it). Use this, never
 * `AbortSignal.any` (lint forbids it).
 */
export function anySignal(signals: readonly AbortSignal[]): AbortSignal {
  // eslint-disable-next-line no-restricted-properties -- the one place it is wrapped
  const composite = AbortSignal.any(signals as AbortSignal[]);
  if (!composite.aborted) sourcesOf.set(composite, signals);
  return composite;
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
