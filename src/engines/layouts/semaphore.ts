/**
 * Our Semaphore (Go has none): `path/<leaseHex>-<n>` = `''` under that very lease, in line by
 * create revision; the first `permits` hold. `permits` is not stored in etcd, so the view lists
 * the line in order and says so: the first ones hold, as many as the participants' `permits`.
 */
import { byCreateRevision, count, groupBy, lastSegment, parentOf, view } from './groups.js';
import type { KeyEntry, LayoutDecoder, RecipeView } from './types.js';

/** `<leaseHex>-<n>` under that very lease: the layout's sure sign. */
function semaphorePath(e: KeyEntry): string | undefined {
  if (e.lease === undefined || e.value !== '') return undefined;
  const m = /^([0-9a-f]+)-\d+$/.exec(lastSegment(e.key));
  return m?.[1] === e.lease ? parentOf(e.key) : undefined;
}

function decode(entries: readonly KeyEntry[]): RecipeView[] {
  const recipes: RecipeView[] = [];
  for (const [path, group] of groupBy(entries, semaphorePath)) {
    const ordered = [...group].sort(byCreateRevision);
    recipes.push({
      kind: 'semaphore',
      path,
      summary: `${count(ordered.length, 'permit key')} in line (the first \`permits\` hold)`,
      entries: ordered.map((e, i) => view(e, `in line #${i + 1}`, lastSegment(e.key))),
    });
  }
  return recipes;
}

/** Semaphores (before the services catch-all, which would take their leased keys). */
export const semaphoreDecoder: LayoutDecoder = { name: 'semaphore', decode };
