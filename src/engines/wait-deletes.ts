/**
 * A place in a queue of keys ordered by create revision — the layout of Go's `concurrency.Election`
 * and `concurrency.Mutex` (`prefix + leaseId in hex`, under the session's lease) — and Go's
 * `waitDeletes` (key.go) as an engine that elections, locks and semaphores share.
 *
 * `waitTurn(slots)` waits until fewer than `slots` keys created before ours exist. It watches only
 * the `slots` keys created just before ours (for an election or a lock: the predecessor), starting
 * at the revision after its read, which etcd serves from its synced path at once (a watch from an
 * older revision waits for etcd's 100 ms catch-up loop; docs/faults.md). A deletion before that
 * window does not change the window, so a release wakes at most `slots` waiters, never the whole
 * queue.
 * After every wake-up it reads again: our key must still exist with our create revision under a
 * live session (the check Go added to Mutex after Jepsen and still lacks in its RWMutex). The
 * wake-up event cannot stand in for that read, even one watch covering our key and the
 * predecessor: it tells what was true at its revision, and our key may be gone by the time we act
 * on it (chaos seed 4012 held a lock 3 ms after etcd had revoked its key; BENCHMARKS.md, "Tried
 * and reverted"). A linearizable read sees every revision committed before it started.
 *
 * Why a release wakes at most `slots` waiters: a waiter holds once fewer than `slots` keys precede
 * it, and the newest `slots` of those (its window) are all it watches. While every key of its
 * window exists, `slots` keys precede it whatever happens further ahead, and no key can appear
 * before it (order revisions only grow); so only a change inside the window can change its answer.
 * A released key lies in the windows of the (at most) `slots` waiters after it, which re-read once
 * each; the rest of the queue sleeps. With `slots = 1` (locks, elections) that is one waiter; for
 * a semaphore of `n` permits it is between one (the oldest holder leaves) and `n` (the newest).
 *
 * Go's RWMutex orders by mod revision over a wider range than its own keys (`order: 'Mod'`,
 * `waitPrefix`): a reader waits on the writers before it, a writer on everybody before it.
 *
 * Window keys are watched on the connector's shared watch of each key (engines/key-watch.ts):
 * the next waiter of this process on the same key (a lock's predecessor is often the same key,
 * round after round) finds it running, and no wait creates or cancels a watch of its own. A new
 * watch starts from *now* (see WatchTarget.startRevision); one that started after our read, or
 * already passed a change since it, makes us read once more, and the re-read is then served by
 * it. A watch from `read revision + 1` would be served by etcd's 100 ms catch-up loop whenever
 * any write happened in between, which under load is most of the time.
 */
import {
  CompareResult,
  CompareTarget,
  type IKeyValue,
  type IRangeRequest,
  type IRequestOp,
  type ITxnRequest,
  type ITxnResponse,
} from 'etcd3';
import { SessionLostError, type EtcdConnectorError } from '../errors.js';
import { fencingToken, type FencingToken } from '../fencing.js';
import type { Session, SessionStateChange } from '../session/session.js';
import { isAborted } from '../transport/timers.js';
import type { WatchEvent } from '../transport/resume-point.js';
import type { ConnectorContext } from './context.js';
import { absent, putOp } from './keys.js';
import { watchId, watchKeyFrom } from './key-watch.js';
import { firstBy, lastBy, lastByUpTo, rangeOp, kvsAt, kvAt, type QueueOrder } from './ranges.js';
import { Latch } from './latch.js';
import { sweepStrays, useKey } from './stray-keys.js';

/** Counters of this process, for tests and benchmarks. */
export const queueStats = {
  /** Reads `waitTurn()` made: one per wake-up (and one per wait). */
  waitReads: 0,
};

