/**
 * A key bound to a lease: it lives while this process keeps its session alive and vanishes when
 * the process dies or pauses past the TTL (the liveness marker of service registration).
 *
 * Key layout: exactly the path given, value as given, `lease` = the connector's shared session for
 * the TTL. Every write is one transaction "absent, or already ours -> put", so a live key of
 * another owner is never overwritten.
 *
 * States: `alive` session — nothing to do; `suspended` — nothing reported (the lease may still
 * recover); `lost` — a SessionLostError goes on the error stream at once, then the key is put back
 * under a new lease as soon as etcd is reachable (KeyExistsError is reported meanwhile if another
 * owner took the key; retried with backoff until it frees). `delete()` removes it at once.
 */
import {
  CompareResult,
  CompareTarget,
  type ICompare,
  type IRequestOp,
  type ITxnResponse,
} from 'etcd3';
import {
  AbortError,
  ClosedError,
  EtcdConnectorError,
  InvalidArgumentError,
  InvalidStateError,
  KeyExistsError,
  SessionLostError,
} from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { validateSignal } from '../engines/lifecycle.js';
import { validateTtl, validateValue } from '../paths.js';
import type { Session, SessionStateChange } from '../session/session.js';
import { sessionOf, type SessionHandle } from '../session/session-handle.js';
import type { SessionRef } from '../session/session-pool.js';
import { StreamQueue } from '../transport/stream-queue.js';
import { abortable, Backoff, delay, isAborted } from '../transport/timers.js';

