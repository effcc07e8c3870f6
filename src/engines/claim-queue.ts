/**
 * Taking items off a queue of keys, one consumer per item, for Queue and PriorityQueue (Go's
 * `contrib/recipes` layouts). Shared by every consumer of one queue in one connector.
 *
 * **Claim by delete** (Go's `deleteRevKey`): `If(ModRevision(item) = seen) Then(Delete(item))` —
 * whoever deletes an item owns it; a lost race changes nothing and the next item is tried. The
 * same transaction writes a receipt (engines/receipts.ts), so a claim whose answer was lost is
 * resolved, never dropped, and reads the next candidates, so a busy consumer claims one item per
 * round trip.
 *
 * **No herd on an empty queue.** Go's waiters all watch the queue and all race for every new
 * item: each enqueue wakes every waiting consumer and costs one failed claim per loser. Here:
 * - *in the process*, waiting `dequeue()`s queue up locally; one loop per queue and connector
 *   reads, watches and claims for them, in FIFO order;
 * - *across processes*, a process whose read found the queue empty joins a **line** in etcd: one
 *   key per session, `<dir>/line/<leaseHex>`, ordered by mod revision. Only the first
 *   {@link ACTIVE} in line watch the queue; each other watches only the {@link ACTIVE} keys just
 *   ahead of it. The first claims a new item at once; the second only if the first has not
 *   within {@link STANDBY_MS} (so one paused or dying consumer process does not stall the queue
 *   for a lease TTL). The claim's transaction also moves the claimer to the back of the line (a
 *   put of its line key), which wakes exactly one process: the next in line. A process with
 *   nobody left waiting leaves the line {@link LINGER_MS} later, unless its consumer asks again
 *   (a consumer loop then costs no leave and re-join per item).
 *
 * So an enqueue wakes at most {@link ACTIVE} processes and costs one claim, whatever the number
 * of waiting consumers: O(1) per enqueue. The line key lives under the session's lease, so a
 * dead consumer process leaves the line when its lease ends.
 */
import type { IRangeRequest, IRequestOp, ITxnResponse } from 'etcd3';
import { ClosedError, OutcomeUnknownError, type EtcdConnectorError } from '../errors.js';
import type { Session } from '../session/session.js';
import { Backoff, delay, isAborted } from '../transport/timers.js';
import type { MuxWatch } from '../transport/watch-types.js';
import type { CallScope } from './call-scope.js';
import { ClaimCandidates, type Candidate, type ItemLayout } from './claim-candidates.js';
import type { ConnectorContext } from './context.js';
import type { HeldSession } from './held-session.js';
import { deleteOp, modifiedAt, putOp } from './keys.js';
import type { Receipt, ReceiptBook } from './receipts.js';
import { kvAt, kvsAt, prefixRange, rangeOp } from './ranges.js';
import { Latch } from './latch.js';
import { sweepStrays } from './stray-keys.js';

/** Processes at the head of the line that watch the queue. */
export const ACTIVE = 2;
/** How long the second in line leaves a new item to the first, in ms. */
export const STANDBY_MS = 100;
/** How long a process stays in line after its last waiter was served, in ms. */
const LINGER_MS = 25;
/** Candidates read per round trip. */
const BATCH = 16;

/** An item taken off the queue. */
export interface ClaimedItem {
  /** The item's key (Go's layout). */
  readonly key: string;
  readonly value: string;
  /** The revision of the claim (the item's delete). */
  readonly revision: string;
}

/** Counters for tests and benchmarks (all queues of the process). */
export const claimStats = {
  /** Claim transactions sent. */
  claims: 0,
  /** Claims that lost the race. */
  lost: 0,
  /** Times a waiting process was woken by a new item. */
  itemWakeups: 0,
  /** Claims whose answer was lost and that were resolved through their receipt. */
  resolved: 0,
  /** Claims by the second in line, stepping in for a first that did not claim in time. */
  standby: 0,
};

interface Waiter {
  readonly scope: CallScope;
  resolve(item: ClaimedItem): void;
  reject(err: unknown): void;
  /** A claim for it is in flight: an abort waits for the outcome (a claimed item is never lost). */
  claiming: boolean;
  done: boolean;
  readonly offAbort: () => void;
}

