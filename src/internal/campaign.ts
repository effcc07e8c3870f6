/**
 * The engine of LeaderElector: Go's `Election.Campaign` / `waitDeletes` / `Resign` as one loop over
 * sessions. Per session: create our key (or find it), then repeat "reset the latch, read (our key,
 * the leader, our predecessor) in one read-only transaction, lead or watch the predecessor from
 * just after the read, sleep until a watch or the session wakes us". Every wake-up re-checks, so a
 * missed or spurious wake-up costs one read, never a wrong status.
 *
 * Leadership flips to false synchronously on the session's `suspended`/`lost` (the latter fires on
 * the session's own deadline timer), on our key's deletion, and on a refused fence.
 */
import {
  CompareResult,
  CompareTarget,
  type IRequestOp,
  type ITxnRequest,
  type ITxnResponse,
} from 'etcd3';
import { ClosedError, NotLeaderError } from '../errors.js';
import { fencingToken as newToken, type FencingToken } from '../recipes/fencing-token.js';
import type { Session, SessionStateChange } from '../session.js';
import type { ConnectorContext } from './context.js';
import { toConnectorError } from './etcd-rpc.js';
import { Backoff, delay, isAborted } from './timers.js';
import { firstCreated, kvAt, Latch, lastCreatedUpTo, rangeOp } from './wait-delete.js';
import { openWatch, type WatchEvent, type WatchStream } from './watch-stream.js';

/** A status of the campaign (LeaderElector's LeaderEvent). */
export interface CampaignEvent {
  readonly status: 'leader' | 'follower';
  readonly leader: string | undefined;
  readonly suspended: boolean;
  readonly token?: FencingToken;
  readonly error?: Error;
}

export interface CampaignOptions {
  ctx: ConnectorContext;
  path: string;
  ttl: number;
  followLeader: boolean;
  /** The value to campaign with (the identity, or the last proclaimed value). */
  value(): string;
  emit(event: CampaignEvent): void;
}

export class Campaign {
  private readonly ctx: ConnectorContext;
  private readonly prefix: string;
  private readonly controller = new AbortController();
  private readonly wake = new Latch();
  private running: Promise<void> = Promise.resolve();
  private sessionValue: Session | undefined;
  private tokenValue: FencingToken | undefined;
  private leading = false;
  private keyGone = false;
  /** Our key name once a campaign was sent on the current session (it may exist in etcd). */
  private campaigned: string | undefined;
  private last: CampaignEvent | undefined;

  constructor(private readonly opts: CampaignOptions) {
    this.ctx = opts.ctx;
    this.prefix = opts.path + '/';
  }

  get session(): Session | undefined {
    return this.sessionValue;
  }

  /** The token of the current (or last) term of this session. */
  get token(): FencingToken | undefined {
    return this.tokenValue;
  }

  /** Leader now: status leader, session not suspended, deadline not passed (clock checked). */
  get isLeader(): boolean {
    const s = this.sessionValue;
    return s !== undefined && s.isAlive() && this.leading;
  }

  start(): void {
    this.running = this.run();
  }

  /** Stops campaigning and resigns; resolves when no watch, timer or lease is left. */
  async stop(): Promise<void> {
    this.leading = false;
    this.controller.abort(new ClosedError('leader elector'));
    this.wake.fire();
    await this.running;
  }

  /** etcd refused our token: our key is gone or re-created. Step down and re-campaign. */
  fenceFailed(token: FencingToken): NotLeaderError {
    const err = new NotLeaderError(
      `leader key ${token.key} no longer has create revision ${token.revision}`,
    );
    if (this.tokenValue === token) this.loseKey(err);
    return err;
  }

  /** Re-emits the leader status (after a proclaim changed our value). */
  reannounce(): void {
    const s = this.sessionValue;
    const t = this.tokenValue;
    if (s !== undefined && t !== undefined && this.isLeader) this.becomeLeader(s, t);
  }

  /** Read through a call: a watch callback may have set it during an await. */
  private isKeyGone(): boolean {
    return this.keyGone;
  }

  private loseKey(err: Error): void {
    this.keyGone = true;
    if (this.leading) {
      this.leading = false;
      this.emit({ status: 'follower', leader: undefined, suspended: false, error: err });
    }
    this.wake.fire();
  }

