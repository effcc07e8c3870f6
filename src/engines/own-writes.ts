/**
 * Tells our writes to a key apart from everyone else's changes, by revision: the bookkeeping of a
 * recipe that keeps one key as it wants it and watches it (the ephemeral key).
 *
 * Each write of ours records the revision etcd answered it with. A watch event may arrive before
 * the answer of the write of ours that caused it, so events are judged only while none of our
 * writes is queued or in flight: then the revisions of all our answered writes are known. A change
 * at or below the revision of our latest write needs no repair: that write already replaced it.
 */
import type { IKeyValue } from 'etcd3';
import type { WatchEvent } from '../transport/watch-types.js';
import { ABSENT, viewOf, type KeyView } from './key-ownership.js';

export class OwnWrites {
  /** Writes run one at a time, so two of them never reorder values. */
  private writes: Promise<unknown> = Promise.resolve();
  /** Writes queued or in flight; events wait while there are any. */
  private pending = 0;
  /** Events not yet judged. */
  private events: WatchEvent[] = [];
  /** Revisions etcd answered our writes with, whose events were not judged yet. */
  private readonly revisions = new Set<number>();
  /** The revision of our latest write. */
  private lastRevision = 0;
  private seenValue: KeyView = ABSENT;

  /** `judge` is called whenever events wait and no write of ours is queued or in flight. */
  constructor(private readonly judge: () => void) {}

  /** The key as last judged: the state before the next event. */
  get seen(): KeyView {
    return this.seenValue;
  }

  /** Events wait to be judged, or a write is queued or in flight. */
  get busy(): boolean {
    return this.events.length > 0 || this.pending > 0;
  }

  /** Runs `fn` after the writes queued before it; once none is left, judges waiting events. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    this.pending++;
    const run = this.writes.then(fn, fn).finally(() => {
      this.pending--;
      if (this.pending === 0 && this.events.length > 0) this.judge();
    });
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** A write of ours was answered with `revision`. */
  wrote(revision: number): void {
    this.revisions.add(revision);
    this.lastRevision = Math.max(this.lastRevision, revision);
  }

  /** The key is known to be `view` (e.g. as our first write left it); events after it follow. */
  begin(view: KeyView): void {
    this.seenValue = view;
  }

  /** Events of the key's watch (or a read standing for the events missed), in revision order. */
  push(events: readonly WatchEvent[]): void {
    for (const e of events) this.events.push(e);
    if (this.pending === 0) this.judge();
  }

  /**
   * Takes the waiting events and returns the key's latest state, or `undefined` when none waited.
   * `foreign` hears each event that no write of ours caused, with the state before it. Events at
   * or below the state already seen are skipped (a read after a compaction overlaps the last
   * events).
   */
  take(foreign: (prior: KeyView, next: KeyView, event: WatchEvent) => void): KeyView | undefined {
    const events = this.events;
    if (events.length === 0) return undefined;
    this.events = [];
    for (const e of events) {
      if (e.revision <= this.seenValue.revision) continue;
      const view = viewOf(e);
      if (!this.revisions.has(e.revision)) foreign(this.seenValue, view, e);
      this.seenValue = view;
    }
    // Writes of ours at or below the last event were seen (or lie before a re-read).
    for (const r of this.revisions) if (r <= this.seenValue.revision) this.revisions.delete(r);
    return this.seenValue;
  }

  /** Drops the waiting events unjudged (nothing is kept any more). */
  drop(): void {
    this.events = [];
  }

  /** A write of ours at or after `view`'s revision already replaced it. */
  replaced(view: KeyView): boolean {
    return view.revision <= this.lastRevision;
  }

  /** Forgets events, revisions and the state seen; writes still queued run in order. */
  reset(): void {
    this.events = [];
    this.revisions.clear();
    this.lastRevision = 0;
    this.seenValue = ABSENT;
  }
}

/**
 * A read of `key` at `revision` as one event that stands for every change missed: a put of what
 * the read found, or a delete at the read's revision when the key was absent.
 */
export function readAsEvent(key: string, kv: IKeyValue | undefined, revision: number): WatchEvent {
  return kv === undefined
    ? { type: 'delete', key, value: '', revision, createRevision: 0, version: 0, lease: '0' }
    : {
        type: 'put',
        key,
        value: kv.value.toString(),
        revision: Number(kv.mod_revision),
        createRevision: Number(kv.create_revision),
        version: Number(kv.version),
        lease: kv.lease,
      };
}
