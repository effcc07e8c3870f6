/**
 * A key bound to a lease: it lives while this process keeps its session alive and vanishes when
 * the process dies or pauses past the TTL (the liveness marker of service registration).
 *
 * Key layout: exactly the path given, value as given, `lease` = the connector's shared session for
 * the TTL.
 *
 * Ownership rule (engines/key-ownership.ts): a key that is absent, has no lease, or is under our
 * own live lease is ours; a key under another live lease is never overwritten. Every write is one
 * transaction that applies it, so two processes configured with the same key never flap it.
 *
 * Healing: the key watches itself on the connector's shared watch stream (a map entry there, not
 * a stream). When someone else deletes it, writes it without a lease, or writes another value
 * under our lease, a KeyChangedError goes on the error stream and the key is put back in one
 * transaction. When another live lease holds it, KeyExistsError is reported (once per wait) and
 * nothing is written until the watch shows that key gone; then the key is taken back.
 *
 * Our own writes are told apart from others' by revision (engines/own-writes.ts): each write
 * records the revision etcd answered with, and watch events are judged only while none of our
 * writes is in flight. A change at or below the revision of our latest write needs no repair.
 *
 * States: `alive` session — nothing to do; `suspended` — nothing reported (the lease may still
 * recover); `lost` — a SessionLostError goes on the error stream at once, then the key is put back
 * under a new lease as soon as etcd is reachable (as above if another owner took it meanwhile).
 * `delete()` removes it at once.
 */
import {
  AbortError,
  ClosedError,
  EtcdConnectorError,
  InvalidArgumentError,
  InvalidStateError,
  KeyChangedError,
  KeyExistsError,
  SessionLostError,
} from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import {
  claimOutcome,
  claimTxn,
  deleteIfUnderTxn,
  foreignChange,
  isDesired,
  mayTake,
  type Ownership,
} from '../engines/key-ownership.js';
import { OwnWrites, readAsEvent } from '../engines/own-writes.js';
import { validateSignal } from '../engines/lifecycle.js';
import { sweepStrays, useKey } from '../engines/stray-keys.js';
import { validateTtl, validateValue } from '../paths.js';
import type { Session, SessionStateChange } from '../session/session.js';
import { sessionOf, type SessionHandle } from '../session/session-handle.js';
import type { SessionRef } from '../session/session-pool.js';
import { leaseIdHex } from '../transport/rpc.js';
import { StreamQueue } from '../transport/stream-queue.js';
import { abortable, anySignal, Backoff, delay, isAborted } from '../transport/timers.js';
import type { MuxWatch } from '../transport/watch-types.js';

/**
 * Where an ephemeral key is in its life: `idle` (not created, or deleted), `creating`, `live`
 * (in etcd under a live lease, as we wrote it), `recovering` (being put back: its lease was lost,
 * someone else changed it, or another live owner holds it and we wait), `deleting`.
 */
export type EphemeralKeyState = 'idle' | 'creating' | 'live' | 'recovering' | 'deleting';

/** Options of {@link EphemeralKey.create}. */
export interface EphemeralKeyCreateOptions {
  /** Aborts the create; nothing stays behind (the key is not written, the lease is released). */
  signal?: AbortSignal;
  /**
   * Put the key under this session (from `conn.session()`) instead of the connector's shared
   * session for `ttl`. The key is then bound to that lease: when it is lost, the error stream
   * reports it and ends, and the key is not put back.
   */
  session?: SessionHandle;
}

/** How many undelivered errors the error stream keeps (oldest dropped first). */
const ERROR_STREAM_CAPACITY = 16;
/** How many unanswered writes we remember (see Ownership.unconfirmed). */
const UNCONFIRMED_CAPACITY = 8;

/**
 * Keys held by the ephemeral keys of each connector. Two of them on one key would share the
 * connector's lease, so each would take the other's value for someone else's and put its own
 * back, forever: the second `create()` is refused instead.
 */
