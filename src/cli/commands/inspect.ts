import { Argument, type Command } from 'commander';
import type { EntryView, RecipeView } from '../../engines/layouts/index.js';
import type { InspectorState, LeaseTtl } from '../../recipes/inspector.js';
import { interruptible } from '../command-scope.js';
import { checkFlags, resolvePath, type GlobalFlags } from '../connect.js';
import type { Output } from '../output.js';

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description(
      'Show what lives under a path in recipe terms: elections (leader, candidates in order), ' +
        'locks (holder, waiters), RWMutexes, barriers, queues, services, Go endpoints, with the ' +
        'TTL left on each lease. Unknown keys are listed as such. A relative path is taken ' +
        'under the namespace; without one, the whole namespace.',
    )
    .addArgument(new Argument('[path]', 'e.g. elections/demo or /etcdc/locks'))
    .action(async (path: string | undefined, _opts: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<GlobalFlags>(), cmd);
      await interruptible(flags, async ({ out, conn, signal }) => {
        const at = path === undefined ? conn.root : resolvePath(conn, '', path, 'path');
        const inspector = conn.newInspector(at);
        let state: InspectorState | undefined;
        const stream = inspector.start({ once: true, signal });
        for await (const s of stream) state = s;
        const error = await stream.closed;
        if (error !== undefined) throw error;
        if (state !== undefined) printState(out, state);
      });
    });
}

/** The TTL left on `lease` at `now` (ms), in whole seconds; -1: gone; undefined: not known. */
export function ttlLeft(leases: ReadonlyMap<string, LeaseTtl>, lease: string, now: number) {
  const t = leases.get(lease);
  if (t === undefined) return undefined;
  if (t.ttl < 0) return -1;
  return Math.max(0, Math.round(t.ttl - (now - t.checkedAt) / 1000));
}

/** An entry as `--json` prints it: the key-value, its role, and the TTL left on its lease. */
export function entryRecord(e: EntryView, leases: ReadonlyMap<string, LeaseTtl>, now: number) {
  const ttl = e.lease === undefined ? undefined : ttlLeft(leases, e.lease, now);
  return {
    role: e.role,
    name: e.name,
    key: e.key,
    value: e.value,
    ...(e.lease === undefined ? {} : { lease: e.lease }),
    ...(ttl === undefined ? {} : { ttl }),
    createRevision: e.createRevision,
    modRevision: e.modRevision,
    version: e.version,
    ...(e.since?.source === 'key' ? { createdAt: new Date(e.since.time).toISOString() } : {}),
  };
}

function printState(out: Output, state: InspectorState): void {
  const now = Date.now();
  if (!out.json) {
    const what = state.recipes.length === 1 ? 'recipe' : 'recipes';
    out.info(`${state.path} at revision ${state.revision}: ${state.recipes.length} ${what}`);
  }
  for (const r of state.recipes) {
    out.emit(
      {
        event: 'recipe',
        kind: r.kind,
        path: r.path,
        summary: r.summary,
        revision: state.revision,
        entries: r.entries.map((e) => entryRecord(e, state.leases, now)),
      },
      '\n' + recipeTable(out, r, state.leases, now),
    );
  }
  if (out.json) {
    out.emit(
      {
        event: 'inspected',
        path: state.path,
        revision: state.revision,
        recipes: state.recipes.length,
      },
      '',
    );
  }
}

/** A recipe for people: a headline and a table of its entries in order. */
function recipeTable(
  out: Output,
  r: RecipeView,
  leases: ReadonlyMap<string, LeaseTtl>,
  now: number,
): string {
  // A value column only where the name does not already say it (services, unknown keys, ...).
  const withValue = r.entries.some((e) => e.value !== '' && e.value !== e.name);
  // A lock's entries are named by their lease: no second column of the same.
  const withLease = r.entries.some((e) => e.lease !== e.name);
  const headers = [
    'ROLE',
    'NAME',
    ...(withValue ? ['VALUE'] : []),
    ...(withLease ? ['LEASE'] : []),
    'TTL',
    'AGE',
    'REV',
  ];
  const rows = r.entries.map((e) => {
    const ttl = e.lease === undefined ? undefined : ttlLeft(leases, e.lease, now);
    return [
      e.role,
      e.name === '' ? '-' : e.name,
      ...(withValue ? [oneLine(e.value)] : []),
      ...(withLease ? [e.lease ?? '-'] : []),
      ttl === undefined ? '-' : ttl < 0 ? 'gone' : `${ttl}s`,
      // Only a layout with a clock in its keys tells an age (etcd keeps none).
      e.since?.source === 'key' ? age(now - e.since.time) : '-',
      String(e.createRevision),
    ];
  });
  const title = `${out.color('bold', r.kind)} ${r.path}: ${r.summary}`;
  return `${title}\n${indent(out.table(headers, rows))}`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

function oneLine(value: string): string {
  const line = value.replace(/\s+/g, ' ');
  return line.length > 60 ? `${line.slice(0, 59)}…` : line;
}

/** `950ms`, `12s`, `3m04s`, `2h05m`. */
export function age(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
