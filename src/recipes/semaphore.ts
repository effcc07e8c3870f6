/**
 * A counting semaphore: at most `permits` holders at once. Go has no such recipe; the layout is
 * ours, on the same queue engine as the mutex:
 *
 * - each acquisition keeps one key `path/<lease id hex>-<n>`, value `''`, under its session's
 *   lease: the lease id makes it unique across processes without coordination (and names its
 *   owner, as `etcdctl lease list` shows it); `<n>` (decimal, per process) lets one session hold
 *   several permits, so callers of one process need no in-process queue;
 * - holders are the first `permits` keys by create revision (FIFO, like the mutex); a key that
 *   goes with its lease frees its permit;
 * - a waiter watches only the `permits` keys just before its own, so a release wakes at most
 *   `permits` waiters (one when the oldest holder leaves), never the whole queue;
 * - `permits` is not stored in etcd (like Go's DoubleBarrier count): every participant must use
 *   the same number; one that uses more would hold beside the others.
 */
import type { ConnectorContext } from '../engines/context.js';
import { runHeld, type HeldLock } from '../engines/held-lock.js';
import {
  acquireQueued,
  lockSession,
  type LockRecipeOptions,
  type QueueLockSpec,
  waitQueued,
} from '../engines/queue-lock.js';
import { InvalidArgumentError } from '../errors.js';
import { validatePath } from '../paths.js';
import type { LockOptions } from './mutex.js';

/** Options of `conn.newSemaphore(path, permits, options)`. */
export type SemaphoreOptions = LockRecipeOptions;

/** A held permit of a semaphore: the same handle as a lock. */
export type Permit = HeldLock;

/** Each waiter watches up to this many keys; beyond it a semaphore is the wrong tool. */
export const MAX_PERMITS = 1000;

/** Keys of this process, per session: unique with the lease id in front. */
let sequence = 0;

/**
 * A semaphore of `permits` on `path`. Make it with `conn.newSemaphore(path, permits, { ttl })`;
 * no I/O happens before `acquire()`.
 */
export class Semaphore {
  /** The key prefix, `path + '/'`. */
  readonly prefix: string;
  private readonly spec: QueueLockSpec;

  /** @internal Use `conn.newSemaphore(...)`; validates everything, does no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly path: string,
    readonly permits: number,
    options?: SemaphoreOptions,
  ) {
    validatePath(path, ctx.root);
    if (!Number.isInteger(permits) || permits < 1 || permits > MAX_PERMITS) {
      throw new InvalidArgumentError(
        'permits',
        `must be a whole number from 1 to ${MAX_PERMITS}, got ${String(permits)}`,
      );
    }
    const { ttl, session } = lockSession(ctx, options);
    this.prefix = path + '/';
    this.spec = {
      ctx,
      what: `semaphore ${path}`,
      kind: 'semaphore',
      path,
      prefix: this.prefix,
      slots: permits,
      ttl,
      ...(session === undefined ? {} : { session }),
      shape: (s) => ({ key: `${this.prefix}${s.leaseIdHex}-${++sequence}` }),
    };
  }

  /**
   * Waits for a permit (first come, first served) and resolves with its handle.
   *
   * @throws AbortError `signal` fired (our key was deleted at once)
   * @throws SessionLostError the session ended while waiting
   * @throws ClosedError the connector closed
   */
  async acquire(options: LockOptions = {}): Promise<Permit> {
    return waitQueued(this.spec, options);
  }

  /** A permit if one is free now, else undefined; never waits, leaves no key behind. */
  tryAcquire(): Promise<Permit | undefined> {
    return acquireQueued(this.spec, { tryOnly: true });
  }

  /** Runs `fn` holding a permit and releases it after (see `Mutex.withLock`). */
  async withPermit<T>(
    fn: (signal: AbortSignal, permit: Permit) => Promise<T> | T,
    options: LockOptions = {},
  ): Promise<T> {
    const permit = await this.acquire(options);
    return runHeld(permit, fn, options.signal);
  }
}