const held = new WeakMap<ConnectorContext, Set<string>>();

/**
 * A key that lives while this process lives. Create it with
 * `conn.newEphemeralKey(path)`; the constructor does no I/O.
 *
 * ```ts
 * const eph = conn.newEphemeralKey(conn.constructPath('services/svc', 'instance1'));
 * const errors = await eph.create('10.0.0.1:8080', 10);
 * await eph.update('10.0.0.1:9090');
 * await eph.delete();
 * ```
 *
 * After `delete()` the same object may `create()` again. `conn.close()` deletes it.
 */
export class EphemeralKey implements AsyncDisposable {
  /** The key in etcd (the full path). */
  readonly key: string;

  private readonly keyBytes: Buffer;
  private stateValue: EphemeralKeyState = 'idle';
  private ref: SessionRef | undefined;
  /** The user's session, when one was given: never replaced. */
  private bound: Session | undefined;
  private unsubscribe: (() => void) | undefined;
  private errors: StreamQueue<Error> | undefined;
  private value = '';
  private ttl = 0;
  private controller = new AbortController();
  private untrack: (() => void) | undefined;
  /** This object holds the key in `held` (between `create()` and the end of `delete()`). */
  private claimed = false;
  private creating: Promise<unknown> | undefined;
  private deleting: Promise<void> | undefined;
  /** Leases this key lost (cleared on delete); a key still under one of them is ours. */
  private readonly lostLeases = new Set<string>();
  /** The lease of the other holder seen by the last failed put. */
  private holderLease: string | undefined;
  /**
   * Our writes, one at a time (an `update` and a re-creation never reorder values), and the
   * watch's events judged against them.
   */
  private readonly ownWrites = new OwnWrites(() => {
    this.judgeEvents();
  });

  /** The key's own watch, from the revision after our first write. */
  private watch: MuxWatch | undefined;
  /** Values written under the current lease whose answer never came. */
  private unconfirmed: string[] = [];
  /**
   * Changes by someone else, reported after the put-back attempt: a deletion that turns out to
   * be our lease's end (revoked behind our back) is reported as SessionLostError instead.
   */
  private changes: KeyChangedError[] = [];
  /** The put-back loop while it runs; `dirty` asks it for one more pass. */
  private healing: Promise<void> | undefined;
  private dirty = false;
  /** Another live owner holds the key and KeyExistsError was reported for this wait. */
  private blocked = false;
  /** A final error of a put-back was reported (once until the key is ours again). */
  private reportedFailure = false;
  /** The watch is gone and must be re-created from a fresh read. */
  private resync: 'compacted' | 'ended' | undefined;
  /**
   * Sessions under which a put of ours went unanswered (a late copy may re-create the key), or
   * our delete failed (the key may still be there).
   */
  private readonly unanswered = new Set<Session>();
  /** Ends our use of the key name (see engines/stray-keys.ts). */
  private unuse: (() => void) | undefined;
  private readonly backoff = new Backoff(100, 2000);
  private readonly watchBackoff = new Backoff(500, 30000);

  /** Use `conn.newEphemeralKey(path)`; `path` must already be validated. */
  constructor(
    private readonly ctx: ConnectorContext,
    path: string,
  ) {
    this.key = path;
    this.keyBytes = Buffer.from(path);
  }

  /** Where the key is in its life (see {@link EphemeralKeyState}). */
  get state(): EphemeralKeyState {
    return this.stateValue;
  }

  /** True between a successful `create()` and `delete()` (also while being put back). */
  get created(): boolean {
    return this.stateValue === 'live' || this.stateValue === 'recovering';
  }

  /** The lease the key is (or is being) written under, in hex. */
  get leaseId(): string | undefined {
    return this.session?.leaseIdHex;
  }

  private get session(): Session | undefined {
    return this.ref?.session;
  }

