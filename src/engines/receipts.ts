/**
 * Receipts: knowing whether a write whose answer was lost took effect.
 *
 * A transaction that times out or loses its connection may still be applied — now, or later from
 * the raft log. For a queue claim that would lose an item (deleted, delivered to nobody); for a
 * counter or a transaction, retrying would apply it twice. So every such write also puts a
 * *receipt*: a key of ours under the session's lease, compared on its mod revision and written
 * with a tag in the same transaction. After a lost answer, `resolve()` finds out:
 *
 * 1. Fence: `If(ModRevision(receipt) = known) Then(Put(receipt, fence))`. If that succeeds the
 *    write was not applied, and never will be: its own compare on the receipt now fails.
 * 2. Otherwise the receipt changed after the known revision. Only two things change it: the write
 *    itself (its tag) or the lease's end (a delete). The first change after the known revision,
 *    read from etcd's history with a watch, says which.
 *
 * Each receipt serves one write at a time (a slot); the book hands out free slots and creates
 * more as needed (`<dir>/<leaseHex>.<n>`, one put each per session). Nothing is left behind: the
 * keys go with the lease.
 */
import type { IKeyValue, ICompare, IRequestOp, ITxnResponse } from 'etcd3';
import { OutcomeUnknownError } from '../errors.js';
import type { Session } from '../session/session.js';
import { Backoff, delay, isAborted } from '../transport/timers.js';
import type { WatchEvent } from '../transport/watch-types.js';
import type { ConnectorContext } from './context.js';
import type { HeldSession } from './held-session.js';
import { modifiedAt, putOp } from './keys.js';
import { rangeOp } from './ranges.js';

/** What `resolve()` found. */
export interface Resolution {
  readonly applied: boolean;
  /** The revision the write was applied at (applied only). */
  readonly revision?: number;
}

/** Counters for tests (all receipts of the process). */
export const receiptStats = {
  /** Writes whose answer was lost, resolved through their receipt. */
  resolved: 0,
  /** Of those, the ones found applied. */
  applied: 0,
};

/** Value prefixes: a guarded write's tag, or a fence. */
const WRITTEN = 'w:';
const FENCE = 'f:';

/** What the failure branch of a guarded transaction says about its receipt. */
export type ReceiptState =
  /** As we left it: the caller's own compares failed. */
  | { readonly kind: 'unchanged' }
  /**
   * Holds this write's tag: an earlier send of the very same request landed (the transport
   * re-sent it after a failure that hid the first answer), at `revision`.
   */
  | { readonly kind: 'applied'; readonly revision: number }
  /** Gone with its lease (or otherwise not ours any more): take another receipt, send again. */
  | { readonly kind: 'lost' };

export class Receipt {
  /** The receipt no longer holds (its lease ended): give it back and take another. */
  valid = true;
  private fences = 0;
  private writes = 0;
  /** The value the last `write()` puts: unique per write, so it tells that write's landing. */
  private pending: string | undefined;

  constructor(
    private readonly ctx: ConnectorContext,
    readonly key: string,
    readonly session: Session,
    /** Mod revision of the receipt as we last wrote it. */
    public revision: string,
  ) {}

  /** "The receipt is as we left it": goes into the guarded transaction's compares. */
  compare(): ICompare {
    return modifiedAt(this.key, this.revision);
  }

  /**
   * The receipt's write, tagged with `tag` (what the write is about, e.g. the item claimed) and a
   * number of its own: goes into the guarded transaction's success branch.
   */
  write(tag: string): IRequestOp {
    this.pending = `${WRITTEN}${tag}#${++this.writes}`;
    return putOp(this.key, this.pending, this.session.leaseId);
  }

  /** A read of the receipt, for the guarded transaction's failure branch. */
  read(): IRequestOp {
    return rangeOp({ key: Buffer.from(this.key) });
  }

  /** The guarded transaction succeeded at `revision` (its header revision). */
  committed(revision: string): void {
    this.revision = revision;
  }