  /** One session after another until stopped; a lost session is replaced by a new one. */
  private async run(): Promise<void> {
    const signal = this.controller.signal;
    const backoff = new Backoff(100, 2000);
    while (!signal.aborted) {
      let session: Session;
      try {
        session = await this.ctx.sessions.acquire(this.opts.ttl, { retry: true, signal });
      } catch {
        return; // aborted, or the connector closed
      }
      this.sessionValue = session;
      this.keyGone = false;
      const off = session.onChange((c) => {
        this.onSession(session, c);
      });
      try {
        while (!isAborted(signal) && session.isAlive()) {
          try {
            await this.term(session, signal);
            backoff.reset();
          } catch (err) {
            if (isAborted(signal)) break;
            // While leading, the session's deadline guards us; a failed read is no reason to step
            // down. Otherwise say why nothing is happening.
            if (!this.leading) {
              this.emit({
                status: 'follower',
                leader: this.last?.leader,
                suspended: session.state === 'suspended',
                error: toConnectorError(err, `election ${this.opts.path}`),
              });
            }
            await delay(backoff.next(), signal).catch(() => undefined);
          }
        }
      } finally {
        off();
        this.leading = false;
        if (isAborted(signal)) await this.resign(session);
        this.tokenValue = undefined;
        this.campaigned = undefined;
        this.sessionValue = undefined;
        await this.ctx.sessions.release(session).catch(() => undefined);
      }
    }
  }

  private onSession(session: Session, change: SessionStateChange): void {
    if (session !== this.sessionValue || this.controller.signal.aborted) return;
    if (change.state === 'suspended') {
      this.leading = false;
      this.emit({ status: 'follower', leader: undefined, suspended: true });
    } else if (change.state === 'lost') {
      // Synchronous with the session's own deadline: nobody reads "leader" past it.
      this.leading = false;
      const event: CampaignEvent = { status: 'follower', leader: undefined, suspended: false };
      this.emit(change.error === undefined ? event : { ...event, error: change.error });
    } else if (change.state === 'closed') {
      this.leading = false;
    }
    this.wake.fire();
  }

  /** One campaign of `session`: returns when our key is gone, the session ends, or on stop. */
  private async term(session: Session, signal: AbortSignal): Promise<void> {
    const key = this.prefix + session.leaseIdHex;
    const keyBuf = Buffer.from(key);
    this.keyGone = false;
    this.campaigned = key;
    const res = await this.txn(
      {
        // Our key does not exist yet (new lease, or it was deleted): join the queue at the end.
        compare: [
          {
            key: keyBuf,
            target: CompareTarget.Create,
            result: CompareResult.Equal,
            create_revision: 0,
          },
        ],
        success: [
          {
            request_put: {
              key: keyBuf,
              value: Buffer.from(this.opts.value()),
              lease: session.leaseId,
            },
          },
        ],
        // It exists (a retried campaign on the same lease): keep its place in the queue.
        failure: [rangeOp({ key: keyBuf })],
      },
      'campaign',
    );
    let revision = res.header.revision;
    if (!res.succeeded) {
      const kv = kvAt(res.responses, 0);
      if (kv === undefined) return;
      revision = kv.create_revision;
      if (kv.value.toString() !== this.opts.value()) {
        const put: IRequestOp = {
          request_put: {
            key: keyBuf,
            value: Buffer.from(this.opts.value()),
            lease: session.leaseId,
          },
        };
        const token = newToken(key, revision);
        await this.txn({ compare: [token.toCompare()], success: [put] }, 'proclaim');
      }
    }
    if (this.leading && this.tokenValue?.revision !== revision) {
      // Our previous key was deleted and re-created while a read failed: that term is over.
      this.leading = false;
      const error = new NotLeaderError(`leader key ${key} was re-created`);
      this.emit({ status: 'follower', leader: undefined, suspended: false, error });
    }
    const token = (this.tokenValue = newToken(key, revision));
    const ownState = { compacted: false };
    const reopenOwn = (): void => {
      ownState.compacted = true;
      this.wake.fire();
    };
    let own = this.watchOwn(key, Number(res.header.revision) + 1, reopenOwn);
    try {
      for (;;) {
        this.wake.reset();
        if (isAborted(signal) || !session.isAlive() || this.isKeyGone()) return;
        if (session.state === 'suspended') {
          await this.wake.wait();
          continue;
        }
        // One read-only transaction: is our key still ours, who leads, who is just before us.
        const view = await this.txn(
          {
            success: [
              rangeOp({ key: keyBuf }),
              rangeOp(firstCreated(this.prefix)),
              rangeOp(lastCreatedUpTo(this.prefix, BigInt(revision) - 1n)),
            ],
          },
          'election read',
        );
        const mine = kvAt(view.responses, 0);
        if (mine?.create_revision !== revision) {
          this.loseKey(new NotLeaderError(`leader key ${key} was deleted`));
          return;
        }
        const readRevision = Number(view.header.revision);
        if (ownState.compacted) {
          ownState.compacted = false;
          await own.close();
          own = this.watchOwn(key, readRevision + 1, reopenOwn);
        }
        if (isAborted(signal) || !session.isAlive() || session.state !== 'alive') continue;
        const pred = kvAt(view.responses, 2);
        if (pred === undefined) {
          this.becomeLeader(session, token);
          await this.wake.wait();
          continue;
        }
        const leader = kvAt(view.responses, 1) ?? pred;
        this.emit({ status: 'follower', leader: leader.value.toString(), suspended: false });
        // Wait for the predecessor to go (and, for a fresh `leader`, for the leader to change),
        // watching from just after our read: etcd serves that from its synced path, at once.
        const keys = [pred.key.toString()];
        if (this.opts.followLeader && !leader.key.equals(pred.key))
          keys.push(leader.key.toString());
        const watches = keys.map((k) => this.watchWake(k, readRevision + 1));
        try {
          await this.wake.wait();
        } finally {
          await Promise.all(watches.map((w) => w.close()));
        }
      }
    } finally {
      await own.close();
    }
  }

