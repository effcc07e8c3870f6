/**
 * A place in a queue of keys ordered by create revision — the layout of Go's `concurrency.Election`
 * and `concurrency.Mutex` (`prefix + leaseId in hex`, under the session's lease) — and Go's
 * `waitDeletes` (key.go) as an engine that elections, locks and semaphores share.
 *
 * `waitTurn(slots)` waits until fewer than `slots` keys created before ours exist. It watches only
 * the `slots` keys created just before ours (for an election or a lock: the predecessor), starting
 * at the revision after its read, which etcd serves from its synced path at once (a watch from an
 * older revision waits for etcd's 100 ms catch-up loop; FAULTS.md). A deletion before that window
 * does not change the window, so a release wakes at most `slots` waiters, never the whole queue.
 * After every wake-up it reads again: our key must still exist with our create revision under a
 * live session (the check Go added to Mutex after Jepsen and still lacks in its RWMutex).
 */
import {
  CompareResult,
  CompareTarget,
  Range,
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
import type { MuxWatch, WatchEvent, WatchListener } from '../transport/watch-mux.js';
import type { ConnectorContext } from './context.js';

/** The `[key, range_end)` of every key that starts with `prefix`. */
export function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  const range = Range.prefix(prefix);
  return { key: range.start, range_end: range.end };
}

/** The oldest keys under `prefix` by create revision (Go's WithFirstCreate): holders, leader. */
export function firstCreated(prefix: string, limit = 1): IRangeRequest {
  return { ...prefixRange(prefix), sort_target: 'Create', sort_order: 'Ascend', limit };
}

/**
 * The newest `limit` keys under `prefix` created at or before `maxCreateRevision`: the window a
 * waiter with create revision `maxCreateRevision + 1` waits on (Go's waitDeletes: one key).
 */
export function lastCreatedUpTo(
  prefix: string,
  maxCreateRevision: bigint,
  limit = 1,
): IRangeRequest {
  return {
    ...prefixRange(prefix),
    sort_target: 'Create',
    sort_order: 'Descend',
    max_create_revision: maxCreateRevision.toString(),
    limit,
  };
}

/** The newest `limit` keys under `prefix` by create revision. */
export function lastCreated(prefix: string, limit: number): IRangeRequest {
  return { ...prefixRange(prefix), sort_target: 'Create', sort_order: 'Descend', limit };
}

/** Wraps a range request for a transaction. */
export function rangeOp(request: IRangeRequest): IRequestOp {
  return { request_range: request };
}

/** The key-values of the `index`-th range response of a transaction. */
export function kvsAt(
  responses: readonly { response_range?: { kvs: IKeyValue[] } }[],
  index: number,
): IKeyValue[] {
  return responses[index]?.response_range?.kvs ?? [];
}

/** The first key-value of the `index`-th range response of a transaction, if any. */
export function kvAt(
  responses: readonly { response_range?: { kvs: IKeyValue[] } }[],
  index: number,
): IKeyValue | undefined {
  return kvsAt(responses, index)[0];
}

/**
 * A resettable wake-up latch for one waiting loop. `fire()` before `wait()` is not lost: the loop
 * resets the latch at the top of an iteration, reads etcd, then waits; anything that happened
 * since the reset wakes it at once, so no change slips between a read and the wait.
 */
export class Latch {
  private fired = false;
  private resolve: (() => void) | undefined;

  fire(): void {
    this.fired = true;
    const r = this.resolve;
    this.resolve = undefined;
    r?.();
  }

  reset(): void {
    this.fired = false;
  }

  wait(): Promise<void> {
    if (this.fired) return Promise.resolve();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }
}

/** Who hears about a member synchronously (its holder must stop at once). */
export interface MemberObserver {
  /** Our key was deleted (or re-created) after the join. */
  keyGone(member: QueueMember): void;
  /** The member's session changed state. */
  sessionChanged(member: QueueMember, change: SessionStateChange): void;
}

