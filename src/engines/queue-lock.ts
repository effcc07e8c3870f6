/**
 * Acquiring a place among the first `slots` keys of a queue: the one loop behind Mutex, RWMutex
 * and Semaphore (and so MultiLock). Per call: take a reference on a session (the user's, or the
 * connector's shared one for the TTL), pass the in-process gate when the key is one the session
 * shares, join the queue (one transaction: create-or-read our key and read the first keys), wait
 * for our turn watching only the keys just before ours, and hand back a HeldLock.
 *
 * Failures: etcd's transient errors are retried while the session lives (our place stays ours);
 * a lost session, a final error, the caller's `signal` or the connector's close end the call.
 * Whatever way a call ends without the lock, its key is deleted at once (and, if etcd cannot be
 * reached, again in the background until it can or the session ends), and only then does the
 * next in-process caller pass the gate.
 */
import {
  AbortError,
  ClosedError,
  InvalidArgumentError,
  SessionLostError,
  type EtcdConnectorError,
} from '../errors.js';
import { publish, type LockKind } from '../diagnostics.js';
import { validateTtl } from '../paths.js';
import type { Session } from '../session/session.js';
import { sessionOf, type SessionHandle } from '../session/session-handle.js';
import type { SessionRef } from '../session/session-pool.js';
import { anySignal, Backoff, delay, epochMs, isAborted, monotonicMs } from '../transport/timers.js';
import type { ConnectorContext } from './context.js';
import { HeldLock } from './held-lock.js';
import { validateSignal } from './lifecycle.js';
import { handOff, passGate, type GateEntry } from './lock-handoff.js';
import { QueueMember, type JoinResult, type QueueShape, type WaitOutcome } from './wait-deletes.js';

/** What a lock recipe asks for. */
export interface QueueLockSpec {
  ctx: ConnectorContext;
  /** Names the lock in errors, e.g. `mutex /ns/locks/a`. */
  what: string;
  /** For diagnostics and metrics: what kind of lock, on which path. */
  kind: LockKind;
  path: string;
  /** Go's key prefix, `path + '/'`. */
  prefix: string;
  /** How many may hold at once: 1 for locks, `permits` for a semaphore. */
  slots: number;
  /** TTL of the connector's shared session to use, unless `session` is given. */
  ttl: number;
  /** A session the user gave (bound: its loss ends the call). */
  session?: Session;
  /**
   * Our key's place for a session. Without it: Go's `prefix + lease hex`, which every caller of
   * the session shares, so callers pass the in-process gate first. With it, each call must get a
   * key of its own; a key that turns out to exist under another lease is replaced by a new one.
   */
  shape?: (session: Session) => QueueShape;
  /** The value of our key (Go's locks write ''). */
  value?: string;
}

export interface QueueLockOptions {
  signal?: AbortSignal | undefined;
  /** Never wait: no lock now means undefined (and no key left behind). */
  tryOnly?: boolean;
}

/**
 * Acquires the lock described by `spec`: resolves with the held lock, or (with `tryOnly`) with
 * undefined when it is held elsewhere.
 *
 * @throws AbortError `signal` fired (the key, if any, was deleted)
 * @throws ClosedError the connector closed
 * @throws SessionLostError the session ended while waiting (our place went with it)
 * @throws UnavailableError / TimeoutError etcd unreachable when the session was needed, or (with
 *   `tryOnly`) when asking
 * @throws AuthenticationFailedError / PermissionDeniedError / ... final refusals
 */
