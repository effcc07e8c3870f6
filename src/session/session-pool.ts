/**
 * One live Session per TTL for a connector, handed out as references: recipes with the same TTL
 * share one lease and one keepalive stream. Each reference is released once (a second release is
 * a no-op), and only the release of the last reference revokes the lease — so no holder can
 * revoke a lease others still use. A lost session is forgotten at once, so the next `acquire`
 * grants a new lease.
 *
 * A session only recipes used is kept {@link LINGER_MS} after its last release before it is
 * revoked, for the next acquire of its TTL: a service that takes a lock now and then (and holds
 * no other recipe of that TTL) would otherwise grant and revoke a lease around every lock, three
 * times the cost of the lock itself. Its recipes deleted their keys; nothing lives under it. A
 * session a user held a handle on (`conn.session()`) is revoked at once, as the user's own
 * leased keys are expected to go with it.
 *
 * A TTL may also have a **spare** session, never handed out by `acquire()`: a mutex release that
 * queues the next caller of the process in its own transaction needs that caller's key under
 * another lease (Go's key is `path/<lease hex>`, and a transaction may not delete and create one
 * key; engines/lock-handoff.ts). It is granted the first time a release asks for it, and kept
 * like any session only recipes used.
 */
import type { Etcd3 } from 'etcd3';
import { AbortError, ClosedError, InvalidArgumentError } from '../errors.js';
import type { ConnectionMonitor } from '../transport/connection-state.js';
import { anySignal, Backoff, delay } from '../transport/timers.js';
import { Session, type SessionOptions } from './session.js';

export interface AcquireOptions {
  signal?: AbortSignal;
  /** Keep trying while etcd is unreachable (until `signal` fires or the pool closes). */
  retry?: boolean;
  /** Told about every failed attempt while retrying (the recipe reports it on its stream). */
  onError?: (err: unknown) => void;
}

/** One holder's reference to a shared session. */
export class SessionRef {
  private released = false;

  constructor(
    readonly session: Session,
    private readonly pool: SessionPool,
  ) {}

  /** True until `release()`. */
  get held(): boolean {
    return !this.released;
  }

  /** Gives the reference back; the last one revokes the lease. Idempotent, never rejects. */
  release(): Promise<void> {
    if (this.released) return Promise.resolve();
    this.released = true;
    return this.pool.unref(this);
  }
}

/** Counters of this process, for tests. */
export const poolStats = {
  /** Spare sessions granted and ready for a hand-over (counted once the pool holds them). */
  sparesReady: 0,
};

/** How long a session only recipes used outlives its last release (see the file's comment). */
export const LINGER_MS = 5000;

