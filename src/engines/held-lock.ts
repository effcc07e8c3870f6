/**
 * What a holder of a lock, a read or write lock or a semaphore permit gets: the `Lock` handle.
 *
 * It is lost — `signal` aborts, synchronously — the moment the session's local deadline passes
 * (last acknowledged keepalive send + TTL, so before etcd can expire the lease and hand the lock
 * to the next waiter), when etcd reports our key deleted, when a fenced transaction finds our
 * token refused, or when the connector closes. While the session is suspended (keepalives
 * unanswered) it is `suspended`: maybe no longer held; `signal` is not aborted yet. When the
 * session answers again the key is read once more before the handle says `held` again.
 */
import type { IOperation, IRequestOp, ITxnResponse } from 'etcd3';
import {
  ClosedError,
  NotLockedError,
  SessionLostError,
  withoutStack,
  type EtcdConnectorError,
} from '../errors.js';
import { publish, type LockKind } from '../diagnostics.js';
import type { FencingToken } from '../fencing.js';
import type { Session, SessionStateChange } from '../session/session.js';
import type { SessionRef } from '../session/session-pool.js';
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
import { anySignal, Backoff, delay, isAborted } from '../transport/timers.js';
import type { ConnectorContext } from './context.js';
import type { QueueMember } from './wait-deletes.js';

/**
 * `held`; `suspended` (the session's keepalives go unanswered: it may no longer be held, pause
 * side effects); `lost` (it is not held: session lost, key deleted, token refused, connector
 * closed); `released` (by `unlock()`).
 */
export type LockState = 'held' | 'suspended' | 'lost' | 'released';

/** Keeps the last states for a slow reader; `lost` and `released` are never dropped. */
const STATUS_CAPACITY = 4;

/** What a HeldLock takes over from the acquisition. */
export interface HeldLockParts {
  ctx: ConnectorContext;
  /** Names the lock in errors, e.g. `mutex /ns/locks/a`. */
  what: string;
  /** For diagnostics and metrics: what kind of lock, on which path. */
  kind: LockKind;
  path: string;
  member: QueueMember;
  token: FencingToken;
  /** etcd's revision of the read that found the lock ours. */
  revision: number;
  /** How many holders the queue admits (1 for a lock). */
  slots: number;
  ref: SessionRef;
  /** Lets the next in-process caller use the key (locks whose key a session shares). */
  leaveGate: () => void;
  /**
   * Releases our key handing the gate to the next local caller in the same transaction
   * (engines/lock-handoff.ts): true when it deleted our key, false to release as usual.
   */
  handOff?: () => Promise<boolean>;
}

/**
 * A held lock (or read lock, write lock, semaphore permit). Release it with `unlock()` or
 * `await using`.
 *
 * ```ts
 * await using lock = await mutex.lock();
 * await lock.fencedTxn([conn.client.put('/ns/state').value('x')]);
 * ```
 */
export class HeldLock implements AsyncDisposable {
  /** Our key in etcd, e.g. `path/<lease hex>` for a mutex. */
  readonly key: string;
  /**
   * The fencing token: our key's create revision. A later holder always has a larger one; put
   * `token.compare(...)` into your own transactions, or use `fencedTxn()`.
   */
  readonly token: FencingToken;
  /**
   * etcd's revision when the lock was found ours (Go's `Mutex.Header().Revision`): every change
   * up to it — the previous holder's release among them — had happened then.
   */
  readonly revision: number;

  private stateValue: LockState = 'held';
  /** Aborts `signal` and ends the background re-check loop, on release or loss. */
  private readonly controller = new AbortController();
  private readonly listeners = new Set<(state: LockState) => void>();
  private readonly session: Session;
  private readonly untrack: () => void;
  private looping: Promise<void> = Promise.resolve();
  private cleaning: Promise<void> | undefined;
  private unlocking: Promise<void> | undefined;
  private readonly heldSince = performance.now();

  /** @internal Made by the lock recipes once the key is first in line. */
  constructor(private readonly parts: HeldLockParts) {
    this.key = parts.member.key;
    this.token = parts.token;
    this.revision = parts.revision;
    this.session = parts.member.session;
    this.untrack = parts.ctx.track({ close: () => this.closeByConnector() });
  }

  /** @internal Starts watching the hold; called once, right after construction. */
  begin(): void {
    this.looping = this.watchHold();
  }

  /**
   * Aborted the moment the lock is lost (reason: SessionLostError, NotLockedError, ClosedError)
   * or released (reason: NotLockedError). Reading it checks the session's deadline on the clock
   * first, so a process resumed after a pause sees the truth before its timers run.
   */
  get signal(): AbortSignal {
    this.checkClock();
    return this.controller.signal;
  }