export async function acquireQueued(
  spec: QueueLockSpec,
  options: QueueLockOptions = {},
): Promise<HeldLock | undefined> {
  const { ctx } = spec;
  ctx.assertOpen();
  const closing = new AbortController();
  const signal =
    options.signal === undefined ? closing.signal : anySignal([options.signal, closing.signal]);
  const untrack = ctx.track({
    close: async () => {
      closing.abort(new ClosedError());
      await settled;
    },
  });
  const attempt = attemptLock(spec, options.tryOnly === true, signal);
  const settled = attempt.then(
    () => undefined,
    () => undefined,
  );
  try {
    return await attempt;
  } catch (err) {
    if (closing.signal.aborted || ctx.closing) throw new ClosedError();
    if (isAborted(signal)) throw new AbortError({ cause: options.signal?.reason });
    throw err;
  } finally {
    untrack();
  }
}

/**
 * A waiting call of a lock recipe (`lock()`, `rlock()`, `acquire()`): checks the caller's signal
 * and waits for the lock, which it then holds (or the call throws, as {@link acquireQueued}).
 */
export async function waitQueued(
  spec: QueueLockSpec,
  options: { signal?: AbortSignal },
): Promise<HeldLock> {
  const signal = validateSignal(options.signal);
  const lock = await acquireQueued(spec, { signal });
  if (lock === undefined) throw new Error('unreachable: a waiting lock call holds or throws');
  return lock;
}

async function attemptLock(
  spec: QueueLockSpec,
  tryOnly: boolean,
  signal: AbortSignal,
): Promise<HeldLock | undefined> {
  const { ctx } = spec;
  if (signal.aborted) throw new AbortError({ cause: signal.reason });
  const startedAt = monotonicMs();
  const ref =
    spec.session === undefined
      ? await ctx.sessions.acquire(spec.ttl, { signal })
      : ctx.sessions.retain(spec.session);
  if (spec.shape !== undefined) {
    return new Attempt(spec, ref, () => undefined, tryOnly, signal, startedAt).run();
  }
  // Go's key, which every caller of the session shares: through the gate (lock-handoff.ts). A
  // caller that chose its session holds under it: no hand-over to another lease.
  const entry = await passGate(ctx, spec.prefix, ref, {
    tryOnly,
    takesHandoff: spec.session === undefined,
    signal,
  });
  // Another caller of this process has or wants the key: held elsewhere, as far as we go.
  if (entry === undefined) return undefined;
  return new Attempt(spec, entry.ref, entry.leave, tryOnly, signal, startedAt, entry).run();
}

/** One acquisition once the session and the gate are ours. */
class Attempt {
  private readonly ctx: ConnectorContext;
  private readonly session: Session;
  private member: QueueMember | undefined;
  private held: HeldLock | undefined;
  /** A join was sent: the key may exist even if no reply came. */
  private sent = false;

  constructor(
    private readonly spec: QueueLockSpec,
    private readonly ref: SessionRef,
    private readonly leaveGate: () => void,
    private readonly tryOnly: boolean,
    private readonly signal: AbortSignal,
    /** When the call began (performance.now()), for the wait it reports. */
    private readonly startedAt: number,
    /** How a Go-keyed attempt came through the gate. */
    private readonly entry?: GateEntry,
  ) {
    this.ctx = spec.ctx;
    this.session = ref.session;
  }

  async run(): Promise<HeldLock | undefined> {
    try {
      const placed = await this.place();
      if (placed === undefined) {
        await this.giveUp();
        return undefined;
      }
      const { member, revision } = placed;
      // The clock has the last word: an answer that took past the session's deadline (a paused
      // process, a stalled connection) proves nothing about now; etcd may have expired the lease
      // and given the lock to the next waiter meanwhile (chaos seed 6001). Read before the
      // check, `grantedAt` is a time the session was surely alive, even if the process is
      // paused right after it.
      const grantedAt = monotonicMs();
      this.assertGoing();
      const token = member.token;
      if (token === undefined) throw new Error('unreachable: a holder has a token');
      const { kind, path } = this.spec;
      const held = new HeldLock({
        ctx: this.ctx,
        what: this.spec.what,
        kind,
        path,
        member,
        token,
        revision,
        slots: this.spec.slots,
        ref: this.ref,
        leaveGate: this.leaveGate,
        ...(this.entry === undefined
          ? {}
          : { handOff: this.handOffTo(this.entry.gateKey, member) }),
      });
      this.held = held;
      held.begin();
      publish('etcd-connector:lock.acquire', () => ({
        kind,
        path,
        key: held.key,
        token: token.revision,
        revision,
        waitMs: grantedAt - this.startedAt,
        grantedAt: epochMs(grantedAt),
        lease: this.session.leaseIdHex,
        deadlineAt: epochMs(this.session.deadline),
      }));
      return held;
    } catch (err) {
      await this.giveUp();
      throw err;
    }
  }

