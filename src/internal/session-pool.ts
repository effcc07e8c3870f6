/**
 * One live Session per TTL for a connector, handed out by reference count: recipes with the same
 * TTL share one lease and one keepalive stream. A lost session is forgotten at once, so the next
 * `acquire` grants a new lease; the last `release` of a session revokes it.
 */
import type { Etcd3 } from 'etcd3';
import { AbortError, ClosedError } from '../errors.js';
import { Session, type SessionOptions } from '../session.js';
import { Backoff, delay } from './timers.js';

export interface AcquireOptions {
  signal?: AbortSignal;
  /** Keep trying while etcd is unreachable (until `signal` fires or the pool closes). */
  retry?: boolean;
}

export class SessionPool {
  private readonly live = new Map<number, Session>();
  private readonly granting = new Map<number, Promise<Session>>();
  private readonly refs = new Map<Session, number>();
  private readonly closing = new AbortController();
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly options: SessionOptions,
  ) {}

  /** A live session of `ttl` seconds; the caller must `release` it once. */
  async acquire(ttl: number, opts: AcquireOptions = {}): Promise<Session> {
    const backoff = new Backoff(100, 2000);
    const signal =
      opts.signal === undefined
        ? this.closing.signal
        : AbortSignal.any([opts.signal, this.closing.signal]);
    for (;;) {
      if (this.closed) throw new ClosedError();
      // Typed like every other abort of ours, not the signal's raw reason.
      if (signal.aborted) throw new AbortError({ cause: signal.reason });
      try {
        const session = await this.liveSession(ttl);
        this.refs.set(session, (this.refs.get(session) ?? 0) + 1);
        return session;
      } catch (err) {
        // (closing.signal, not `closed`: the compiler would assume `closed` is still false.)
        if (this.closing.signal.aborted) throw new ClosedError();
        if (opts.retry !== true) throw err;
        await delay(backoff.next(), signal).catch((e: unknown) => {
          throw this.closed ? new ClosedError() : e;
        });
      }
    }
  }

  /** How many holders a session has (acquired and not yet released). */
  holders(session: Session): number {
    return this.refs.get(session) ?? 0;
  }

  /** Gives a session back; the last holder's release revokes its lease. */
  async release(session: Session): Promise<void> {
    const n = (this.refs.get(session) ?? 1) - 1;
    if (n > 0) {
      this.refs.set(session, n);
      return;
    }
    this.refs.delete(session);
    for (const [ttl, s] of this.live) if (s === session) this.live.delete(ttl);
    await session.close();
  }

  /** Revokes every session. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort(new ClosedError());
    await Promise.allSettled([...this.granting.values()]);
    const all = new Set([...this.live.values(), ...this.refs.keys()]);
    this.live.clear();
    this.refs.clear();
    await Promise.all([...all].map((s) => s.close()));
  }

  private async liveSession(ttl: number): Promise<Session> {
    const current = this.live.get(ttl);
    if (current?.isAlive()) return current;
    const inFlight = this.granting.get(ttl);
    if (inFlight !== undefined) return inFlight;
    const granting = Session.grant(this.client, ttl, this.options).then(async (session) => {
      if (this.closed) {
        await session.close();
        throw new ClosedError();
      }
      this.live.set(ttl, session);
      session.onChange((c) => {
        if ((c.state === 'lost' || c.state === 'closed') && this.live.get(ttl) === session) {
          this.live.delete(ttl);
        }
      });
      return session;
    });
    this.granting.set(ttl, granting);
    try {
      return await granting;
    } finally {
      this.granting.delete(ttl);
    }
  }
}