/** What a join found. */
export interface JoinResult {
  /** Our key was created now (false: it existed under our lease, e.g. a retried request). */
  readonly created: boolean;
  /** Our key's value when it existed already. */
  readonly existingValue?: string;
  /** We are among the first `slots` keys: we hold without waiting. */
  readonly holder: boolean;
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
  /** Extra reads in the same transaction (an election reads its leader). */
  extraReads?: readonly IRangeRequest[];
  /** Called after each read that did not make us a holder. */
  onWaiting?: (view: WaitView) => void;
  /** More keys to watch while waiting (an election follows its leader). */
  extraWatches?: (view: WaitView) => readonly string[];
}

/**
 * One participant's key under `prefix` for one session. Create it, `join()` once, then
 * `waitTurn()` as often as needed (e.g. again after a suspension); `close()` when done.
 */
export class QueueMember {
  readonly key: string;
  private revisionValue: string | undefined;
  private tokenValue: FencingToken | undefined;
  private own: MuxWatch | undefined;
  private ownNeedsReopen = false;
  private goneValue = false;
  private ownListener: OwnKeyListener | undefined;
  private wakeListener: WakeListener | undefined;
  /**
   * What the join's own transaction showed (taken by the first `waitTurn()`, which then needs no
   * read of its own): our key, the window before it and the extra reads, at one revision.
   */
  private initialView: WaitView | undefined;
  /** A wake-up watch ended for good (refused, or the connector closed). */
  private watchFailure: EtcdConnectorError | undefined;
  private readonly wake = new Latch();
  private readonly offSession: () => void;
  private closed = false;

