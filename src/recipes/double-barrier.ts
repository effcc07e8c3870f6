/**
 * A double barrier: `enter()` blocks until `count` participants have entered, `leave()` blocks
 * until all of them have left. Go's `contrib/recipes.DoubleBarrier` layout, so Go processes and
 * ours meet in one barrier:
 *
 * - `path/waiters/<UnixNano>` = `''` per participant, under its session's lease;
 * - `path/ready` = `''`, no lease: put when the count is reached, deleted by the last to leave.
 *
 * Where ours differs from Go (Go's bugs, not its layout):
 * - Participants are ranked by create revision: the first `count` are in, a later one fails with
 *   TooManyParticipantsError *and removes its key* (Go's leaves it, and when more than `count`
 *   arrive at once Go can have nobody put `ready`). Whoever sees the first `count` keys present
 *   puts `ready`, so the count-th dying before it could does not block the others.
 * - Enter waits for a `ready` written after its own key while `count` were in (a late copy of
 *   an earlier put opens nothing), watching `ready`, its own key, and only its successor (or, as
 *   the newest, the arrivals): one arrival wakes one participant, not all.
 * - After every wake-up it reads again: its key must still exist under a live session, else
 *   SessionLostError (Go keeps waiting on a key that no longer counts).
 *
 * A participant that dies inside the barrier does not block the others forever: its key goes
 * with its lease (TTL after its death), and every wait re-reads on that delete. Leave is Go's
 * protocol: the participant with the lowest key stays until every other has gone, then deletes
 * `ready` and itself; each other deletes its key and waits until the participants that were in
 * when it left are gone (Go waits for later arrivals too, which a busy barrier never runs out of).
 */
import {
  CompareResult,
  CompareTarget,
  type ICompare,
  type IKeyValue,
  type IRangeRequest,
  type ITxnRequest,
  type ITxnResponse,
} from 'etcd3';
import {
  InvalidArgumentError,
  InvalidStateError,
  SessionLostError,
  TooManyParticipantsError,
} from '../errors.js';
import { persist, RecipeLife, type CallOptions, type CallScope } from '../engines/call-scope.js';
import type { ConnectorContext } from '../engines/context.js';
import { checkSessionOptions, HeldSession, type SessionOptions } from '../engines/held-session.js';
import { waitUntil, type Check, type WatchSpec } from '../engines/key-wait.js';
import { absent, createdAt, deleteOp, putOp, uniqueKey } from '../engines/keys.js';
import { sweepStrays, useKey } from '../engines/stray-keys.js';
import { kvAt, kvsAt, prefixRange, rangeOp } from '../engines/ranges.js';
import { isCompactedRead } from '../engines/reflector.js';
import { validatePath } from '../paths.js';
import type { Session } from '../session/session.js';
import { isAborted } from '../transport/timers.js';

/** Options of `conn.newDoubleBarrier(path, count, options)`. */
export type DoubleBarrierOptions = SessionOptions;

/** Our place in the barrier between `enter()` and the end of `leave()`. */
interface Place {
  readonly key: string;
  readonly createRevision: string;
  readonly session: Session;
  /**
   * We deleted our key in `leave()` after a read at this revision: we are out, and wait for the
   * participants that were in then (created at or before it) — not for a next round's.
   */
  leftAt: number | undefined;
}

/**
 * A double barrier on `path` for `count` participants. Made by
 * `conn.newDoubleBarrier(path, count)`; one object is one participant.
 */
export class DoubleBarrier implements AsyncDisposable {
  /** The waiters' prefix, `path/waiters/` (Go's keys are `path/waiters/<UnixNano>`). */
  readonly waitersPrefix: string;
  /** The flag key, `path/ready`. */
  readonly readyKey: string;

  /** `readyKey` and the waiters' range, as etcd takes them (made once). */
  private readonly readyBuf: Buffer;
  private readonly waiters: { key: Buffer; range_end: Buffer };
  private readonly life: RecipeLife;
  private readonly ttl: number;
  private readonly bound: Session | undefined;
  private held: HeldSession | undefined;
  private place: Place | undefined;
  private busy = false;
  /** Ends our use of the waiter key's name while inside (see engines/stray-keys.ts). */
  private unuse: (() => void) | undefined;
  /**
   * Waiter keys a try of ours went unanswered for (a late copy may still create them), or whose
   * delete failed (they may still be there): swept for once out of the barrier.
   */
  private readonly unanswered = new Map<string, Session>();

