/**
 * The layouts of Go's `contrib/recipes` (etcd 3.4; docs/go-layouts.md), which our barrier, queue
 * and RWMutex recipes share: RWMutex, DoubleBarrier, Barrier, Queue and PriorityQueue.
 */
import {
  byKey,
  byModRevision,
  count,
  groupBy,
  lastSegment,
  parentOf,
  shown,
  view,
  withKeyTime,
} from './groups.js';
import type { EntryView, KeyEntry, LayoutDecoder, RecipeView } from './types.js';

const NANO = /^(.*)\/(read|write|waiters)\/(\d{19})$/;

/** `path/read/<UnixNano>`, `path/write/<UnixNano>`: leased, `''`, ordered by mod revision. */
export const rwMutexDecoder: LayoutDecoder = {
  name: 'rwmutex',
  decode(entries) {
    const groups = groupBy(entries, (e) => {
      const m = NANO.exec(e.key);
      const leasedEmpty = e.lease !== undefined && e.value === '';
      return m !== null && m[2] !== 'waiters' && leasedEmpty ? m[1] : undefined;
    });
    const recipes: RecipeView[] = [];
    for (const [path, group] of groups) {
      // A reader holds while no writer's key is older; a writer only when no key at all is.
      let writerBefore = false;
      const ordered = [...group].sort(byModRevision).map((e, i): EntryView => {
        const segment = lastSegment(e.key);
        const writer = e.key.slice(path.length + 1).startsWith('write/');
        const holds = writer ? i === 0 : !writerBefore;
        if (writer) writerBefore = true;
        const role = `${holds ? '' : 'waiting-'}${writer ? 'writer' : 'reader'}`;
        return view(withKeyTime(e, segment), role, e.lease ?? '');
      });
      const readers = ordered.filter((e) => e.role === 'reader').length;
      const writing = ordered.some((e) => e.role === 'writer');
      const waiting = ordered.filter((e) => e.role.startsWith('waiting-')).length;
      const held = writing ? 'held by a writer' : readers > 0 ? count(readers, 'reader') : 'free';
      recipes.push({
        kind: 'rwmutex',
        path,
        summary: `${held}, ${count(waiting, 'waiter')}`,
        entries: ordered,
      });
    }
    return recipes;
  },
};

/** `path/waiters/<UnixNano>` (leased, `''`) and the flag `path/ready` (no lease, `''`). */
export const doubleBarrierDecoder: LayoutDecoder = {
  name: 'double barrier',
  decode(entries) {
    const waiters = groupBy(entries, (e) => {
      const m = NANO.exec(e.key);
      return m?.[2] === 'waiters' && e.lease !== undefined && e.value === '' ? m[1] : undefined;
    });
    // The ready flag belongs to a double barrier only beside its waiters (alone it is a barrier).
    const ready = new Map<string, KeyEntry>();
    for (const e of entries) {
      if (e.lease === undefined && e.value === '' && lastSegment(e.key) === 'ready') {
        ready.set(parentOf(e.key), e);
      }
    }
    return [...waiters].map(([path, group]) => {
      const flag = ready.get(path);
      const ordered = [...group]
        .sort(byModRevision)
        .map((e) => view(withKeyTime(e, lastSegment(e.key)), 'waiter', lastSegment(e.key)));
      return {
        kind: 'double-barrier',
        path,
        summary: `${count(ordered.length, 'participant')}${flag === undefined ? '' : ', ready'}`,
        entries: flag === undefined ? ordered : [...ordered, view(flag, 'ready', 'ready')],
      };
    });
  },
};

/** Go's Barrier: the key `path` itself, `''`, no lease, present while held. */
export const barrierDecoder: LayoutDecoder = {
  name: 'barrier',
  decode(entries) {
    return entries
      .filter((e) => e.lease === undefined && e.value === '')
      .map((e) => ({
        kind: 'barrier',
        path: e.key,
        summary: 'held',
        entries: [view(e, 'held', lastSegment(e.key))],
      }));
  },
};

/** Go's Queue: items `path/<UnixNano>`, no lease, in mod revision order. */
export const queueDecoder: LayoutDecoder = {
  name: 'queue',
  decode(entries) {
    const groups = groupBy(entries, (e) =>
      e.lease === undefined && /^\d{19}$/.test(lastSegment(e.key)) ? parentOf(e.key) : undefined,
    );
    return [...groups].map(([path, group]) => ({
      kind: 'queue',
      path,
      summary: count(group.length, 'item'),
      entries: [...group]
        .sort(byModRevision)
        .map((e) => view(withKeyTime(e, lastSegment(e.key)), 'item', shown(e.value))),
    }));
  },
};

const PRIORITY_ITEM = /^(.*)\/(\d{5})\/(\d{16})$/;
const PRIORITY_MARKER = /^__(.*)\/(\d{5})$/;

/**
 * Go's PriorityQueue: items `path/<%05d priority>/<%016d sequence>`, no lease, dequeued in key
 * order; the marker `__path/<priority>` (never deleted) goes with them when it is in view.
 */
export const priorityQueueDecoder: LayoutDecoder = {
  name: 'priority queue',
  decode(entries) {
    const items = groupBy(entries, (e) =>
      e.lease === undefined ? PRIORITY_ITEM.exec(e.key)?.[1] : undefined,
    );
    const markers = groupBy(entries, (e) =>
      e.lease === undefined && e.value === '' ? PRIORITY_MARKER.exec(e.key)?.[1] : undefined,
    );
    return [...new Set([...items.keys(), ...markers.keys()])].map((path) => {
      const ordered = [...(items.get(path) ?? [])].sort(byKey).map((e) => {
        const m = PRIORITY_ITEM.exec(e.key);
        return view(e, 'item', `${Number(m?.[2])}/${Number(m?.[3])}: ${shown(e.value)}`);
      });
      const marks = (markers.get(path) ?? []).map((e) => view(e, 'marker', lastSegment(e.key)));
      const priorities = new Set(ordered.map((e) => e.name.slice(0, e.name.indexOf('/'))));
      return {
        kind: 'priority-queue',
        path,
        summary: `${count(ordered.length, 'item')} in ${count(priorities.size, 'priority', 'priorities')}`,
        entries: [...ordered, ...marks],
      };
    });
  },
};