  /** `held`, `suspended`, `lost` or `released` (checks the clock first). */
  get state(): LockState {
    this.checkClock();
    return this.stateValue;
  }

  /** True while the session is suspended: the lock may no longer be held; pause side effects. */
  get suspended(): boolean {
    return this.state === 'suspended';
  }

  /** True while the lock is held now: not suspended, lost or released (checks the clock). */
  get isHeld(): boolean {
    return this.state === 'held';
  }

  /**
   * The lock's states: the current one first, then each change. Ends after `lost` or `released`.
   */
  status(): RecipeStream<LockState> {
    const queue = new StreamQueue<LockState>({
      capacity: STATUS_CAPACITY,
      overflow: 'coalesce',
      keep: (s) => s === 'lost' || s === 'released',
      onReturn: () => {
        this.listeners.delete(listener);
      },
    });
    const listener = (state: LockState): void => {
      queue.push(state);
      if (state === 'lost' || state === 'released') {
        this.listeners.delete(listener);
        queue.end();
      }
    };
    const state = this.state;
    queue.push(state);
    if (state === 'lost' || state === 'released') queue.end();
    else this.listeners.add(listener);
    return queue;
  }

  /**
   * Runs `ops` in one transaction only while our key still has our token's create revision, so
   * nothing is written once the lock is gone, whatever this process believes.
   *
   * @throws NotLockedError not held now (nothing sent), or etcd refused the token (nothing
   *   written; the lock counts as lost from then on)
   */
  async fencedTxn(ops: readonly (IOperation | IRequestOp)[]): Promise<ITxnResponse> {
    const state = this.state;
    if (state === 'lost' || state === 'released') {
      throw new NotLockedError(`${this.parts.what}: the lock is ${state}`, {
        cause: this.controller.signal.reason,
      });
    }
    let res: ITxnResponse;
    try {
      res = await this.token
        .txn(this.parts.ctx.client)
        .then(...ops)
        .options(this.parts.ctx.callOptions())
        .commit();
    } catch (err) {
      throw this.parts.ctx.toError(err, `${this.parts.what}: fenced transaction`);
    }
    if (!res.succeeded) {
      const err = new NotLockedError(
        `${this.parts.what}: key ${this.key} no longer has create revision ${this.token.revision}`,
      );
      this.lose(err);
      throw err;
    }
    return res;
  }

  /**
   * Releases the lock: deletes our key (only while it has our token's revision) so the next
   * waiter goes at once. Retries etcd's transient failures while the session lives (if it ends,
   * the key goes with its lease). Idempotent; after a loss it only cleans up.
   *
   * @throws what etcd said when it refused the delete for good (e.g. permission denied)
   */
  unlock(): Promise<void> {
    this.unlocking ??= this.release();
    return this.unlocking;
  }

  /** Same as `unlock()`, but never rejects. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unlock().catch(() => undefined);
  }

  /**
   * @internal Lost now: abort, report, and let everything go (the key is gone or goes with the
   * lease).
   */
  lose(error: EtcdConnectorError): void {
    if (this.stateValue === 'lost' || this.stateValue === 'released') return;
    this.setState('lost');
    this.report('etcd-connector:lock.lost', error);
    this.controller.abort(error);
    this.cleaning ??= this.cleanup(false);
  }

  /** @internal Our key was deleted (seen by a watch or a read): lost, unless already over. */
  keyGone(): void {
    if (this.stateValue === 'lost' || this.stateValue === 'released') return;
    this.lose(new NotLockedError(`${this.parts.what}: key ${this.key} was deleted`));
  }

  private async release(): Promise<void> {
    this.checkClock();
    if (this.stateValue === 'lost') {
      await this.cleaning;
      return;
    }
    // The reason of a normal release: where unlock() was called from tells nothing, and capturing
    // it was the costliest step of an uncontended lock cycle after the two calls.
    const err = withoutStack(() => new NotLockedError(`${this.parts.what}: the lock was released`));
    this.setState('released');
    this.report('etcd-connector:lock.release');
    this.controller.abort(err);
    this.cleaning ??= this.cleanup(true);
    await this.cleaning;
  }

