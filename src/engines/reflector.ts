/**
 * The reflector (Kubernetes' name for it): list a key range at one revision, a page at a time,
 * then watch it from that revision + 1 on the shared stream; when etcd has compacted the history
 * the watch needs, list again and go on from the new listing. A compaction between two pages of a
 * listing starts the listing over at a newer revision. The tracker, the leader observer and the
 * observer's resync all stand on it, so a recipe never misses a change silently.
 */
import type { IKeyValue } from 'etcd3';
import { publish } from '../diagnostics.js';
import { EtcdConnectorError } from '../errors.js';
import { Backoff } from '../transport/timers.js';
import type { MuxWatch, WatchEvent, WatchListener, WatchStatus } from '../transport/watch-types.js';
import type { ConnectorContext } from './context.js';
import { retrying } from './retry.js';

/** A key range: one key (no `rangeEnd`) or `[key, rangeEnd)`. */
export interface KeyRange {
  /** A string is taken as UTF-8 (an observer keeps its path, not a copy in a Buffer). */
  key: Buffer | string;
  rangeEnd?: Buffer;
}

function keyBytes(key: Buffer | string): Buffer {
  return typeof key === 'string' ? Buffer.from(key) : key;
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

/** Where a reflector delivers; a class of the recipe's (methods cost no memory per instance). */
export interface ReflectorListener {
  onSnapshot(snapshot: Snapshot): void;
  onEvents(events: readonly WatchEvent[]): void;
  /**
   * etcd cannot be reached (`unavailable`, with the retryable reason; the reflector keeps trying)
   * or can again (`connected`, only after an `unavailable`).
   */
  onStatus(status: WatchStatus): void;
  /**
   * The reflector ended: `undefined` after `stop()`, or the final error (permission denied,
   * authentication, TLS) that ended it.
   */
  onEnd?(error: EtcdConnectorError | undefined): void;
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
  listener: ReflectorListener;
}

export interface Reflector {
  /** Pauses delivery (back-pressure); the watch resumes where it stopped, nothing is lost. */
  pause(): void;
  resume(): void;
  /** Ends the reflector; `done` resolves once nothing of it runs. Idempotent. */
  stop(): void;
  /**
   * Resolves when the reflector ended: `undefined` after `stop()`, or the final error
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

/**
 * Event-driven, so an idle reflector costs little: while it watches, no async function is
 * suspended, no promise pending, no timer, no AbortController (one is made only when a retry must
 * be cancellable); it is itself its watch's listener. Only a listing runs as a task.
 */
class ReflectorImpl implements Reflector, WatchListener {
  private watch: MuxWatch | undefined;
  private paused = false;
  private stopped = false;
  /** A listing (or the read of "now") in flight. */
  private task: Promise<void> | undefined;
  private ended: { error: EtcdConnectorError | undefined } | undefined;
  private donePromise: Promise<EtcdConnectorError | undefined> | undefined;
  private resolveDone: ((e: EtcdConnectorError | undefined) => void) | undefined;
  private controller: AbortController | undefined;
  /** Told `unavailable` and not yet `connected` again. */
  private down = false;

  constructor(private readonly opts: ReflectorOptions) {
    const start = opts.startRevision;
    if (typeof start === 'number') this.beginWatch(start);
    else if (start === 'now') this.runTask(() => this.watchFromNow());
    else this.runTask(() => this.relist(undefined));
  }

  get done(): Promise<EtcdConnectorError | undefined> {
    const ended = this.ended;
    this.donePromise ??=
      ended !== undefined
        ? Promise.resolve(ended.error)
        : new Promise((resolve) => (this.resolveDone = resolve));
    return this.donePromise;
  }

  pause(): void {
    this.paused = true;
    this.watch?.pause();
  }

  resume(): void {
    this.paused = false;
    this.watch?.resume();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.controller?.abort();
    this.watch?.close();
    this.watch = undefined;
    // A running task ends the reflector when it returns.
    if (this.task === undefined) this.end(undefined);
  }

  // The watch's listener.
  onEvents(events: readonly WatchEvent[]): void {
    const accept = this.opts.accept;
    const mine = accept === undefined ? events : events.filter((e) => accept(e.key));
    if (mine.length > 0) this.opts.listener.onEvents(mine);
  }

  onCompacted(compactRevision: number): void {
    const resume = this.watch?.nextRevision ?? 0;
    this.watch = undefined;
    if (this.stopped) return;
    this.runTask(() => this.relist({ compacted: compactRevision, resume }));
  }

  onEnded(error: EtcdConnectorError): void {
    this.watch = undefined;
    this.end(this.stopped ? undefined : error);
  }

  onStatus(status: WatchStatus): void {
    const down = status.state === 'unavailable';
    if (down === this.down) return;
    this.down = down;
    this.opts.listener.onStatus(status);
  }

  private get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.stopped) this.controller.abort();
    return this.controller.signal;
  }

  /** Runs a listing task; its failure (final, or stopped) ends the reflector. */
  private runTask(task: () => Promise<void>): void {
    this.task = task().then(
      () => {
        this.task = undefined;
        if (this.stopped) this.end(undefined);
      },
      (err: unknown) => {
        this.task = undefined;
        this.end(this.stopped ? undefined : this.opts.ctx.toError(err, this.opts.what));
      },
    );
  }

  private async watchFromNow(): Promise<void> {
    const from = await this.firstRevision();
    if (!this.stopped) this.beginWatch(from);
  }

  private async relist(
    compacted: { compacted: number; resume: number } | undefined,
  ): Promise<void> {
    const snapshot = await this.listAll(compacted);
    if (this.stopped) return;
    if (compacted !== undefined) {
      publish('etcd-connector:watch.resync', () => ({
        what: this.opts.what,
        compactRevision: compacted.compacted,
        revision: snapshot.revision,
      }));
    }
    this.opts.listener.onSnapshot(snapshot);
    this.beginWatch(snapshot.revision + 1);
  }

  private beginWatch(from: number): void {
    if (this.stopped) return;
    const watch = this.opts.ctx.watches.watch({ ...this.opts.watch, startRevision: from }, this);
    this.watch = watch;
    if (this.paused) watch.pause();
  }

  private end(error: EtcdConnectorError | undefined): void {
    if (this.ended !== undefined) return;
    this.ended = { error };
    this.watch?.close();
    this.watch = undefined;
    this.resolveDone?.(error);
    this.opts.listener.onEnd?.(error);
  }

  /** The revision to watch from without a listing: etcd's current revision + 1. */
  private async firstRevision(): Promise<number> {
    // "Now" as a number, so the resume point is always known (etcd's 0 = now is not).
    const { ctx, watch } = this.opts;
    const res = await this.retry(() =>
      ctx.client.kv.range({ key: keyBytes(watch.key), count_only: true }, ctx.callOptions()),
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
          let from = keyBytes(range.key);
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

  private retry<T>(call: () => Promise<T>): Promise<T> {
    const { ctx, what } = this.opts;
    return retrying(
      async () => {
        const result = await call();
        if (this.down) this.onStatus({ state: 'connected' });
        return result;
      },
      {
        signal: () => this.signal,
        isStopped: () => this.stopped,
        what,
        toError: (err, w) => ctx.toError(err, w),
        stallMs: ctx.dialTimeoutMs,
        backoff: new Backoff(50, 1000),
        onRetry: (error) => {
          this.onStatus({ state: 'unavailable', error });
        },
      },
    );
  }
}

/** etcd refused a read at a revision that was compacted meanwhile. */
export function isCompactedRead(err: unknown): boolean {
  const e = err instanceof EtcdConnectorError && err.cause !== undefined ? err.cause : err;
  return e instanceof Error && e.message.includes('required revision has been compacted');
}
