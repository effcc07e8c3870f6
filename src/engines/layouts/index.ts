/**
 * Reads recipes out of raw keys: given every key-value under a path, says which elections, locks,
 * queues, services, ... live there, in recipe terms (leader, holder, waiters in order). Used by
 * the inspector (`etcdc inspect`, `etcdc dashboard`). Pure: no I/O, no clock.
 *
 * To teach it a new layout, write a {@link LayoutDecoder} and put it into {@link DECODERS} — the
 * one place that lists them — before any decoder that would otherwise take its keys.
 */
import type { IKeyValue } from 'etcd3';
import { barrierDecoder, doubleBarrierDecoder, priorityQueueDecoder } from './go-recipes.js';
import { queueDecoder, rwMutexDecoder } from './go-recipes.js';
import { leaseQueueDecoder } from './lease-queue.js';
import { semaphoreDecoder } from './semaphore.js';
import {
  bookkeepingDecoder,
  endpointsDecoder,
  servicesDecoder,
  unknownDecoder,
} from './services.js';
import type { KeyEntry, LayoutDecoder, RecipeView, Since } from './types.js';

export type { EntryView, KeyEntry, LayoutDecoder, RecipeKind, RecipeView, Since } from './types.js';
export { diffRecipes, type RecipeChange } from './diff.js';

/**
 * Every decoder, most specific first: each sees only the keys the ones before it left. Layouts
 * with a shape of their own (a `<UnixNano>` segment, a JSON value, a key named after its lease)
 * come before the catch-alls (any leased key is a service instance, any empty unleased key a
 * barrier, anything else unknown).
 */
export const DECODERS: readonly LayoutDecoder[] = [
  bookkeepingDecoder,
  doubleBarrierDecoder,
  rwMutexDecoder,
  priorityQueueDecoder,
  queueDecoder,
  endpointsDecoder,
  leaseQueueDecoder,
  semaphoreDecoder,
  servicesDecoder,
  barrierDecoder,
  unknownDecoder,
];

/** The recipes among `entries`, sorted by path; every entry lands in exactly one of them. */
export function decodeLayouts(
  entries: readonly KeyEntry[],
  decoders: readonly LayoutDecoder[] = DECODERS,
): RecipeView[] {
  let left: readonly KeyEntry[] = entries;
  const found: RecipeView[] = [];
  for (const decoder of decoders) {
    if (left.length === 0) break;
    const recipes = decoder.decode(left);
    if (recipes.length === 0) continue;
    const taken = new Set<string>();
    for (const r of recipes) for (const e of r.entries) taken.add(e.key);
    for (const r of recipes) found.push(r);
    left = left.filter((e) => !taken.has(e.key));
  }
  return found.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** An etcd key-value as the decoders take it. */
export function keyEntry(kv: IKeyValue, since?: Since): KeyEntry {
  return {
    key: kv.key.toString(),
    value: kv.value.toString(),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
    ...(kv.lease === '0' || kv.lease === '' ? {} : { lease: leaseHex(kv.lease) }),
    ...(since === undefined ? {} : { since }),
  };
}

/** etcd3's decimal lease id in hex as Go writes it into keys (never through a JS number). */
export function leaseHex(decimal: string): string {
  return BigInt(decimal).toString(16);
}
