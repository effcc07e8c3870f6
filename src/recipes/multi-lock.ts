/**
 * Several mutexes held together, all or nothing. Go has no such recipe; ours is just the mutexes
 * (each in Go's layout, `path/<lease id hex>`), taken in one global order — the paths sorted by
 * UTF-16 code units — so two MultiLocks over overlapping paths can never wait on each other in a
 * cycle (no deadlock), and released in reverse order. A failure or an abort half-way releases what
 * was taken, in reverse. Plain `etcdctl lock` and Go mutexes on any of the paths queue with it.
 */
import type { IOperation, IRequestOp, ITxnResponse } from 'etcd3';
import type { ConnectorContext } from '../engines/context.js';
import type { HeldLock } from '../engines/held-lock.js';
import { validateSignal } from '../engines/lifecycle.js';
import { lockSession, type LockRecipeOptions } from '../engines/queue-lock.js';
import { InvalidArgumentError, NotLockedError } from '../errors.js';
import type { FencingToken } from '../fencing.js';
import { validatePath } from '../paths.js';
import { Mutex, type LockOptions } from './mutex.js';
import { anySignal } from '../transport/timers.js';

/** Options of `conn.newMultiLock(paths, options)`. */
export type MultiLockOptions = LockRecipeOptions;

/** Every lock of a MultiLock, held together. Release with `unlock()` or `await using`. */
export class MultiLockHandle implements AsyncDisposable {
  /** The held locks, in the order they were taken (paths sorted). */
  readonly locks: readonly HeldLock[];
  private readonly controller = new AbortController();
  private unlocking: Promise<void> | undefined;

  /** @internal */
  constructor(
    private readonly ctx: ConnectorContext,
    locks: readonly HeldLock[],
  ) {
    this.locks = locks;
    const signals = locks.map((l) => l.signal);
    const any = anySignal(signals);
    const onAbort = (): void => {
      this.controller.abort(any.reason);
    };
    if (any.aborted) onAbort();
    else any.addEventListener('abort', onAbort, { once: true });
  }

  /** The keys, in order. */
  get keys(): readonly string[] {
    return this.locks.map((l) => l.key);
  }

  /** The fencing tokens, in order. */
  get tokens(): readonly FencingToken[] {
    return this.locks.map((l) => l.token);
  }

  /** Aborted the moment any of the locks is lost, or when they are released (clock checked). */
  get signal(): AbortSignal {
    // Reading each lock's signal checks its session's deadline first.
    if (this.locks.some((l) => l.signal.aborted) && !this.controller.signal.aborted) {
      this.controller.abort(new NotLockedError('multi-lock: a lock was lost'));
    }
    return this.controller.signal;
  }

  /** True while any lock's session is suspended. */
  get suspended(): boolean {
    return this.locks.some((l) => l.suspended);
  }

  /** True while every lock is held now. */
  get isHeld(): boolean {
    return !this.controller.signal.aborted && this.locks.every((l) => l.isHeld);
  }

  /**
   * Runs `ops` in one transaction only while *every* key still has its token's revision.
   *
   * @throws NotLockedError not all held now (nothing sent), or etcd refused a token (nothing
   *   written)
   */
  async fencedTxn(ops: readonly (IOperation | IRequestOp)[]): Promise<ITxnResponse> {
    if (this.signal.aborted) {
      throw new NotLockedError('multi-lock: not every lock is held', {
        cause: this.controller.signal.reason,
      });
    }
    const [first, ...rest] = this.tokens;
    if (first === undefined) throw new Error('unreachable: a multi-lock has locks');
    let res: ITxnResponse;
    try {
      let txn = first.txn(this.ctx.client);
      for (const t of rest) txn = t.compare(txn);
      res = await txn
        .then(...ops)
        .options(this.ctx.callOptions())
        .commit();
    } catch (err) {
      throw this.ctx.toError(err, 'multi-lock: fenced transaction');
    }
    if (!res.succeeded) {
      const err = new NotLockedError('multi-lock: a key no longer has its token revision');
      this.controller.abort(err);
      throw err;
    }
    return res;
  }