  /**
   * Puts the key with `value` under the connector's shared lease of `ttl` seconds, unless another
   * live owner holds it (a key without a lease is taken over). Resolves with the error stream once
   * the key is in etcd. The stream carries a SessionLostError as soon as the lease is lost, a
   * KeyChangedError when someone else deletes or overwrites the key (it is put back by itself in
   * both cases), and a KeyExistsError while another live owner holds the key (it is taken back
   * when that owner's key goes). It ends on `delete()`; leaving it (`break`) only stops the
   * reporting, the key stays.
   *
   * @throws InvalidArgumentError bad value or TTL (before any I/O)
   * @throws InvalidStateError already created (call `delete()` first)
   * @throws KeyExistsError another live owner holds the key, or another ephemeral key of this
   *   connector has it
   * @throws UnavailableError / TimeoutError etcd is unreachable (nothing is retried)
   * @throws AbortError `signal` fired; nothing stays behind
   * @throws ClosedError the connector is closed
   */
  async create(
    value: string,
    ttl: number,
    options: EphemeralKeyCreateOptions = {},
  ): Promise<AsyncIterable<Error>> {
    this.ctx.assertOpen();
    validateValue(this.key, value, this.ctx.maxRequestBytes);
    validateTtl(ttl);
    validateSignal(options.signal);
    let bound: Session | undefined;
    if (options.session !== undefined) {
      bound = sessionOf(options.session);
      if (bound === undefined || !this.ctx.sessions.owns(bound)) {
        throw new InvalidArgumentError(
          'options.session',
          'must be a session from conn.session() of this connector',
        );
      }
    }
    if (this.stateValue !== 'idle') {
      throw new InvalidStateError(
        `ephemeral key ${this.key} is ${this.stateValue}; delete() first`,
      );
    }
    let keys = held.get(this.ctx);
    if (keys === undefined) held.set(this.ctx, (keys = new Set()));
    if (keys.has(this.key)) throw new KeyExistsError(this.key);
    keys.add(this.key);
    this.claimed = true;
    this.unuse = useKey(this.ctx, this.key);
    this.stateValue = 'creating';
    this.value = value;
    this.ttl = ttl;
    this.bound = bound;
    this.controller = new AbortController();
    this.untrack = this.ctx.track({ close: () => this.delete().catch(() => undefined) });
    const signal =
      options.signal === undefined
        ? this.controller.signal
        : anySignal([options.signal, this.controller.signal]);
    const creating = this.doCreate(signal);
    this.creating = creating.catch(() => undefined);
    return creating;
  }

  /**
   * Replaces the value, keeping the key on its lease (and putting it back if someone else had
   * deleted it). The new value is also what a put-back writes, even when this call fails.
   *
   * @throws InvalidArgumentError bad value (before any I/O)
   * @throws InvalidStateError not created
   * @throws SessionLostError the lease is lost (the key will be re-created with this value)
   * @throws KeyExistsError another live owner holds the key now
   * @throws ClosedError the connector is closed
   */
  async update(value: string): Promise<void> {
    this.ctx.assertOpen();
    validateValue(this.key, value, this.ctx.maxRequestBytes);
    if (!this.created) {
      throw new InvalidStateError(
        `ephemeral key ${this.key} is ${this.stateValue}; create() first`,
      );
    }
    this.value = value;
    const session = this.session;
    if (session === undefined) {
      throw new SessionLostError('?', 'the key is being re-created under a new lease');
    }
    session.assertAlive();
    await this.ownWrites.serial(() => this.putIfAbsentOrOurs(session, value));
  }

  /**
   * Deletes the key at once (only if it is still ours), stops re-creation, ends the error stream
   * and releases the lease (revoked when no other recipe uses it). Idempotent. If etcd cannot be
   * reached the call rejects with the typed error, but everything local is cleaned up, and the
   * key is deleted once etcd answers (or goes with its lease).
   */
  delete(): Promise<void> {
    if (this.stateValue === 'idle') return Promise.resolve();
    this.deleting ??= this.doDelete().finally(() => {
      this.deleting = undefined;
    });
    return this.deleting;
  }