interface LinePlace {
  readonly key: string;
  readonly session: Session;
  /** Mod revision of our line key: our place. */
  revision: string;
}

export interface ClaimQueueOptions {
  readonly ctx: ConnectorContext;
  /** Names the queue in errors. */
  readonly what: string;
  readonly items: ItemLayout;
  /** Where the line keys go: `<dir>/line/<leaseHex>`. */
  readonly dir: string;
  readonly held: HeldSession;
  readonly book: ReceiptBook;
}

export class ClaimQueue {
  private readonly ctx: ConnectorContext;
  private readonly range: { key: Buffer; range_end: Buffer };
  private readonly lineRange: { key: Buffer; range_end: Buffer };
  private readonly waiters: Waiter[] = [];
  private readonly candidates: ClaimCandidates;
  private line: LinePlace | undefined;
  private running: Promise<void> | undefined;
  private readonly wake = new Latch();
  private readonly controller = new AbortController();

  constructor(private readonly opts: ClaimQueueOptions) {
    this.ctx = opts.ctx;
    this.range = prefixRange(opts.items.prefix);
    this.candidates = new ClaimCandidates(opts.items);
    this.lineRange = prefixRange(`${opts.dir}/line/`);
  }

  /** Takes the next item for one caller (see the file comment). */
  dequeue(scope: CallScope): Promise<ClaimedItem> {
    scope.check();
    if (this.controller.signal.aborted) return Promise.reject(new ClosedError(this.opts.what));
    return new Promise<ClaimedItem>((resolve, reject) => {
      const onAbort = (): void => {
        if (waiter.claiming || waiter.done) return;
        this.finish(waiter);
        reject(scope.reason());
        this.wake.fire();
      };
      const waiter: Waiter = {
        scope,
        resolve,
        reject,
        claiming: false,
        done: false,
        offAbort: () => {
          scope.signal.removeEventListener('abort', onAbort);
        },
      };
      scope.signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.kick();
    });
  }

  /** Ends every waiting dequeue (ClosedError) and leaves the line. Idempotent. */
  async close(): Promise<void> {
    if (this.controller.signal.aborted) return;
    this.controller.abort(new ClosedError(this.opts.what));
    this.wake.fire();
    for (const w of [...this.waiters]) {
      if (!w.claiming) {
        this.finish(w);
        w.reject(new ClosedError(this.opts.what));
      }
    }
    await this.running;
    await this.leaveLine();
  }

  private kick(): void {
    this.wake.fire();
    this.running ??= this.run().finally(() => {
      this.running = undefined;
      // Someone came while the loop was ending.
      if (!this.controller.signal.aborted && this.unserved().length > 0) this.kick();
    });
  }

  /** Waiters with no claim in flight, oldest first. */
  private unserved(): Waiter[] {
    return this.waiters.filter((w) => !w.done && !w.claiming);
  }

