/**
 * A session a recipe holds for as long as it lives, taken on first use: the pool's shared session
 * for the recipe's TTL (replaced by a new one when it is lost), or the user's `{ session }` (then
 * the recipe is bound to it: once it is lost, every later use fails with SessionLostError).
 * Queues, counters and transactions keep their receipts (engines/receipts.ts) and the queue its
 * place in line under it.
 */
import { ClosedError, InvalidArgumentError, SessionLostError } from '../errors.js';
import { validateTtl } from '../paths.js';
import type { Session } from '../session/session.js';
import { sessionOf, type SessionHandle } from '../session/session-handle.js';
import type { SessionRef } from '../session/session-pool.js';
import { abortable } from '../transport/timers.js';
import type { ConnectorContext } from './context.js';

/** Lease TTL of a recipe that was given none, in seconds. */
export const DEFAULT_TTL = 10;

/** The session options every recipe of this kind takes. */
export interface SessionOptions {
  /** TTL in whole seconds of the connector's shared session the recipe uses. Default 10. */
  ttl?: number;
  /**
   * Use this session (from `conn.session()`) instead; the recipe is then bound to it: once it is
   * lost, calls that need it fail with SessionLostError.
   */
  session?: SessionHandle;
}

/** Checks `{ ttl, session }` (before any I/O). */
export function checkSessionOptions(options: SessionOptions | undefined): {
  ttl: number;
  bound?: Session;
} {
  const given: unknown = options;
  if (given !== undefined && (typeof given !== 'object' || given === null)) {
    throw new InvalidArgumentError('options', 'must be an object');
  }
  const ttl = options?.ttl === undefined ? DEFAULT_TTL : validateTtl(options.ttl, 'options.ttl');
  if (options?.session === undefined) return { ttl };
  const bound = sessionOf(options.session);
  if (bound === undefined) {
    throw new InvalidArgumentError('options.session', 'must be a session from conn.session()');
  }
  return { ttl: bound.requestedTtl, bound };
}

/** What a HeldSession holds, apart from it, so it can be let go when the recipe is collected. */
interface Holding {
  ref: SessionRef | undefined;
}

/** A recipe dropped without `close()`: its session reference goes when it is collected. */
const collected = new FinalizationRegistry<Holding>((holding) => {
  void holding.ref?.release();
});

export class HeldSession {
  private readonly holding: Holding = { ref: undefined };
  private acquiring: Promise<SessionRef> | undefined;
  private closed = false;
  /** Ends a pending acquisition on close (callers stop waiting on their own signal). */
  private readonly life = new AbortController();

  constructor(
    private readonly ctx: ConnectorContext,
    private readonly ttl: number,
    /** What the recipe is called in errors. */
    private readonly what: string,
    /** The user's session: never replaced. */
    private readonly bound?: Session,
  ) {
    collected.register(this, this.holding, this.holding);
  }

  /** The session in use now, if any (it may have just been lost). */
  get current(): Session | undefined {
    return this.holding.ref?.session;
  }

  /**
   * A session that is alive now: the held one, or a new one from the pool (retrying while etcd
   * cannot be reached, until `signal` fires: then AbortError).
   *
   * @throws SessionLostError / ClosedError the user's session has ended
   * @throws ClosedError after `close()`
   */
  async get(signal: AbortSignal): Promise<Session> {
    for (;;) {
      if (this.closed) throw new ClosedError(this.what);
      const ref = this.holding.ref;
      if (ref?.session.isAlive() === true) return ref.session;
      if (ref !== undefined) {
        this.holding.ref = undefined;
        void ref.release();
      }
      if (this.bound !== undefined) {
        if (!this.bound.isAlive()) {
          throw this.bound.state === 'lost'
            ? new SessionLostError(this.bound.leaseIdHex, `the session given to ${this.what}`)
            : new ClosedError(`session given to ${this.what}`);
        }
        this.holding.ref = this.ctx.sessions.retain(this.bound);
        continue;
      }
      // One acquisition for every concurrent caller, on our own lifetime, not a caller's signal.
      this.acquiring ??= this.ctx.sessions
        .acquire(this.ttl, { retry: true, signal: this.life.signal })
        .then((got) => {
          if (this.closed) {
            void got.release();
            throw new ClosedError(this.what);
          }
          const old = this.holding.ref;
          this.holding.ref = got;
          void old?.release();
          return got;
        })
        .finally(() => (this.acquiring = undefined));
      await abortable(this.acquiring, signal);
    }
  }

  /** Releases the session (the pool revokes it when no one else holds it). Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    collected.unregister(this.holding);
    this.life.abort(new ClosedError(this.what));
    const ref = this.holding.ref;
    this.holding.ref = undefined;
    await ref?.release();
    await this.acquiring?.catch(() => undefined);
  }
}