  constructor(
    private readonly ctx: ConnectorContext,
    readonly prefix: string,
    readonly session: Session,
    /** Ends every wait of this member (its owner stopped). */
    private readonly signal: AbortSignal,
    /** Told synchronously when our key is deleted and on every session state change. */
    private readonly observer?: MemberObserver,
  ) {
    this.key = prefix + session.leaseIdHex;
    this.offSession = session.onChange((change) => {
      this.observer?.sessionChanged(this, change);
      this.wake.fire();
    });
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The signal's listener: one per member for its whole life, not one per wait. */
  private readonly onAbort = (): void => {
    this.wake.fire();
  };

  /** Our key as a Buffer for a request (made per request: a kept one pins a pool slab). */
  private keyBuffer(): Buffer {
    return Buffer.from(this.key);
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
    this.wake.fire();
  }

  /**
   * Waits until something happened since the last read of `waitTurn()`: a session state change,
   * our key's deletion, a `poke()`, or `signal`. (A holder waits here, then calls `waitTurn()`
   * again to re-check.)
   */
  changed(): Promise<void> {
    if (this.signal.aborted) return Promise.resolve();
    return this.wake.wait();
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
    const first = rangeOp(firstCreated(this.prefix, slots));
    const extras = extraReads.map(rangeOp);
    const res = await this.txn(
      {
        // Our key does not exist yet (new lease, or it was deleted): join the queue at the end.
        compare: [
          {
            key: this.keyBuffer(),
            target: CompareTarget.Create,
            result: CompareResult.Equal,
            create_revision: 0,
          },
        ],
        success: [
          {
            request_put: {
              key: this.keyBuffer(),
              value: Buffer.from(value),
              lease: this.session.leaseId,
            },
          },
          first,
          // Ours is now the newest key: the `slots` keys just before it are the window to wait
          // on, read here so a waiter needs no second round trip before it watches.
          rangeOp(lastCreated(this.prefix, slots + 1)),
          ...extras,
        ],
        // It exists (a retried join on the same lease): keep its place in the queue.
        failure: [rangeOp({ key: this.keyBuffer() }), first, ...extras],
      },
      'join',
      true,
    );
    let revision = res.header.revision;
    let existingValue: string | undefined;
    if (!res.succeeded) {
      const kv = kvAt(res.responses, 0);
      if (kv === undefined) throw new Error(`etcd returned no key for ${this.key}`);
      revision = kv.create_revision;
      existingValue = kv.value.toString();
    }
    this.revisionValue = revision;
    this.tokenValue = fencingToken(this.key, revision);
    this.goneValue = false;
    const readRevision = Number(res.header.revision);
    this.watchOwn(readRevision + 1);
    const firstKvs = kvsAt(res.responses, 1);
    const extraAt = res.succeeded ? 3 : 2;
    const extra = extraReads.map((_, i) => kvsAt(res.responses, i + extraAt));
    const holder = firstKvs.some(
      (kv) => kv.create_revision === revision && kv.key.toString() === this.key,
    );
    if (holder) {
      this.initialView = { readRevision, window: [], extra };
    } else if (res.succeeded) {
      const window = kvsAt(res.responses, 2).filter((kv) => kv.key.toString() !== this.key);
      this.initialView = { readRevision, window: window.slice(0, slots), extra };
    }
    return {
      created: res.succeeded,
      ...(existingValue === undefined ? {} : { existingValue }),
      holder,
      first: firstKvs,
      extra,
    };
  }

  /**
   * Waits until fewer than `slots` keys created before ours exist. Rejects only with etcd's
   * errors (the caller retries the retryable ones); everything else is an outcome.
   */
  async waitTurn(opts: WaitOptions): Promise<WaitOutcome> {
    const revision = this.revisionValue;
    if (revision === undefined) throw new Error('waitTurn() before join()');
    const { slots } = opts;
    const signal = this.signal;
    {
      for (;;) {
        this.wake.reset();
        if (signal.aborted) return { kind: 'aborted' };
        if (!this.session.isAlive()) return { kind: 'lost' };
        if (this.goneValue) return { kind: 'gone' };
        if (this.session.state === 'suspended') {
          // No read can prove anything while keepalives go unanswered; the session wakes us.
          await this.wake.wait();
          continue;
        }
        // The join's transaction may have read the window already; watches start from its
        // revision + 1, so a change since then still wakes us.
        let view: WaitView | undefined = this.initialView ?? (await this.read(revision, opts));
        this.initialView = undefined;
        if (view === undefined) return { kind: 'gone' };
        // Changed while we read: look again rather than decide on a stale view.
        if (isAborted(signal) || !this.session.isAlive() || this.session.state !== 'alive') {
          continue;
        }
        if (view.window.length < slots) return { kind: 'holder', view };
        opts.onWaiting?.(view);
        const keys = new Set(view.window.map((kv) => kv.key.toString()));
        for (const k of opts.extraWatches?.(view) ?? []) keys.add(k);
        const from = view.readRevision + 1;
        // Nothing of the read is kept while we sleep (thousands of waiters stay small).
        view = undefined;
        const failure = await this.sleepOn(keys, from);
        if (failure !== undefined) throw failure;
      }
    }
  }

  /**
   * Reads our key, the window before it and the caller's extra reads in one transaction.
   * Undefined when our key is gone (or was re-created).
   */
  private async read(revision: string, opts: WaitOptions): Promise<WaitView | undefined> {
    const extraReads = opts.extraReads ?? [];
    const res = await this.txn(
      {
        success: [
          rangeOp({ key: this.keyBuffer() }),
          rangeOp(lastCreatedUpTo(this.prefix, BigInt(revision) - 1n, opts.slots)),
          ...extraReads.map(rangeOp),
        ],
      },
      'queue read',
    );
    if (kvAt(res.responses, 0)?.create_revision !== revision) {
      this.markGone();
      return undefined;
    }
    const readRevision = Number(res.header.revision);
    if (this.ownNeedsReopen) this.watchOwn(readRevision + 1);
    return {
      readRevision,
      window: kvsAt(res.responses, 1),
      extra: extraReads.map((_, i) => kvsAt(res.responses, i + 2)),
    };
  }

  /**
   * Watches `keys` from `from` and sleeps until something changed. Returns a watch's final error,
   * if one ended for good.
   */
  private sleepOn(
    keys: ReadonlySet<string>,
    from: number,
  ): Promise<EtcdConnectorError | undefined> {
    const watches: MuxWatch[] = [];
    for (const k of keys) watches.push(this.watchWake(k, from));
    // Not an async function: a waiting member keeps no suspended frame for it.
    return this.wake.wait().then(() => {
      for (const w of watches) w.close();
      const failure = this.watchFailure;
      this.watchFailure = undefined;
      return failure !== undefined && !isAborted(this.signal) ? failure : undefined;
    });
  }

  /**
   * Deletes our key if it still has our create revision (Go's Resign / Unlock), so the next waiter
   * goes at once. Throws etcd's error; false when the key was no longer ours.
   */
  async remove(): Promise<boolean> {
    const token = this.tokenValue;
    const del: IRequestOp = { request_delete_range: { key: this.keyBuffer() } };
    // Only our key when we know its revision: never one re-created after ours was deleted. A join
    // whose reply we never saw may still have created the key: delete it by name.
    const request: ITxnRequest =
      token === undefined ? { success: [del] } : { compare: [token.toCompare()], success: [del] };
    const res = await this.txn(request, 'release', true);
    return res.succeeded;
  }

  /** Stops watching; the key itself stays (see `remove()`). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.signal.removeEventListener('abort', this.onAbort);
    this.offSession();
    this.own?.close();
    this.own = undefined;
    this.wake.fire();
  }

  private markGone(): void {
    if (this.goneValue) return;
    this.goneValue = true;
    this.wake.fire();
    this.observer?.keyGone(this);
  }

  /** Watches our own key: its deletion (by hand, or by lease expiry) ends our place. */
  private watchOwn(startRevision: number): void {
    this.own?.close();
    this.ownNeedsReopen = false;
    if (this.closed) return;
    this.own = this.ctx.watches.watch(
      { key: this.key, startRevision },
      (this.ownListener ??= new OwnKeyListener(this)),
    );
  }

  /** @internal Our key changed: its deletion ends our place. */
  ownEvents(events: readonly WatchEvent[]): void {
    if (events.some((e) => e.type === 'delete')) this.markGone();
  }

  /** @internal Our key's watch ended (compacted, refused, closed): the next read re-checks it. */
  ownWatchLost(): void {
    this.ownNeedsReopen = true;
    this.wake.fire();
  }

  /** @internal A watched key changed, or its watch ended (`error`: for good). */
  wakeUp(error?: EtcdConnectorError): void {
    if (error !== undefined) this.watchFailure = error;
    this.wake.fire();
  }

  /** Watches a key and wakes the loop on any change of it (or if its history was compacted). */
  private watchWake(key: string, startRevision: number): MuxWatch {
    return this.ctx.watches.watch(
      { key, startRevision },
      (this.wakeListener ??= new WakeListener(this)),
    );
  }

  /** A transaction (`write`: it changes this queue, so it never shares a batch with another). */
  private async txn(request: ITxnRequest, what: string, write = false): Promise<ITxnResponse> {
    try {
      return await this.ctx.txns.txn(request, write ? this.prefix : undefined);
    } catch (err) {
      const error = this.ctx.toError(err, `${what} ${this.prefix}`);
      if (error instanceof SessionLostError) this.session.leaseGone();
      throw error;
    }
  }
}

/** The listener of our own key's watch (methods, not closures: thousands of members stay cheap). */
class OwnKeyListener implements WatchListener {
  constructor(private readonly member: QueueMember) {}

  onEvents(events: readonly WatchEvent[]): void {
    this.member.ownEvents(events);
  }

  onCompacted(): void {
    this.member.ownWatchLost();
  }

  onEnded(): void {
    this.member.ownWatchLost();
  }
}

/** The listener of the keys a waiter waits on: any change wakes it. */
class WakeListener implements WatchListener {
  constructor(private readonly member: QueueMember) {}

  onEvents(): void {
    this.member.wakeUp();
  }

  onCompacted(): void {
    this.member.wakeUp();
  }

  onEnded(error: EtcdConnectorError): void {
    this.member.wakeUp(error);
  }
}