  private finish(w: Waiter): void {
    w.done = true;
    w.offAbort();
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  /** The one loop of this queue in this connector: runs while someone waits. */
  private async run(): Promise<void> {
    const signal = this.controller.signal;
    const backoff = new Backoff(50, 2000);
    for (;;) {
      while (!signal.aborted && this.unserved().length > 0) {
        try {
          await this.step(signal);
          backoff.reset();
        } catch (err) {
          if (isAborted(signal)) break;
          const error = this.ctx.toError(err, this.opts.what);
          if (!error.retryable) {
            this.failAll(error);
            break;
          }
          this.candidates.clear();
          await delay(backoff.next(), signal).catch(() => undefined);
        }
      }
      if (signal.aborted || this.line === undefined) return;
      // Nobody waits here now. A consumer loop is usually back at once: keep our place at the
      // back of the line a moment (no leave and re-join), then leave — at the head we would hold
      // a watch for nobody.
      this.wake.reset();
      if (this.unserved().length === 0) {
        await Promise.race([this.wake.wait(), delay(LINGER_MS)]);
      }
      if (this.unserved().length > 0) continue;
      await this.leaveLine();
      if (this.unserved().length === 0) return;
    }
  }

  private failAll(error: EtcdConnectorError): void {
    for (const w of this.unserved()) {
      this.finish(w);
      w.reject(error);
    }
  }

  private async step(signal: AbortSignal): Promise<void> {
    const session = await this.opts.held.get(signal);
    if (this.line !== undefined && this.line.session !== session) this.line = undefined;
    if (this.candidates.length > 0) {
      await this.claimNext(signal);
      return;
    }
    if (this.line === undefined) {
      const res = await this.txn([rangeOp(this.itemsRead())]);
      this.candidates.set(kvsAt(res.responses, 0));
      if (this.candidates.length === 0) await this.joinLine(session);
      return;
    }
    await this.takeTurn(this.line, signal);
  }

  /** The first candidates, in claiming order (keys only: the claim returns the value). */
  private itemsRead(): IRangeRequest {
    return {
      ...this.range,
      sort_target: this.opts.items.order,
      sort_order: 'Ascend',
      limit: BATCH,
      keys_only: true,
    };
  }

  /**
   * Into the line at its back, reading the queue in the same transaction. A join whose answer was
   * lost may land after we left the line and put our key back at its head, where it would keep
   * every other process waiting 100 ms per item: swept for while the lease lives, whenever we
   * are not in line (see stray-keys.ts).
   */
  private async joinLine(session: Session): Promise<void> {
    const key = `${this.opts.dir}/line/${session.leaseIdHex}`;
    const res = await this.txn([putOp(key, '', session.leaseId), rangeOp(this.itemsRead())]).catch(
      (err: unknown) => {
        this.sweepLine(session, key);
        throw err;
      },
    );
    this.line = { key, session, revision: res.header.revision };
    this.candidates.set(kvsAt(res.responses, 1));
  }

  /** Our line key may be written by a late copy of ours: deleted whenever we are not in line. */
  private sweepLine(session: Session, key: string): void {
    sweepStrays(this.ctx, session, key, () => this.line?.key === key);
  }

  /** Out of the line (best effort: the key goes with the lease anyway). */
  private async leaveLine(): Promise<void> {
    const line = this.line;
    this.line = undefined;
    if (line === undefined || this.ctx.closing) return;
    await this.ctx.client.kv
      .txn(
        // Only our place as we know it: never a newer one.
        { compare: [modifiedAt(line.key, line.revision)], success: [deleteOp(line.key)] },
        this.ctx.callOptions(),
      )
      .catch(() => undefined);
  }

  /**
   * One look at the line and the queue; returns when there are candidates, or when something
   * changed that needs another look (our place, the keys ahead of us, the session, the waiters).
   */
  private async takeTurn(line: LinePlace, signal: AbortSignal): Promise<void> {
    this.wake.reset();
    const res = await this.txn([
      rangeOp({ key: Buffer.from(line.key), keys_only: true }),
      // The ACTIVE keys just ahead of ours.
      rangeOp({
        ...this.lineRange,
        sort_target: 'Mod',
        sort_order: 'Descend',
        max_mod_revision: (BigInt(line.revision) - 1n).toString(),
        limit: ACTIVE,
        keys_only: true,
      }),
      rangeOp(this.itemsRead()),
    ]);
    const mine = kvAt(res.responses, 0);
    if (mine?.mod_revision !== line.revision || !line.session.isAlive()) {
      // Our place is gone (lease ended, or deleted): the next step joins again.
      this.line = undefined;
      return;
    }
    this.candidates.set(kvsAt(res.responses, 2));
    if (this.unserved().length === 0) return;
    const ahead = kvsAt(res.responses, 1);
    const position = ahead.length;
    // More items than processes ahead of us: no need to wait, take one. Fewer: they are for the
    // ones ahead (a second in line steps in after STANDBY_MS; the rest keep out of the race).
    if (this.candidates.length > position) return;
    const from = Number(res.header.revision) + 1;
    // Set by callbacks: an object, so the compiler does not assume they stay false.
    const state = { look: false, standbyDue: false };
    let standby: NodeJS.Timeout | undefined;
    const armStandby = (): void => {
      standby ??= setTimeout(() => {
        state.standbyDue = true;
        this.wake.fire();
      }, STANDBY_MS);
    };
    if (position > 0 && position < ACTIVE && this.candidates.length > 0) armStandby();
    let failure: EtcdConnectorError | undefined;
    const lookAgain = (): void => {
      state.look = true;
      this.wake.fire();
    };
    const watches: MuxWatch[] = [];
    const watchKey = (key: Buffer): void => {
      watches.push(
        this.ctx.watches.watch(
          { key, startRevision: from },
          {
            onEvents: lookAgain,
            onCompacted: lookAgain,
            onEnded: (error) => {
              failure = error;
              lookAgain();
            },
          },
        ),
      );
    };
    watchKey(Buffer.from(line.key));
    for (const kv of ahead) watchKey(kv.key);
    if (position < ACTIVE) {
      watches.push(
        this.ctx.watches.watch(
          { key: this.range.key, rangeEnd: this.range.range_end, startRevision: from },
          {
            onEvents: (events) => {
              this.candidates.apply(events);
              if (this.candidates.length === 0) return;
              claimStats.itemWakeups += 1;
              if (position === 0) this.wake.fire();
              else armStandby();
            },
            onCompacted: lookAgain,
            onEnded: (error) => {
              failure = error;
              lookAgain();
            },
          },
        ),
      );
    }
    const offSession = line.session.onChange(lookAgain);
    const onAbort = (): void => {
      this.wake.fire();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        await this.wake.wait();
        this.wake.reset();
        if (state.look || signal.aborted || this.unserved().length === 0) break;
        if (this.candidates.length > 0 && position === 0) break;
        if (this.candidates.length > 0 && state.standbyDue) {
          claimStats.standby += 1;
          break;
        }
        if (this.candidates.length === 0 && state.standbyDue) {
          // The first in line took it: back to waiting.
          state.standbyDue = false;
          standby = undefined;
        }
      }
    } finally {
      for (const w of watches) w.close();
      offSession();
      signal.removeEventListener('abort', onAbort);
      if (standby !== undefined) clearTimeout(standby);
    }
    if (state.look) this.candidates.clear();
    if (failure !== undefined && !failure.retryable) throw failure;
  }