  /** Same as `delete()`, never rejects. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.delete().catch(() => undefined);
  }

  private async doCreate(signal: AbortSignal): Promise<AsyncIterable<Error>> {
    let ref: SessionRef | undefined;
    let revision: number;
    try {
      const acquired = await this.acquire(signal);
      ref = acquired;
      signal.throwIfAborted();
      revision = await this.ownWrites.serial(() =>
        this.putIfAbsentOrOurs(acquired.session, this.value),
      );
      if (signal.aborted) {
        const r = acquired;
        if (this.stateValue === 'deleting') {
          // A delete() raced us after the write: hand it the session; it removes the key.
          this.adopt(r);
        } else {
          // The caller gave up after the write: take the key back so nothing stays behind.
          await this.ownWrites.serial(() => this.deleteIfOurs(r.session)).catch(() => undefined);
        }
        throw new AbortError({ cause: signal.reason });
      }
    } catch (err) {
      if (ref !== undefined && this.ref !== ref) await ref.release();
      if (this.stateValue === 'creating') this.reset();
      throw signal.aborted && !(err instanceof EtcdConnectorError)
        ? new AbortError({ cause: err })
        : err;
    }
    const errors = new StreamQueue<Error>({
      capacity: ERROR_STREAM_CAPACITY,
      overflow: 'coalesce',
    });
    this.errors = errors;
    this.stateValue = 'live';
    this.adopt(ref);
    const session = ref.session;
    // Our write is the first state we know; the watch starts right after it.
    this.ownWrites.begin({ present: true, lease: session.leaseId, value: this.value, revision });
    this.startWatch(revision + 1);
    if (!session.isAlive()) this.onSession(session, { state: 'lost', leaseId: session.leaseIdHex });
    return errors;
  }

  /**
   * A reference to the user's session, or the shared one for our TTL; if `signal` fires first, a
   * late session is given back.
   */
  private async acquire(signal: AbortSignal, retry = false): Promise<SessionRef> {
    if (this.bound !== undefined) return this.ctx.sessions.retain(this.bound);
    const acquiring = this.ctx.sessions.acquire(this.ttl, { signal, retry });
    try {
      return await abortable(acquiring, signal);
    } catch (err) {
      acquiring.then(
        (r) => r.release(),
        () => undefined,
      );
      throw err;
    }
  }

  /** Makes `ref` the key's session and listens for its loss. */
  private adopt(ref: SessionRef): void {
    this.unsubscribe?.();
    if (this.ref?.session !== ref.session) this.unconfirmed = [];
    this.ref = ref;
    const session = ref.session;
    this.unsubscribe = session.onChange((change) => {
      this.onSession(session, change);
    });
  }

  private onSession(session: Session, change: SessionStateChange): void {
    if (session !== this.session) return;
    if (change.state !== 'lost' && change.state !== 'closed') return;
    if (this.stateValue !== 'live' && this.stateValue !== 'recovering') return;
    // Reported at once: from here on the key may be gone or someone else's.
    this.errors?.push(
      change.error ?? new SessionLostError(session.leaseIdHex, `session ${change.state}`),
    );
    this.lostLeases.add(session.leaseId);
    if (this.bound !== undefined) {
      // Bound to the user's lease: nothing to put it back under.
      this.controller.abort(new ClosedError('ephemeral key'));
      void this.delete().catch(() => undefined);
      return;
    }
    this.stateValue = 'recovering';
    // A new lease, a new wait: if another owner still holds the key, say so again.
    this.blocked = false;
    this.kick();
  }

  /** What "ours" means now (see engines/key-ownership.ts). */
  private ownership(): Ownership {
    const s = this.session;
    return {
      current: s?.isAlive() === true ? s.leaseId : undefined,
      value: this.value,
      unconfirmed: this.unconfirmed,
    };
  }

