/**
 * The bookkeeping of one proof watch (engines/wait-deletes.ts, "the proof by watch"): a watch
 * over the key range from the lower to the higher of our key and our sole predecessor's, so etcd
 * reports changes of both in revision order (it orders events per watch, not across watches: a
 * separate watch on our key may report its delete after the predecessor's).
 *
 * The predecessor's delete proves we hold only if the watch missed nothing since the view that
 * named the predecessor (created at or before that read's revision) and nothing happened to our
 * own key before it or in the same revision. Once our key changed, this watch proves nothing any
 * more: from then on only a read decides.
 */
import type { WatchEvent } from '../transport/resume-point.js';

/** What one batch of events means to the waiter. */
export interface ProofBatch {
  /** One of the two keys changed: wake the waiting loop. */
  readonly wake: boolean;
  /** The predecessor's delete revision when the batch proves we hold; 0 when it does not. */
  readonly deletedAt: number;
}

export class ProofWatchState {
  /** etcd's revision when it created the watch; the watch reports every later revision. */
  private createdAt: number | undefined;
  private tainted = false;

  constructor(
    /** Our key. */
    readonly ours: string,
    /** The sole predecessor's key. */
    readonly pred: string,
  ) {}

  /**
   * etcd created the watch at `revision`. Returns true the first time (later creations, after a
   * reconnect, resume from the last delivered revision and change nothing).
   */
  created(revision: number): boolean {
    if (this.createdAt !== undefined) return false;
    this.createdAt = revision;
    return true;
  }

  /** The watch has reported everything after `readRevision` (it started no later). */
  covers(readRevision: number): boolean {
    return this.createdAt !== undefined && this.createdAt <= readRevision;
  }

  /** Events in revision order; a batch holds whole revisions (two deletes in one transaction). */
  batch(events: readonly WatchEvent[]): ProofBatch {
    let wake = false;
    let deletedAt = 0;
    for (const e of events) {
      if (e.key === this.ours) {
        this.tainted = true;
        wake = true;
      } else if (e.key === this.pred) {
        wake = true;
        if (e.type === 'delete' && deletedAt === 0) deletedAt = e.revision;
      } // else another member's key that sorts between the two
    }
    return { wake, deletedAt: this.tainted ? 0 : deletedAt };
  }
}
