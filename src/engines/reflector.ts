/**
 * The reflector (Kubernetes' name for it): list a key range at one revision, a page at a time,
 * then watch it from that revision + 1 on the shared stream; when etcd has compacted the history
 * the watch needs, list again and go on from the new listing. A compaction between two pages of a
 * listing starts the listing over at a newer revision. The tracker, the leader observer and the
 * observer's resync all stand on it, so a recipe never misses a change silently.
 */
import type { IKeyValue } from 'etcd3';
import { EtcdConnectorError } from '../errors.js';
import { Backoff } from '../transport/timers.js';
import type { MuxWatch, WatchEvent, WatchStatus } from '../transport/watch-mux.js';
import type { ConnectorContext } from './context.js';
import { retrying } from './retry.js';

/** A key range: one key (no `rangeEnd`) or `[key, rangeEnd)`. */
export interface KeyRange {
  key: Buffer;
  rangeEnd?: Buffer;
}

/** The complete state of the reflected ranges at one revision. */
export interface Snapshot {
  readonly kvs: readonly IKeyValue[];
  readonly revision: number;
  /** Why it was read: the first listing, or history was compacted while we were away. */
  readonly reason: 'initial' | 'compacted';
  /** With `compacted`: etcd's compaction revision (the oldest still available). */
  readonly compactRevision?: number;
  /** With `compacted`: the revision the watch wanted to resume from. */
  readonly resumeRevision?: number;
}

export interface ReflectorOptions {
  ctx: ConnectorContext;
  /** What the recipe is, for errors (e.g. `tracker /ns/services/api`). */
  what: string;
  /** The ranges to list, read at one revision. */
  list: readonly KeyRange[];
  /** The range to watch; must cover every listed key. */
  watch: KeyRange;
  /** Drops keys the recipe does not follow (a raw prefix watch also sees siblings like `p-x`). */
  accept?: (key: string) => boolean;
  /** Keys per page of a listing. Default 1000. */
  pageSize?: number;
  /**
   * Skip the first listing and watch from this revision (`'now'`: the current revision + 1), as
   * an observer replaying history does. A compaction still leads to a listing.
   */
  startRevision?: number | 'now';
  /** Ends the reflector. */
  signal: AbortSignal;
  onSnapshot(snapshot: Snapshot): void;
  onEvents(events: readonly WatchEvent[]): void;
  /**
   * etcd cannot be reached (`unavailable`, with the retryable reason; the reflector keeps trying)
   * or can again (`connected`, only after an `unavailable`).
   */
  onStatus?(status: WatchStatus): void;
}

export interface Reflector {
  /** Pauses delivery (back-pressure); the watch resumes where it stopped, nothing is lost. */
  pause(): void;
  resume(): void;
  /**
   * Resolves when the reflector ended: `undefined` after the signal fired, or the final error
   * (permission denied, authentication, TLS) that ended it. Never rejects.
   */
  readonly done: Promise<EtcdConnectorError | undefined>;
}

/** A listing restarted by compactions grows its pages up to this factor. */
const MAX_PAGE_GROWTH = 64;

/** Starts a reflector; see {@link ReflectorOptions}. */
export function startReflector(opts: ReflectorOptions): Reflector {
  return new ReflectorImpl(opts);
}

/** How a watch phase ended. */
type WatchOutcome =
  { compacted: number; resume: number } | { ended: EtcdConnectorError } | undefined;

class ReflectorImpl implements Reflector {
  readonly done: Promise<EtcdConnectorError | undefined>;
  private watch: MuxWatch | undefined;
  private paused = false;
  /** Told `unavailable` and not yet `connected` again. */
  private down = false;

  constructor(private readonly opts: ReflectorOptions) {
    this.done = this.run().catch((err: unknown) =>
      opts.signal.aborted ? undefined : opts.ctx.toError(err, opts.what),
    );
  }

  pause(): void {
    this.paused = true;
    this.watch?.pause();
  }

  resume(): void {
    this.paused = false;
    this.watch?.resume();
  }

  private async run(): Promise<EtcdConnectorError | undefined> {
    const { signal } = this.opts;
    let from = await this.firstRevision();
    let compacted: { compacted: number; resume: number } | undefined;
    while (!signal.aborted) {
      if (from === undefined) {
        const snapshot = await this.listAll(compacted);
        this.opts.onSnapshot(snapshot);
        from = snapshot.revision + 1;
      }
      const outcome = await this.watchFrom(from);
      if (outcome === undefined) break;
      if ('ended' in outcome) return outcome.ended;
      compacted = outcome;
      from = undefined;
    }
    return undefined;
  }

