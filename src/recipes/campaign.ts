/**
 * The loop behind LeaderElector: Go's `Election.Campaign` / `Resign` over sessions, on the shared
 * queue engine. Per session: join the queue (or keep our place), wait for our turn (watching only
 * the predecessor), lead, and on every wake-up re-check; a lost session is replaced by a new one
 * (unless the user gave the session: then the campaign ends with the loss).
 *
 * Leadership flips to false synchronously on the session's `suspended`/`lost` (the latter fires on
 * the session's own deadline timer), on our key's deletion, and on a refused fence.
 */
import type { IRequestOp } from 'etcd3';
import {
  ClosedError,
  NotLeaderError,
  SessionLostError,
  type EtcdConnectorError,
} from '../errors.js';
import type { FencingToken } from '../fencing.js';
import type { ConnectorContext } from '../engines/context.js';
import { reportStall } from '../engines/retry.js';
import { firstCreated } from '../engines/ranges.js';
import { QueueMember, type WaitOptions, type WaitView } from '../engines/wait-deletes.js';
import type { Session, SessionStateChange } from '../session/session.js';
import type { SessionRef } from '../session/session-pool.js';
import { publish } from '../diagnostics.js';
import { Backoff, delay, isAborted, monotonicMs } from '../transport/timers.js';

/** A status of the campaign (LeaderElector's LeaderEvent). */
export interface CampaignEvent {
  readonly status: 'leader' | 'follower';
  readonly leader: string | undefined;
  readonly suspended: boolean;
  readonly token?: FencingToken;
  /** Status leader: etcd's revision of the read that found our key the oldest. */
  readonly revision?: number;
  readonly error?: Error;
}

export interface CampaignOptions {
  ctx: ConnectorContext;
  path: string;
  ttl: number;
  followLeader: boolean;
  /** A session the user gave: used instead of the pool's, and never replaced. */
  session?: Session;
  /** The value to campaign with (the identity, or the last proclaimed value). */
  value(): string;
  emit(event: CampaignEvent): void;
  /** The campaign ended by itself with a final error (the stream ends with it). */
  fail(error: EtcdConnectorError): void;
}

export class Campaign {
  private readonly ctx: ConnectorContext;
  private readonly prefix: string;
  /** The elector's own signal (aborted when it stops); set by `start()`. */
  private signal: AbortSignal | undefined;
  private running: Promise<void> = Promise.resolve();
  private member: QueueMember | undefined;
  private leading = false;
  /** When leadership began (monotonic ms), for the diagnostic. */
  private leadSince = 0;
  /** The resign `stop()` sent at once, the token it was for, and whether etcd took it. */
  private resigning: { token: FencingToken; done: Promise<boolean> } | undefined;
  private last: CampaignEvent | undefined;
  /** The revision of the read that last found us leader. */
  private leaderRevision = 0;
  /** The term to resign and requeue (run()'s fn returned); the loop deletes its key. */
  private requeueToken: FencingToken | undefined;

  constructor(private readonly opts: CampaignOptions) {
    this.ctx = opts.ctx;
    this.prefix = opts.path + '/';
  }

  get session(): Session | undefined {
    return this.member?.session;
  }

  /** The token of the current (or last) term of this session. */
  get token(): FencingToken | undefined {
    return this.member?.token;
  }

  /** Leader now: status leader, session not suspended, deadline not passed (clock checked). */
  get isLeader(): boolean {
    const m = this.member;
    return m !== undefined && m.session.isAlive() && this.leading && !m.gone;
  }

  /** Campaigns until `signal` aborts. */
  start(signal: AbortSignal): void {
    this.signal = signal;
    this.running = this.run(signal);
  }

  /**
   * Resolves when the campaign has stopped (after its signal aborted) and resigned: no watch,
   * timer or lease of it is left. The resign (our key's delete) goes out first, before the loop
   * winds down (it may be in the middle of a re-check read), so the next candidate leads one loop
   * exit sooner.
   */
  async stopped(): Promise<void> {
    const m = this.member;
    const token = m?.token;
    if (m !== undefined && token !== undefined && !this.ctx.closing && m.session.isAlive()) {
      this.resigning ??= {
        token,
        done: m.remove().then(ok, failed),
      };
    }
    this.unlead('resigned');
    await this.running;
  }

  private get stopping(): boolean {
    return this.signal?.aborted === true;
  }

  /** etcd refused our token: our key is gone or re-created. Step down and re-campaign. */
  fenceFailed(token: FencingToken): NotLeaderError {
    const err = new NotLeaderError(
      `leader key ${token.key} no longer has create revision ${token.revision}`,
    );
    if (this.member?.token === token) this.stepDown(err, 'fenced');
    this.member?.poke();
    return err;
  }

