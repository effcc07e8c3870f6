/**
 * Read, decide, watch from the read's revision + 1, wake, read again — the wait the barriers
 * share. Go's recipes watch from the read's revision (etcd then serves the watch from its 100 ms
 * catch-up loop) or, in `Barrier.Wait`, wait for a PUT that may have happened before the read and
 * so miss a release (docs/go-layouts.md). Here every decision is made on a read, or on events
 * strictly after it, and every wake-up (a change, a compaction, a session change) reads again.
 */
import { AbortError, EtcdConnectorError } from '../errors.js';
import { Backoff, delay, isAborted } from '../transport/timers.js';
import type { MuxWatch, WatchEvent } from '../transport/watch-types.js';
import type { ConnectorContext } from './context.js';
import { Latch } from './latch.js';

/** A key, or the range `[key, rangeEnd)`, to watch. */
export interface WatchSpec {
  readonly key: string | Buffer;
  readonly rangeEnd?: Buffer;
}

/** What one read found. */
export type Check<T> =
  | { readonly done: true; readonly value: T }
  | {
      readonly done: false;
      /** The read's revision: watches start after it. */
      readonly revision: number;
      /** What may change the answer. */
      readonly watch: readonly WatchSpec[];
      /** Decides from the events alone, without another read (e.g. a DELETE = released). */
      readonly decide?: (events: readonly WatchEvent[]) => T | undefined;
    };

export interface KeyWaitOptions<T> {
  readonly ctx: ConnectorContext;
  /** Names the wait in errors. */
  readonly what: string;
  readonly signal: AbortSignal;
  /**
   * One read. etcd's errors as etcd3 throws them are mapped and, when retryable, retried; an
   * error of ours (an EtcdConnectorError, e.g. SessionLostError) ends the wait as it is.
   */
  readonly check: () => Promise<Check<T>>;
  /** More reasons to read again (e.g. a session state change); returns the unsubscribe. */
  readonly subscribe?: (wake: () => void) => () => void;
}

/**
 * Waits until `check` says done. Retries retryable failures with backoff until `signal` fires
 * (then AbortError); rejects at once with a final error.
 */
export async function waitUntil<T>(opts: KeyWaitOptions<T>): Promise<T> {
  const { ctx, signal } = opts;
  const latch = new Latch();
  const wake = (): void => {
    latch.fire();
  };
  const unsubscribe = opts.subscribe?.(wake);
  signal.addEventListener('abort', wake, { once: true });
  const backoff = new Backoff(50, 2000);
  try {
    for (;;) {
      latch.reset();
      if (isAborted(signal)) throw new AbortError({ cause: signal.reason });
      let check: Check<T>;
      try {
        check = await opts.check();
      } catch (err) {
        if (isAborted(signal)) throw new AbortError({ cause: signal.reason });
        if (err instanceof EtcdConnectorError) throw err;
        const error = ctx.toError(err, opts.what);
        if (!error.retryable) throw error;
        await delay(backoff.next(), signal);
        continue;
      }
      backoff.reset();
      if (check.done) return check.value;
      // Nothing to watch: the check changed something itself and wants to look again.
      if (check.watch.length === 0) continue;
      let decided: { value: T } | undefined;
      let failure: EtcdConnectorError | undefined;
      const watches: MuxWatch[] = check.watch.map((spec) =>
        ctx.watches.watch(
          {
            key: spec.key,
            ...(spec.rangeEnd === undefined ? {} : { rangeEnd: spec.rangeEnd }),
            startRevision: check.revision + 1,
          },
          {
            onEvents: (events) => {
              const value = check.decide?.(events);
              if (value !== undefined) decided ??= { value };
              wake();
            },
            onCompacted: wake,
            onEnded: (error) => {
              failure = error;
              wake();
            },
          },
        ),
      );
      try {
        await latch.wait();
      } finally {
        for (const w of watches) w.close();
      }
      if (decided !== undefined) return decided.value;
      if (isAborted(signal)) throw new AbortError({ cause: signal.reason });
      if (failure !== undefined && !failure.retryable) throw failure;
    }
  } finally {
    signal.removeEventListener('abort', wake);
    unsubscribe?.();
  }
}
