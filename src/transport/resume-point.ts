/**
 * A watcher's resume bookkeeping, kept pure so it is tested without etcd: where the watcher goes
 * on from (its last delivered event's revision + 1), what a response delivers, and which create
 * request a `created` answer belongs to.
 */
import type { IEvent, IWatchResponse } from 'etcd3';

/** One change of one key, as etcd reported it. */
export interface WatchEvent {
  type: 'put' | 'delete';
  /** Full etcd key, utf8. */
  key: string;
  /** `''` for a delete. */
  value: string;
  /** Mod revision of the event. */
  revision: number;
  /** `0` for a delete. */
  createRevision: number;
  version: number;
  /** Lease id as a decimal string (`'0'` when none). */
  lease: string;
}

/** Where a watcher stands. */
export interface ResumePoint {
  /** The next revision to deliver: last delivered event's revision + 1. */
  next: number;
  /** Events of a fragmented response, held until its last fragment. */
  fragments: IEvent[] | undefined;
}

/** What one response means for a watcher. */
export type Delivery =
  | { readonly kind: 'events'; readonly events: readonly WatchEvent[] }
  /** A progress notification: everything up to `revision` was delivered. */
  | { readonly kind: 'progress'; readonly revision: number }
  /** Nothing to deliver (a fragment, or only events delivered before). */
  | { readonly kind: 'none' };

/**
 * Applies a response of this watcher (not `created`, not canceled) to its resume point and says
 * what to deliver. Events below the resume point were delivered before (a replay after a
 * reconnect) and are dropped, so nothing is ever repeated; the resume point moves to the last
 * delivered event + 1, or, on a progress notification (no events; etcd sends it in order and
 * only once the watcher caught up), to the header's revision + 1.
 */
export function applyResponse(
  point: ResumePoint,
  res: Pick<IWatchResponse, 'fragment' | 'events' | 'header'>,
): Delivery {
  if (res.fragment) {
    // A loop, not push(...events): a fragment may hold more events than a call takes arguments.
    const fragments = (point.fragments ??= []);
    for (const e of res.events) fragments.push(e);
    return { kind: 'none' };
  }
  let raw = res.events;
  if (point.fragments !== undefined) {
    raw = point.fragments.concat(raw);
    point.fragments = undefined;
  }
  if (raw.length === 0) {
    const revision = Number(res.header.revision);
    if (revision + 1 > point.next) point.next = revision + 1;
    return { kind: 'progress', revision };
  }
  const events: WatchEvent[] = [];
  for (const e of raw) {
    const ev = toEvent(e);
    if (ev.revision >= point.next) events.push(ev);
  }
  const last = events[events.length - 1];
  if (last === undefined) return { kind: 'none' };
  point.next = last.revision + 1;
  return { kind: 'events', events };
}

/**
 * The create request a `created` answer belongs to: the one with its watch id while that one
 * waits for its answer; otherwise the oldest one waiting — etcd answers creates in the order it
 * got them, and a refusal (or an older etcd that picks its own ids) carries no id of ours.
 */
export function matchCreated<T>(
  pending: readonly T[],
  byId: (id: string) => T | undefined,
  watchId: string,
): T | undefined {
  const named = byId(watchId);
  if (named !== undefined && pending.includes(named)) return named;
  return pending[0];
}

export function toEvent(e: IEvent): WatchEvent {
  const kv = e.kv;
  const isDelete = e.type === 'Delete';
  return {
    type: isDelete ? 'delete' : 'put',
    key: kv.key.toString('utf8'),
    value: isDelete ? '' : kv.value.toString('utf8'),
    revision: Number(kv.mod_revision),
    createRevision: isDelete ? 0 : Number(kv.create_revision),
    version: isDelete ? 0 : Number(kv.version),
    lease: isDelete ? '0' : kv.lease,
  };
}
