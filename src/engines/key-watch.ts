/**
 * One watch per connector, key and kind (deletions only, or every change) for everyone in this
 * process who watches that key: the members of a queue waiting on the key before theirs (one
 * after another: a lock's next waiter in this process watches the same predecessor key again), an
 * election's followers watching its leader, a holder watching its own key. Without it each wait
 * would create and cancel a watch, which costs etcd and the shared stream more than the wait's
 * own reads. The watch stays while someone uses it and lingers a moment after, so back-to-back
 * waits keep it.
 *
 * A subscriber asks for every change at or after a revision `from` (its read's revision + 1). The
 * running watch promises that when it starts at or before `from` and has not yet delivered an
 * event at or after `from` (what it delivered before the subscriber came is lost to it). When it
 * cannot — it started later (a watch from now that etcd created after the read), it already
 * delivered such an event, it was compacted or ended — the subscriber is told `onBroken` (never
 * synchronously) and is dropped: it reads again and subscribes anew, from its new read.
 */
import type { EtcdConnectorError } from '../errors.js';
import type { WatchEvent } from '../transport/resume-point.js';
import type { MuxWatch } from '../transport/watch-types.js';
import type { ConnectorContext } from './context.js';

/** What a subscriber is told. */
export interface KeySubscriber {
  /** The key's changes at or after the subscriber's `from` (only deletions, for such a watch). */
  onEvents(events: readonly WatchEvent[]): void;
  /**
   * The watch cannot show every change from `from` on: read the key again and subscribe anew.
   * With `error`, the watch ended for good (refused, or the connector closed).
   */
  onBroken(error?: EtcdConnectorError): void;
}

export interface SubscribeOptions {
  /** Only deletions matter (etcd sends no puts: a queue ordered by create revision). */
  deletesOnly: boolean;
  /**
   * A watch that has to be created starts from etcd's current revision, which etcd serves at
   * once, instead of from `from`, which etcd serves from its 100 ms catch-up loop once it has
   * passed `from`. If etcd was already past the read by then, the subscriber is told `onBroken`.
   */
  fromNow: boolean;
}

/** How long an unused watch is kept for the next wait on the key. */
const LINGER_MS = 2000;

interface Subscription {
  readonly from: number;
  readonly listener: KeySubscriber;
}

class SharedKeyWatch {
  private watch: MuxWatch | undefined;
  /** The first revision the watch delivers; undefined while a watch from now is being created. */
  private start: number | undefined;
  /** The revision of the last event the watch delivered (0: none yet). */
  private lastEvent = 0;
  private readonly subs = new Set<Subscription>();
  private idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: ConnectorContext,
    private readonly key: string,
    private readonly deletesOnly: boolean,
    private readonly forget: () => void,
  ) {}

  subscribe(from: number, listener: KeySubscriber, fromNow: boolean): () => void {
    clearTimeout(this.idle);
    this.idle = undefined;
    const sub: Subscription = { from, listener };
    this.subs.add(sub);
    if (this.watch === undefined) this.open(fromNow ? 0 : from);
    else if (this.start !== undefined && !this.covers(sub)) this.breakSoon(sub);
    // (A watch from now still being created decides when etcd says where it starts.)
    return () => {
      this.leave(sub);
    };
  }

  /** The watch shows `sub` every change from its `from` on. */
  private covers(sub: Subscription): boolean {
    return this.start !== undefined && this.start <= sub.from && this.lastEvent < sub.from;
  }

  private open(startRevision: number): void {
    this.start = startRevision === 0 ? undefined : startRevision;
    this.lastEvent = 0;
    const w = this.ctx.watches.watch(
      { key: this.key, startRevision, deletesOnly: this.deletesOnly },
      {
        onEvents: (events) => {
          const last = events[events.length - 1];
          if (last !== undefined) this.lastEvent = last.revision;
          for (const sub of [...this.subs]) {
            // (One told before may have left meanwhile.)
            if (!this.subs.has(sub)) continue;
            const mine = events.filter((e) => e.revision >= sub.from);
            if (mine.length > 0) sub.listener.onEvents(mine);
          }
        },
        onCreated: (revision) => {
          // A watch from now starts after etcd's revision at its creation; later creations
          // (after a reconnect) resume where it was.
          if (this.watch !== w || this.start !== undefined) return;
          this.start = revision + 1;
          for (const sub of [...this.subs]) if (!this.covers(sub)) this.breakSoon(sub);
        },
        onCompacted: () => {
          this.ended(w);
        },
        onEnded: (error) => {
          this.ended(w, error);
        },
      },
    );
    this.watch = w;
  }

  /** Tells `sub`, after the current call returns, that it must read again; it is dropped. */
  private breakSoon(sub: Subscription, error?: EtcdConnectorError): void {
    this.subs.delete(sub);
    queueMicrotask(() => {
      sub.listener.onBroken(error);
    });
    if (this.subs.size === 0) this.linger();
  }

  /** The watch ended (compacted, refused, closed): every subscriber reads again. */
  private ended(w: MuxWatch, error?: EtcdConnectorError): void {
    if (this.watch !== w) return;
    this.watch = undefined;
    this.start = undefined;
    for (const sub of [...this.subs]) this.breakSoon(sub, error);
  }

  private leave(sub: Subscription): void {
    if (!this.subs.delete(sub)) return;
    if (this.subs.size === 0) this.linger();
  }

  private linger(): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.watch?.close();
      this.watch = undefined;
      this.forget();
    }, LINGER_MS);
    this.idle.unref();
  }
}

const registries = new WeakMap<ConnectorContext, Map<string, SharedKeyWatch>>();

/** Names the shared watch of `key` of one kind: one per connector, key and kind. */
export function watchId(key: string, deletesOnly: boolean): string {
  return (deletesOnly ? 'd' : 'a') + key;
}

/**
 * Subscribes to `key`'s changes at or after revision `from` on the connector's shared watch of
 * it (see the file's comment); returns the unsubscribe (a no-op once `onBroken` was told).
 */
export function watchKeyFrom(
  ctx: ConnectorContext,
  key: string,
  from: number,
  listener: KeySubscriber,
  options: SubscribeOptions,
): () => void {
  let map = registries.get(ctx);
  if (map === undefined) registries.set(ctx, (map = new Map<string, SharedKeyWatch>()));
  const id = watchId(key, options.deletesOnly);
  let shared = map.get(id);
  if (shared === undefined) {
    const m = map;
    const created = new SharedKeyWatch(ctx, key, options.deletesOnly, () => {
      if (m.get(id) === created) m.delete(id);
    });
    shared = created;
    map.set(id, shared);
  }
  return shared.subscribe(from, listener, options.fromNow);
}