  /** Watches our key from `startRevision` on the connector's shared watch stream. */
  private startWatch(startRevision: number): void {
    this.watch?.close();
    this.watch = this.ctx.watches.watch(
      { key: this.keyBytes, startRevision },
      {
        onEvents: (events) => {
          this.watchBackoff.reset();
          this.ownWrites.push(events);
        },
        onProgress: () => {
          this.watchBackoff.reset();
        },
        onCompacted: () => {
          this.watch = undefined;
          this.resync = 'compacted';
          this.kick();
        },
        onEnded: (error) => {
          this.watch = undefined;
          if (error instanceof ClosedError) return; // the connector is closing
          // Refused (e.g. permissions changed): say so, and try again from a fresh read.
          this.errors?.push(error);
          this.resync = 'ended';
          this.kick();
        },
      },
    );
  }

  /**
   * Judges the events the watch delivered: reports what someone else did and starts a put-back
   * when the key is no longer as we want it. Runs only while none of our writes is in flight, so
   * the revisions of all our answered writes are known.
   */
  private judgeEvents(): void {
    if (this.stateValue !== 'live' && this.stateValue !== 'recovering') {
      this.ownWrites.drop();
      return;
    }
    const own = this.ownership();
    const latest = this.ownWrites.take((prior, next, e) => {
      const change = foreignChange(prior, next, own);
      if (change === undefined) return;
      const lease = next.lease === '0' ? undefined : leaseIdHex(next.lease);
      this.changes.push(new KeyChangedError(this.key, change, e.revision, lease));
    });
    if (latest === undefined) return;
    if (this.ownWrites.replaced(latest) || isDesired(latest, own)) {
      // A write of ours already replaced it, or it is as we want it: nothing to put back.
      this.flushChanges(false);
      return;
    }
    if (this.blocked && !mayTake(latest, own) && !this.lostLeases.has(latest.lease)) {
      // The owner we wait for rewrote its key: still live, still not ours.
      this.flushChanges(false);
      return;
    }
    this.stateValue = 'recovering';
    this.kick();
  }

  /** Reports the changes noted since the last put-back attempt. */
  private flushChanges(leaseEnded: boolean): void {
    const changes = this.changes;
    this.changes = [];
    for (const c of changes) {
      // Our lease was revoked behind our back: etcd deleted the key with it (SessionLostError).
      if (leaseEnded && c.change === 'deleted') continue;
      this.errors?.push(c);
    }
  }

  /** Starts the put-back loop, or asks the running one for another pass. */
  private kick(): void {
    if (this.stateValue !== 'live' && this.stateValue !== 'recovering') return;
    this.dirty = true;
    if (this.healing !== undefined) return;
    const healing = this.heal(this.controller.signal).finally(() => {
      if (this.healing === healing) this.healing = undefined;
      // A kick between the loop's last check and here found it still running.
      if (this.dirty) this.kick();
    });
    this.healing = healing;
  }

  /** Runs passes while asked to; never rejects. */
  private async heal(signal: AbortSignal): Promise<void> {
    while (this.dirty && !isAborted(signal)) {
      this.dirty = false;
      try {
        await this.healOnce(signal);
      } catch (err) {
        if (isAborted(signal) || err instanceof ClosedError) return;
        const error = this.ctx.toError(err, `put back ${this.key}`);
        if (!error.retryable && !this.reportedFailure) {
          // Retrying cannot help (e.g. permission denied): say so once; keep trying anyway.
          this.reportedFailure = true;
          this.errors?.push(error);
        }
        // etcd unreachable or slow: no watch can tell when it is back, so try again later.
        this.dirty = true;
        await delay(this.backoff.next(), signal).catch(() => undefined);
      }
    }
  }