/**
 * Where an ephemeral key is in its life: `idle` (not created, or deleted), `creating`, `live`
 * (in etcd under a live lease), `recovering` (its lease was lost; being put back), `deleting`.
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
  private creating: Promise<unknown> | undefined;
  private recovery: Promise<void> | undefined;
  private deleting: Promise<void> | undefined;
  /** Leases this key lost (cleared on delete); a key still under one of them is ours. */
  private readonly lostLeases = new Set<string>();
  /** The lease of the other holder seen by the last failed put. */
  private holderLease: string | undefined;
  /** Writes run one at a time, so an `update` and a re-creation never reorder values. */
  private writes: Promise<unknown> = Promise.resolve();

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

  /** True between a successful `create()` and `delete()` (also while recovering from a loss). */
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
   * live owner holds it. Resolves with the error stream once the key is in etcd: it carries a
   * SessionLostError as soon as the lease is lost (the key is then re-created by itself) and a
   * KeyExistsError while another owner blocks the re-creation. It ends on `delete()`; leaving it
   * (`break`) only stops the reporting, the key stays.
   *
   * @throws InvalidArgumentError bad value or TTL (before any I/O)
   * @throws InvalidStateError already created (call `delete()` first)
   * @throws KeyExistsError another live owner holds the key
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
    this.stateValue = 'creating';
    this.value = value;
    this.ttl = ttl;
    this.bound = bound;
    this.controller = new AbortController();
    this.untrack = this.ctx.track({ close: () => this.delete().catch(() => undefined) });
    const signal =
      options.signal === undefined
        ? this.controller.signal
        : AbortSignal.any([options.signal, this.controller.signal]);
    const creating = this.doCreate(signal);
    this.creating = creating.catch(() => undefined);
    return creating;
  }

  /**
   * Replaces the value, keeping the key on its lease. The new value is also what a re-creation
   * after a loss writes, even when this call fails with SessionLostError.
   *
   * @throws InvalidArgumentError bad value (before any I/O)
   * @throws InvalidStateError not created
   * @throws SessionLostError the lease is lost (the key will be re-created with this value)
   * @throws KeyExistsError another owner holds the key now
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
    if (session === undefined || this.stateValue === 'recovering') {
      throw new SessionLostError(session?.leaseIdHex ?? '?', 'the key is being re-created');
    }
    session.assertAlive();
    await this.serial(() => this.putIfAbsentOrOurs(session, value));
  }

  /**
   * Deletes the key at once (only if it is still ours), stops re-creation, ends the error stream
   * and releases the lease (revoked when no other recipe uses it). Idempotent. If etcd cannot be
   * reached the call rejects with the typed error, but everything local is cleaned up and the key
   * goes when its lease expires.
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
    try {
      const acquired = await this.acquire(signal);
      ref = acquired;
      signal.throwIfAborted();
      await this.serial(() => this.putIfAbsentOrOurs(acquired.session, this.value));
      if (signal.aborted) {
        const r = acquired;
        if (this.stateValue === 'deleting') {
          // A delete() raced us after the write: hand it the session; it removes the key.
          this.adopt(r);
        } else {
          // The caller gave up after the write: take the key back so nothing stays behind.
          await this.serial(() => this.deleteIfOurs(r.session)).catch(() => undefined);
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
    if (this.stateValue === 'live') {
      this.stateValue = 'recovering';
      this.recovery = this.recover(this.controller.signal);
    }
  }

  /** Puts the key back under a new lease, until it is ours again or the key is deleted. */
  private async recover(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(100, 2000);
    let reportedExists = false;
    while (!signal.aborted) {
      try {
        let ref = this.ref;
        if (ref?.session.isAlive() !== true) {
          this.unsubscribe?.();
          this.unsubscribe = undefined;
          this.ref = undefined;
          if (ref !== undefined) await ref.release();
          ref = await this.acquire(signal, true);
          this.adopt(ref);
        }
        const s = ref.session;
        await this.serial(() => this.putIfAbsentOrOurs(s, this.value));
        // A loss during the write was ignored by onSession (we were recovering): check again.
        if (s.isAlive() && !isAborted(signal)) {
          this.stateValue = 'live';
          this.lostLeases.clear();
          return;
        }
        continue;
      } catch (err) {
        if (isAborted(signal) || err instanceof ClosedError) return;
        const holder = this.holderLease;
        if (err instanceof KeyExistsError && holder !== undefined && this.lostLeases.has(holder)) {
          // Still under our own lost lease: stale keepalives delivered after a partition can
          // renew it on the server. It is ours to end; then the key is free.
          await this.revokeLost(holder);
          continue;
        }
        if (err instanceof KeyExistsError && !reportedExists) {
          // Another owner's key expires with its lease; say so once per recovery.
          reportedExists = true;
          this.errors?.push(err);
        }
      }
      await delay(backoff.next(), signal).catch(() => undefined);
    }
  }

  private async doDelete(): Promise<void> {
    this.stateValue = 'deleting';
    this.controller.abort(new ClosedError('ephemeral key'));
    await this.creating;
    await this.recovery;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const ref = this.ref;
    const session = ref?.session;
    let failure: Error | undefined;
    // The connector's close revokes every lease at once; no key-by-key delete needed then.
    if (session?.isAlive() === true && !this.ctx.closing) {
      try {
        await this.serial(() => this.deleteIfOurs(session));
      } catch (err) {
        failure = err instanceof Error ? err : new Error(String(err));
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
    this.errors?.end();
    this.errors = undefined;
    this.untrack?.();
    this.untrack = undefined;
    this.creating = undefined;
    this.recovery = undefined;
    this.stateValue = 'idle';
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writes.then(fn, fn);
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** One transaction: absent -> put; ours -> put again; else report the other owner. */
  private async putIfAbsentOrOurs(session: Session, value: string): Promise<void> {
    const key = this.keyBytes;
    const put: IRequestOp = {
      request_put: { key, value: Buffer.from(value), lease: session.leaseId },
    };
    const request = {
      // Never written, or deleted since (create revision 0): the key is free.
      compare: [
        { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 },
      ],
      success: [put],
      failure: [
        {
          request_txn: {
            // Already under our lease (a retried or repeated create): writing again is harmless.
            compare: [leaseIs(key, session.leaseId)],
            success: [put],
            // Someone else's: read it to name the owner's lease in the error.
            failure: [{ request_range: { key } }],
          },
        },
      ],
    };
    let res: ITxnResponse;
    try {
      res = await this.ctx.client.kv.txn(request, this.ctx.callOptions());
    } catch (err) {
      const e = this.ctx.toError(err, `put ${this.key}`);
      if (e instanceof SessionLostError) session.leaseNotFound();
      if (e instanceof SessionLostError || !session.isAlive()) {
        throw new SessionLostError(session.leaseIdHex, 'the lease is gone', { cause: err });
      }
      throw e;
    }
    const nested = res.responses[0]?.response_txn;
    if (res.succeeded || nested?.succeeded === true) return;
    this.holderLease = nested?.responses[0]?.response_range.kvs[0]?.lease;
    throw new KeyExistsError(this.key);
  }

  /** Deletes the key only while it is under our lease: never someone else's key. */
  private async deleteIfOurs(session: Session): Promise<void> {
    const key = this.keyBytes;
    try {
      await this.ctx.client.kv.txn(
        {
          compare: [leaseIs(key, session.leaseId)],
          success: [{ request_delete_range: { key } }],
        },
        this.ctx.callOptions(),
      );
    } catch (err) {
      throw this.ctx.toError(err, `delete ${this.key}`);
    }
  }
}

/** Compare: the key is under lease `leaseId` (an absent key has lease 0). */
function leaseIs(key: Buffer, leaseId: string): ICompare {
  return { key, target: CompareTarget.Lease, result: CompareResult.Equal, lease: leaseId };
}
