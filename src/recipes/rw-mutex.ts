/**
 * A readers-writer lock in the layout of Go's `contrib/recipes` RWMutex (etcd 3.4; "recipes" in
 * later releases), so Go services share it with us byte for byte:
 *
 * - a reader keeps `path/read/<UnixNano>`, a writer `path/write/<UnixNano>`, value `''`, under
 *   its session's lease, created only if absent (Go's putNewKV; a name taken by someone else
 *   means a new timestamp);
 * - order is the **mod revision**; a reader waits until no key under `path/write` (no trailing
 *   slash, as Go) has a lower one; a writer until no key under `path/` has: readers hold
 *   together, writers alone, and a reader that comes after a waiting writer waits for it (Go's
 *   writer preference, FIFO between the two kinds).
 *
 * Go waits on the last key before its own for a DELETE and never looks at its own key again: if
 * its session expires meanwhile it still "acquires" (etcd issue 16221). We re-read after every
 * wake-up and hold only while our key exists with our revision under a live session.
 */
import type { ConnectorContext } from '../engines/context.js';
import { unixNano } from '../engines/keys.js';
import { runHeld, type HeldLock } from '../engines/held-lock.js';
import {
  acquireQueued,
  lockSession,
  type LockRecipeOptions,
  type QueueLockSpec,
  waitQueued,
} from '../engines/queue-lock.js';
import { validatePath } from '../paths.js';
import type { LockOptions } from './mutex.js';

/** Options of `conn.newRWMutex(path, options)`. */
export type RWMutexOptions = LockRecipeOptions;

/**
 * A readers-writer lock on `path`. Make it with `conn.newRWMutex(path, { ttl })`; no I/O
 * happens before a lock call. Read and write locks are `Lock` handles.
 */
export class RWMutex {
  /** Go's `pfx`, `path + '/'`. */
  readonly prefix: string;
  private readonly read: QueueLockSpec;
  private readonly write: QueueLockSpec;

  /** @internal Use `conn.newRWMutex(...)`; validates everything, does no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly path: string,
    options?: RWMutexOptions,
  ) {
    validatePath(path, ctx.root);
    const { ttl, session } = lockSession(ctx, options);
    const prefix = path + '/';
    this.prefix = prefix;
    const base = {
      ctx,
      path,
      prefix,
      slots: 1,
      ttl,
      ...(session === undefined ? {} : { session }),
    };
    this.read = {
      ...base,
      what: `rwmutex ${path} (read)`,
      kind: 'read',
      // Readers wait on writers only: Go's waitOnLastRev(pfx + "write").
      shape: () => ({
        key: `${prefix}read/${unixNano()}`,
        waitPrefix: prefix + 'write',
        order: 'Mod',
      }),
    };
    this.write = {
      ...base,
      what: `rwmutex ${path} (write)`,
      kind: 'write',
      // Writers wait on everybody before them: Go's waitOnLastRev(pfx).
      shape: () => ({ key: `${prefix}write/${unixNano()}`, waitPrefix: prefix, order: 'Mod' }),
    };
  }

  /**
   * Waits for a read lock: held together with other readers, never beside a writer.
   *
   * @throws AbortError / SessionLostError / ClosedError as `Mutex.lock()`
   */
  async rlock(options: LockOptions = {}): Promise<HeldLock> {
    return waitQueued(this.read, options);
  }

  /**
   * Waits for the write lock: held alone.
   *
   * @throws AbortError / SessionLostError / ClosedError as `Mutex.lock()`
   */
  async lock(options: LockOptions = {}): Promise<HeldLock> {
    return waitQueued(this.write, options);
  }

  /** A read lock if no writer holds or waits before us now, else undefined; never waits. */
  tryRLock(): Promise<HeldLock | undefined> {
    return acquireQueued(this.read, { tryOnly: true });
  }

  /** The write lock if nobody holds or waits now, else undefined; never waits. */
  tryLock(): Promise<HeldLock | undefined> {
    return acquireQueued(this.write, { tryOnly: true });
  }

  /** Runs `fn` holding a read lock (see `Mutex.withLock`). */
  async withRLock<T>(
    fn: (signal: AbortSignal, lock: HeldLock) => Promise<T> | T,
    options: LockOptions = {},
  ): Promise<T> {
    return runHeld(await this.rlock(options), fn, options.signal);
  }

  /** Runs `fn` holding the write lock (see `Mutex.withLock`). */
  async withLock<T>(
    fn: (signal: AbortSignal, lock: HeldLock) => Promise<T> | T,
    options: LockOptions = {},
  ): Promise<T> {
    return runHeld(await this.lock(options), fn, options.signal);
  }
}