  /**
   * One pass: re-create a lost watch from a fresh read, or get a live lease (after a loss) and put
   * the key back under it, unless another live owner holds it.
   */
  private async healOnce(signal: AbortSignal): Promise<void> {
    if (this.resync !== undefined) {
      await this.rewatch(signal);
      return;
    }
    let ref = this.ref;
    if (ref?.session.isAlive() !== true) {
      // A key bound to the user's session ends with it (onSession).
      if (this.bound !== undefined) return;
      this.unsubscribe?.();
      this.unsubscribe = undefined;
      this.ref = undefined;
      if (ref !== undefined) await ref.release();
      ref = await this.acquire(signal, true);
      this.adopt(ref);
    }
    const session = ref.session;
    if (!this.ownWrites.busy && isDesired(this.ownWrites.seen, this.ownership())) {
      // Put back meanwhile (an update() did it): nothing to write.
      this.settled();
      return;
    }
    try {
      await this.ownWrites.serial(() => this.putIfAbsentOrOurs(session, this.value));
    } catch (err) {
      if (isAborted(signal) || err instanceof ClosedError) return;
      if (err instanceof SessionLostError) {
        // onSession reports the loss and asks for another pass under a new lease.
        this.flushChanges(true);
        return;
      }
      this.flushChanges(false);
      if (!(err instanceof KeyExistsError)) throw err;
      const holder = this.holderLease;
      if (holder !== undefined && this.lostLeases.has(holder)) {
        // Still under our own lost lease: stale keepalives delivered after a partition can renew
        // it on the server. It is ours to end; then the key is free.
        await this.revokeLost(holder);
        this.dirty = true;
        return;
      }
      this.stateValue = 'recovering';
      if (!this.blocked) {
        this.blocked = true;
        this.errors?.push(err);
      }
      // No timer: the watch sees that owner's key go (or change) and kicks us again.
      return;
    }
    this.backoff.reset();
    this.flushChanges(false);
    // Lost during the write: onSession asked for another pass.
    if (!session.isAlive()) return;
    this.lostLeases.clear();
    this.settled();
  }

  /** The key is ours again, as we want it. */
  private settled(): void {
    this.blocked = false;
    this.reportedFailure = false;
    if (!this.dirty && this.stateValue === 'recovering') this.stateValue = 'live';
  }

  /**
   * After a compaction (or a refused watch), reads the key and watches it again from there; the
   * read is judged like one event that stands for everything missed.
   */
  private async rewatch(signal: AbortSignal): Promise<void> {
    if (this.resync === 'ended') await delay(this.watchBackoff.next(), signal);
    let res;
    try {
      res = await this.ctx.client.kv.range({ key: this.keyBytes }, this.ctx.callOptions());
    } catch (err) {
      throw this.ctx.toError(err, `read ${this.key}`);
    }
    if (isAborted(signal)) return;
    this.resync = undefined;
    const revision = Number(res.header.revision);
    this.startWatch(revision + 1);
    this.ownWrites.push([readAsEvent(this.key, res.kvs[0], revision)]);
  }

  private async doDelete(): Promise<void> {
    this.stateValue = 'deleting';
    this.controller.abort(new ClosedError('ephemeral key'));
    // No more put-backs: the watch goes first, then the running pass ends.
    this.watch?.close();
    this.watch = undefined;
    await this.creating;
    await this.healing;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const ref = this.ref;
    const session = ref?.session;
    let failure: Error | undefined;
    // The connector's close revokes every lease at once; no key-by-key delete needed then.
    if (session?.isAlive() === true && !this.ctx.closing) {
      try {
        await this.ownWrites.serial(() => this.deleteIfOurs(session));
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
        // The key may still be there: let it go with the lease now, not after the pool's linger;
        // and should others hold the session on, deleted once etcd answers (see reset()).
        this.ctx.sessions.revokeAtLastRelease(session);
        this.unanswered.add(session);
      }
    }
    await ref?.release();
    // A key still under a lease we lost (not yet expired on the server) goes with that lease.
    await Promise.all([...this.lostLeases].map((id) => this.revokeLost(id)));
    this.reset();
    if (failure !== undefined) throw failure;
  }

