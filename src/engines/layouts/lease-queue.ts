/**
 * Go's Election and Mutex (`clientv3/concurrency`), which our elector, `etcdctl elect` and
 * `etcdctl lock` share: `path/<leaseHex>` under that very lease, ordered by create revision; the
 * oldest key leads or holds. A Mutex's value is `''`, an election's the campaign value, so a queue
 * whose values are all empty is read as a lock.
 */
import { byCreateRevision, count, groupBy, lastSegment, parentOf, shown, view } from './groups.js';
import type { KeyEntry, LayoutDecoder, RecipeView } from './types.js';

/** A key named after its own lease: the layout's one sure sign. */
function leaseQueuePath(e: KeyEntry): string | undefined {
  return e.lease !== undefined && lastSegment(e.key) === e.lease ? parentOf(e.key) : undefined;
}

function decode(entries: readonly KeyEntry[]): RecipeView[] {
  const recipes: RecipeView[] = [];
  for (const [path, group] of groupBy(entries, leaseQueuePath)) {
    const ordered = [...group].sort(byCreateRevision);
    const [first] = ordered;
    if (first === undefined) continue;
    const waiting = ordered.length - 1;
    if (ordered.every((e) => e.value === '')) {
      recipes.push({
        kind: 'lock',
        path,
        summary: `held by lease ${first.lease ?? '?'}, ${count(waiting, 'waiter')}`,
        entries: ordered.map((e, i) => view(e, i === 0 ? 'holder' : 'waiter', e.lease ?? '')),
      });
    } else {
      recipes.push({
        kind: 'election',
        path,
        summary: `leader ${shown(first.value)}, ${count(waiting, 'other candidate')}`,
        entries: ordered.map((e, i) => view(e, i === 0 ? 'leader' : 'candidate', e.value)),
      });
    }
  }
  return recipes;
}

/** Elections and locks (one decoder: the same keys, told apart by their values). */
export const leaseQueueDecoder: LayoutDecoder = { name: 'election and lock', decode };