  /** @internal Use `conn.newDoubleBarrier(path, count, options)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    readonly count: number,
    options?: DoubleBarrierOptions,
  ) {
    validatePath(path, ctx.root);
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) {
      throw new InvalidArgumentError('count', `must be an integer >= 1, got ${String(count)}`);
    }
    const { ttl, bound } = checkSessionOptions(options);
    this.ttl = ttl;
    this.bound = bound;
    this.waitersPrefix = `${path}/waiters/`;
    this.readyKey = `${path}/ready`;
    this.readyBuf = Buffer.from(this.readyKey);
    this.waiters = prefixRange(this.waitersPrefix);
    this.life = new RecipeLife(ctx, `double barrier ${path}`, () => this.teardown());
  }

  /** Our waiter key while inside (after `enter()`, until `leave()` ends). */
  get key(): string | undefined {
    return this.place?.key;
  }

  /**
   * Enters: puts our waiter key and waits until `count` participants are in. Waits through etcd
   * outages until `signal` fires; an aborted enter removes our key.
   *
   * @throws TooManyParticipantsError `count` others were in first (our key is removed)
   * @throws SessionLostError our session (so our key) ended while waiting
   * @throws InvalidStateError entered already, or another call of this participant is running
   * @throws AbortError / ClosedError
   */
  async enter(options?: CallOptions): Promise<void> {
    const scope = this.life.scope(options);
    if (this.place !== undefined) throw new InvalidStateError(`${this.path}: entered already`);
    this.claim();
    try {
      this.held ??= new HeldSession(this.ctx, this.ttl, `double barrier ${this.path}`, this.bound);
      const session = await this.held.get(scope.signal).catch((e: unknown) => {
        throw scope.translate(e);
      });
      const place = await this.putWaiter(scope, session);
      this.place = place;
      try {
        await this.waitReady(scope, place);
      } catch (err) {
        // Out of the barrier: our key must not count for anyone.
        this.place = undefined;
        await this.removeKey(place);
        await this.releaseSession();
        throw scope.translate(err);
      }
    } finally {
      this.busy = false;
    }
  }