  /** The release of a held lock that hands the gate to the next local caller, if any. */
  private handOffTo(gateKey: string, member: QueueMember): () => Promise<boolean> {
    return () => handOff(this.ctx, gateKey, member, this.spec.slots);
  }

  /**
   * Joins (or takes the place made for us) and waits; the member that holds and the revision
   * that showed it, or undefined (try-only and held elsewhere).
   */
  private async place(): Promise<{ member: QueueMember; revision: number } | undefined> {
    const backoff = new Backoff(100, 2000);
    let placement = this.entry?.placement;
    for (;;) {
      let joined: JoinResult | undefined;
      if (placement !== undefined) {
        // Ours already, before any check: a call that ends here must delete the key (giveUp).
        this.sent = true;
        joined = this.newMember().adopt(placement, this.spec.slots);
        placement = undefined;
      }
      this.assertGoing();
      const member = this.member ?? this.newMember();
      if (joined === undefined) {
        try {
          this.sent = true;
          joined = await member.join(this.spec.value ?? '', this.spec.slots);
        } catch (err) {
          await this.onFailure(err, backoff);
          continue;
        }
      }
      if (!joined.created && this.clashed(joined)) {
        // Someone else's key under our name (only with keys of our own making): pick another.
        member.close();
        this.member = undefined;
        this.sent = false;
        continue;
      }
      if (joined.holder) return { member, revision: joined.readRevision };
      if (this.tryOnly) return undefined;
      publish('etcd-connector:lock.wait', () => ({
        kind: this.spec.kind,
        path: this.spec.path,
        key: member.key,
      }));
      const outcome = await this.waitTurn(member, backoff);
      if (outcome !== 'gone') return { member, revision: outcome };
      // Our key was deleted under us (by hand, not by the lease): join again at the end.
      member.close();
      this.member = undefined;
      this.sent = false;
    }
  }

  /** Waits for our turn: the revision of the read that showed it, or 'gone' (our key was). */
  private async waitTurn(member: QueueMember, backoff: Backoff): Promise<number | 'gone'> {
    for (;;) {
      this.assertGoing();
      let outcome: WaitOutcome;
      try {
        outcome = await member.waitTurn({ slots: this.spec.slots, signal: this.signal });
      } catch (err) {
        await this.onFailure(err, backoff);
        continue;
      }
      backoff.reset();
      if (outcome.kind === 'holder') return outcome.view.readRevision;
      if (outcome.kind === 'gone') return 'gone';
      // 'lost' or 'aborted'
      this.assertGoing();
      throw lostError(this.session);
    }
  }

  private newMember(): QueueMember {
    const member = new QueueMember(
      this.ctx,
      this.spec.prefix,
      this.session,
      () => {
        this.held?.keyGone();
      },
      (change) => {
        this.held?.onSession(change);
      },
      // Go's key, shared by the callers of this session in turn: so is its watch.
      this.spec.shape?.(this.session) ?? { shareKeyWatch: true },
    );
    this.member = member;
    return member;
  }

  private clashed(joined: JoinResult): boolean {
    return this.spec.shape !== undefined && joined.existingLease !== this.session.leaseId;
  }