  /** Deletes the key (when releasing and it can still be ours), then lets go of the rest. */
  private async cleanup(releasing: boolean): Promise<void> {
    const { ctx, member } = this.parts;
    let failure: EtcdConnectorError | undefined;
    try {
      if (releasing && !ctx.closing && (await this.parts.handOff?.()) !== true) {
        failure = await this.removeKey();
      }
      // Our key may still be there: let it go with the lease now, not after the pool's linger.
      if (failure !== undefined) ctx.sessions.revokeAtLastRelease(this.session);
    } finally {
      this.untrack();
      await this.looping;
      member.close();
      this.parts.leaveGate();
      await this.parts.ref.release();
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * Deletes our key while it has our revision: retried while the session lives, once more (best
   * effort) when it was lost locally, since etcd may keep the lease a little longer.
   */
  private async removeKey(): Promise<EtcdConnectorError | undefined> {
    const backoff = new Backoff(50, 1000);
    for (;;) {
      const alive = this.session.isAlive();
      try {
        await this.parts.member.remove();
        return undefined;
      } catch (err) {
        const error = this.parts.ctx.toError(err, `${this.parts.what}: unlock`);
        if (!error.retryable) return error;
        if (!alive || !this.session.isAlive() || this.parts.ctx.closing) return undefined;
      }
      await delay(backoff.next());
    }
  }

  /** Re-checks the hold after every change of the session or our key, until release or loss. */
  private async watchHold(): Promise<void> {
    const { member, slots, ctx } = this.parts;
    const signal = this.controller.signal;
    const backoff = new Backoff(100, 2000);
    while (!signal.aborted) {
      await member.changed(signal);
      if (isAborted(signal)) return;
      try {
        const outcome = await member.waitTurn({ slots, signal });
        backoff.reset();
        if (outcome.kind === 'holder') {
          if (this.stateValue === 'suspended') this.setState('held');
        } else if (outcome.kind === 'gone') {
          this.keyGone();
        } else if (outcome.kind === 'lost') {
          this.lose(this.sessionError());
        }
      } catch (err) {
        if (isAborted(signal)) return;
        const error = ctx.toError(err, `${this.parts.what}: re-check`);
        // Cannot check any more (credentials, permissions): cannot claim to hold either.
        if (!error.retryable) this.lose(error);
        // Transient: the session's deadline still guards us.
        else await delay(backoff.next(), signal).catch(() => undefined);
      }
    }
  }

  /** @internal Session state changes, synchronously (the session's deadline timer included). */
  onSession(change: SessionStateChange): void {
    if (this.stateValue === 'lost' || this.stateValue === 'released') return;
    if (change.state === 'suspended') this.setState('suspended');
    else if (change.state === 'lost' || change.state === 'closed') this.lose(this.sessionError());
  }

  private sessionError(): EtcdConnectorError {
    if (this.parts.ctx.closing) return new ClosedError('connector');
    const s = this.session;
    if (s.state === 'closed') return new ClosedError(`session ${s.leaseIdHex}`);
    try {
      s.assertAlive();
    } catch (err) {
      if (err instanceof SessionLostError) return err;
    }
    return new SessionLostError(s.leaseIdHex, 'lost');
  }

  private checkClock(): void {
    // isAlive() declares the session lost when its deadline passed; the listener then loses us.
    if (this.stateValue === 'held' || this.stateValue === 'suspended') this.session.isAlive();
  }

  private closeByConnector(): Promise<void> {
    this.lose(new ClosedError('connector'));
    return this.cleaning ?? Promise.resolve();
  }

  private report(
    channel: 'etcd-connector:lock.release' | 'etcd-connector:lock.lost',
    error?: Error,
  ): void {
    publish(channel, () => ({
      kind: this.parts.kind,
      path: this.parts.path,
      key: this.key,
      token: this.token.revision,
      heldMs: performance.now() - this.heldSince,
      ...(error === undefined ? {} : { error }),
    }));
  }

  private setState(state: LockState): void {
    this.stateValue = state;
    for (const l of [...this.listeners]) l(state);
  }
}

/**
 * Runs `fn` while holding `lock` and releases it after, however `fn` ends. `fn` gets a signal
 * that aborts when the lock is lost or the caller's `signal` fires. An error of `fn` wins over
 * one of the release.
 */
export async function runHeld<T>(
  lock: HeldLock,
  fn: (signal: AbortSignal, lock: HeldLock) => Promise<T> | T,
  signal?: AbortSignal,
): Promise<T> {
  const combined = signal === undefined ? lock.signal : anySignal([lock.signal, signal]);
  let result: T;
  try {
    result = await fn(combined, lock);
  } catch (err) {
    await lock.unlock().catch(() => undefined);
    throw err;
  }
  await lock.unlock();
  return result;
}