/** What a join found. */
export interface JoinResult {
  /** Our key was created now (false: it existed under our lease, e.g. a retried request). */
  readonly created: boolean;
  /** Our key's value when it existed already. */
  readonly existingValue?: string;
  /** The lease (decimal) of the key when it existed already: not ours means a name clash. */
  readonly existingLease?: string;
  /** We are among the first `slots` keys: we hold without waiting. */
  readonly holder: boolean;
  /** etcd's revision when the join was applied. */
  readonly readRevision: number;
  /** The first `slots` keys at the join (oldest first). */
  readonly first: readonly IKeyValue[];
  /** The responses of the caller's extra reads. */
  readonly extra: readonly IKeyValue[][];
}

/** What the last read of a wait saw. */
export interface WaitView {
  readonly readRevision: number;
  /** The keys just before ours (newest first), at most `slots`. */
  readonly window: readonly IKeyValue[];
  /** The responses of the caller's extra reads. */
  readonly extra: readonly IKeyValue[][];
}

/** How a wait ended without an error from etcd. */
export type WaitOutcome =
  | { readonly kind: 'holder'; readonly view: WaitView }
  /** Our key was deleted or re-created: this place in the queue is gone. */
  | { readonly kind: 'gone' }
  /** The session ended (lost or closed). */
  | { readonly kind: 'lost' }
  | { readonly kind: 'aborted' };

export interface WaitOptions {
  slots: number;
  signal: AbortSignal;
  /** Extra reads in the same transaction (an election reads its leader). */
  extraReads?: readonly IRangeRequest[];
  /** Called after each read that did not make us a holder. */
  onWaiting?: (view: WaitView) => void;
  /** More keys to watch while waiting (an election follows its leader). */
  extraWatches?: (view: WaitView) => readonly string[];
}

/** A key a waiter watches, and whether only its deletion can matter. */
interface WakeTarget {
  key: string;
  deletesOnly: boolean;
}

/** Where a member's key lies and what it waits on; the defaults are Go's Mutex and Election. */
export interface QueueShape {
  /** Our key (default `prefix + leaseId in hex`). It must be unique to our session. */
  key?: string;
  /** The keys that can come before ours (default `prefix`). */
  waitPrefix?: string;
  /** Default `Create`. */
  order?: QueueOrder;
  /**
   * Members of this process use the key one after another (Go's mutex key behind the in-process
   * gate): watch it on the connector's shared watch of the key (engines/key-watch.ts) rather than
   * with a watch of the member's own.
   */
  shareKeyWatch?: boolean;
}

/**
 * One participant's key under `prefix` for one session. Create it, `join()` once, then
 * `waitTurn()` as often as needed (e.g. again after a suspension); `close()` when done.
 */
export class QueueMember {
  readonly key: string;
  readonly waitPrefix: string;
  readonly order: QueueOrder;
  private readonly keyBuf: Buffer;
  private revisionValue: string | undefined;
  /** Our key's revision in the queue's order (its create revision, or for `Mod` its mod revision). */
  private orderRevisionValue: bigint | undefined;
  private tokenValue: FencingToken | undefined;
  /** Stops the watch on our own key (a watch of our own, or our part of a shared one). */
  private own: (() => void) | undefined;
  private readonly shareOwnWatch: boolean;
  private ownNeedsReopen = false;
  private goneValue = false;
  /**
   * What the join's own transaction showed (taken by the first `waitTurn()`, which then needs no
   * read of its own): the window before our key and the extra reads, at one revision. The caller
   * passes the same extra reads to `join()` and `waitTurn()`.
   */
  private initialView: WaitView | undefined;
  private alertsAtJoin = 0;
  /** A wake-up watch ended for good (refused, or the connector closed). */
  private watchFailure: EtcdConnectorError | undefined;
  private readonly wake = new Latch();
  /** Wake-ups that concern holders too (see `alert()`). */
  private alerts = 0;
  private readonly offSession: () => void;
  private closed = false;
  /** Ends our use of the key (see stray-keys.ts). */
  private readonly unuse: () => void;
  /**
   * A join of ours went unanswered (a late copy of it may still create the key), or a remove
   * failed (the key may still be there): swept for at close.
   */
  private unanswered = false;