export class SessionPool {
  private readonly live = new Map<number, Session>();
  /** Sessions kept after their last release, with the timer that revokes them. */
  private readonly lingering = new Map<Session, NodeJS.Timeout>();
  /**
   * Sessions revoked at their last release, never kept: a user held a handle on them, or a
   * recipe could not delete its key under them.
   */
  private readonly revokeAtOnce = new WeakSet<Session>();
  private readonly granting = new Map<number, Promise<Session>>();
  /** The spare session per TTL (see the file's comment), and spares being granted. */
  private readonly spares = new Map<number, Session>();
  private readonly grantingSpare = new Map<number, Promise<void>>();
  private readonly refs = new Map<Session, Set<SessionRef>>();
  /** Every session this pool granted (to refuse another connector's). */
  private readonly granted = new WeakSet<Session>();
  private readonly closing = new AbortController();
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly options: SessionOptions,
    private readonly connection?: ConnectionMonitor,
  ) {}

  /** A reference to a live session of `ttl` seconds (granted if there is none). */
  async acquire(ttl: number, opts: AcquireOptions = {}): Promise<SessionRef> {
    let backoff: Backoff | undefined;
    for (;;) {
      if (this.closed) throw new ClosedError();
      // Typed like every other abort of ours, not the signal's raw reason.
      if (opts.signal?.aborted === true) throw new AbortError({ cause: opts.signal.reason });
      try {
        return this.ref(await this.liveSession(ttl));
      } catch (err) {
        // (closing.signal, not `closed`: the compiler would assume `closed` is still false.)
        if (this.closing.signal.aborted) throw new ClosedError();
        if (opts.retry !== true) throw err;
        if (err instanceof Error && 'retryable' in err && err.retryable === false) throw err;
        opts.onError?.(err);
        // Only a retry waits on both signals (most acquires never retry: no combined signal).
        backoff ??= new Backoff(100, 2000);
        const signal =
          opts.signal === undefined
            ? this.closing.signal
            : anySignal([opts.signal, this.closing.signal]);
        await delay(backoff.next(), signal).catch((e: unknown) => {
          throw this.closed ? new ClosedError() : e;
        });
      }
    }
  }

  /**
   * Another reference to a session this pool handed out (a recipe given a user's session).
   *
   * @throws InvalidArgumentError not a session of this pool
   * @throws SessionLostError / ClosedError the session has ended
   */
  retain(session: Session): SessionRef {
    if (this.closed) throw new ClosedError();
    const refs = this.refs.get(session);
    if (refs === undefined) {
      if (session.state === 'lost' || session.state === 'closed') session.assertAlive();
      throw new InvalidArgumentError('options.session', 'not a session of this connector');
    }
    session.assertAlive();
    return this.ref(session);
  }

  /**
   * A reference to a live session of `session`'s TTL other than `session` (the pool's session or
   * the spare), for a mutex's hand-over; undefined when none is ready (a spare is then granted in
   * the background, for the next time). Never waits.
   */
  otherThan(session: Session): SessionRef | undefined {
    if (this.closed) return undefined;
    const ttl = session.requestedTtl;
    for (const s of [this.live.get(ttl), this.spares.get(ttl)]) {
      if (s !== undefined && s !== session && s.state === 'alive' && s.isAlive())
        return this.ref(s);
    }
    this.prepareSpare(ttl);
    return undefined;
  }

  /**
   * Grants the spare session of `ttl` in the background unless there is one (a caller of a mutex
   * waits behind another of this process: its turn may come by a hand-over). Never waits.
   */
  prepareSpare(ttl: number): void {
    if (this.closed || this.spares.has(ttl) || this.grantingSpare.has(ttl)) return;
    const granting = this.grantSpare(ttl).finally(() => this.grantingSpare.delete(ttl));
    this.grantingSpare.set(ttl, granting);
  }

  /** True for a session this pool granted. */
  owns(session: Session): boolean {
    return this.granted.has(session);
  }

  /** How many holders a session has (acquired and not yet released). */
  holders(session: Session): number {
    return this.refs.get(session)?.size ?? 0;
  }

  /**
   * Its last release revokes `session` at once instead of keeping it: a user holds a handle on
   * it (their own leased keys go with it), or a recipe could not delete its key under it.
   */
  revokeAtLastRelease(session: Session): void {
    this.revokeAtOnce.add(session);
  }

  /** @internal Called by SessionRef.release. */
  async unref(ref: SessionRef): Promise<void> {
    const session = ref.session;
    const refs = this.refs.get(session);
    if (!refs?.delete(ref)) return;
    if (refs.size > 0) return;
    this.refs.delete(session);
    if (!this.revokeAtOnce.has(session) && session.isAlive() && this.isLive(session)) {
      const timer = setTimeout(() => {
        this.lingering.delete(session);
        this.forget(session);
        void session.close();
      }, LINGER_MS);
      timer.unref();
      this.lingering.set(session, timer);
      return;
    }
    this.forget(session);
    await session.close();
  }

  /** The pool's session or spare for its TTL (not replaced after a loss). */
  private isLive(session: Session): boolean {
    const ttl = session.requestedTtl;
    return this.live.get(ttl) === session || this.spares.get(ttl) === session;
  }

  private forget(session: Session): void {
    const ttl = session.requestedTtl;
    if (this.live.get(ttl) === session) this.live.delete(ttl);
    if (this.spares.get(ttl) === session) this.spares.delete(ttl);
  }

  /** Revokes every session. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort(new ClosedError());
    for (const timer of this.lingering.values()) clearTimeout(timer);
    this.lingering.clear();
    await Promise.allSettled([...this.granting.values(), ...this.grantingSpare.values()]);
    const all = new Set([...this.live.values(), ...this.spares.values(), ...this.refs.keys()]);
    this.live.clear();
    this.spares.clear();
    this.refs.clear();
    await Promise.all([...all].map((s) => s.close()));
  }

  private ref(session: Session): SessionRef {
    clearTimeout(this.lingering.get(session));
    this.lingering.delete(session);
    let refs = this.refs.get(session);
    if (refs === undefined) this.refs.set(session, (refs = new Set()));
    const ref = new SessionRef(session, this);
    refs.add(ref);
    return ref;
  }

  private async liveSession(ttl: number): Promise<Session> {
    const current = this.live.get(ttl);
    if (current?.isAlive()) return current;
    const inFlight = this.granting.get(ttl);
    if (inFlight !== undefined) return inFlight;
    const granting = this.grant(ttl, this.live);
    this.granting.set(ttl, granting);
    try {
      return await granting;
    } finally {
      this.granting.delete(ttl);
    }
  }

  /** A spare for `ttl`, kept (no holder yet) as a released session until a hand-over uses it. */
  private async grantSpare(ttl: number): Promise<void> {
    // Failed: the next hand-over asks again.
    const session = await this.grant(ttl, this.spares).catch(() => undefined);
    if (session === undefined) return;
    poolStats.sparesReady++;
    await this.ref(session).release();
  }

  /** A new session of `ttl`, kept in `into` (the live or the spare ones) and watched. */
  private async grant(ttl: number, into: Map<number, Session>): Promise<Session> {
    const session = await Session.grant(this.client, ttl, this.options);
    if (this.closed) {
      await session.close();
      throw new ClosedError();
    }
    into.set(ttl, session);
    this.granted.add(session);
    this.watch(session);
    return session;
  }

  /** Forgets a session that ended, and tells the connection monitor what its keepalive sees. */
  private watch(session: Session): void {
    const monitor = this.connection;
    monitor?.set(session, true);
    session.onChange((c) => {
      if (c.state === 'lost' || c.state === 'closed') this.forget(session);
      if (monitor === undefined) return;
      if (c.state === 'alive') monitor.set(session, true);
      else if (c.state === 'suspended') monitor.set(session, false);
      else if (c.state === 'lost') monitor.lost(session);
      else monitor.remove(session);
    });
  }
}