  /** The revision to watch from without a listing, if the caller gave one. */
  private async firstRevision(): Promise<number | undefined> {
    const start = this.opts.startRevision;
    if (start !== 'now') return start;
    // "Now" as a number, so the resume point is always known (etcd's 0 = now is not).
    const { ctx, watch } = this.opts;
    const res = await this.retry(() =>
      ctx.client.kv.range({ key: watch.key, count_only: true }, ctx.callOptions()),
    );
    return Number(res.header.revision) + 1;
  }

  /** Every listed range at one revision, a page at a time; restarts if compacted meanwhile. */
  private async listAll(
    compacted: { compacted: number; resume: number } | undefined,
  ): Promise<Snapshot> {
    const { ctx, list } = this.opts;
    let pageSize = this.opts.pageSize ?? 1000;
    const maxPageSize = pageSize * MAX_PAGE_GROWTH;
    for (;;) {
      try {
        const kvs: IKeyValue[] = [];
        let revision: string | undefined;
        for (const range of list) {
          let from = range.key;
          for (;;) {
            const at = revision;
            const res = await this.retry(() =>
              ctx.client.kv.range(
                {
                  key: from,
                  ...(range.rangeEnd === undefined
                    ? {}
                    : { range_end: range.rangeEnd, limit: pageSize }),
                  ...(at === undefined ? {} : { revision: at }),
                },
                ctx.callOptions(),
              ),
            );
            revision ??= res.header.revision;
            const accept = this.opts.accept;
            for (const kv of res.kvs) {
              if (accept === undefined || accept(kv.key.toString())) kvs.push(kv);
            }
            const last = res.kvs[res.kvs.length - 1];
            if (!res.more || last === undefined || range.rangeEnd === undefined) break;
            // The next page starts just after the last key of this one.
            from = Buffer.concat([last.key, Buffer.from([0])]);
          }
        }
        return {
          kvs,
          revision: Number(revision),
          reason: compacted === undefined ? 'initial' : 'compacted',
          ...(compacted === undefined
            ? {}
            : { compactRevision: compacted.compacted, resumeRevision: compacted.resume }),
        };
      } catch (err) {
        // Compacted between two pages: start over at a newer revision, with bigger pages so that
        // repeated compactions cannot keep a long listing from ever finishing.
        if (!isCompactedRead(err)) throw err;
        pageSize = Math.min(pageSize * 2, maxPageSize);
      }
    }
  }

  /** Watches from `from` until compaction, a final error, or the signal. */
  private watchFrom(from: number): Promise<WatchOutcome> {
    const { ctx, signal } = this.opts;
    return new Promise<WatchOutcome>((resolve) => {
      const finish = (outcome: WatchOutcome): void => {
        signal.removeEventListener('abort', onAbort);
        this.watch?.close();
        this.watch = undefined;
        resolve(outcome);
      };
      const onAbort = (): void => {
        finish(undefined);
      };
      if (signal.aborted) {
        resolve(undefined);
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      const accept = this.opts.accept;
      const watch = ctx.watches.watch(
        { ...this.opts.watch, startRevision: from },
        {
          onEvents: (events) => {
            const mine = accept === undefined ? events : events.filter((e) => accept(e.key));
            if (mine.length > 0) this.opts.onEvents(mine);
          },
          onCompacted: (compactRevision) => {
            finish({ compacted: compactRevision, resume: watch.nextRevision });
          },
          onEnded: (error) => {
            finish({ ended: error });
          },
          onStatus: (status) => {
            this.status(status);
          },
        },
      );
      this.watch = watch;
      if (this.paused) watch.pause();
    });
  }

  private retry<T>(call: () => Promise<T>): Promise<T> {
    const { ctx, signal, what } = this.opts;
    return retrying(
      async () => {
        const result = await call();
        if (this.down) this.status({ state: 'connected' });
        return result;
      },
      {
        signal,
        what,
        toError: (err, w) => ctx.toError(err, w),
        stallMs: ctx.dialTimeoutMs,
        backoff: new Backoff(50, 1000),
        onRetry: (error) => {
          this.status({ state: 'unavailable', error });
        },
      },
    );
  }

  private status(status: WatchStatus): void {
    const down = status.state === 'unavailable';
    if (down === this.down) return;
    this.down = down;
    this.opts.onStatus?.(status);
  }
}

/** etcd refused a read at a revision that was compacted meanwhile. */
export function isCompactedRead(err: unknown): boolean {
  const e = err instanceof EtcdConnectorError && err.cause !== undefined ? err.cause : err;
  return e instanceof Error && e.message.includes('required revision has been compacted');
}