  /** Revokes a lease this key lost (best effort; it expires by its TTL anyway). */
  private async revokeLost(leaseId: string): Promise<void> {
    try {
      await this.ctx.client.leaseClient.leaseRevoke({ ID: leaseId }, this.ctx.callOptions());
      this.lostLeases.delete(leaseId);
    } catch (err) {
      if (this.ctx.toError(err, 'revoke') instanceof SessionLostError) {
        this.lostLeases.delete(leaseId); // already gone
      } else {
        await delay(200, this.controller.signal).catch(() => undefined);
      }
    }
  }

  private reset(): void {
    this.lostLeases.clear();
    this.holderLease = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.ref = undefined;
    this.bound = undefined;
    this.watch?.close();
    this.watch = undefined;
    this.ownWrites.reset();
    this.unconfirmed = [];
    this.changes = [];
    this.dirty = false;
    this.blocked = false;
    this.reportedFailure = false;
    this.resync = undefined;
    this.errors?.end();
    this.errors = undefined;
    this.untrack?.();
    this.untrack = undefined;
    if (this.claimed) held.get(this.ctx)?.delete(this.key);
    this.claimed = false;
    this.unuse?.();
    this.unuse = undefined;
    // A put that went unanswered may land after our delete and bring the key back under a lease
    // that lives on, and a failed delete left it there: watched for, and deleted, while that
    // lease lives.
    for (const session of this.unanswered) {
      if (session.isAlive()) sweepStrays(this.ctx, session, this.key);
    }
    this.unanswered.clear();
    this.creating = undefined;
    this.healing = undefined;
    this.stateValue = 'idle';
  }

  /**
   * One transaction applying the ownership rule; resolves with the revision of our put. The key
   * under another live lease is reported (KeyExistsError), never overwritten.
   */
  private async putIfAbsentOrOurs(session: Session, value: string): Promise<number> {
    const request = claimTxn(this.keyBytes, value, session.leaseId);
    let res;
    try {
      res = await this.ctx.client.kv.txn(request, this.ctx.callOptions());
    } catch (err) {
      const e = this.ctx.toError(err, `put ${this.key}`);
      if (e instanceof SessionLostError) {
        // etcd says our lease does not exist: lost for every recipe on it, as of now.
        session.leaseGone();
        throw new SessionLostError(session.leaseIdHex, 'etcd says the lease is gone', {
          cause: err,
        });
      }
      if (!session.isAlive()) {
        throw new SessionLostError(session.leaseIdHex, 'the lease is gone', { cause: err });
      }
      // No answer: etcd may still apply it; seeing this value later is not someone else's doing.
      if (e.retryable) {
        this.unconfirmed = [...this.unconfirmed, value].slice(-UNCONFIRMED_CAPACITY);
        this.unanswered.add(session);
      }
      throw e;
    }
    const outcome = claimOutcome(res);
    if (outcome.written) {
      const revision = Number(res.header.revision);
      this.ownWrites.wrote(revision);
      // Ours again, as we want it (e.g. an update() put back a key someone had deleted).
      if (session === this.session && value === this.value && session.isAlive()) this.settled();
      return revision;
    }
    const holder = outcome.holder;
    this.holderLease = holder;
    throw new KeyExistsError(this.key, holder === undefined ? undefined : leaseIdHex(holder));
  }

  /** Deletes the key only while it is under our lease: never someone else's key. */
  private async deleteIfOurs(session: Session): Promise<void> {
    try {
      await this.ctx.client.kv.txn(
        deleteIfUnderTxn(this.keyBytes, session.leaseId),
        this.ctx.callOptions(),
      );
    } catch (err) {
      throw this.ctx.toError(err, `delete ${this.key}`);
    }
  }
}
