/**
 * What changed between two decoded states, in recipe terms (`node-b: candidate → leader`), for the
 * dashboard's log. Compares whole states, so it is right however many watch events (or coalesced
 * states) lie between them.
 */
import { count } from './groups.js';
import type { EntryView, RecipeView } from './types.js';

export interface RecipeChange {
  readonly kind: string;
  readonly path: string;
  readonly text: string;
}

/** Past this many details in one recipe, the change is told as counts. */
const MAX_DETAILS = 4;

export function diffRecipes(
  before: readonly RecipeView[],
  after: readonly RecipeView[],
): RecipeChange[] {
  const id = (r: RecipeView): string => `${r.kind}\u0000${r.path}`;
  const old = new Map(before.map((r) => [id(r), r]));
  const changes: RecipeChange[] = [];
  for (const r of after) {
    const prev = old.get(id(r));
    old.delete(id(r));
    if (prev === undefined) {
      changes.push({ kind: r.kind, path: r.path, text: `appeared: ${r.summary}` });
      continue;
    }
    const text = entryChanges(prev.entries, r.entries);
    if (text !== undefined) changes.push({ kind: r.kind, path: r.path, text });
  }
  for (const r of old.values()) changes.push({ kind: r.kind, path: r.path, text: 'gone' });
  return changes;
}

function entryChanges(
  before: readonly EntryView[],
  after: readonly EntryView[],
): string | undefined {
  const old = new Map(before.map((e) => [e.key, e]));
  const joined: string[] = [];
  const moved: string[] = [];
  for (const e of after) {
    const prev = old.get(e.key);
    old.delete(e.key);
    if (prev === undefined) joined.push(`${e.name} joined as ${e.role}`);
    else if (prev.role !== e.role) moved.push(`${e.name}: ${prev.role} → ${e.role}`);
    else if (prev.name !== e.name) moved.push(`${prev.name} → ${e.name}`);
    else if (prev.value !== e.value) moved.push(`${e.name}: value changed`);
  }
  const left = [...old.values()].map((e) => `${e.name} (${e.role}) left`);
  const details = [...left, ...moved, ...joined];
  if (details.length === 0) return undefined;
  if (details.length <= MAX_DETAILS) return details.join('; ');
  return `${count(joined.length, 'joined', 'joined')}, ${count(left.length, 'left', 'left')}, ${count(moved.length, 'changed', 'changed')}`;
}