  /** Throws unless the call goes on: not aborted, connector open, session alive. */
  private assertGoing(): void {
    if (this.signal.aborted) throw new AbortError({ cause: this.signal.reason });
    if (this.ctx.closing) throw new ClosedError();
    if (!this.session.isAlive()) {
      if (this.session.state === 'closed')
        throw new ClosedError(`session ${this.session.leaseIdHex}`);
      throw lostError(this.session);
    }
  }

  /** Retryable: back off (our place stays ours while the session lives); else throw. */
  private async onFailure(err: unknown, backoff: Backoff): Promise<void> {
    if (isAborted(this.signal)) throw new AbortError({ cause: this.signal.reason });
    const error: EtcdConnectorError = this.ctx.toError(err, this.spec.what);
    // etcd says our lease is gone: so is our place, whatever the keepalive has yet to notice.
    if (error instanceof SessionLostError) {
      throw new SessionLostError(this.session.leaseIdHex, 'etcd says the lease is gone', {
        cause: error,
      });
    }
    if (!error.retryable || this.tryOnly) throw error;
    await delay(backoff.next(), this.signal);
  }

  /**
   * Ends a call without the lock: deletes our key at once (the call settles after that first
   * attempt), retries in the background if etcd could not be reached, and only then lets the
   * gate and the session go.
   */
  private async giveUp(): Promise<void> {
    const member = this.member;
    this.member = undefined;
    let removed = true;
    if (member !== undefined && this.sent && !this.ctx.closing && this.session.isAlive()) {
      removed = await member.remove().then(
        () => true,
        () => false,
      );
    }
    const rest = async (): Promise<void> => {
      try {
        if (!removed && !(await this.removeInBackground(member))) {
          // Our key may still be there: let it go with the lease now, not after the pool's linger.
          this.ctx.sessions.revokeAtLastRelease(this.session);
        }
      } finally {
        member?.close();
        this.leaveGate();
        await this.ref.release();
      }
    };
    if (removed) await rest();
    else void rest();
  }

  /** True once our key is deleted; false when etcd refused for good or the session ended. */
  private async removeInBackground(member: QueueMember | undefined): Promise<boolean> {
    if (member === undefined) return true;
    const backoff = new Backoff(100, 2000);
    while (this.session.isAlive() && !this.ctx.closing) {
      await delay(backoff.next());
      try {
        await member.remove();
        return true;
      } catch (err) {
        if (!this.ctx.toError(err, this.spec.what).retryable) return false;
      }
    }
    return false;
  }
}

function lostError(session: Session): SessionLostError {
  try {
    session.assertAlive();
  } catch (err) {
    if (err instanceof SessionLostError) return err;
  }
  return new SessionLostError(session.leaseIdHex, 'lost');
}

/** Options every lock recipe takes. */
export interface LockRecipeOptions {
  /**
   * TTL in whole seconds of the connector's shared session that holds our keys (default 10):
   * a holder that dies is replaced at most this long after its last keepalive.
   */
  ttl?: number;
  /**
   * Hold under this session (from `conn.session()`) instead; `ttl` is then ignored. Its loss
   * ends every lock held or wanted under it.
   */
  session?: SessionHandle;
}

export const DEFAULT_LOCK_TTL = 10;

/** Checks a recipe's options (before any I/O); the session behind a given handle. */
export function lockSession(
  ctx: ConnectorContext,
  options: LockRecipeOptions | undefined,
): {
  ttl: number;
  session?: Session;
} {
  if (options !== undefined && (typeof options !== 'object' || (options as unknown) === null)) {
    throw new InvalidArgumentError('options', 'must be an object');
  }
  const ttl = validateTtl(options?.ttl ?? DEFAULT_LOCK_TTL, 'options.ttl');
  if (options?.session === undefined) return { ttl };
  const session = sessionOf(options.session);
  if (session === undefined || !ctx.sessions.owns(session)) {
    throw new InvalidArgumentError(
      'options.session',
      'must be a session from conn.session() of this connector',
    );
  }
  return { ttl: session.requestedTtl, session };
}