  private becomeLeader(session: Session, token: FencingToken): void {
    if (session.state !== 'alive' || !session.isAlive() || this.controller.signal.aborted) return;
    this.leading = true;
    this.emit({ status: 'leader', leader: this.opts.value(), suspended: false, token });
  }

  /** Watches our own key: its deletion (by hand, or by lease expiry) ends the term. */
  private watchOwn(key: string, startRevision: number, onCompacted: () => void): WatchStream {
    return openWatch({
      client: this.ctx.client,
      key,
      prefix: false,
      startRevision,
      onEvents: (events: readonly WatchEvent[]) => {
        if (events.some((e) => e.type === 'delete')) {
          this.loseKey(new NotLeaderError(`leader key ${key} was deleted`));
        }
      },
      onCompacted,
    });
  }

  /** Watches a key and wakes the loop on any change of it (or if its history was compacted). */
  private watchWake(key: string, startRevision: number): WatchStream {
    const wake = (): void => {
      this.wake.fire();
    };
    return openWatch({
      client: this.ctx.client,
      key,
      prefix: false,
      startRevision,
      onEvents: wake,
      onCompacted: wake,
    });
  }

  /** Deletes our key (Go's `Resign`) so the next waiter leads at once. Best effort. */
  private async resign(session: Session): Promise<void> {
    const key = this.campaigned;
    const token = this.tokenValue;
    if (key === undefined || !session.isAlive()) return;
    // Sole holder: the release right after revokes the lease, which deletes the key in the same
    // write; a delete first would be a second write for the next leader's read to queue behind.
    if (this.ctx.sessions.holders(session) <= 1) return;
    const del: IRequestOp = { request_delete_range: { key: Buffer.from(key) } };
    // Only our term's key when we know its revision: never one re-created after ours was deleted.
    // A campaign whose reply we never saw may still have created the key: delete it by name.
    const request: ITxnRequest =
      token?.key === key ? { compare: [token.toCompare()], success: [del] } : { success: [del] };
    await this.txn(request, 'resign').catch(() => undefined);
  }

  private async txn(request: ITxnRequest, what: string): Promise<ITxnResponse> {
    try {
      return await this.ctx.client.kv.txn(request, this.ctx.callOptions());
    } catch (err) {
      throw toConnectorError(err, `${what} ${this.opts.path}`);
    }
  }

  /** Pushes a state unless it says the same as the last one; errors are always reported. */
  private emit(event: CampaignEvent): void {
    const last = this.last;
    if (
      last !== undefined &&
      event.error === undefined &&
      last.error === undefined &&
      last.status === event.status &&
      last.leader === event.leader &&
      last.suspended === event.suspended &&
      last.token?.revision === event.token?.revision
    ) {
      return;
    }
    this.last = event;
    this.opts.emit(event);
  }
}