  /** The guarded transaction failed its compares; `kv` is the receipt as its failure branch read it. */
  afterFailure(kv: IKeyValue | undefined): ReceiptState {
    if (kv?.mod_revision === this.revision) return { kind: 'unchanged' };
    if (kv !== undefined && this.pending !== undefined && kv.value.toString() === this.pending) {
      // Only this write puts this value, and nothing but our fences writes the receipt after it.
      this.revision = kv.mod_revision;
      receiptStats.applied += 1;
      return { kind: 'applied', revision: Number(kv.mod_revision) };
    }
    this.valid = false;
    return { kind: 'lost' };
  }

  /**
   * The answer of the last write guarded by this receipt was lost: was it applied? Retries while
   * etcd cannot be reached, until `signal` fires.
   *
   * @throws OutcomeUnknownError history was compacted, or `signal` fired first
   * @throws the final error of etcd (permission denied, ...)
   */
  async resolve(signal: AbortSignal, what = this.key): Promise<Resolution> {
    receiptStats.resolved += 1;
    const backoff = new Backoff(50, 1000);
    for (;;) {
      if (isAborted(signal)) {
        throw new OutcomeUnknownError(what, 'stopped before it was known whether the write landed');
      }
      try {
        return await this.resolveOnce(signal, what);
      } catch (err) {
        if (err instanceof OutcomeUnknownError) throw err;
        const error = this.ctx.toError(err, `resolve ${this.key}`);
        if (!error.retryable && !isAborted(signal)) throw error;
      }
      await delay(backoff.next(), signal).catch(() => undefined);
    }
  }

  private async resolveOnce(signal: AbortSignal, what: string): Promise<Resolution> {
    const known = this.revision;
    const res = await this.ctx.client.kv.txn(
      {
        // Unchanged since the write was sent: it has not been applied...
        compare: [this.compare()],
        // ...and this fence makes sure it never will be (its compare on the receipt fails now).
        success: [putOp(this.key, `${FENCE}${++this.fences}`, this.session.leaseId)],
        // Changed: read what it is now, and look up what changed it first.
        failure: [this.read()],
      },
      this.ctx.callOptions(),
    );
    if (res.succeeded) {
      this.revision = res.header.revision;
      return { applied: false };
    }
    const now = res.responses[0]?.response_range.kvs[0];
    if (now !== undefined && now.value.toString() === this.pending) {
      // The write is the last change: it landed (nothing else writes this value).
      this.revision = now.mod_revision;
      receiptStats.applied += 1;
      return { applied: true, revision: Number(now.mod_revision) };
    }
    // A fence of an earlier try, or the lease's end: the first change after the write was sent
    // tells whether the write came before it.
    const first = await firstChange(this.ctx, this.key, Number(known) + 1, signal);
    if (now === undefined) this.valid = false;
    else this.revision = now.mod_revision;
    if (first === 'compacted') {
      throw new OutcomeUnknownError(what, 'etcd compacted the history that would tell');
    }
    if (first.type === 'put' && first.value === this.pending) {
      receiptStats.applied += 1;
      return { applied: true, revision: first.revision };
    }
    return { applied: false };
  }
}

/**
 * The first change of `key` at or after `startRevision`, from etcd's history (the caller knows
 * there is one), or `'compacted'` when that history is gone.
 */
export function firstChange(
  ctx: ConnectorContext,
  key: string,
  startRevision: number,
  signal: AbortSignal,
): Promise<WatchEvent | 'compacted'> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      watch.close();
      reject(new OutcomeUnknownError(key, 'stopped before the history was read'));
    };
    const done = (): void => {
      watch.close();
      signal.removeEventListener('abort', onAbort);
    };
    const watch = ctx.watches.watch(
      { key, startRevision },
      {
        onEvents: (events) => {
          const first = events[0];
          if (first === undefined) return;
          done();
          resolve(first);
        },
        onCompacted: () => {
          done();
          resolve('compacted');
        },
        onEnded: (error) => {
          done();
          reject(error);
        },
      },
    );
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Hands out receipts under the held session (new slots as needed, reused after). */
export class ReceiptBook {
  private free: Receipt[] = [];
  private session: Session | undefined;
  private slots = 0;

  constructor(
    private readonly ctx: ConnectorContext,
    /** The receipts' directory, e.g. `/ns/__jobs.queue/receipts` (no trailing slash). */
    readonly dir: string,
    readonly held: HeldSession,
  ) {}