  constructor(
    private readonly ctx: ConnectorContext,
    readonly prefix: string,
    readonly session: Session,
    /** Told synchronously when our key is deleted (a holder must stop at once). */
    private readonly onGone?: () => void,
    /** Told synchronously on every session state change. */
    onSession?: (change: SessionStateChange) => void,
    shape: QueueShape = {},
  ) {
    this.key = shape.key ?? prefix + session.leaseIdHex;
    this.waitPrefix = shape.waitPrefix ?? prefix;
    this.order = shape.order ?? 'Create';
    this.shareOwnWatch = shape.shareKeyWatch === true;
    this.keyBuf = Buffer.from(this.key);
    this.unuse = useKey(ctx, this.key);
    this.offSession = session.onChange((change) => {
      onSession?.(change);
      this.alert();
    });
  }

  /** Create revision of our key (the fencing token's revision) once joined. */
  get revision(): string | undefined {
    return this.revisionValue;
  }

  get token(): FencingToken | undefined {
    return this.tokenValue;
  }

  /** Our key was deleted (or re-created) after the join. */
  get gone(): boolean {
    return this.goneValue;
  }

  /** Wakes a waiting `waitTurn()` / `changed()` so the caller looks again. */
  poke(): void {
    this.alert();
  }

  /**
   * Waits until something happened since the last read of `waitTurn()`: a session state change,
   * our key's deletion, a `poke()`, or `signal`. (A holder waits here, then calls `waitTurn()`
   * again to re-check.)
   */
  async changed(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    const onAbort = (): void => {
      this.wake.fire();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.wake.wait();
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Puts our key at the end of the queue with `value` — or, if it exists under our lease, keeps
   * its place — in one transaction that also reads the first `slots` keys (Go's Mutex.Lock:
   * an uncontended lock costs one round trip).
   */
  async join(
    value: string,
    slots: number,
    extraReads: readonly IRangeRequest[] = [],
  ): Promise<JoinResult> {
    const first = rangeOp(firstBy(this.waitPrefix, this.order, slots));
    const extras = extraReads.map(rangeOp);
    let res: ITxnResponse;
    try {
      res = await this.txn(
        {
          // Our key does not exist yet (new lease, or it was deleted): join the queue at the end.
          compare: [
            {
              key: this.keyBuf,
              target: CompareTarget.Create,
              result: CompareResult.Equal,
              create_revision: 0,
            },
          ],
          success: [...this.createOps(this.keyBuf, value, this.session.leaseId, slots), ...extras],
          // It exists (a retried join on the same lease): keep its place in the queue.
          failure: [rangeOp({ key: this.keyBuf }), first, ...extras],
        },
        'join',
        true,
      );
    } catch (err) {
      // No answer: this join may still be applied, later (see stray-keys.ts).
      this.unanswered = true;
      throw err;
    }
    return this.settle(res, 0, slots, extraReads);
  }

  /**
   * Takes over the place that the release of another member of this process made for us in its
   * transaction ({@link releaseInto}, applied): as if our own join had created our key.
   */
  adopt(res: ITxnResponse, slots: number): JoinResult {
    return this.settle(res, 1, slots, []);
  }

  /**
   * Our release and the join of `key` (the next caller's of this process, under another lease)
   * in one transaction: deletes our key while it has our revision and creates `key` at the end of
   * the queue with `lease`, reading what a join reads (see {@link adopt}). Not applied when our
   * key is no longer ours or `key` exists. Throws etcd's error (the outcome is then unknown).
   */
  async releaseInto(key: string, lease: string, slots: number): Promise<ITxnResponse> {
    const token = this.tokenValue;
    if (token === undefined) throw new Error('releaseInto() before join()');
    try {
      return await this.txn(
        {
          compare: [token.toCompare(), absent(key)],
          success: [
            { request_delete_range: { key: this.keyBuf } },
            ...this.createOps(key, '', lease, slots),
          ],
        },
        'release',
        true,
      );
    } catch (err) {
      this.unanswered = true;
      throw err;
    }
  }

  /**
   * A join's writes and reads: `key` put at the end of the queue under `lease`, the first `slots`
   * keys, and — ours being the newest — the `slots` keys just before it: the window to wait on,
   * read here so a waiter needs no second round trip before it watches.
   */
  private createOps(
    key: string | Buffer,
    value: string,
    lease: string,
    slots: number,
  ): IRequestOp[] {
    return [
      putOp(key, value, lease),
      rangeOp(firstBy(this.waitPrefix, this.order, slots)),
      lastBy(this.waitPrefix, this.order, slots + 1),
    ];
  }

  /**
   * Our place from a join's answer: `at` is where the join's own responses begin (its put, or
   * the read of our key when it existed), followed by the first keys, the window (when our key
   * was created) and the extra reads.
   */
  private settle(
    res: ITxnResponse,
    at: number,
    slots: number,
    extraReads: readonly IRangeRequest[],
  ): JoinResult {
    let revision = res.header.revision;
    let orderRevision = BigInt(revision);
    let existing: { existingValue: string; existingLease: string } | undefined;
    if (!res.succeeded) {
      const kv = kvAt(res.responses, at);
      if (kv === undefined) throw new Error(`etcd returned no key for ${this.key}`);
      revision = kv.create_revision;
      orderRevision = BigInt(this.order === 'Mod' ? kv.mod_revision : kv.create_revision);
      existing = { existingValue: kv.value.toString(), existingLease: kv.lease };
    }
    this.revisionValue = revision;
    this.orderRevisionValue = orderRevision;
    this.tokenValue = fencingToken(this.key, revision);
    this.goneValue = false;
    const readRevision = Number(res.header.revision);
    this.watchOwn(readRevision + 1);
    const firstKvs = kvsAt(res.responses, at + 1);
    const extraAt = at + (res.succeeded ? 3 : 2);
    const extra = extraReads.map((_, i) => kvsAt(res.responses, i + extraAt));
    // Keys before ours among the first `slots` (ours is the newest, or among them).
    const before = firstKvs.filter(
      (kv) => !kv.key.equals(this.keyBuf) && this.orderOf(kv) < orderRevision,
    ).length;
    const holder = before < slots;
    this.alertsAtJoin = this.alerts;
    if (holder) {
      this.initialView = { readRevision, window: [], extra };
    } else if (res.succeeded) {
      const window = kvsAt(res.responses, at + 2)
        .filter((kv) => !kv.key.equals(this.keyBuf))
        .slice(0, slots);
      this.initialView = { readRevision, window, extra };
    } else {
      this.initialView = undefined;
    }
    return { created: res.succeeded, ...existing, holder, readRevision, first: firstKvs, extra };
  }

  /**
   * Waits until fewer than `slots` keys created before ours exist. Rejects only with etcd's
   * errors (the caller retries the retryable ones); everything else is an outcome.
   */
  async waitTurn(opts: WaitOptions): Promise<WaitOutcome> {
    const revision = this.revisionValue;
    const orderRevision = this.orderRevisionValue;
    if (revision === undefined || orderRevision === undefined) {
      throw new Error('waitTurn() before join()');
    }
    const { signal, slots } = opts;
    const onAbort = (): void => {
      this.wake.fire();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // Wake-up subscriptions (their unsubscribes) by mode and key (see waitOn), kept while the key
    // stays in view.
    const watches = new Map<string, () => void>();
    // The join's view stands for the first read, unless something happened since (a holder's
    // re-check after a session change must read).
    let given = this.alerts === this.alertsAtJoin ? this.initialView : undefined;
    this.initialView = undefined;
    try {
      for (;;) {
        const alerts = this.alerts;
        if (given === undefined) this.wake.reset();
        if (signal.aborted) return { kind: 'aborted' };
        if (!this.session.isAlive()) return { kind: 'lost' };
        if (this.goneValue) return { kind: 'gone' };
        if (this.session.state === 'suspended') {
          // No read can prove anything while keepalives go unanswered; the session wakes us.
          given = undefined;
          await this.wake.wait();
          continue;
        }
        if (given !== undefined) {
          const view = given;
          given = undefined;
          if (view.window.length < slots) return { kind: 'holder', view };
          this.waitOn(view, opts, watches);
          await this.wake.wait();
          this.throwWatchFailure(signal);
          continue;
        }
        const extraReads = opts.extraReads ?? [];
        queueStats.waitReads++;
        const res = await this.txn(
          {
            success: [
              rangeOp({ key: this.keyBuf }),
              rangeOp(lastByUpTo(this.waitPrefix, this.order, orderRevision - 1n, slots)),
              ...extraReads.map(rangeOp),
            ],
          },
          'queue read',
        );
        const mine = kvAt(res.responses, 0);
        // Gone, re-created, or (ordered by mod revision) rewritten: this place is no longer ours.
        if (
          mine?.create_revision !== revision ||
          (this.order === 'Mod' && BigInt(mine.mod_revision) !== orderRevision)
        ) {
          this.markGone();
          return { kind: 'gone' };
        }
        const readRevision = Number(res.header.revision);
        if (this.ownNeedsReopen) this.watchOwn(readRevision + 1);
        const view: WaitView = {
          readRevision,
          window: kvsAt(res.responses, 1),
          extra: extraReads.map((_, i) => kvsAt(res.responses, i + 2)),
        };
        // Changed while we read: look again rather than decide on a stale view.
        if (isAborted(signal) || !this.session.isAlive() || this.session.state !== 'alive') {
          continue;
        }
        if (view.window.length < slots) {
          // A change of a key we waited on, seen during this read, means nothing to a holder:
          // its `changed()` should not wake for it.
          if (this.alerts === alerts) this.wake.reset();
          return { kind: 'holder', view };
        }
        this.waitOn(view, opts, watches);
        await this.wake.wait();
        this.throwWatchFailure(signal);
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      for (const unsubscribe of watches.values()) unsubscribe();
    }
  }

  /**
   * Deletes our key if it still has our create revision (Go's Resign / Unlock), so the next waiter
   * goes at once. Throws etcd's error; false when the key was no longer ours.
   */
  async remove(): Promise<boolean> {
    const token = this.tokenValue;
    const del: IRequestOp = { request_delete_range: { key: this.keyBuf } };
    // Only our key when we know its revision: never one re-created after ours was deleted. A join
    // whose reply we never saw may still have created the key: delete it by name.
    const request: ITxnRequest =
      token === undefined ? { success: [del] } : { compare: [token.toCompare()], success: [del] };
    try {
      return (await this.txn(request, 'release', true)).succeeded;
    } catch (err) {
      this.unanswered = true;
      throw err;
    }
  }

  /**
   * Stops watching; the key itself stays (see `remove()`). After a join that went unanswered, a
   * late copy of it re-creating the key is watched for and deleted while the session lives; after
   * a remove that failed, so is the key itself (a session others still hold would keep it).
   * Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.offSession();
    this.own?.();
    this.own = undefined;
    this.unuse();
    if (this.unanswered && this.session.isAlive()) sweepStrays(this.ctx, this.session, this.key);
    this.alert();
  }

  /**
   * Wakes the loop for something that matters to a holder too (session, our key, a poke), not
   * just a change of a key it waited on.
   */
  private alert(): void {
    this.alerts++;
    this.wake.fire();
  }

  private markGone(): void {
    if (this.goneValue) return;
    this.goneValue = true;
    this.alert();
    this.onGone?.();
  }

  /** Watches our own key: its deletion (by hand, or by lease expiry) ends our place. */
  private watchOwn(startRevision: number): void {
    this.own?.();
    this.own = undefined;
    this.ownNeedsReopen = false;
    if (this.closed) return;
    const onEvents = (events: readonly WatchEvent[]): void => {
      if (events.some((e) => e.type === 'delete')) this.markGone();
    };
    // Compacted, refused or closed: the next read still checks our key, and watches again
    // (unless this watch was replaced or closed meanwhile).
    let stop: () => void = () => undefined;
    const onBroken = (): void => {
      if (this.own !== stop) return;
      this.ownNeedsReopen = true;
      this.alert();
    };
    if (this.shareOwnWatch) {
      const options = { deletesOnly: true, fromNow: false };
      stop = watchKeyFrom(this.ctx, this.key, startRevision, { onEvents, onBroken }, options);
    } else {
      // A key of this member alone: a watch of its own costs less than a shared one.
      const w = this.ctx.watches.watch(
        { key: this.keyBuf, startRevision, deletesOnly: true },
        { onEvents, onCompacted: onBroken, onEnded: onBroken },
      );
      stop = () => {
        w.close();
      };
    }
    this.own = stop;
  }

  /**
   * Before waiting on `view`: tells the caller (`onWaiting`), watches the keys of the view (and
   * the caller's extra ones) and drops watches no longer needed.
   */
  private waitOn(view: WaitView, opts: WaitOptions, watches: Map<string, () => void>): void {
    opts.onWaiting?.(view);
    // By create revision only a deletion can move us up, so window keys are watched for deletes
    // only (a lock key re-created at once by its process is not sent to us); by mod revision, and
    // for the caller's extra keys (an election's leader and its value), every change counts.
    const wanted = new Map<string, WakeTarget>();
    const extra = new Set(opts.extraWatches?.(view) ?? []);
    for (const kv of view.window) {
      const key = kv.key.toString();
      const deletesOnly = this.order === 'Create' && !extra.has(key);
      wanted.set(watchId(key, deletesOnly), { key, deletesOnly });
    }
    for (const key of extra) wanted.set(watchId(key, false), { key, deletesOnly: false });
    for (const [id, unsubscribe] of watches) {
      if (wanted.has(id)) continue;
      unsubscribe();
      watches.delete(id);
    }
    for (const [id, target] of wanted) {
      if (!watches.has(id)) watches.set(id, this.watchWake(id, target, view.readRevision, watches));
    }
  }

  /** After a wake-up: a wake-up watch that ended for good ends the wait (unless it was aborted). */
  private throwWatchFailure(signal: AbortSignal): void {
    const failure = this.watchFailure;
    this.watchFailure = undefined;
    if (failure !== undefined && !isAborted(signal)) throw failure;
  }

  /** A key's revision in this queue's order. */
  private orderOf(kv: IKeyValue): bigint {
    return BigInt(this.order === 'Mod' ? kv.mod_revision : kv.create_revision);
  }

  /**
   * Wakes the loop on any change of `target.key` (or deletion, with `deletesOnly`) after
   * `readRevision`, through the connector's shared watch of the key (a new one starts from now,
   * which etcd serves at once). When that watch cannot show every change since the read (etcd
   * created it later, it already passed one, it ended) the loop wakes too, to read again; the
   * subscription then leaves `watches` (where it is `id`), so the next round subscribes anew.
   */
  private watchWake(
    id: string,
    target: WakeTarget,
    readRevision: number,
    watches: Map<string, () => void>,
  ): () => void {
    const unsubscribe = watchKeyFrom(
      this.ctx,
      target.key,
      readRevision + 1,
      {
        onEvents: () => {
          this.wake.fire();
        },
        onBroken: (error) => {
          // (Told after the wait dropped this subscription: nothing to do.)
          if (watches.get(id) !== unsubscribe) return;
          watches.delete(id);
          if (error !== undefined) this.watchFailure = error;
          this.wake.fire();
        },
      },
      { deletesOnly: target.deletesOnly, fromNow: true },
    );
    return unsubscribe;
  }

  /**
   * A transaction, batched with others under load (`write`: it changes this queue, so it never
   * shares a batch with another write to it — keys created in one transaction share a revision).
   */
  private async txn(request: ITxnRequest, what: string, write = false): Promise<ITxnResponse> {
    try {
      return await this.ctx.txns.txn(request, write ? this.waitPrefix : undefined);
    } catch (err) {
      const error = this.ctx.toError(err, `${what} ${this.prefix}`);
      if (error instanceof SessionLostError) this.session.leaseGone();
      throw error;
    }
  }
}
