/**
 * One watch per connector and key, for a key that members of this process use one after another
 * (a mutex key `path/<lease hex>` behind the in-process gate): each lock would otherwise create
 * and cancel a watch on its own key, which costs etcd and the shared stream more than the lock's
 * own two writes. The watch stays while the key is in use and lingers a moment after, so
 * back-to-back locks keep it; each subscriber hears the key's deletions from its own start revision
 * on (etcd sends no puts: a holder only needs to know when its key goes).
 */
import type { WatchEvent } from '../transport/resume-point.js';
import type { MuxWatch } from '../transport/watch-mux.js';
import type { ConnectorContext } from './context.js';

/** What a subscriber is told (as a WatchListener, minus status). */
export interface KeySubscriber {
  /** The key's deletions (no puts). */
  onEvents(events: readonly WatchEvent[]): void;
  /** The watch ended (compacted, refused, closed): events may be missing; read the key again. */
  onBroken(): void;
}

/** How long an unused watch is kept for the next lock of the key. */
const LINGER_MS = 2000;

class SharedKeyWatch {
  private watch: MuxWatch | undefined;
  private subscriber: { from: number; listener: KeySubscriber } | undefined;
  private idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: ConnectorContext,
    private readonly key: string,
    private readonly forget: () => void,
  ) {}

  /**
   * Tells `listener` every deletion of the key from revision `from` on; returns the unsubscribe.
   * One subscriber at a time (the gate's holder); a new one replaces the last.
   */
  subscribe(from: number, listener: KeySubscriber): () => void {
    clearTimeout(this.idle);
    this.idle = undefined;
    const sub = { from, listener };
    this.subscriber = sub;
    // A running watch covers `from` if it resumes at or before it (it never skips revisions).
    if (this.watch !== undefined && this.watch.nextRevision > from) {
      // It resumed past `from` before we subscribed: what came between may have passed us.
      this.drop();
    }
    this.watch ??= this.open(from);
    return () => {
      if (this.subscriber !== sub) return;
      this.subscriber = undefined;
      this.idle = setTimeout(() => {
        this.drop();
        this.forget();
      }, LINGER_MS);
      this.idle.unref();
    };
  }

  private open(from: number): MuxWatch {
    const w = this.ctx.watches.watch(
      { key: this.key, startRevision: from, deletesOnly: true },
      {
        onEvents: (events) => {
          const sub = this.subscriber;
          if (sub === undefined) return;
          const mine = events.filter((e) => e.revision >= sub.from);
          if (mine.length > 0) sub.listener.onEvents(mine);
        },
        onCompacted: () => {
          this.broken(w);
        },
        onEnded: () => {
          this.broken(w);
        },
      },
    );
    return w;
  }

  private broken(w: MuxWatch): void {
    if (this.watch !== w) return;
    this.watch = undefined;
    this.subscriber?.listener.onBroken();
  }

  private drop(): void {
    this.watch?.close();
    this.watch = undefined;
  }
}

const registries = new WeakMap<ConnectorContext, Map<string, SharedKeyWatch>>();

/** The shared watch of `key` for this connector. */
export function sharedKeyWatch(ctx: ConnectorContext, key: string): SharedKeyWatch {
  let map = registries.get(ctx);
  if (map === undefined) registries.set(ctx, (map = new Map<string, SharedKeyWatch>()));
  let w = map.get(key);
  if (w === undefined) {
    const m = map;
    const created = new SharedKeyWatch(ctx, key, () => {
      if (m.get(key) === created) m.delete(key);
    });
    w = created;
    map.set(key, w);
  }
  return w;
}

export type { SharedKeyWatch };