  /** Claims one candidate for the oldest waiter. */
  private async claimNext(signal: AbortSignal): Promise<void> {
    if (this.unserved().length === 0) return;
    const receipt = await this.opts.book.take(signal);
    // Chosen only now: taking a receipt may wait for etcd (a new one is written when every one
    // is in use), and a waiter that gave up meanwhile must not have an item claimed for it —
    // nobody would be given it (chaos run, seed 20261129).
    const waiter = this.unserved()[0];
    if (waiter === undefined) {
      this.opts.book.give(receipt);
      return;
    }
    const candidate = this.candidates.pick();
    const tag = `${candidate.key}@${candidate.modRevision}`;
    const line = this.line;
    // In line: to the back (a consumer that was served usually asks again at once; the loop
    // leaves the line when nobody here waits any more).
    const lineOps = line === undefined ? [] : [putOp(line.key, '', line.session.leaseId)];
    waiter.claiming = true;
    claimStats.claims += 1;
    let res: ITxnResponse;
    try {
      res = await this.ctx.client.kv.txn(
        {
          compare: [
            // The item is still there as we saw it: nobody claimed it first.
            modifiedAt(candidate.key, candidate.modRevision),
            // Our receipt is as we left it (its lease lives; no earlier write is pending).
            receipt.compare(),
          ],
          success: [
            // The claim itself; the deleted item comes back with its value.
            deleteOp(candidate.key, true),
            // Proof of the claim, should this answer be lost.
            receipt.write(tag),
            ...lineOps,
            // The next candidates, for the next claim without another round trip.
            rangeOp(this.itemsRead()),
          ],
          failure: [rangeOp(this.itemsRead()), receipt.read()],
        },
        this.ctx.callOptions(),
      );
    } catch (err) {
      const error = this.ctx.toError(err, `claim ${candidate.key}`);
      this.candidates.clear();
      if (!error.retryable) {
        this.opts.book.give(receipt);
        this.unclaim(waiter);
        throw error;
      }
      await this.resolveClaim(waiter, receipt, candidate, line);
      return;
    }
    if (res.succeeded) {
      receipt.committed(res.header.revision);
      this.opts.book.give(receipt);
      this.candidates.won();
      this.afterLineOp(line, res.header.revision);
      this.candidates.set(kvsAt(res.responses, 2 + lineOps.length));
      const prev = res.responses[0]?.response_delete_range.prev_kvs[0];
      this.deliver(waiter, {
        key: candidate.key,
        value: prev?.value.toString() ?? '',
        revision: res.header.revision,
      });
      return;
    }
    this.candidates.set(kvsAt(res.responses, 0));
    const state = receipt.afterFailure(kvAt(res.responses, 1));
    if (state.kind === 'applied') {
      // An earlier send of this very claim landed (the transport re-sent it): the item is ours.
      this.opts.book.give(receipt);
      await this.deliverFromHistory(waiter, candidate, state.revision, line);
      return;
    }
    if (state.kind === 'unchanged') {
      this.opts.book.give(receipt);
      this.candidates.lost();
      claimStats.lost += 1;
    }
    this.unclaim(waiter);
  }