  /**
   * Leaves: waits until every participant has left (Go's protocol, see the file comment). Waits
   * through etcd outages until `signal` fires; an aborted leave removes our key (we are out,
   * without waiting for the others).
   *
   * @throws SessionLostError our session ended while inside (the others went on without us)
   * @throws InvalidStateError not entered, or another call of this participant is running
   * @throws AbortError / ClosedError
   */
  async leave(options?: CallOptions): Promise<void> {
    const scope = this.life.scope(options);
    const place = this.place;
    if (place === undefined) throw new InvalidStateError(`${this.path}: leave() before enter()`);
    this.claim();
    try {
      await this.waitAllLeft(scope, place);
      this.place = undefined;
      await this.releaseSession();
    } catch (err) {
      if (!(err instanceof SessionLostError)) {
        if (isAborted(scope.signal)) {
          this.place = undefined;
          await this.removeKey(place);
          await this.releaseSession();
        }
        throw scope.translate(err);
      }
      this.place = undefined;
      await this.releaseSession();
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /** Leaves at once without waiting (our key is deleted) and ends pending calls. Idempotent. */
  close(): Promise<void> {
    return this.life.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private claim(): void {
    if (this.busy) {
      throw new InvalidStateError(`${this.path}: another enter() or leave() is running`);
    }
    this.busy = true;
  }

  /** Go's newUniqueEphemeralKey: `path/waiters/<UnixNano>` = '' under our lease, never reused. */
  private async putWaiter(scope: CallScope, session: Session): Promise<Place> {
    for (;;) {
      const key = uniqueKey(`${this.path}/waiters`);
      const keyBuf = Buffer.from(key);
      // The same key on every try: a try whose answer was lost may have created it already.
      const res = await persist(this.ctx, scope, `enter ${this.path}`, () =>
        this.ctx.client.kv
          .txn(
            {
              // Go's putNewKV: only a new key (another process may have picked the same nanos).
              compare: [absent(keyBuf)],
              success: [putOp(keyBuf, '', session.leaseId)],
              // Taken: ours (from a try whose answer was lost) only if it has our lease.
              failure: [rangeOp({ key: keyBuf })],
            },
            this.ctx.callOptions(),
          )
          .catch((err: unknown) => {
            this.unanswered.set(key, session);
            throw err;
          }),
      ).catch((err: unknown) => {
        // Given up on: nobody of ours will use this key, so a late copy is swept for at once.
        if (this.unanswered.delete(key) && session.isAlive()) sweepStrays(this.ctx, session, key);
        throw err;
      });
      const kv = kvAt(res.responses, 0);
      if (res.succeeded || kv?.lease === session.leaseId) {
        this.unuse = useKey(this.ctx, key);
        const createRevision = res.succeeded ? res.header.revision : (kv?.create_revision ?? '');
        return { key, createRevision, session, leftAt: undefined };
      }
    }
  }

  private async waitReady(scope: CallScope, place: Place): Promise<void> {
    const keyBuf = Buffer.from(place.key);
    const { readyBuf, waiters: range } = this;
    await this.waitAt<true>(scope, place, 'enter', async () => {
      const res = await this.txn({
        success: [
          rangeOp({ key: keyBuf, keys_only: true }),
          // The first count + 1 participants: are we in, and is the count reached?
          rangeOp(this.firstParticipants()),
          rangeOp({ key: readyBuf, keys_only: true }),
        ],
      });
      this.assertInside(place, kvAt(res.responses, 0));
      // Our rank first: a `ready` put just after we arrived was put for the `count` before us
      // when we are not among the first `count` (chaos run: three in a barrier of two). A
      // participant's rank never grows: only keys before it can go.
      const first = kvsAt(res.responses, 1);
      const rank = first.findIndex((kv) => kv.key.equals(keyBuf));
      if (rank < 0 || rank >= this.count) {
        throw new TooManyParticipantsError(this.path, this.count);
      }
      const ready = kvAt(res.responses, 2);
      // Released by someone else after we arrived (an older `ready` is a previous round's) — for
      // us only if `count` were in when it was put, we among the first `count`: ranks drop as
      // participants leave, and a third that looks only after one of the two has left would
      // otherwise take their `ready` for its own (chaos run); and a put whose answer was lost
      // may land late, when fewer are in (seed 9012: a stalled member applied an earlier round's
      // put 40 ms after a lone participant arrived).
      if (ready !== undefined && BigInt(ready.mod_revision) > BigInt(place.createRevision)) {
        const opened = await this.openedAt(keyBuf, ready.mod_revision);
        if (opened === 'too many') throw new TooManyParticipantsError(this.path, this.count);
        if (opened === 'in') return { done: true, value: true };
      }
      if (first.length >= this.count) {
        // The first `count` are all here: open the barrier (Go's put, no lease), only while our
        // key is in: a copy of this put that lands after we left opens nothing.
        const put = await this.txn({
          compare: [createdAt(keyBuf, place.createRevision)],
          success: [putOp(readyBuf, '')],
        });
        if (put.succeeded) return { done: true, value: true };
        return { done: false, revision: Number(res.header.revision), watch: [] };
      }
      const successor = first[rank + 1];
      const watch: WatchSpec[] = [{ key: readyBuf }, { key: keyBuf }];
      // The newest watches the arrivals; any other only its successor (should it die before
      // `ready` was put, we must notice). One arrival wakes one participant. A put of `ready`
      // is read again, as above: it may be a late copy.
      watch.push(
        successor === undefined
          ? { key: range.key, rangeEnd: range.range_end }
          : {
              key: successor.key,
            },
      );
      return { done: false, revision: Number(res.header.revision), watch };
    });
  }

  private waitAllLeft(scope: CallScope, place: Place): Promise<void> {
    const keyBuf = Buffer.from(place.key);
    const { readyBuf, waiters: range } = this;
    return this.waitAt<undefined>(scope, place, 'leave', async () => {
      if (place.leftAt !== undefined) return this.waitOthersLeft(place.leftAt);
      const res = await this.txn({
        success: [
          rangeOp({ key: keyBuf, keys_only: true }),
          rangeOp({ ...range, count_only: true }),
          // Go orders leaving by mod revision: the lowest waits for the highest.
          rangeOp({
            ...range,
            sort_target: 'Mod',
            sort_order: 'Ascend',
            limit: 1,
            keys_only: true,
          }),
          rangeOp({
            ...range,
            sort_target: 'Mod',
            sort_order: 'Descend',
            limit: 1,
            keys_only: true,
          }),
        ],
      });
      const revision = Number(res.header.revision);
      const count = Number(res.responses[1]?.response_range.count ?? 0);
      const lowest = kvAt(res.responses, 2);
      const highest = kvAt(res.responses, 3);
      this.assertInside(place, kvAt(res.responses, 0));
      if (count === 1) {
        // Only ours is left: the last one out closes the barrier, ours and `ready` at once.
        const cleaned = await this.txn({
          compare: [
            // Our key is still ours...
            createdAt(keyBuf, place.createRevision),
            // ...and no other participant is in (the ranges on both sides of our key).
            noKeysIn(range.key, keyBuf),
            noKeysIn(Buffer.concat([keyBuf, Buffer.from([0])]), range.range_end),
          ],
          success: [deleteOp(readyBuf), deleteOp(keyBuf)],
        });
        if (cleaned.succeeded) return { done: true, value: undefined };
        return { done: false, revision, watch: [] };
      }
      if (lowest?.key.equals(keyBuf) === true && highest !== undefined) {
        // Lowest: wait for the highest to go, then look again.
        return { done: false, revision, watch: [{ key: highest.key }, { key: keyBuf }] };
      }
      // Not the lowest: out now, then wait for the others of this read (the lowest, the last to
      // go, among them) to go. Our key is done with: a late copy of its put landing while we
      // wait would be a participant nobody is, and the lowest would wait for it (chaos run) —
      // swept from now on.
      await this.removeKey(place);
      place.leftAt = revision;
      this.disown();
      return { done: false, revision, watch: [] };
    });
  }

  /**
   * Out of the barrier: done once every participant created at or before `leftAt` (those in when
   * we left) is gone. Participants that arrived since belong to a next round (Go would wait for
   * them too, for as long as they keep coming). The last one out deletes `ready` when it could
   * not (it died): only while nobody is in at all.
   */
  private async waitOthersLeft(leftAt: number): Promise<Check<undefined>> {
    const { readyBuf, waiters: range } = this;
    const res = await this.txn({
      success: [
        // The oldest of those in when we left, if any is still in.
        rangeOp({
          ...range,
          max_create_revision: String(leftAt),
          sort_target: 'Create',
          sort_order: 'Ascend',
          limit: 1,
          keys_only: true,
        }),
        rangeOp({ ...range, count_only: true }),
        rangeOp({ key: readyBuf, keys_only: true }),
      ],
    });
    const oldest = kvAt(res.responses, 0);
    if (oldest !== undefined) {
      return { done: false, revision: Number(res.header.revision), watch: [{ key: oldest.key }] };
    }
    const everyone = Number(res.responses[1]?.response_range.count ?? 0);
    if (everyone === 0 && kvAt(res.responses, 2) !== undefined) {
      await this.txn({
        compare: [noKeysIn(range.key, range.range_end)],
        success: [deleteOp(readyBuf)],
      });
    }
    return { done: true, value: undefined };
  }

  /** A wait of ours in `place` (to enter or to leave): our session's changes wake it too. */
  private waitAt<T>(
    scope: CallScope,
    place: Place,
    phase: 'enter' | 'leave',
    check: () => Promise<Check<T>>,
  ): Promise<T> {
    return waitUntil<T>({
      ctx: this.ctx,
      what: `${phase} ${this.path}`,
      signal: scope.signal,
      subscribe: (wake) => place.session.onChange(wake),
      check,
    });
  }

  /**
   * Whether the barrier was open for us at `revision` (a put of `ready`): `count` participants
   * in, we among the first `count` ('in'); we beyond them ('too many'); fewer in ('not open': a
   * late copy of an earlier put). A read of etcd's history there; when it is compacted nobody can
   * tell, and we count as one too many: a refusal in that rare race (as if we had come a moment
   * later) is safer than three in a barrier of two.
   */
  private async openedAt(
    keyBuf: Buffer,
    revision: string,
  ): Promise<'in' | 'too many' | 'not open'> {
    let kvs: readonly IKeyValue[];
    try {
      kvs = (
        await this.ctx.client.kv.range(
          { ...this.firstParticipants(), revision },
          this.ctx.callOptions(),
        )
      ).kvs;
    } catch (err) {
      if (isCompactedRead(err)) return 'too many';
      throw err;
    }
    const rank = kvs.findIndex((kv) => kv.key.equals(keyBuf));
    if (rank < 0 || rank >= this.count) return 'too many';
    return kvs.length >= this.count ? 'in' : 'not open';
  }

  /** The first `count` + 1 participants, by create revision (keys only). */
  private firstParticipants(): IRangeRequest {
    return {
      ...this.waiters,
      sort_target: 'Create',
      sort_order: 'Ascend',
      limit: this.count + 1,
      keys_only: true,
    };
  }

  /** Our key must exist with our create revision under a live session. */
  private assertInside(place: Place, kv: IKeyValue | undefined): void {
    if (!place.session.isAlive()) {
      throw new SessionLostError(place.session.leaseIdHex, `waiter key ${place.key} went with it`);
    }
    if (kv?.create_revision !== place.createRevision) {
      throw new SessionLostError(place.session.leaseIdHex, `waiter key ${place.key} was deleted`);
    }
  }

  /**
   * Deletes our key if it is still ours; best effort: if etcd refuses, the key goes with the
   * lease, revoked at its last release rather than after the pool's linger.
   */
  private async removeKey(place: Place): Promise<void> {
    if (this.ctx.closing) return;
    const keyBuf = Buffer.from(place.key);
    await this.ctx.client.kv
      .txn(
        { compare: [createdAt(keyBuf, place.createRevision)], success: [deleteOp(keyBuf)] },
        this.ctx.callOptions(),
      )
      .catch(() => {
        // Still there, maybe: it goes with the lease, or, should others hold the session on, it
        // is deleted once etcd answers (a participant key left behind would count for good).
        this.ctx.sessions.revokeAtLastRelease(place.session);
        this.unanswered.set(place.key, place.session);
      });
  }

  /**
   * Lets the session go, once out of the barrier. A waiter key a try of ours went unanswered for
   * may still be created by a late copy of it, and would count as a participant: swept for while
   * its lease lives.
   */
  private async releaseSession(): Promise<void> {
    this.disown();
    const held = this.held;
    this.held = undefined;
    await held?.close();
  }

  /**
   * Our waiter key is done with (deleted, or being let go): its name is no longer ours to use, and
   * the keys a write of ours may still create or left behind are swept for while their lease
   * lives.
   */
  private disown(): void {
    this.unuse?.();
    this.unuse = undefined;
    for (const [key, session] of this.unanswered) {
      if (session.isAlive()) sweepStrays(this.ctx, session, key);
    }
    this.unanswered.clear();
  }

  private async teardown(): Promise<void> {
    const place = this.place;
    this.place = undefined;
    if (place !== undefined && place.leftAt === undefined) await this.removeKey(place);
    await this.releaseSession();
  }

  /** A transaction of a wait's check: etcd's errors stay raw, the wait maps and retries them. */
  private txn(request: ITxnRequest): Promise<ITxnResponse> {
    return this.ctx.client.kv.txn(request, this.ctx.callOptions());
  }
}

/** "No key in [start, end)": etcd compares every key of the range; none exists -> version 0. */
function noKeysIn(start: Buffer, end: Buffer): ICompare {
  return {
    key: start,
    range_end: end,
    target: CompareTarget.Version,
    result: CompareResult.Equal,
    version: 0,
  };
}
