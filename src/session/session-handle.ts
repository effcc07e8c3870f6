/**
 * The public face of a shared session: one holder's handle. Closing it releases this holder only;
 * the lease is revoked when its last holder (handle or recipe) lets go, so no code path lets one
 * co-holder revoke a lease others still use.
 */
import { ClosedError } from '../errors.js';
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
import type { SessionState } from './session.js';
import type { Session } from './session.js';
import type { SessionRef } from './session-pool.js';

/** Keeps the last states for a slow reader; `lost` and `closed` are never dropped. */
const STATUS_CAPACITY = 4;

const sessions = new WeakMap<SessionHandle, Session>();

/** @internal The session behind a handle (for recipes given `{ session }`). */
export function sessionOf(handle: unknown): Session | undefined {
  return typeof handle === 'object' && handle !== null
    ? sessions.get(handle as SessionHandle)
    : undefined;
}

/**
 * One holder's handle on the connector's shared session (lease + keepalive) for a TTL, from
 * `await conn.session({ ttl })`. Pass it to recipes as `{ session }` to tie them to this lease.
 *
 * ```ts
 * await using s = await conn.session({ ttl: 10 });
 * await conn.client.put(key).value('v').lease(s.leaseIdDecimal).exec(); // etcd3 takes decimal
 * ```
 */
export class SessionHandle implements AsyncDisposable {
  /** The lease id in hex, as in Go's key layouts (`path/<leaseId>`) and `etcdctl lease list`. */
  readonly leaseId: string;
  /** The lease id as etcd's decimal string, for etcd3's builders (`.lease(s.leaseIdDecimal)`). */
  readonly leaseIdDecimal: string;
  /** The TTL etcd granted, in seconds. */
  readonly ttl: number;
  /**
   * Aborted the moment the lease is lost (reason: the SessionLostError) or this handle is closed
   * (reason: a ClosedError).
   */
  readonly signal: AbortSignal;

  private readonly controller = new AbortController();
  private readonly session: Session;
  private closing: Promise<void> | undefined;
  private readonly unlisten: () => void;

  /** @internal Use `conn.session({ ttl })`. */
  constructor(private readonly ref: SessionRef) {
    const session = ref.session;
    this.session = session;
    this.leaseId = session.leaseIdHex;
    this.leaseIdDecimal = session.leaseId;
    this.ttl = session.ttl;
    this.signal = this.controller.signal;
    sessions.set(this, session);
    if (session.signal.aborted) {
      this.controller.abort(session.signal.reason);
      this.unlisten = () => undefined;
    } else {
      const onEnd = (): void => {
        this.controller.abort(session.signal.reason);
      };
      session.signal.addEventListener('abort', onEnd, { once: true });
      this.unlisten = () => {
        session.signal.removeEventListener('abort', onEnd);
      };
    }
  }

  /**
   * `alive` (keepalives acknowledged), `suspended` (keepalives unanswered: the lease may expire
   * soon), `lost` (its deadline passed or etcd said it is gone; final) or `closed` (this handle
   * was closed, or the lease revoked).
   */
  get state(): SessionState {
    if (this.closing !== undefined && this.session.state !== 'lost') return 'closed';
    return this.session.state;
  }

  /**
   * Until this instant (`performance.now()` ms) the lease is surely alive: send time of the last
   * acknowledged keepalive + TTL.
   */
  get deadline(): number {
    return this.session.deadline;
  }

  /** True while the lease is surely alive now and this handle is open (checks the clock). */
  isAlive(): boolean {
    return this.closing === undefined && this.session.isAlive();
  }

  /**
   * The session's states: the current one first, then each change. Ends after `lost` or
   * `closed`, or when the handle is closed.
   */
  status(): RecipeStream<SessionState> {
    const queue = new StreamQueue<SessionState>({
      capacity: STATUS_CAPACITY,
      overflow: 'coalesce',
      keep: (s) => s === 'lost' || s === 'closed',
      onReturn: () => {
        off();
      },
    });
    const state = this.state;
    queue.push(state);
    if (state === 'lost' || state === 'closed') {
      queue.end();
      return queue;
    }
    const off = this.session.onChange((c) => {
      queue.push(c.state);
      if (c.state === 'lost' || c.state === 'closed') {
        off();
        queue.end();
      }
    });
    this.controller.signal.addEventListener(
      'abort',
      () => {
        if (this.closing !== undefined) {
          off();
          queue.push('closed');
          queue.end();
        }
      },
      { once: true },
    );
    return queue;
  }

  /**
   * Releases this handle. The lease is revoked only when no other handle or recipe holds it.
   * Idempotent; never rejects.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.unlisten();
      if (!this.controller.signal.aborted) this.controller.abort(new ClosedError('session handle'));
      await this.ref.release().catch(() => undefined);
    })();
    return this.closing;
  }

  /** Same as `close()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
