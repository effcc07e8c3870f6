/** Small helpers the decoders share: grouping keys by recipe path, ordering, wording. */
import type { EntryView, KeyEntry, Since } from './types.js';

/** `a/b/c` -> `a/b`; a key without `/` has the parent ``. */
export function parentOf(key: string): string {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}

/** `a/b/c` -> `c`. */
export function lastSegment(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}

/**
 * The entries that `match` maps to a recipe path, grouped by that path (in first-seen order);
 * `match` returns undefined for an entry of another layout.
 */
export function groupBy(
  entries: readonly KeyEntry[],
  match: (e: KeyEntry) => string | undefined,
): Map<string, KeyEntry[]> {
  const groups = new Map<string, KeyEntry[]>();
  for (const e of entries) {
    const path = match(e);
    if (path === undefined) continue;
    const group = groups.get(path);
    if (group === undefined) groups.set(path, [e]);
    else group.push(e);
  }
  return groups;
}

export const byCreateRevision = (a: KeyEntry, b: KeyEntry): number =>
  a.createRevision - b.createRevision;

/** Go's RWMutex, DoubleBarrier and Queue order by mod revision. */
export const byModRevision = (a: KeyEntry, b: KeyEntry): number =>
  a.modRevision - b.modRevision || a.key.localeCompare(b.key);

export const byKey = (a: KeyEntry, b: KeyEntry): number =>
  a.key < b.key ? -1 : a.key > b.key ? 1 : 0;

/** An entry with its role and name. */
export function view(e: KeyEntry, role: string, name: string): EntryView {
  return { ...e, role, name };
}

/** `<UnixNano>` (19 digits, Go's `%v` of `time.Now().UnixNano()`) as the time it names. */
export function unixNanoSince(segment: string): Since | undefined {
  if (!/^\d{19}$/.test(segment)) return undefined;
  return { time: Number(BigInt(segment) / 1_000_000n), source: 'key' };
}

/** An entry whose key holds its creation time (Go's `<UnixNano>` keys) says so. */
export function withKeyTime(e: KeyEntry, segment: string): KeyEntry {
  const since = unixNanoSince(segment);
  return since === undefined ? e : { ...e, since };
}

/** `1 waiter`, `2 waiters`. */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}

/** A value as a name or summary shows it: one line, at most 60 characters, `''` when empty. */
export function shown(value: string): string {
  if (value === '') return "''";
  const line = value.replace(/\s+/g, ' ');
  return line.length > 60 ? `${line.slice(0, 59)}…` : line;
}
