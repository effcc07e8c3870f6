/**
 * Leader election on etcd, in Go's `clientv3/concurrency.Election` layout so `etcdctl elect` and
 * Go services contend in the same queue: each candidate keeps the key `path + '/' + leaseId(hex)`
 * with its identity as value under its session's lease; the oldest key (lowest create revision)
 * leads; each waiter watches only its predecessor, so a handover wakes one waiter, not all.
 *
 * States (Curator's vocabulary): session `alive` — leader while our key is the oldest; `suspended`
 * — keepalives unanswered, we *may* no longer be leader: a non-leader event with `suspended: true`
 * is emitted and `isLeader` turns false; if the session recovers and our key is still first, the
 * same token leads again after a re-check; `lost` — a non-leader event carrying SessionLostError,
 * emitted the instant the local deadline (last acknowledged keepalive send + TTL) passes, then a
 * new campaign under a new lease. `stop()` resigns: our key is deleted, the next waiter leads in
 * about one round trip.
 *
 * Ported from etcd's client/v3/concurrency/election.go and key.go (Campaign, Proclaim, Resign,
 * Leader, waitDeletes).
 */
import type { IOperation, IRequestOp, ITxnResponse } from 'etcd3';
import { InvalidArgumentError, InvalidStateError, NotLeaderError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { Lifecycle, validateSignal, type StartOptions } from '../engines/lifecycle.js';
import { firstCreated } from '../engines/ranges.js';
import type { FencingToken } from '../fencing.js';
import { validatePath, validateTtl, validateValue } from '../paths.js';
import type { Session } from '../session/session.js';
import { sessionOf, type SessionHandle } from '../session/session-handle.js';
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
import { Campaign } from './campaign.js';
import { LeaderObserver, type LeaderInfo } from './leader-observer.js';
import { LeaderWork, type LeaderWorkFn } from './leader-work.js';

/** Leadership status. The string values are part of the API. */
export const LEStatus = { Leader: 'leader', Follower: 'follower' } as const;
/** `'leader' | 'follower'`. */
export type LEStatus = (typeof LEStatus)[keyof typeof LEStatus];

/** One state of the elector's status stream. */
export interface LeaderEvent {
  /** `leader` only while our session is surely alive and our key is the oldest. */
  readonly status: LEStatus;
  /**
   * Identity (value) of the current leader when known: our own while leader; the oldest key's
   * value as of the last check while follower; `undefined` while suspended or after a loss.
   */
  readonly leader: string | undefined;
  /**
   * True while the session's keepalive is in trouble: whatever we were, we may no longer be
   * leader, so leader work must pause. A recovery re-checks and then emits `leader` again with
   * the same token.
   */
  readonly suspended: boolean;
  /** The fencing token of our term (status `leader` only). */
  readonly token?: FencingToken;
  /**
   * Status `leader` only: etcd's revision of the read that found our key the oldest (Go's
   * `Election.Header().Revision`): every change up to it, the last leader's resignation among
   * them, had happened then.
   */
  readonly revision?: number;
  /** What went wrong: SessionLostError, NotLeaderError (our key was deleted), UnavailableError. */
  readonly error?: Error;
}

/** Options of `conn.newLeaderElector(path, identity, ttl, options)`. */
export interface LeaderElectorOptions {
  /**
   * Followers also watch the leader key (not only their predecessor) so `leader` stays current;
   * each leader change then costs one read per follower. Default true; turn off with many
   * hundreds of candidates.
   */
  followLeader?: boolean;
  /**
   * Campaign under this session (from `conn.session()`) instead of the connector's shared session
   * for `ttl`. The elector is then bound to that lease: when it is lost, the status stream reports
   * the loss and ends with SessionLostError (it does not campaign under a new lease).
   */
  session?: SessionHandle;
}

/** Options of {@link LeaderElector.run}. */
export interface LeaderRunOptions {
  /** Stops the elector (it resigns); `run()` resolves once the running work has settled. */
  signal?: AbortSignal;
  /**
   * Called when the work throws while still leading; the participant then resigns and queues
   * again. Without it, such an error stops the elector and `run()` rejects with it.
   */
  onError?: (error: unknown, token: FencingToken) => void;
}

/** What `run()` runs while leading: `signal` aborts when the term ends; `token` fences it. */
export type LeaderWorkFunction = LeaderWorkFn;

/** Undelivered states kept for a slow reader; loss reports are kept over plain states. */
const STATUS_CAPACITY = 4;

/** Electors started per connector, by `ttl|path`: two would share a lease and so one key. */
const active = new WeakMap<ConnectorContext, Set<string>>();

/**
 * A candidate in the election on `path`. Create it with `conn.newLeaderElector(path, identity,
 * ttl)`; no I/O happens before `start()`.
 *
 * ```ts
 * for await (const ev of elector.start()) {
 *   if (ev.status === LEStatus.Leader) startWork(ev.token); else pauseWork();
 * }
 * ```
 */
export class LeaderElector implements AsyncDisposable {
  /** The election's key prefix, `path + '/'`. */
  readonly prefix: string;

  private value: string;
  private readonly campaign: Campaign;
  private readonly life: Lifecycle;
  private queue: StreamQueue<LeaderEvent> | undefined;
  private claimed: string | undefined;
  private readonly observers = new Set<LeaderObserver>();
  private readonly slot: string;
  /** `run()`'s work loop, told of every status synchronously. */
  private work: LeaderWork | undefined;

  /** @internal Use `conn.newLeaderElector(...)`; validates everything, does no I/O. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    readonly identity: string,
    readonly ttl: number,
    options: LeaderElectorOptions = {},
  ) {
    validatePath(path, ctx.root);
    validateTtl(ttl);
    this.prefix = path + '/';
    if (typeof identity === 'string' && identity === '') {
      // getLeader() would return '' — falsy, and indistinguishable from "nobody" in most code.
      throw new InvalidArgumentError('identity', 'must be a non-empty string');
    }
    // The longest key is prefix + 16 hex digits of the lease id.
    validateValue(this.prefix + 'f'.repeat(16), identity, ctx.maxRequestBytes, 'identity');
    if (options.followLeader !== undefined && typeof options.followLeader !== 'boolean') {
      throw new InvalidArgumentError('options.followLeader', 'must be a boolean');
    }
    let session: Session | undefined;
    if (options.session !== undefined) {
      session = sessionOf(options.session);
      if (session === undefined || !ctx.sessions.owns(session)) {
        throw new InvalidArgumentError(
          'options.session',
          'must be a session from conn.session() of this connector',
        );
      }
    }
    this.slot = `${session?.requestedTtl ?? ttl}|${path}`;
    this.value = identity;
    this.life = new Lifecycle(ctx, 'leader elector', () => this.teardown());
    this.campaign = new Campaign({
      ctx,
      path,
      ttl,
      followLeader: options.followLeader ?? true,
      ...(session === undefined ? {} : { session }),
      value: () => this.value,
      emit: (event) => {
        this.work?.onEvent(event);
        this.queue?.push(event);
      },
      fail: (error) => {
        this.queue?.fail(error);
        void this.stop();
      },
    });
  }

  /**
   * True only while this candidate leads *now*: its status is leader, the session is not
   * suspended and its deadline has not passed (checked on the clock, synchronously).
   */
  get isLeader(): boolean {
    return this.campaign.isLeader;
  }

  /** The token of the current term while leader, else undefined. */
  get fencingToken(): FencingToken | undefined {
    return this.isLeader ? this.campaign.token : undefined;
  }

  /**
   * Campaigns and returns the status stream (latest state; a slow reader skips intermediate
   * states but never a loss report). Leaving the loop (`break`) stops the elector and resigns, as
   * do `stop()`, `signal` and `conn.close()`. A final error (authentication, TLS, permission
   * denied, a lost session given as `{ session }`) ends the stream with that error.
   *
   * @throws InvalidStateError called twice, or another started elector of this connector with the
   *   same TTL is on the same path (they would share one key)
   * @throws ClosedError after `stop()` or the connector's `close()`
   */
  start(options: StartOptions = {}): RecipeStream<LeaderEvent> {
    this.life.assertOpen();
    if (this.life.isStarted) throw new InvalidStateError('start() was already called');
    let set = active.get(this.ctx);
    if (set === undefined) active.set(this.ctx, (set = new Set()));
    if (set.has(this.slot)) {
      throw new InvalidStateError(
        `another elector of this connector already runs on ${this.path} with TTL ${this.ttl}`,
      );
    }
    this.life.begin(options);
    set.add(this.slot);
    this.claimed = this.slot;
    const queue = new StreamQueue<LeaderEvent>({
      capacity: STATUS_CAPACITY,
      overflow: 'coalesce',
      keep: (e) => e.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.queue = queue;
    if (!this.life.isStopping) this.campaign.start(this.life.signal);
    return queue;
  }

  /**
   * Campaigns and runs `fn` whenever this participant leads (Curator's LeaderSelector): once per
   * term, with an AbortSignal that aborts the moment the term ends — on suspension (keepalives
   * unanswered), on loss (no later than the session's local deadline), when our key is deleted
   * or a fence is refused, and on stop — and with the term's fencing token. When fn returns (or
   * throws, with `onError`) while still leading, the participant resigns and queues again at the
   * end, so others get their turn; a suspension that recovers runs fn again for the same term.
   * fn never runs twice at once. Use it instead of `start()`.
   *
   * The signal cannot recall work already in flight when it fires (a request already sent, a
   * write already on its way): a deposed leader's late side effects must be refused where they
   * land. Pass `token` along — `elector.fencedTxn()` or `token.compare(txn)` inside etcd, the
   * revision as a monotonically increasing epoch elsewhere.
   *
   * ```ts
   * await elector.run(async (signal, token) => {
   *   while (!signal.aborted) await doBatch({ signal, fence: token.revision });
   * }, { signal: shutdown.signal });
   * ```
   *
   * Resolves when the elector was stopped (`signal`, `stop()`, `conn.close()`) and fn has
   * settled; stopping resigns at once, without waiting for fn. Rejects with a final error of the
   * election (authentication, permission, a lost `{ session }`), or with fn's error when no
   * `onError` was given (the elector stops and resigns first). What fn returns or throws after its
   * signal fired is ignored: that term was already over.
   *
   * @throws InvalidArgumentError fn is not a function, bad options
   * @throws InvalidStateError start() or run() was called before
   * @throws ClosedError after `stop()` or the connector's close
   */
  async run(fn: LeaderWorkFunction, options: LeaderRunOptions = {}): Promise<void> {
    if (typeof fn !== 'function') throw new InvalidArgumentError('fn', 'must be a function');
    const signal = validateSignal(options.signal);
    const onError = options.onError;
    if (onError !== undefined && typeof onError !== 'function') {
      throw new InvalidArgumentError('options.onError', 'must be a function');
    }
    let workFailure: { error: unknown } | undefined;
    const work = new LeaderWork({
      fn,
      onError,
      isLeader: () => this.isLeader,
      requeue: (token) => {
        this.campaign.requeue(token);
      },
      fail: (error) => {
        workFailure = { error };
        void this.stop();
      },
    });
    const stream = this.start(signal === undefined ? {} : { signal });
    this.work = work;
    const stopping = this.life.signal;
    const onStop = (): void => void work.end();
    stopping.addEventListener('abort', onStop, { once: true });
    let failure: Error | undefined;
    try {
      // The statuses reach the work synchronously; the stream is read only to see it end.
      for await (const _event of stream) {
        // nothing: see above
      }
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
    } finally {
      stopping.removeEventListener('abort', onStop);
      await this.stop();
      await work.end();
      this.work = undefined;
    }
    if (workFailure !== undefined) {
      const { error } = workFailure;
      throw error instanceof Error ? error : new Error(String(error));
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * Resigns (deletes our key if we have one, so the next waiter leads at once), ends the status
   * stream and releases the lease to the connector (revoked unless other recipes share it).
   * Resolves when nothing of this elector is left. Idempotent; never rejects.
   */
  stop(): Promise<void> {
    return this.life.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /**
   * The identity (value) of the current leader, or undefined when nobody campaigns. Works without
   * `start()`.
   *
   * @throws ClosedError after `stop()`; UnavailableError / TimeoutError when etcd is unreachable
   */
  async getLeader(): Promise<string | undefined> {
    this.life.assertOpen();
    try {
      const res = await this.ctx.client.kv.range(firstCreated(this.prefix), this.ctx.callOptions());
      return res.kvs[0]?.value.toString();
    } catch (err) {
      throw this.ctx.toError(err, `get leader of ${this.path}`);
    }
  }

  /**
   * Follows the election without campaigning: the leader's identity, key and token revision on
   * every change (Go's `Election.Observe`). Independent of `start()`; ends on `stop()`, on
   * `signal` or when the loop is left.
   */
  observe(options: StartOptions = {}): RecipeStream<LeaderInfo> {
    this.life.assertOpen();
    const observer = new LeaderObserver(this.ctx, this.path);
    this.observers.add(observer);
    const stream = observer.start(options);
    void stream.closed.then(() => this.observers.delete(observer));
    return stream;
  }

  /**
   * Announces a new value on our leader key without a new election (Go's `Proclaim`); it becomes
   * what `getLeader()` and the followers report.
   *
   * @throws NotLeaderError not leader now (checked locally, then by etcd against the token)
   */
  async proclaim(value: string): Promise<void> {
    this.life.assertOpen();
    validateValue(this.prefix + 'f'.repeat(16), value, this.ctx.maxRequestBytes, 'value');
    const { session, token } = this.leaderState();
    const put: IRequestOp = {
      request_put: {
        key: Buffer.from(token.key),
        value: Buffer.from(value),
        lease: session.leaseId,
      },
    };
    let res: ITxnResponse;
    try {
      res = await this.ctx.client.kv.txn(
        { compare: [token.toCompare()], success: [put] },
        this.ctx.callOptions(),
      );
    } catch (err) {
      throw this.ctx.toError(err, `proclaim ${this.path}`);
    }
    if (!res.succeeded) throw this.campaign.fenceFailed(token);
    this.value = value;
    if (this.campaign.token === token) this.campaign.reannounce();
  }

  /**
   * A fenced write: runs `ops` in one transaction only while our leader key still has our
   * token's create revision, so a deposed leader's write cannot land.
   *
   * ```ts
   * await elector.fencedTxn([conn.client.put('/ns/state').value('x')]);
   * ```
   *
   * @throws NotLeaderError not leader now (nothing sent), or etcd refused the token (nothing
   *   written; the elector steps down and re-campaigns)
   */
  async fencedTxn(ops: readonly (IOperation | IRequestOp)[]): Promise<ITxnResponse> {
    this.life.assertOpen();
    const { token } = this.leaderState();
    let res: ITxnResponse;
    try {
      res = await token
        .txn(this.ctx.client)
        .then(...ops)
        .options(this.ctx.callOptions())
        .commit();
    } catch (err) {
      throw this.ctx.toError(err, 'fenced transaction');
    }
    if (!res.succeeded) throw this.campaign.fenceFailed(token);
    return res;
  }

  private leaderState(): { session: Session; token: FencingToken } {
    const { session, token } = this.campaign;
    if (!this.isLeader || session === undefined || token === undefined) {
      throw new NotLeaderError(`not the leader of ${this.path}`);
    }
    return { session, token };
  }

  private async teardown(): Promise<void> {
    await this.campaign.stopped();
    this.queue?.end();
    await Promise.all([...this.observers].map((o) => o.stop()));
    if (this.claimed !== undefined) active.get(this.ctx)?.delete(this.claimed);
  }
}