  /** Releases every lock in reverse order. Idempotent; rejects with the first failure. */
  unlock(): Promise<void> {
    this.unlocking ??= (async () => {
      if (!this.controller.signal.aborted) {
        this.controller.abort(new NotLockedError('multi-lock: released'));
      }
      await releaseAll(this.locks);
    })();
    return this.unlocking;
  }

  /** Same as `unlock()`, but never rejects. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unlock().catch(() => undefined);
  }
}

/** Unlocks in reverse order; every lock is released even if one fails; the first error wins. */
async function releaseAll(locks: readonly HeldLock[]): Promise<void> {
  let failure: Error | undefined;
  for (const l of [...locks].reverse()) {
    try {
      await l.unlock();
    } catch (err) {
      failure ??= err instanceof Error ? err : new Error(String(err));
    }
  }
  if (failure !== undefined) throw failure;
}

/**
 * Mutexes on several paths, taken together. Make it with `conn.newMultiLock(paths, { ttl })`.
 */
export class MultiLock {
  /** The paths in the order they are locked (sorted, without duplicates). */
  readonly paths: readonly string[];
  private readonly mutexes: readonly Mutex[];

  /** @internal Use `conn.newMultiLock(...)`; validates everything, does no I/O. */
  constructor(
    private readonly ctx: ConnectorContext,
    paths: readonly string[],
    options?: MultiLockOptions,
  ) {
    const given: unknown = paths;
    if (!Array.isArray(given) || given.length === 0) {
      throw new InvalidArgumentError('paths', 'must be a non-empty array of paths');
    }
    const checked = given.map((p: unknown, i) => validatePath(p, ctx.root, `paths[${i}]`));
    lockSession(ctx, options);
    this.paths = [...new Set(checked)].sort();
    this.mutexes = this.paths.map((p) => new Mutex(ctx, p, options));
  }

  /**
   * Waits until every path is locked (in sorted order) and resolves with the handle. If a lock
   * taken earlier is lost before the last one is ours, everything is released and taken again.
   *
   * @throws AbortError / SessionLostError / ClosedError as `Mutex.lock()`; what was taken is
   *   released first
   */
  async lock(options: LockOptions = {}): Promise<MultiLockHandle> {
    const signal = validateSignal(options.signal);
    for (;;) {
      const held: HeldLock[] = [];
      try {
        for (const m of this.mutexes) {
          held.push(await m.lock(signal === undefined ? {} : { signal }));
        }
      } catch (err) {
        await releaseAll(held).catch(() => undefined);
        throw err;
      }
      if (held.every((l) => !l.signal.aborted)) return new MultiLockHandle(this.ctx, held);
      await releaseAll(held).catch(() => undefined);
    }
  }

  /** Every lock if all are free now, else undefined (nothing held, no key left); never waits. */
  async tryLock(): Promise<MultiLockHandle | undefined> {
    const held: HeldLock[] = [];
    try {
      for (const m of this.mutexes) {
        const lock = await m.tryLock();
        if (lock === undefined) {
          await releaseAll(held);
          return undefined;
        }
        held.push(lock);
      }
    } catch (err) {
      await releaseAll(held).catch(() => undefined);
      throw err;
    }
    return new MultiLockHandle(this.ctx, held);
  }

  /** Runs `fn` holding every lock and releases them after (see `Mutex.withLock`). */
  async withLock<T>(
    fn: (signal: AbortSignal, handle: MultiLockHandle) => Promise<T> | T,
    options: LockOptions = {},
  ): Promise<T> {
    const handle = await this.lock(options);
    const signal =
      options.signal === undefined ? handle.signal : anySignal([handle.signal, options.signal]);
    let result: T;
    try {
      result = await fn(signal, handle);
    } catch (err) {
      await handle.unlock().catch(() => undefined);
      throw err;
    }
    await handle.unlock();
    return result;
  }
}