  /**
   * A receipt for one write, under a live session (acquired if needed). Retries while etcd
   * cannot be reached, until `signal` fires (AbortError).
   */
  async take(signal: AbortSignal): Promise<Receipt> {
    const backoff = new Backoff(50, 1000);
    for (;;) {
      const session = await this.held.get(signal);
      if (session !== this.session) {
        // A new lease: the old receipts went with the old one.
        this.session = session;
        this.free = [];
        this.slots = 0;
      }
      const reused = this.free.pop();
      if (reused !== undefined) {
        if (reused.valid && reused.session.isAlive()) return reused;
        continue;
      }
      const key = `${this.dir}/${session.leaseIdHex}.${this.slots++}`;
      try {
        // Ours alone, so a put is safe to repeat when its answer was lost.
        const res = await this.ctx.client.kv.txn(
          { success: [putOp(key, 'new', session.leaseId)] },
          this.ctx.callOptions(),
        );
        return new Receipt(this.ctx, key, session, res.header.revision);
      } catch (err) {
        const error = this.ctx.toError(err, `receipt ${key}`);
        if (!error.retryable) throw error;
        // The slot number is burnt. A lease etcd no longer knows is noticed by the session at
        // its next keepalive; the next round then takes a new one.
        await delay(backoff.next(), signal);
      }
    }
  }

  /** Gives a receipt back for the next write. */
  give(receipt: Receipt): void {
    if (receipt.valid && receipt.session === this.session) this.free.push(receipt);
  }
}

/** How a receipted transaction ended. */
export type GuardedOutcome =
  /** Committed (its answer came back). */
  | { readonly kind: 'committed'; readonly response: ITxnResponse }
  /** The caller's compares failed (the receipt held); `response` has the failure branch. */
  | { readonly kind: 'failed'; readonly response: ITxnResponse }
  /** The answer was lost, and the receipt says it was applied at `revision`. */
  | { readonly kind: 'applied'; readonly revision: number };

/** A transaction the receipt guards: the caller's parts, without the receipt's. */
export interface GuardedRequest {
  readonly compare?: readonly ICompare[];
  readonly success: readonly IRequestOp[];
  readonly failure?: readonly IRequestOp[];
}

/**
 * Runs `request` with a receipt from `book`: its compare, its write (with `tag`) and its read
 * are appended to the caller's parts. A lost answer is resolved: applied → `applied`; not
 * applied → the failure is thrown again (so a retry loop sends the write once more, safely). A
 * receipt that no longer holds (its session ended) is replaced and the write sent again.
 *
 * @throws OutcomeUnknownError when resolving could not tell (compacted history, `signal`)
 */
export async function guardedTxn(
  ctx: ConnectorContext,
  book: ReceiptBook,
  signal: AbortSignal,
  what: string,
  tag: string,
  request: GuardedRequest,
): Promise<GuardedOutcome> {
  for (;;) {
    const receipt = await book.take(signal);
    const failure = request.failure ?? [];
    let response: ITxnResponse;
    try {
      response = await ctx.client.kv.txn(
        {
          compare: [...(request.compare ?? []), receipt.compare()],
          success: [...request.success, receipt.write(tag)],
          failure: [...failure, receipt.read()],
        },
        ctx.callOptions(),
      );
    } catch (err) {
      const error = ctx.toError(err, what);
      if (!error.retryable) {
        book.give(receipt);
        throw error;
      }
      const outcome = await receipt.resolve(signal, what);
      book.give(receipt);
      if (outcome.applied && outcome.revision !== undefined) {
        return { kind: 'applied', revision: outcome.revision };
      }
      throw error;
    }
    if (response.succeeded) {
      receipt.committed(response.header.revision);
      book.give(receipt);
      return { kind: 'committed', response };
    }
    const state = receipt.afterFailure(response.responses[failure.length]?.response_range.kvs[0]);
    if (state.kind === 'unchanged') {
      book.give(receipt);
      return { kind: 'failed', response };
    }
    if (state.kind === 'applied') {
      book.give(receipt);
      return { kind: 'applied', revision: state.revision };
    }
    // The receipt went with its lease; the caller's compares may well hold: send it again.
  }
}
