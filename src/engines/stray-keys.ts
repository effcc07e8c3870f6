/**
 * Keys we create only if absent, that a late copy of one of our writes may still create: a
 * write whose answer was lost (a timeout; a member that stalled or died mid-call) may yet be
 * applied, long after — a paused member forwards it when it resumes. A copy that lands after we
 * deleted the key creates it again, under our lease, where nobody waits on it or will delete it:
 * a queue's join then leaves a key that every later waiter queues behind until the lease ends
 * (chaos run, seed 20261129: an RWMutex writer's key came back 3 s after its release, and every
 * RWMutex user of the run stalled from then on); an ephemeral key or a registration comes back
 * after its `delete()`; a double barrier counts a participant that has left; a queue consumer
 * that left the line stands at its head again.
 *
 * So a queue member, an ephemeral key, a barrier participant or a queue consumer whose write went
 * unanswered hands its key here (when it lets it go, or at once with a test of its use). While
 * the session lives, the key is read, then watched: a creation under our lease while nothing of
 * this connector uses the key is deleted (that creation only: by its create revision). One watch
 * per such key, and only after a lost answer.
 */
import type { Session } from '../session/session.js';
import type { WatchEvent } from '../transport/resume-point.js';
import { Backoff, delay } from '../transport/timers.js';
import type { MuxWatch } from '../transport/watch-types.js';
import type { ConnectorContext } from './context.js';
import { createdAt, deleteOp } from './keys.js';
import { kvAt, rangeOp } from './ranges.js';

/** For tests (all connectors of the process): creations looked at, and deleted as strays. */
export const strayStats = { judged: 0, deleted: 0 };

interface Registry {
  /** Queue members, ephemeral keys and barrier participants using each key now. */
  readonly users: Map<string, number>;
  /** Keys being watched for a late creation. */
  readonly sweeps: Map<string, Sweep>;
}

const registries = new WeakMap<ConnectorContext, Registry>();

function registry(ctx: ConnectorContext): Registry {
  let r = registries.get(ctx);
  if (r === undefined) registries.set(ctx, (r = { users: new Map(), sweeps: new Map() }));
  return r;
}

/** Marks `key` as used (by a member, an ephemeral key...) until the returned function is called. */
export function useKey(ctx: ConnectorContext, key: string): () => void {
  const { users } = registry(ctx);
  users.set(key, (users.get(key) ?? 0) + 1);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    const n = (users.get(key) ?? 1) - 1;
    if (n > 0) users.set(key, n);
    else users.delete(key);
  };
}

/**
 * Watches `key` for a late creation under `session`'s lease while the session lives. `inUse`
 * says whether something of ours uses the key now (default: a `useKey()` is open for it).
 */
export function sweepStrays(
  ctx: ConnectorContext,
  session: Session,
  key: string,
  inUse?: () => boolean,
): void {
  const reg = registry(ctx);
  const running = reg.sweeps.get(key);
  if (running?.session === session) return;
  running?.stop();
  const used = inUse ?? (() => reg.users.has(key));
  const sweep = new Sweep(ctx, session, key, used, () => {
    if (reg.sweeps.get(key) === sweep) reg.sweeps.delete(key);
  });
  reg.sweeps.set(key, sweep);
  sweep.start();
}

class Sweep {
  private watch: MuxWatch | undefined;
  private stopped = false;
  /** Ends a backoff at once on stop (no timer keeps a closed connector's process up). */
  private readonly ended = new AbortController();
  private readonly offSession: () => void;
  private readonly untrack: () => void;

  constructor(
    private readonly ctx: ConnectorContext,
    readonly session: Session,
    private readonly key: string,
    private readonly inUse: () => boolean,
    private readonly onStop: () => void,
  ) {
    // A stray cannot outlive the lease: nor does its sweep.
    this.offSession = session.onChange((change) => {
      if (change.state === 'lost' || change.state === 'closed') this.stop();
    });
    this.untrack = ctx.track({
      close: () => {
        this.stop();
        return Promise.resolve();
      },
    });
  }

  /** Reads the key (a copy may have landed already), then watches it from the read on. */
  start(): void {
    void this.readThenWatch();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.ended.abort();
    this.watch?.close();
    this.watch = undefined;
    this.offSession();
    this.untrack();
    this.onStop();
  }

  private going(): boolean {
    return !this.stopped && !this.ctx.closing && this.session.isAlive();
  }

  private async readThenWatch(): Promise<void> {
    const backoff = new Backoff(100, 2000);
    while (this.going()) {
      try {
        const res = await this.ctx.client.kv.txn(
          { success: [rangeOp({ key: Buffer.from(this.key) })] },
          this.ctx.callOptions(),
        );
        const kv = kvAt(res.responses, 0);
        if (kv !== undefined) await this.judge(kv.lease, Number(kv.create_revision));
        if (this.going()) this.watchFrom(Number(res.header.revision) + 1);
        return;
      } catch {
        await delay(backoff.next(), this.ended.signal).catch(() => undefined);
      }
    }
    this.stop();
  }

  private watchFrom(startRevision: number): void {
    this.watch = this.ctx.watches.watch(
      { key: this.key, startRevision },
      {
        onEvents: (events: readonly WatchEvent[]) => {
          for (const e of events) {
            if (e.type === 'put' && e.version === 1) void this.judge(e.lease, e.createRevision);
          }
        },
        // History gone: read again, and watch from there.
        onCompacted: () => {
          this.watch?.close();
          this.watch = undefined;
          void this.readThenWatch();
        },
        onEnded: () => {
          this.stop();
        },
      },
    );
  }

  /** Deletes the key created at `createRevision` if it is under our lease and nobody uses it. */
  private async judge(lease: string, createRevision: number): Promise<void> {
    if (lease !== this.session.leaseId) return;
    strayStats.judged++;
    const backoff = new Backoff(100, 2000);
    while (this.going() && !this.inUse()) {
      try {
        const res = await this.ctx.client.kv.txn(
          { compare: [createdAt(this.key, createRevision)], success: [deleteOp(this.key)] },
          this.ctx.callOptions(),
        );
        if (res.succeeded) strayStats.deleted++;
        return;
      } catch {
        await delay(backoff.next(), this.ended.signal).catch(() => undefined);
      }
    }
  }
}
