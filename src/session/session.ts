/**
 * A Session owns one etcd lease and its keepalive, shared by every recipe of a connector that uses
 * the same TTL (like Go's `concurrency.Session`). Internal: users hold a SessionHandle. It judges loss on a monotonic clock: the lease is
 * surely alive until *send time of the last acknowledged keepalive + TTL* — etcd renewed it no
 * earlier than that send — so past that instant the session declares itself lost, whatever the
 * network says. A session never comes back from `lost`; the connector grants a new one.
 *
 * States (Curator's vocabulary): `alive`; `suspended` — keepalives are not being acknowledged, the
 * lease may be gone soon ("leaders should pause"); `lost` — the deadline passed or etcd said the
 * lease does not exist ("you are not leader"); `closed` — revoked by us.
 */
import type { Etcd3, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { observed, publish } from '../diagnostics.js';
import { ClosedError, SessionLostError, TimeoutError } from '../errors.js';
import { leaseIdHex, openStream, type FailureMemory, type OpenedStream } from '../transport/rpc.js';
import { Backoff, epochMs, monotonicMs } from '../transport/timers.js';

export type SessionState = 'alive' | 'suspended' | 'lost' | 'closed';

export interface SessionStateChange {
  readonly state: SessionState;
  /** The lease id in hex, as it appears in Go-compatible keys. */
  readonly leaseId: string;
  /** Why the session was lost (state `lost` only). */
  readonly error?: SessionLostError;
}

export interface SessionOptions {
  /** Deadline of unary calls (grant, revoke). */
  callTimeoutMs: number;
  /** The connection's failure memory, for error messages that name the real reason. */
  failures: FailureMemory;
  /**
   * A keepalive unanswered this long marks the session suspended and moves the keepalive stream to
   * a fresh connection. Default: a quarter of the TTL, between 300 ms and 2 s.
   */
  suspendAfterMs?: number;
}

type KeepAliveStream = OpenedStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

export class Session {
  /** Lease id as etcd's decimal string (what etcd3's builders take). */
  readonly leaseId: string;
  /** Lease id in hex, as used in Go's key layouts. */
  readonly leaseIdHex: string;
  /** The TTL etcd granted, in seconds (etcd may raise a very short request). */
  readonly ttl: number;
  /** The TTL asked for (the connector shares one session per requested TTL). */
  readonly requestedTtl: number;
  /** Resolves (never rejects) when the session ends: lost or closed. */
  readonly done: Promise<SessionStateChange>;
  /** Aborted (with the SessionLostError or a ClosedError) when the session ends. */
  readonly signal: AbortSignal;

  private stateValue: SessionState = 'alive';
  private deadlineMs: number;
  private readonly listeners = new Set<(change: SessionStateChange) => void>();
  private resolveDone!: (change: SessionStateChange) => void;
  private readonly intervalMs: number;
  private readonly suspendAfterMs: number;
  private stream: KeepAliveStream | undefined;
  private opening = false;
  /** Send times of keepalives not yet answered on the current stream; etcd answers in order. */
  private pending: number[] = [];
  private tickTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff(50, 1000);
  private revoking: Promise<void> | undefined;
  private readonly controller = new AbortController();

  private constructor(
    private readonly client: Etcd3,
    leaseId: string,
    ttl: number,
    requestedTtl: number,
    grantSentAt: number,
    private readonly options: SessionOptions,
  ) {
    this.requestedTtl = requestedTtl;
    this.leaseId = leaseId;
    this.leaseIdHex = leaseIdHex(leaseId);
    this.ttl = ttl;
    this.deadlineMs = grantSentAt + ttl * 1000;
    this.intervalMs = (ttl * 1000) / 3;
    this.suspendAfterMs = options.suspendAfterMs ?? Math.min(2000, Math.max(300, (ttl * 1000) / 4));
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.signal = this.controller.signal;
    this.armDeadline();
    this.openStream();
    this.tickTimer = setInterval(() => {
      this.sendKeepAlive();
    }, this.intervalMs);
  }

  /**
   * Grants a lease of `ttl` seconds and starts keeping it alive.
   *
   * @throws TimeoutError the answer came after the granted TTL could have run out (revoked then)
   */
  static async grant(client: Etcd3, ttl: number, options: SessionOptions): Promise<Session> {
    const sentAt = monotonicMs();
    let res;
    try {
      res = await client.leaseClient.leaseGrant(
        { TTL: ttl, ID: 0 },
        { deadline: Date.now() + options.callTimeoutMs },
      );
    } catch (err) {
      throw options.failures.toError(err, 'lease grant');
    }
    const granted = Number(res.TTL);
    const grantedTtl = granted > 0 ? granted : ttl;
    if (monotonicMs() >= sentAt + grantedTtl * 1000) {
      // Answered after the TTL it grants could have run out (a stalled connection, a paused
      // process): nothing vouches for the lease now. Let it go; the caller may ask again.
      void revokeLease(client, res.ID, options.callTimeoutMs);
      throw new TimeoutError(`lease grant answered after its ${grantedTtl} s TTL had run out`);
    }
    return new Session(client, res.ID, grantedTtl, ttl, sentAt, options);
  }

  get state(): SessionState {
    return this.stateValue;
  }

  /** Monotonic instant (`performance.now()` ms) until which the lease is surely alive. */
  get deadline(): number {
    return this.deadlineMs;
  }

  /**
   * True while the lease is surely alive *now*. Checks the clock itself rather than trusting a
   * timer, so a process resumed after a pause sees the truth before its timers have run.
   */
  isAlive(): boolean {
    if (this.stateValue === 'lost' || this.stateValue === 'closed') return false;
    if (monotonicMs() >= this.deadlineMs) {
      this.lose('keepalive deadline passed (last acknowledged send + TTL)');
      return false;
    }
    return true;
  }

  /** Throws SessionLostError / ClosedError unless the lease is surely alive now. */
  assertAlive(): void {
    if (this.isAlive()) return;
    if (this.stateValue === 'closed') throw new ClosedError('session');
    throw this.lostError ?? new SessionLostError(this.leaseIdHex, 'lost');
  }

  private lostError: SessionLostError | undefined;

  /** Calls `listener` on every state change; returns the unsubscribe function. */
  onChange(listener: (change: SessionStateChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Stops the keepalive and revokes the lease (its keys vanish at once). Idempotent; also revokes
   * after `orphan()` (as Go's `Close` after `Orphan`). A lost lease was revoked when it was lost.
   */
  async close(): Promise<void> {
    if (this.stateValue !== 'lost') {
      if (this.stateValue !== 'closed')
        this.setState({ state: 'closed', leaseId: this.leaseIdHex });
      this.stopTimers();
      this.revoking ??= this.revoke();
    }
    await this.revoking;
  }

  /**
   * etcd refused a request under this lease because the lease does not exist (revoked by someone,
   * or expired): the session is lost now, for every holder, rather than at the next keepalive.
   */
  leaseGone(): void {
    this.lose('etcd says the lease does not exist');
  }

  /** Stops the keepalive without revoking: the lease ends at its TTL. Idempotent. */
  orphan(): void {
    if (this.stateValue === 'closed' || this.stateValue === 'lost') return;
    this.setState({ state: 'closed', leaseId: this.leaseIdHex });
    this.stopTimers();
  }

  private revoke(): Promise<void> {
    return revokeLease(this.client, this.leaseId, this.options.callTimeoutMs);
  }

  private openStream(): void {
    if (this.opening || this.stream !== undefined || this.ended) return;
    this.opening = true;
    openStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>(
      this.client,
      'Lease',
      'leaseKeepAlive',
    ).then(
      (opened) => {
        this.opening = false;
        if (this.ended) {
          opened.stream.cancel();
          return;
        }
        this.stream = opened;
        this.pending = [];
        const { stream } = opened;
        stream.on('data', (res: ILeaseKeepAliveResponse) => {
          if (this.stream === opened) this.onResponse(res);
        });
        const onBroken = (): void => {
          if (this.stream === opened) this.dropStream(false);
        };
        stream.on('error', onBroken);
        stream.on('end', onBroken);
        // Refresh at once: the stream may replace one that went silent.
        this.sendKeepAlive();
      },
      () => {
        this.opening = false;
        this.scheduleReopen();
      },
    );
  }

  private get ended(): boolean {
    return this.stateValue === 'lost' || this.stateValue === 'closed';
  }

  private sendKeepAlive(): void {
    if (!this.isAlive()) return;
    const s = this.stream;
    if (s === undefined) {
      this.openStream();
      return;
    }
    this.pending.push(monotonicMs());
    s.stream.write({ ID: this.leaseId });
    this.silenceTimer ??= setTimeout(() => {
      this.checkSilence();
    }, this.suspendAfterMs);
  }

  private checkSilence(): void {
    this.silenceTimer = undefined;
    const oldest = this.pending[0];
    if (oldest === undefined || this.ended) return;
    const silentFor = monotonicMs() - oldest;
    if (silentFor >= this.suspendAfterMs) {
      // Socket open, nothing flowing: the blackhole case. Dial afresh, possibly another member.
      this.dropStream(true);
      return;
    }
    this.silenceTimer = setTimeout(() => {
      this.checkSilence();
    }, this.suspendAfterMs - silentFor);
  }

  private onResponse(res: ILeaseKeepAliveResponse): void {
    const sentAt = this.pending.shift();
    if (this.pending.length === 0 && this.silenceTimer !== undefined) {
      clearTimeout(this.silenceTimer);
      this.silenceTimer = undefined;
    }
    if (!this.isAlive() || sentAt === undefined) return;
    const ttl = Number(res.TTL);
    if (!(ttl > 0)) {
      this.lose('etcd says the lease no longer exists');
      return;
    }
    this.backoff.reset();
    const deadline = sentAt + ttl * 1000;
    if (deadline > this.deadlineMs) {
      this.deadlineMs = deadline;
      this.armDeadline();
    }
    if (observed('etcd-connector:session.keepalive')) {
      const rttMs = monotonicMs() - sentAt;
      publish('etcd-connector:session.keepalive', () => ({
        leaseId: this.leaseIdHex,
        ttl: this.ttl,
        rttMs,
        deadlineAt: epochMs(this.deadlineMs),
      }));
    }
    if (this.stateValue === 'suspended') {
      this.setState({ state: 'alive', leaseId: this.leaseIdHex });
    }
  }

  private dropStream(resetHost: boolean): void {
    const s = this.stream;
    this.stream = undefined;
    this.pending = [];
    if (this.silenceTimer !== undefined) {
      clearTimeout(this.silenceTimer);
      this.silenceTimer = undefined;
    }
    if (s !== undefined) {
      if (resetHost) s.resetHost();
      try {
        s.stream.cancel();
      } catch {
        // already closed
      }
    }
    if (this.ended) return;
    if (this.stateValue === 'alive') {
      this.setState({ state: 'suspended', leaseId: this.leaseIdHex });
    }
    this.scheduleReopen();
  }

  private scheduleReopen(): void {
    if (this.ended || this.reopenTimer !== undefined) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      this.openStream();
    }, this.backoff.next());
  }

  private armDeadline(): void {
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    // Timers run on libuv's cached loop time, which can lag performance.now() by several ms on a
    // busy loop, so this may fire before the deadline: then it re-arms, or the loss would only be
    // noticed on the next keepalive tick, up to TTL/3 late.
    this.deadlineTimer = setTimeout(
      () => {
        this.deadlineTimer = undefined;
        if (this.isAlive()) this.armDeadline();
      },
      Math.max(0, this.deadlineMs - monotonicMs()) + 1,
    );
  }

  private lose(reason: string): void {
    if (this.ended) return;
    this.lostError = new SessionLostError(this.leaseIdHex, reason);
    this.setState({ state: 'lost', leaseId: this.leaseIdHex, error: this.lostError });
    this.stopTimers();
    // The lease may still live on the server (a blackhole hides acks): revoke it so its keys do
    // not block the recipes that re-register under a new lease. Best effort.
    this.revoking = this.revoke();
  }

  private stopTimers(): void {
    for (const t of [this.tickTimer, this.deadlineTimer, this.silenceTimer, this.reopenTimer]) {
      if (t !== undefined) clearTimeout(t);
    }
    this.tickTimer = this.deadlineTimer = this.silenceTimer = this.reopenTimer = undefined;
    const s = this.stream;
    this.stream = undefined;
    this.pending = [];
    if (s !== undefined) {
      try {
        s.stream.cancel();
      } catch {
        // already closed
      }
    }
  }

  private setState(change: SessionStateChange): void {
    this.stateValue = change.state;
    publish('etcd-connector:session.state', () => ({
      leaseId: this.leaseIdHex,
      ttl: this.ttl,
      state: change.state,
      ...(change.error === undefined ? {} : { error: change.error }),
    }));
    for (const l of [...this.listeners]) {
      try {
        l(change);
      } catch {
        // a listener's bug must not break the keepalive
      }
    }
    if (change.state === 'lost' || change.state === 'closed') {
      this.resolveDone(change);
      this.controller.abort(change.error ?? new ClosedError('session'));
    }
  }
}

/** Revokes lease `id`; never rejects. */
async function revokeLease(client: Etcd3, id: string, callTimeoutMs: number): Promise<void> {
  try {
    await client.leaseClient.leaseRevoke({ ID: id }, { deadline: Date.now() + callTimeoutMs });
  } catch {
    // Unreachable etcd or an already expired lease: the TTL ends it either way.
  }
}