  /**
   * Resigns the term of `token` and joins the queue again at its end (a new key, a new token):
   * `run()`'s requeue after its work returned. Leadership ends now; the loop deletes the key.
   */
  requeue(token: FencingToken): void {
    const m = this.member;
    if (m?.token !== token || !this.leading) return;
    this.requeueToken = token;
    this.leading = false;
    this.emit({ status: 'follower', leader: undefined, suspended: false });
    m.poke();
  }

  /** Re-emits the leader status (after a proclaim changed our value). */
  reannounce(): void {
    const m = this.member;
    const t = m?.token;
    if (m !== undefined && t !== undefined && this.isLeader) {
      this.becomeLeader(m.session, t, this.leaderRevision);
    }
  }

  /**
   * One session after another until stopped or a final error; per session, terms: join, wait,
   * lead, re-check. (One async function, not one per level: a thousand idle electors keep a
   * thousand suspended frames, not three thousand.)
   */
  private async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(100, 2000);
    const waitOptions: WaitOptions = {
      slots: 1,
      signal,
      extraReads: [firstCreated(this.prefix)],
      onWaiting: (view) => {
        this.emit({ status: 'follower', leader: leaderOf(view), suspended: false });
      },
      extraWatches: (view) => {
        const leader = view.extra[0]?.[0]?.key.toString();
        return this.opts.followLeader && leader !== undefined ? [leader] : [];
      },
    };
    while (!signal.aborted) {
      let ref: SessionRef;
      try {
        ref = await this.acquire(signal);
      } catch (err) {
        if (!isAborted(signal)) this.opts.fail(this.ctx.toError(err, `election ${this.opts.path}`));
        return;
      }
      const session = ref.session;
      const member: QueueMember = new QueueMember(
        this.ctx,
        this.prefix,
        session,
        () => {
          this.keyGone(member);
        },
        (change) => {
          this.onSession(session, change);
        },
      );
      this.member = member;
      let failure: EtcdConnectorError | undefined;
      let joined = false;
      try {
        while (!isAborted(signal) && session.isAlive()) {
          try {
            if (!joined) {
              await this.join(member);
              joined = true;
            }
            const outcome = await member.waitTurn(waitOptions);
            backoff.reset();
            if (outcome.kind === 'gone') {
              joined = false; // a new key: a new place at the end of the queue, a new token
              continue;
            }
            if (outcome.kind !== 'holder') break;
            const token = member.token;
            if (token !== undefined && token === this.requeueToken) {
              // Resign this term (only our key of this term) and join again at the end.
              await member.remove();
              this.requeueToken = undefined;
              joined = false;
              continue;
            }
            if (token !== undefined) this.becomeLeader(session, token, outcome.view.readRevision);
            // Until something changes: a session state, our key, a stop, a refused fence.
            await member.changed(signal);
          } catch (err) {
            if (isAborted(signal)) break;
            const error = this.ctx.toError(err, `election ${this.opts.path}`);
            if (!error.retryable) {
              failure = error;
              break;
            }
            // While leading, the session's deadline guards us; a failed read is no reason to
            // step down. Otherwise say why nothing is happening.
            if (!this.leading) this.emitError(error, session.state === 'suspended');
            await delay(backoff.next(), signal).catch(() => undefined);
          }
        }
      } finally {
        this.unlead(isAborted(signal) ? 'resigned' : 'lost');
        // The connector's close revokes every lease at once; no key-by-key resign needed then.
        if (isAborted(signal) && !this.ctx.closing && session.isAlive()) {
          const early = this.resigning;
          let resigned = (await early?.done) ?? true;
          // (A join in flight when stop() came may have made a new key since.)
          if (early?.token !== member.token) resigned = await member.remove().then(ok, failed);
          // Our key may still be there: let it go with the lease now, not after the pool's linger.
          if (!resigned) this.ctx.sessions.revokeAtLastRelease(session);
        }
        member.close();
        await ref.release();
      }
      if (failure !== undefined) {
        this.opts.fail(failure);
        return;
      }
      if (this.opts.session !== undefined && !isAborted(signal)) {
        // The user's session is gone; a campaign bound to it cannot go on.
        this.opts.fail(
          session.state === 'lost'
            ? new SessionLostError(session.leaseIdHex, 'the session given to the elector was lost')
            : new ClosedError('session given to the elector'),
        );
        return;
      }
    }
  }

  /** Our key was deleted: a leader steps down at once. */
  private keyGone(member: QueueMember): void {
    this.stepDown(new NotLeaderError(`leader key ${member.key} was deleted`), 'deleted');
  }

  /** The user's session, or the pool's for our TTL (retrying, and saying why while it fails). */
  private async acquire(signal: AbortSignal): Promise<SessionRef> {
    if (this.opts.session !== undefined) return this.ctx.sessions.retain(this.opts.session);
    const report = (err: unknown): void => {
      this.emitError(this.ctx.toError(err, `election ${this.opts.path}`), false);
    };
    return reportStall(
      this.ctx.sessions.acquire(this.opts.ttl, { retry: true, signal, onError: report }),
      { stallMs: this.ctx.dialTimeoutMs, onRetry: report, what: `election ${this.opts.path}` },
    );
  }

  /** Go's Campaign: create our key, or keep it and proclaim our value on it. */
  private async join(member: QueueMember): Promise<void> {
    const value = this.opts.value();
    const what = `election ${this.opts.path}`;
    const joined = await reportStall(member.join(value, 1, [firstCreated(this.prefix)]), {
      stallMs: this.ctx.dialTimeoutMs,
      onRetry: (error) => {
        this.emitError(error, false);
      },
      what,
    });
    const token = member.token;
    if (joined.existingValue === undefined || joined.existingValue === value || !token) return;
    const put: IRequestOp = {
      request_put: {
        key: Buffer.from(member.key),
        value: Buffer.from(value),
        lease: member.session.leaseId,
      },
    };
    try {
      await this.ctx.client.kv.txn(
        { compare: [token.toCompare()], success: [put] },
        this.ctx.callOptions(),
      );
    } catch (err) {
      throw this.ctx.toError(err, `proclaim ${this.opts.path}`);
    }
  }

  private onSession(session: Session, change: SessionStateChange): void {
    if (this.member?.session !== session || this.stopping) return;
    if (change.state === 'suspended') {
      this.unlead('suspended');
      this.emit({ status: 'follower', leader: undefined, suspended: true });
    } else if (change.state === 'lost') {
      // Synchronous with the session's own deadline: nobody reads "leader" past it.
      this.unlead('lost', change.error);
      const event: CampaignEvent = { status: 'follower', leader: undefined, suspended: false };
      this.emit(change.error === undefined ? event : { ...event, error: change.error });
    } else if (change.state === 'closed') {
      const wasLeading = this.leading;
      this.unlead('lost');
      this.emit({
        status: 'follower',
        leader: undefined,
        suspended: false,
        ...(wasLeading || this.opts.session !== undefined
          ? { error: new ClosedError('the session of the elector') }
          : {}),
      });
    }
  }

  private stepDown(err: Error, reason: 'deleted' | 'fenced'): void {
    if (!this.leading) return;
    this.unlead(reason, err);
    this.emit({ status: 'follower', leader: undefined, suspended: false, error: err });
  }

  private becomeLeader(session: Session, token: FencingToken, revision: number): void {
    if (session.state !== 'alive' || !session.isAlive() || this.stopping) return;
    if (this.member?.gone === true || token === this.requeueToken) return;
    if (!this.leading) {
      this.leadSince = monotonicMs();
      publish('etcd-connector:leadership.gained', () => ({
        path: this.opts.path,
        key: token.key,
        token: token.revision,
        identity: this.opts.value(),
        revision,
      }));
    }
    this.leading = true;
    this.leaderRevision = revision;
    this.emit({ status: 'leader', leader: this.opts.value(), suspended: false, token, revision });
  }

  /** Leadership ends (if it was held): the flag at once, and a diagnostic saying why. */
  private unlead(
    reason: 'suspended' | 'lost' | 'deleted' | 'fenced' | 'resigned',
    error?: Error,
  ): void {
    if (!this.leading) return;
    this.leading = false;
    const token = this.member?.token;
    const heldMs = monotonicMs() - this.leadSince;
    publish('etcd-connector:leadership.lost', () => ({
      path: this.opts.path,
      key: token?.key ?? '',
      token: token?.revision ?? '',
      reason,
      heldMs,
      ...(error === undefined ? {} : { error }),
    }));
  }

  private emitError(error: Error, suspended: boolean): void {
    this.emit({ status: 'follower', leader: this.last?.leader, suspended, error });
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

/** The leader's identity in a wait's view: the oldest key, else our predecessor. */
function leaderOf(view: WaitView): string | undefined {
  const kv = view.extra[0]?.[0] ?? view.window[0];
  return kv?.value.toString();
}

const ok = (): boolean => true;
const failed = (): boolean => false;
