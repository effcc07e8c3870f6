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
import { ClosedError, InvalidArgumentError, InvalidStateError, NotLeaderError } from '../errors.js';
import { AsyncQueue } from '../internal/async-queue.js';
import { Campaign } from '../internal/campaign.js';
import type { ConnectorContext } from '../internal/context.js';
import { toConnectorError } from '../internal/etcd-rpc.js';
import { firstCreated } from '../internal/wait-delete.js';
import { validatePath, validateTtl, validateValue } from '../paths.js';
import type { Session } from '../session.js';
import type { FencingToken } from './fencing-token.js';
import { LeaderObserver, type LeaderInfo } from './leader-observer.js';

export { fencingToken, type FencingToken } from './fencing-token.js';

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
  /** What went wrong: SessionLostError, NotLeaderError (our key was deleted), UnavailableError. */
  readonly error?: Error;
}

/** Options of {@link LeaderElector}. */
export interface LeaderElectorOptions {
  /**
   * Followers also watch the leader key (not only their predecessor) so `leader` stays current;
   * each leader change then costs one read per follower. Default true; turn off with many
   * hundreds of candidates.
   */
  followLeader?: boolean;
}

/** Undelivered states kept for a slow reader; loss reports are kept over plain states. */
const STATUS_CAPACITY = 4;

/** Electors started per connector, by `ttl|path`: two would share a lease and so one key. */
const active = new WeakMap<ConnectorContext, Set<string>>();

/**
 * A candidate in the election on `path`. Create it with `conn.newLeaderElector(path, identity,
 * ttl)`; the constructor does no I/O.
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
  private queue: AsyncQueue<LeaderEvent> | undefined;
  private stopping: Promise<void> | undefined;
  private untrack: (() => void) | undefined;
  private claimed: string | undefined;
  private readonly observers = new Set<LeaderObserver>();

  /** Use `conn.newLeaderElector(...)`; validates everything, does no I/O. */
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
    // The longest key is prefix + 16 hex digits of the lease id.
    validateValue(this.prefix + 'f'.repeat(16), identity, ctx.maxRequestBytes, 'identity');
    if (options.followLeader !== undefined && typeof options.followLeader !== 'boolean') {
      throw new InvalidArgumentError('options.followLeader', 'must be a boolean');
    }
    this.value = identity;
    this.campaign = new Campaign({
      ctx,
      path,
      ttl,
      followLeader: options.followLeader ?? true,
      value: () => this.value,
      emit: (event) => this.queue?.push(event),
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
   * states but never a loss report). Leaving the loop (`break`) stops the elector and resigns.
   *
   * @throws InvalidStateError called twice, or another started elector of this connector with the
   *   same TTL is on the same path (they would share one key)
   * @throws ClosedError after `stop()` or the connector's `close()`
   */
  start(): AsyncIterable<LeaderEvent> {
    this.assertOpen();
    if (this.queue !== undefined) throw new InvalidStateError('start() was already called');
    const slot = `${this.ttl}|${this.path}`;
    let set = active.get(this.ctx);
    if (set === undefined) active.set(this.ctx, (set = new Set()));
    if (set.has(slot)) {
      throw new InvalidStateError(
        `another elector of this connector already runs on ${this.path} with TTL ${this.ttl}`,
      );
    }
    set.add(slot);
    this.claimed = slot;
    this.queue = new AsyncQueue<LeaderEvent>({
      capacity: STATUS_CAPACITY,
      overflow: 'coalesce',
      keep: (e) => e.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.untrack = this.ctx.track({ close: () => this.stop() });
    this.campaign.start();
    return this.queue;
  }

  /**
   * Resigns (deletes our key if we have one, so the next waiter leads at once), ends the status
   * stream and releases the lease to the connector (revoked unless other recipes share it).
   * Resolves when nothing of this elector is left. Idempotent; never rejects.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
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
    this.assertOpen();
    try {
      const res = await this.ctx.client.kv.range(firstCreated(this.prefix), this.ctx.callOptions());
      return res.kvs[0]?.value.toString();
    } catch (err) {
      throw toConnectorError(err, `get leader of ${this.path}`);
    }
  }

  /**
   * Follows the election without campaigning: the leader's identity, key and token revision on
   * every change (Go's `Election.Observe`). Independent of `start()`; ends on `stop()`, on
   * `signal` or when the loop is left.
   */
  observe(options: { signal?: AbortSignal } = {}): AsyncIterable<LeaderInfo> {
    this.assertOpen();
    const observer = new LeaderObserver(this.ctx, this.path);
    this.observers.add(observer);
    const stream = observer.start(options);
    void observer.done.then(() => this.observers.delete(observer));
    return stream;
  }

  /**
   * Announces a new value on our leader key without a new election (Go's `Proclaim`); it becomes
   * what `getLeader()` and the followers report.
   *
   * @throws NotLeaderError not leader now (checked locally, then by etcd against the token)
   */
  async proclaim(value: string): Promise<void> {
    this.assertOpen();
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
      throw toConnectorError(err, `proclaim ${this.path}`);
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
    this.assertOpen();
    const { token } = this.leaderState();
    let res: ITxnResponse;
    try {
      res = await token
        .txn(this.ctx.client)
        .then(...ops)
        .options(this.ctx.callOptions())
        .commit();
    } catch (err) {
      throw toConnectorError(err, 'fenced transaction');
    }
    if (!res.succeeded) throw this.campaign.fenceFailed(token);
    return res;
  }

  private assertOpen(): void {
    this.ctx.assertOpen();
    if (this.stopping !== undefined) throw new ClosedError('leader elector');
  }

  private leaderState(): { session: Session; token: FencingToken } {
    const { session, token } = this.campaign;
    if (!this.isLeader || session === undefined || token === undefined) {
      throw new NotLeaderError(`not the leader of ${this.path}`);
    }
    return { session, token };
  }

  private async doStop(): Promise<void> {
    await this.campaign.stop();
    this.queue?.end();
    await Promise.all([...this.observers].map((o) => o.stop()));
    if (this.claimed !== undefined) active.get(this.ctx)?.delete(this.claimed);
    this.untrack?.();
  }
}
