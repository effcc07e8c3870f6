/**
 * A distributed mutex in Go's `concurrency.Mutex` layout, so `etcdctl lock <path>` and Go
 * services queue with us in one FIFO line: each waiter keeps the key `path + '/' + lease id
 * (hex)`, value `''`, under its session's lease; the oldest key (lowest create revision) holds.
 * `lock()` costs one transaction when the lock is free (create our key and read the owner, as
 * Go's Lock), else waits watching only its predecessor, and re-checks after every wake-up that
 * its own key still exists under a live session.
 *
 * One key per session and path: the connector shares one session per TTL, so callers of this
 * process that would use the same key pass an in-process FIFO first (engines/local-gate.ts).
 *
 * Ported from etcd's client/v3/concurrency/mutex.go (Lock, Unlock, IsOwner) and 3.5's TryLock.
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
import { validatePath } from '../paths.js';

/** Options of `conn.newMutex(path, options)`. */
export type MutexOptions = LockRecipeOptions;

/** Options of a waiting call (`lock()`, `withLock()`, `acquire()`, ...). */
export interface LockOptions {
  /** Gives up waiting: the call rejects with AbortError and our key is deleted at once. */
  signal?: AbortSignal;
}

/**
 * A mutex on `path`. Make it with `conn.newMutex(path, { ttl })`; no I/O happens before
 * `lock()`. One Mutex can be locked by several callers: they queue (in process, then in etcd).
 *
 * ```ts
 * const m = conn.newMutex(conn.constructPath('locks', 'billing'), { ttl: 10 });
 * await m.withLock(async (signal) => { await work(signal); });
 * ```
 */
export class Mutex {
  /** The key prefix, `path + '/'` (Go's `pfx`). */
  readonly prefix: string;
  private readonly spec: QueueLockSpec;

  /** @internal Use `conn.newMutex(...)`; validates everything, does no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly path: string,
    options?: MutexOptions,
  ) {
    validatePath(path, ctx.root);
    const { ttl, session } = lockSession(ctx, options);
    this.prefix = path + '/';
    this.spec = {
      ctx,
      what: `mutex ${path}`,
      kind: 'mutex',
      path,
      prefix: this.prefix,
      slots: 1,
      ttl,
      ...(session === undefined ? {} : { session }),
    };
  }

  /**
   * Waits until the lock is ours (first come, first served) and resolves with its handle.
   *
   * @throws AbortError `signal` fired (our key was deleted at once)
   * @throws SessionLostError the session ended while waiting, or before etcd's answer granting
   *   the lock was handled (its deadline passed: the grant proves nothing any more)
   * @throws ClosedError the connector closed
   * @throws UnavailableError / TimeoutError etcd unreachable when starting the session
   */
  async lock(options: LockOptions = {}): Promise<HeldLock> {
    return waitQueued(this.spec, options);
  }

  /**
   * The lock if it is free now, else undefined — never waits, and leaves no key behind when it
   * fails (Go 3.5's TryLock). Also undefined while another caller of this process holds or wants
   * it under the same session.
   *
   * @throws UnavailableError / TimeoutError etcd could not be asked
   * @throws SessionLostError the session was lost, also while etcd's answer was on its way
   */
  tryLock(): Promise<HeldLock | undefined> {
    return acquireQueued(this.spec, { tryOnly: true });
  }

  /**
   * Runs `fn` holding the lock, and releases it after, however `fn` ends. `fn`'s signal aborts
   * when the lock is lost (or `options.signal` fires): stop side effects then, and prefer
   * `lock.fencedTxn()` for writes that must not land after a loss.
   *
   * @returns what `fn` returned
   */
  async withLock<T>(
    fn: (signal: AbortSignal, lock: HeldLock) => Promise<T> | T,
    options: LockOptions = {},
  ): Promise<T> {
    const lock = await this.lock(options);
    return runHeld(lock, fn, options.signal);
  }
}