  /** The claim's answer was lost: its receipt tells whether the item is ours. */
  private async resolveClaim(
    waiter: Waiter,
    receipt: Receipt,
    candidate: Candidate,
    line: LinePlace | undefined,
  ): Promise<void> {
    claimStats.resolved += 1;
    let applied: { revision: number } | undefined;
    try {
      const outcome = await receipt.resolve(this.controller.signal, candidate.key);
      this.opts.book.give(receipt);
      if (outcome.applied && outcome.revision !== undefined)
        applied = { revision: outcome.revision };
    } catch (err) {
      if (err instanceof OutcomeUnknownError) {
        // Ours or not, nobody can say: the caller learns which item it may have had. The claim
        // also moved our line key, or may yet (put it back after we left): we know our place no
        // more, so out of the line, and the key is swept while we are not in it.
        if (line !== undefined) {
          if (this.line === line) this.line = undefined;
          this.sweepLine(line.session, line.key);
        }
        this.finish(waiter);
        waiter.reject(err);
        return;
      }
      this.unclaim(waiter);
      throw err;
    }
    if (applied === undefined) {
      this.unclaim(waiter);
      return;
    }
    await this.deliverFromHistory(waiter, candidate, applied.revision, line);
  }

  /** Our claim landed at `revision` but its answer is gone: the value from etcd's history. */
  private async deliverFromHistory(
    waiter: Waiter,
    candidate: Candidate,
    revision: number,
    line: LinePlace | undefined,
  ): Promise<void> {
    this.afterLineOp(line, String(revision));
    // Ours. Its value is in etcd's history just before the claim.
    let value: string;
    try {
      value = await this.valueBefore(candidate.key, revision);
    } catch (err) {
      this.finish(waiter);
      waiter.reject(
        new OutcomeUnknownError(candidate.key, 'claimed, but its value could not be read back', {
          cause: err,
        }),
      );
      return;
    }
    this.deliver(waiter, { key: candidate.key, value, revision: String(revision) });
  }

  private async valueBefore(key: string, revision: number): Promise<string> {
    const backoff = new Backoff(50, 1000);
    for (;;) {
      try {
        const res = await this.ctx.client.kv.range(
          { key: Buffer.from(key), revision: revision - 1 },
          this.ctx.callOptions(),
        );
        return res.kvs[0]?.value.toString() ?? '';
      } catch (err) {
        const error = this.ctx.toError(err, `read ${key}`);
        if (!error.retryable || isAborted(this.controller.signal)) throw error;
        await delay(backoff.next(), this.controller.signal).catch(() => undefined);
      }
    }
  }

  /** Our line key moved to the back of the line with a claim, at `revision`. */
  private afterLineOp(line: LinePlace | undefined, revision: string): void {
    if (line !== undefined && this.line === line) line.revision = revision;
  }

  private deliver(waiter: Waiter, item: ClaimedItem): void {
    // Given to its waiter even if it gave up meanwhile: a claimed item is never dropped.
    this.finish(waiter);
    waiter.resolve(item);
  }

  /** The claim did not take: the waiter waits on, unless it gave up meanwhile. */
  private unclaim(waiter: Waiter): void {
    waiter.claiming = false;
    if (waiter.scope.ended && !waiter.done) {
      this.finish(waiter);
      waiter.reject(waiter.scope.reason());
    }
  }

  /** A transaction of reads (and our own line key): etcd's errors stay raw for the loop. */
  private txn(success: IRequestOp[]): Promise<ITxnResponse> {
    return this.ctx.client.kv.txn({ success }, this.ctx.callOptions());
  }
}
